"""``--stats-from``: a validation split normalized with the training split's
parameters (dataset min/max per channel, mean/std) equals applying those
parameters by hand to the raw images, in every mode, and its labels keep the
training numbering although one class is missing.

    IMGNORM_BIN=target/debug/imgnorm python3 -m pytest -q tests/python/test_stats_from.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip("IMGNORM_BIN is not set", allow_module_level=True)
BIN = shutil.which(BIN_ENV) or BIN_ENV
SHAPE = ["--resize", "16x12", "--channels", "rgb"]


def run(*args: str, ok=(0,)) -> subprocess.CompletedProcess:
    p = subprocess.run([BIN, *args], capture_output=True, text=True,
                       timeout=180, check=False)
    assert p.returncode in ok, f"{args}: rc={p.returncode}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("splits")
    train = base / "train"
    run("gen", "--out", str(train), "--format", "png", "--size", "16x12",
        "--count", "12", "--classes", "3", "--seed", "1")
    val = base / "val"
    run("gen", "--out", str(val), "--format", "png", "--size", "16x12",
        "--count", "6", "--classes", "3", "--seed", "2")
    shutil.rmtree(val / "class_000")  # the validation split lacks a class
    return base, train, val


def test_val_with_train_parameters_equals_applying_them_by_hand(splits):
    base, train, val = splits
    t_out = base / "t-out"
    run("centralized", "-q", "--input", str(train), "--output", str(t_out),
        "--scope", "dataset", "--per-channel", "--standardize",
        "--format", "stack", *SHAPE)
    norm = json.loads((t_out / "stats.json").read_text())["normalization"]
    lo, hi = np.array(norm["min"], float), np.array(norm["max"], float)
    mean, std = np.array(norm["mean"]), np.array(norm["std"])
    outs = []
    for mode, extra in (("c", ["centralized", "-q"]),
                        ("r", ["run", "-q", "--workers", "2"]),
                        ("s", ["run", "-q", "--workers", "2", "--transfer", "stream"])):
        out = base / f"v-{mode}"
        run(*extra, "--input", str(val), "--output", str(out),
            "--stats-from", str(t_out / "stats.json"), "--format", "stack", *SHAPE)
        outs.append(out)
    first = (outs[0] / "images.npy").read_bytes()
    for o in outs[1:]:
        assert (o / "images.npy").read_bytes() == first
        assert (o / "labels.npy").read_bytes() == (outs[0] / "labels.npy").read_bytes()
    out = outs[0]
    paths = json.loads((out / "paths.json").read_text())
    images = np.load(out / "images.npy")
    for i, rel in enumerate(paths):
        raw = np.asarray(Image.open(val / rel).convert("RGB"), dtype=np.float64)
        # Values beyond the training split's min/max saturate at the range.
        u = np.clip((raw - lo) / (hi - lo), 0.0, 1.0)
        want = ((u - mean) / std).astype(np.float32)
        np.testing.assert_allclose(images[i], want, rtol=1e-5, atol=1e-5)
    # Labels: the training numbering (class_001 -> 1), not this split's.
    assert json.loads((out / "classes.json").read_text()) == \
        json.loads((t_out / "classes.json").read_text())
    labels = np.load(out / "labels.npy")
    want = [int(p.split("/")[0].split("_")[1]) for p in paths]
    assert labels.tolist() == want and 0 not in want
    options = json.loads((out / "stats.json").read_text())["options"]
    assert options["dataset_min"] == norm["min"]
    # The same numbering in webdataset's .cls members.
    w = base / "v-wds"
    run("centralized", "-q", "--input", str(val), "--output", str(w),
        "--stats-from", str(t_out), "--format", "webdataset", *SHAPE)
    import tarfile
    cls = {}
    with tarfile.open(w / "shard-000000.tar") as tar:
        for m in tar:
            if m.name.endswith(".cls"):
                cls[m.name.split("/")[0]] = int(tar.extractfile(m).read())
    assert cls == {"class_001": 1, "class_002": 2}


def test_stats_from_refuses_flags_it_replaces_and_other_dtypes(splits):
    base, train, val = splits
    t_out = base / "t-min"
    run("centralized", "-q", "--input", str(train), "--output", str(t_out),
        "--standardize", *SHAPE)
    p = run("centralized", "-q", "--input", str(val), "--output", str(base / "x"),
            "--stats-from", str(t_out), "--mean", "0.5", "--std", "0.2", ok=(2,))
    assert "--stats-from" in p.stderr and "--mean" in p.stderr
    p = run("centralized", "-q", "--input", str(val), "--output", str(base / "y"),
            "--stats-from", str(t_out), "--dtype", "f16", *SHAPE, ok=(2,))
    assert "--dtype f32" in p.stderr, p.stderr
    p = run("centralized", "-q", "--input", str(val), "--output", str(base / "z"),
            "--stats-from", str(base / "nothing"), ok=(2,))
    assert "--stats-from" in p.stderr and "os error 2" in p.stderr
