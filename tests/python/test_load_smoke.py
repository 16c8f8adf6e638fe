"""Smoke run of the load test (benchmarks/load_test.py --smoke) so the script
cannot rot: 500 tiny images, 3 workers, one SIGKILLed and one SIGSTOPped
mid-run (a 1 s heartbeat timeout, and a per-image delay that keeps the run a
few seconds long), then the JSON it writes is checked for its fields and for the
correctness verdict. Speed is not asserted: it is a benchmark, measured in
docs/RELIABILITY.md, not tested.

    IMGNORM_BIN=target/debug/imgnorm python3 -m pytest -q tests/python/test_load_smoke.py
"""

from __future__ import annotations

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
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_test.py"


def test_load_test_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [
        sys.executable, str(SCRIPT),
        "--smoke",
        "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"),
        "--json", str(out),
    ]
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, IMGNORM_BIN=BIN),
    )
    assert p.returncode == 0, f"rc={p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    res = json.loads(out.read_text())
    for key in ("command", "machine", "dataset", "settings", "runs", "markdown"):
        assert key in res, key
    for key in ("nproc", "cpu_model", "mem_total_mib", "loadavg_start", "commit"):
        assert key in res["machine"], key
    (run,) = res["runs"]
    assert run["correctness"]["passed"], run["correctness"]
    assert run["correctness"]["rows"] == 500
    assert run["correctness"]["by_status"] == {"ok": 490, "failed": 10}
    assert run["correctness"]["centralized"]["manifest_bytes_identical"] is True
    assert run["throughput"]["images_per_s"] > 0
    assert run["memory_mib"]["master_peak_vmhwm"] > 0
    assert run["memory_mib"]["worker_peak_vmhwm_max"] > 0
    kill, stop = run["faults"]
    assert (kill["kind"], stop["kind"]) == ("kill", "stop")
    for f in (kill, stop):
        assert "skipped" not in f, f
        assert f["detect_log_s"] is not None and f["detect_log_s"] >= 0, f
        assert f["detect_status_s"] is not None, f
    # the SIGSTOPped worker is only noticed by the heartbeat timeout (1 s here)
    assert stop["detect_log_s"] >= 0.9, stop
    assert stop["rejoin_after_cont_s"] is not None, stop
    assert "| run |" in res["markdown"]
    assert "| run |" in p.stdout
