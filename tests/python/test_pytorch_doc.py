"""docs/PYTORCH.md's datasets, run as written on real imgnorm outputs.

The page's ``python`` blocks are executed in order; each dataset class then
reads a dataset that ``$IMGNORM_BIN centralized`` wrote in its format, and
every sample must equal the ``.npy`` tree's array for that image (C×H×W)
with the ImageFolder label. With PyTorch installed each class also goes
through a real ``DataLoader``; without it that part is skipped (CI does not
install torch: see the page).

    IMGNORM_BIN=target/debug/imgnorm python3 -m pytest -q tests/python/test_pytorch_doc.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip("IMGNORM_BIN is not set: build imgnorm and run with "
                "IMGNORM_BIN=path/to/imgnorm", allow_module_level=True)
BIN = shutil.which(BIN_ENV) or BIN_ENV
PAGE = Path(__file__).resolve().parents[2] / "docs" / "PYTORCH.md"
OPTIONS = ["--resize", "12x10", "--channels", "rgb"]


def run(*args: str, ok=(0, 3)) -> None:
    p = subprocess.run([BIN, *args], capture_output=True, text=True,
                       timeout=180, check=False)
    assert p.returncode in ok, f"{args}: rc={p.returncode}\n{p.stderr}"


@pytest.fixture(scope="module")
def page() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) >= 4, "docs/PYTORCH.md lost its code blocks"
    module = types.ModuleType("pytorch_doc")  # importable, so pickle works
    sys.modules[module.__name__] = module
    for b in blocks:
        exec(compile(b, str(PAGE), "exec"), module.__dict__)
    return module.__dict__


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pt") / "in"
    run("gen", "--out", str(root), "--format", "mixed", "--count", "9",
        "--classes", "3", "--seed", "5", ok=(0,))
    (root / "class_001" / "broken.png").write_bytes(b"not a png")
    shutil.copy(next((root / "class_002").iterdir()), root / "top.png")
    return root


def write(data: Path, out: Path, fmt: str) -> Path:
    run("centralized", "--quiet", "--input", str(data), "--output", str(out),
        "--format", fmt, *OPTIONS)
    return out


@pytest.fixture(scope="module")
def outputs(data, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("pt-out")
    return {f: write(data, base / f, f) for f in ("npy", "stack", "webdataset")}


def expected(out: Path) -> list:
    """(C×H×W array, label) of every ok image, in path order, from the tree."""
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    classes = sorted({r["path"].split("/")[0] for r in rows
                      if "/" in r["path"] and r["status"] != "skipped"})
    want = []
    for r in rows:
        if r["status"] != "ok":
            continue
        a = np.load(out / r["output"]).transpose(2, 0, 1)
        top = r["path"].split("/")[0] if "/" in r["path"] else None
        want.append((a, classes.index(top) if top else -1))
    return want


def same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for (a, la), (b, lb) in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert a.flags.c_contiguous
        assert np.array_equal(a, b)
        assert la == lb


def test_each_format_gives_the_trees_arrays_and_imagefolder_labels(page, outputs):
    want = expected(outputs["npy"])
    assert any(label == -1 for _, label in want), "the root-level image"
    assert len(want) == 10, "9 generated + top.png, the broken file left out"
    tree = page["NpyTree"](outputs["npy"])
    same([tree[i] for i in range(len(tree))], want)
    stack = page["Stack"](outputs["stack"])
    assert stack.classes == tree.classes
    same([stack[i] for i in range(len(stack))], want)
    shards = page["Shards"](outputs["webdataset"])
    same(list(shards), want)


def test_hwc_when_asked(page, outputs):
    a, _ = page["NpyTree"](outputs["npy"], chw=False)[0]
    assert a.shape == (10, 12, 3)


def test_layout_chw_on_disk_needs_no_transpose(page, data, outputs, tmp_path):
    want = expected(outputs["npy"])
    for fmt, cls in (("npy", "NpyTree"), ("stack", "Stack"), ("webdataset", "Shards")):
        out = tmp_path / fmt
        run("centralized", "--quiet", "--input", str(data), "--output", str(out),
            "--format", fmt, "--layout", "chw", *OPTIONS)
        ds = page[cls](out, chw=False)
        same(list(ds) if fmt == "webdataset" else [ds[i] for i in range(len(ds))], want)


def test_a_validation_split_missing_a_class_keeps_the_training_numbers(
        page, data, outputs, tmp_path):
    val_in = tmp_path / "val"
    shutil.copytree(data / "class_002", val_in / "class_002")
    val = write(val_in, tmp_path / "val-out", "npy")
    train = page["NpyTree"](outputs["npy"])
    labels = {label for _, label in page["NpyTree"](val, classes=train.classes)}
    assert labels == {2}


def test_stack_pickles_without_its_array(page, outputs):
    import pickle
    stack = page["Stack"](outputs["stack"])
    stack[0]
    blob = pickle.dumps(stack)
    assert len(blob) < 4096
    same([pickle.loads(blob)[0]], [stack[0]])


def test_dataloader_batches(page, outputs):
    torch = pytest.importorskip("torch", reason="PyTorch is optional (see docs/PYTORCH.md)")
    for ds in (page["NpyTree"](outputs["npy"]), page["Stack"](outputs["stack"]),
               page["Shards"](outputs["webdataset"])):
        images, labels = next(iter(page["loader"](ds, batch_size=4)))
        assert tuple(images.shape) == (4, 3, 10, 12)
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
