"""Each output format read back by its real consumer.

Generates a class-folder dataset with ``$IMGNORM_BIN gen`` (plus one broken
image), then:

* ``--format stack``: ``numpy.load(images.npy, mmap_mode="r")`` equals the
  per-image ``.npy`` tree made with the same options, row for row (failed
  rows are zero and ``valid`` is False); ``labels.npy`` / ``classes.json``
  follow the ImageFolder convention (sorted class folders).
* ``--format webdataset``: ``webdataset.WebDataset(shards)`` with its own
  ``.npy`` decoding yields every ok image once, in path order, equal to the
  tree; the ``.json`` sidecar names the source path.
* the manifest: ``pandas.read_json(lines=True)`` gives one row per file with
  the documented columns and dtypes.
* geometry: an upscale with ``--resize`` is within one 8-bit step of
  OpenCV's ``cv2.resize(INTER_LINEAR)``.

    IMGNORM_BIN=target/debug/imgnorm python3 -m pytest -q tests/python/test_formats.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import webdataset as wds

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip(
        "IMGNORM_BIN is not set: build imgnorm and run with "
        "IMGNORM_BIN=path/to/imgnorm to check its outputs",
        allow_module_level=True,
    )

BIN = shutil.which(BIN_ENV) or BIN_ENV
TIMEOUT_S = 180
GEOMETRY = ["--resize-shorter", "24", "--center-crop", "20x16", "--channels", "rgb"]


def run(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [BIN, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert p.returncode in ok, f"{args}: rc={p.returncode}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("formats") / "in"
    run("gen", "--out", str(root), "--format", "mixed", "--count", "12",
        "--classes", "3", "--seed", "3")
    (root / "class_001" / "broken.png").write_bytes(b"not a png")
    return root


def normalize(dataset: Path, out: Path, *options: str) -> Path:
    run("centralized", "--quiet", "--input", str(dataset), "--output", str(out),
        *GEOMETRY, *options, ok=(3,))
    return out


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tree(dataset, tmp_path_factory) -> Path:
    return normalize(dataset, tmp_path_factory.mktemp("tree") / "out")


def test_stack_with_mmap_matches_the_tree(dataset, tree, tmp_path):
    out = normalize(dataset, tmp_path / "stack", "--format", "stack")
    images = np.load(out / "images.npy", mmap_mode="r")
    assert isinstance(images, np.memmap)
    paths = json.loads((out / "paths.json").read_text())
    assert images.shape == (len(paths), 16, 20, 3) and images.dtype == np.float32
    labels = np.load(out / "labels.npy")
    valid = np.load(out / "valid.npy")
    classes = json.loads((out / "classes.json").read_text())
    assert classes == ["class_000", "class_001", "class_002"]
    assert labels.dtype == np.int64 and valid.dtype == np.bool_
    rows = {r["path"]: r for r in manifest(tree)}
    assert sorted(rows) == paths
    for i, path in enumerate(paths):
        row = rows[path]
        assert labels[i] == classes.index(path.split("/")[0])
        if row["status"] == "ok":
            assert valid[i]
            np.testing.assert_array_equal(images[i], np.load(tree / row["output"]))
        else:
            assert not valid[i] and not images[i].any()
    assert int(valid.sum()) == 12


def test_webdataset_library_reads_every_sample(dataset, tree, tmp_path):
    out = normalize(dataset, tmp_path / "wds", "--format", "webdataset", "--shard-size", "5")
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    assert [Path(s).name for s in shards] == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode())
    ok = [r for r in manifest(tree) if r["status"] == "ok"]
    assert len(samples) == len(ok) == 12
    for sample, row in zip(samples, ok):
        meta = sample["json"]
        assert meta["path"] == row["path"]
        assert meta["class"] == row["path"].split("/")[0]
        classes = sorted({r["path"].split("/")[0] for r in ok})
        assert sample["cls"] == classes.index(meta["class"])
        assert meta["shape"] == [16, 20, 3]
        assert isinstance(sample["npy"], np.ndarray)
        np.testing.assert_array_equal(sample["npy"], np.load(tree / row["output"]))


def test_manifest_reads_with_pandas(tree):
    df = pd.read_json(tree / "manifest.jsonl", lines=True)
    assert len(df) == 13
    assert list(df["path"]) == sorted(df["path"])
    assert set(df["status"]) == {"ok", "failed"}
    assert (df["status"] == "ok").sum() == 12
    for col in ["path", "status", "format", "output", "width", "height", "channels",
                "bit_depth", "min", "max", "checksum", "reason"]:
        assert col in df.columns, col
    ok = df[df["status"] == "ok"]
    assert (ok["width"] == 20).all() and (ok["height"] == 16).all()
    assert (ok["channels"] == 3).all()
    assert ok["checksum"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert pd.api.types.is_numeric_dtype(df["width"])


def test_bilinear_upscale_is_close_to_opencv(tmp_path):
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    src[0, 0] = 0
    src[0, 1] = 255
    inp = tmp_path / "in"
    inp.mkdir()
    cv2.imwrite(str(inp / "a.png"), src[:, :, ::-1])
    out = tmp_path / "out"
    run("centralized", "--quiet", "--input", str(inp), "--output", str(out),
        "--resize", "40x36", "--dtype", "u8", "--range", "0,255")
    got = np.load(out / "a.png.npy").astype(np.int32)
    want = cv2.resize(src, (40, 36), interpolation=cv2.INTER_LINEAR).astype(np.int32)
    # Normalization after the resize stretches min..max of the resized image
    # to 0..255; compare against OpenCV's resize stretched the same way.
    lo, hi = want.min(), want.max()
    want = np.round((want - lo) * 255.0 / (hi - lo)).astype(np.int32)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2
