#!/usr/bin/env python3
"""imgnorm vs the Python + OpenCV baseline, single thread on both sides.

Generates three datasets with `imgnorm gen` (512x512 JPEG photos, 512x512
8-bit PNG, and 16-bit PNG made from the 8-bit ones here with OpenCV, since
`gen` writes no 16-bit-only set), then runs, interleaved and repeated,

    imgnorm centralized --quiet --input D --output O        (release build)
    python3 benchmarks/python/normalize_cv2.py --input D --output O

Each tool reports images/s over its own run (discovery to last file, process
start-up and imports excluded); we also time the whole process (wall). The
table shows medians, the ratio imgnorm/Python, and imgnorm's split by stage
from stats.json `stage_seconds` (medians).

    python3 benchmarks/vs_python.py                       # 300 images, 5 repeats
    python3 benchmarks/vs_python.py --count 100 --repeats 3 --bin target/release/imgnorm

Threads: the Python baseline calls cv2.setNumThreads(1); OPENBLAS_* and
friends are left as they are (NumPy does no BLAS work here).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "python" / "normalize_cv2.py"


def default_bin() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target:
        meta = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )
        target = json.loads(meta.stdout)["target_directory"]
    return Path(target) / "release" / "imgnorm"


def make_png16(src: Path, dst: Path, seed: int) -> None:
    """16-bit PNGs from 8-bit ones: high byte = the 8-bit value, low byte =
    seeded noise (like a real 16-bit sensor, whose low bits are noisy)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.rglob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        low = rng.integers(0, 256, size=img.shape, dtype=np.uint16)
        out = (img.astype(np.uint16) << 8) | low
        rel = p.relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst / rel), out)


def datasets(bin_: Path, work: Path, count: int, size: str) -> dict[str, Path]:
    sets = {"jpeg": work / f"jpeg-{size}-{count}", "png8": work / f"png8-{size}-{count}"}
    for fmt, path in (("jpeg", sets["jpeg"]), ("png", sets["png8"])):
        if not path.is_dir():
            subprocess.run(
                [str(bin_), "gen", "--out", str(path), "--count", str(count), "--seed", "1",
                 "--format", fmt, "--size", size],
                check=True, stdout=subprocess.DEVNULL,
            )
    sets["png16"] = work / f"png16-{size}-{count}"
    if not sets["png16"].is_dir():
        make_png16(sets["png8"], sets["png16"], seed=1)
    return sets


def run_one(cmd: list[str], out: Path) -> tuple[float, float]:
    """(reported images/s, wall seconds) of one run into a fresh `out`."""
    shutil.rmtree(out, ignore_errors=True)
    # Start each run with no backlog of dirty pages from the previous one, so
    # neither tool pays for the other's writeback.
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    return float(summary["images_per_s"]), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=None, help="imgnorm binary (default: release build)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/imgnorm-bench"), help="datasets and outputs")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=None, help="subset of: jpeg png8 png16")
    args = ap.parse_args()

    bin_ = (args.bin or default_bin()).resolve()
    if not bin_.is_file():
        sys.exit(f"{bin_} not found: run `cargo build --release` first")
    args.work.mkdir(parents=True, exist_ok=True)
    sets = datasets(bin_, args.work, args.count, args.size)
    if args.only:
        sets = {k: v for k, v in sets.items() if k in args.only}
    out = args.work / "out"

    res: dict[str, dict[str, list]] = {k: {"rs": [], "py": [], "rs_wall": [], "py_wall": [], "stages": []} for k in sets}
    for rep in range(args.repeats + 1):  # repeat 0 warms the page cache, not counted
        for name, data in sets.items():
            rs = run_one([str(bin_), "centralized", "--quiet", "--input", str(data), "--output", str(out)], out)
            stats = json.loads((out / "stats.json").read_text())
            py = run_one([sys.executable, str(BASELINE), "--input", str(data), "--output", str(out)], out)
            if rep == 0:
                continue
            res[name]["rs"].append(rs[0])
            res[name]["rs_wall"].append(rs[1])
            res[name]["py"].append(py[0])
            res[name]["py_wall"].append(py[1])
            res[name]["stages"].append(stats["stage_seconds"])
        print(f"repeat {rep}/{args.repeats} done", file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)

    med = statistics.median
    print(f"\n{args.count} images {args.size}, {args.repeats} repeats (medians), single thread\n")
    print("| dataset | imgnorm images/s | Python+OpenCV images/s | ratio | ratio per repeat, min-max | imgnorm wall s | Python wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in res.items():
        rs, py = med(r["rs"]), med(r["py"])
        pairs = [a / b for a, b in zip(r["rs"], r["py"])]
        print(
            f"| {name} | {rs:.1f} | {py:.1f} | **{rs / py:.2f}x** | {min(pairs):.2f}-{max(pairs):.2f} "
            f"| {med(r['rs_wall']):.2f} | {med(r['py_wall']):.2f} |"
        )
    print("\nimgnorm split by stage (ms per image, medians):\n")
    print("| dataset | read | decode | scale | write (checksum + file) |")
    print("|---|---|---|---|---|")
    for name, r in res.items():
        cells = [med(s[k] for s in r["stages"]) * 1000 / args.count for k in ("read", "decode", "scale", "write")]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
