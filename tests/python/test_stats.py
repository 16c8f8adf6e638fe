"""Checks ``stats.json["dataset"]`` against NumPy over the written arrays.

Generates a class-folder dataset with ``$IMGNORM_BIN gen``, runs
``$IMGNORM_BIN centralized`` with a few option sets, then recomputes every
channel's count, min, max, mean, std (ddof=0) and 256-bin histogram from the
``.npy`` outputs (``np.concatenate`` of the channel's values over all ok
arrays). Mean and std must agree within 1e-9 relative; counts, extremes and
histograms exactly (the bin rule of docs/FORMAT.md, evaluated in float64).

    IMGNORM_BIN=target/release/imgnorm python3 -m pytest -q tests/python
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip(
        "IMGNORM_BIN is not set: build imgnorm and run with "
        "IMGNORM_BIN=path/to/imgnorm to check its outputs",
        allow_module_level=True,
    )

BIN = shutil.which(BIN_ENV) or BIN_ENV
if not (Path(BIN).is_file() and os.access(BIN, os.X_OK)):
    pytest.fail(f"IMGNORM_BIN={BIN_ENV!r} is not an executable file", pytrace=False)

TIMEOUT_S = 120
BINS = 256


def run(*args: str) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [BIN, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert p.returncode == 0, f"{args}: rc={p.returncode}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats") / "in"
    run("gen", "--out", str(root), "--format", "mixed", "--size", "48x40",
        "--count", "40", "--classes", "3")
    return root


def bins_of(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The documented bin rule: floor((v - lo) / (hi - lo) * 256), clamped."""
    if hi <= lo:
        return np.zeros(BINS, dtype=np.int64)
    idx = np.clip(np.floor((values - lo) / (hi - lo) * BINS), 0, BINS - 1).astype(np.int64)
    return np.bincount(idx, minlength=BINS)


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--dtype", "f16", "--range", "1,-1"],
        ["--scope", "channel", "--dtype", "u8"],
        ["--channels", "gray", "--dtype", "u16"],
    ],
    ids=["default", "f16-inverted", "channel-u8", "gray-u16"],
)
def test_dataset_stats_match_numpy(dataset: Path, tmp_path: Path, options: list[str]):
    out = tmp_path / "out"
    p = run("centralized", "--input", str(dataset), "--output", str(out), "--quiet", *options)
    lines = p.stdout.strip().splitlines()
    json.loads(lines[-1])  # the summary stays the last line
    assert any(line.startswith("dataset: ") for line in lines[:-1])

    stats = json.loads((out / "stats.json").read_text())
    d = stats["dataset"]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ok = sorted(r["path"] for r in rows if r["status"] == "ok")
    arrays = [np.load(out / f"{path}.npy") for path in ok]
    assert d["images"] == len(arrays) > 0

    lo, hi = d["histogram_range"]
    a, b = stats["options"]["range"]
    assert (lo, hi) == (min(a, b), max(a, b))

    channels = max(x.shape[2] for x in arrays)
    assert len(d["channels"]) == channels
    for k, got in enumerate(d["channels"]):
        values = np.concatenate(
            [x[..., k].ravel().astype(np.float64) for x in arrays if x.shape[2] > k]
        )
        assert got["count"] == values.size
        assert got["min"] == values.min()
        assert got["max"] == values.max()
        assert got["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
        assert got["std"] == pytest.approx(values.std(), rel=1e-9, abs=1e-12)
        assert got["histogram"] == bins_of(values, lo, hi).tolist()

    classes = Counter(path.split("/", 1)[0] for path in ok)
    assert d["classes"] == dict(classes)
    assert len(classes) == 3
