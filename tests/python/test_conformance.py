"""Decoder conformance: every file of the conformance corpus (Pillow's test
images plus generated TIFF/PNM/PNG/GIF variants, built by
scripts/conformance-corpus.py and cached under ~/.cache) through imgnorm,
each array compared with OpenCV (the contract) and Pillow.

* No file crashes the engine, and every verdict is ``match``, ``both-fail``,
  ``ours-only`` or ``lossy`` unless tests/python/conformance_expected.json
  documents it (with the reason, shown in docs/FORMAT.md); a documented file
  whose verdict changed fails too, so the table stays true.
* ``centralized``, ``run`` over shared storage and ``run --transfer stream``
  write the same manifest rows for the generated and TIFF/BMP files,
  failures included.

    IMGNORM_BIN=target/debug/imgnorm python3 -m pytest -q tests/python/test_conformance.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip(
        "IMGNORM_BIN is not set: build imgnorm and run with IMGNORM_BIN=path/to/imgnorm",
        allow_module_level=True,
    )
BIN = shutil.which(BIN_ENV) or BIN_ENV
REPO = Path(__file__).resolve().parents[2]

spec = importlib.util.spec_from_file_location("conformance", REPO / "scripts" / "conformance-corpus.py")
conformance = importlib.util.module_from_spec(spec)
sys.modules["conformance"] = conformance
spec.loader.exec_module(conformance)


@pytest.fixture(scope="module")
def corpus() -> Path:
    return conformance.build()


@pytest.fixture(scope="module")
def results(corpus) -> list[dict]:
    return conformance.compare(BIN, corpus)


def test_corpus_is_complete(results):
    """The corpus holds what it should (a fetch that silently lost files
    would make every other check vacuous)."""
    paths = {r["path"] for r in results}
    assert len(paths) > 700, len(paths)
    for must in ["pillow/tiff_tiled_planar_16bit_RGB.tiff", "pillow/bmp/q/rgb32-111110.bmp",
                 "generated/pnm/gray16_plain.pgm", "generated/tiff/gray16_fillorder2.tif"]:
        assert must in paths, must


def test_no_crash_and_every_difference_documented(results):
    expected = json.loads(conformance.EXPECTED.read_text())
    problems = conformance.unexplained(results, expected)
    assert not problems, "\n".join(problems)
    stale = sorted(set(expected) - {r["path"] for r in results})
    assert not stale, f"documented files missing from the corpus: {stale}"


def test_the_documented_table_is_current(results):
    """docs/FORMAT.md holds the table this run generates."""
    expected = json.loads(conformance.EXPECTED.read_text())
    table = conformance.report(results, expected)
    doc = (REPO / "docs" / "FORMAT.md").read_text()
    assert table in doc, (
        "docs/FORMAT.md's conformance table is out of date: run "
        "scripts/conformance-corpus.py compare --bin BIN --json /tmp/r.json && "
        "scripts/conformance-corpus.py report --json /tmp/r.json --write docs/FORMAT.md"
    )


def test_all_modes_write_the_same_rows(corpus, tmp_path):
    """The risky formats (all generated files, Pillow's TIFFs and BMPs),
    failures included, give the same manifest in every mode."""
    subset = tmp_path / "in"
    for src in sorted(corpus.rglob("*")):
        rel = src.relative_to(corpus)
        if not src.is_file() or src.name.startswith("."):
            continue
        if rel.parts[0] == "generated" or src.suffix.lower() in (".tif", ".tiff", ".bmp"):
            (subset / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, subset / rel)
    rows = {}
    for mode in ("centralized", "shared", "stream"):
        rows[mode] = conformance.run_imgnorm(BIN, subset, tmp_path / mode, mode)
    assert rows["shared"] == rows["centralized"]
    assert rows["stream"] == rows["centralized"]
    assert not [r for r in rows["centralized"].values() if "panicked" in (r.get("reason") or "")]
