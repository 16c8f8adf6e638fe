"""Reruns into an existing output, read the way a user reads them: NumPy.

A run, then inputs added and an output deleted, then the same command again:
the JSON summary says what was kept and processed, and every array NumPy
loads from the rerun's folder equals the one of a clean run into an empty
folder (same dtype, shape and values), with the same manifest.

    IMGNORM_BIN=target/release/imgnorm python3 -m pytest -q tests/python/test_rerun.py
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip("IMGNORM_BIN is not set", allow_module_level=True)
BIN = shutil.which(BIN_ENV) or BIN_ENV
TIMEOUT_S = 120


def imgnorm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def run(inp: Path, out: Path, *extra: str) -> dict:
    p = imgnorm("centralized", "--quiet", "--input", str(inp), "--output", str(out), *extra)
    assert p.returncode in (0, 3), p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def arrays(out: Path) -> dict[str, np.ndarray]:
    return {
        str(p.relative_to(out)): np.load(p, allow_pickle=False)
        for p in sorted(out.rglob("*.npy"))
    }


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_rerun_adds_and_repairs_and_numpy_reads_a_clean_runs_arrays(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    gen = imgnorm("gen", "--out", str(inp), "--count", "12", "--format", "mixed",
                  "--size", "40x32", "--seed", "5", "--classes", "3")
    assert gen.returncode == 0, gen.stderr
    (inp / "class_000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    first = run(inp, out, "--dtype", "f32")
    assert "rerun" not in first

    source = next(p for p in sorted((inp / "class_000").iterdir()) if p.name != "broken.png")
    shutil.copy(source, inp / "class_001" / "added.bin")
    victim = next(out.rglob("*.npy"))
    victim.unlink()
    second = run(inp, out, "--dtype", "f32")
    assert second["rerun"]["new"] == 1, second
    assert second["rerun"]["repaired"] == 1, second
    assert second["rerun"]["kept"] == first["images"] - 1, second
    assert second["images"] == first["images"] + 1

    clean = tmp_path / "clean"
    run(inp, clean, "--dtype", "f32")
    assert manifest(out) == manifest(clean)
    got, want = arrays(out), arrays(clean)
    assert got.keys() == want.keys()
    for name, a in want.items():
        b = got[name]
        assert b.dtype == a.dtype == np.float32, name
        assert b.shape == a.shape, name
        assert np.array_equal(a, b), name
    stats = [json.loads((d / "stats.json").read_text()) for d in (out, clean)]
    assert stats[0]["dataset"] == stats[1]["dataset"]
    assert stats[0]["counts"] == stats[1]["counts"]
