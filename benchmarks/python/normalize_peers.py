#!/usr/bin/env python3
"""The same job as normalize_cv2.py on a data framework: Dask, Ray Data or
Daft (owns only these peer runners of `imgnorm bench --peers`).

Each runner discovers the files, decodes, normalizes and writes them with
normalize_cv2.py's own `process` (the same OpenCV calls, the same output
bytes), but lets the framework schedule the work on N processes or threads:

* ``dask``: a ``distributed.LocalCluster`` of N single-threaded worker
  processes; one task per chunk of files (``client.map``).
* ``ray``:  ``ray.init(num_cpus=N)`` and a Ray Data ``map_batches`` over the
  file list (one CPU per task).
* ``daft``: Daft's native runner, a Python UDF over the file list with N
  concurrent instances of a Python UDF.

Start-up of the framework is part of the measured time (users pay it too).
The last stdout line is the same JSON as normalize_cv2.py's.

    python3 benchmarks/python/normalize_peers.py dask --input IN --output OUT --processes 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
sys.path.insert(0, HERE)
# Worker processes the frameworks start import normalize_cv2 too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p
)
import normalize_cv2 as base  # noqa: E402


def _run_chunk(in_root: str, out_root: str, rels: list[str]) -> list[tuple[str, bool, str]]:
    if base._CTX.get("in") != Path(in_root):
        base._init(in_root, out_root)
    return [base.process(r) for r in rels]


def _chunks(todo: list[str], n: int) -> list[list[str]]:
    size = max(1, min(64, len(todo) // (n * 8) if todo else 1))
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def run_dask(todo, inp, out, n):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        parts = _chunks(todo, n)
        futs = client.map(_run_chunk, [inp] * len(parts), [out] * len(parts), parts,
                          pure=False)
        return [r for part in client.gather(futs) for r in part]


def run_ray(todo, inp, out, n):
    import ray

    ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.from_items([{"rel": r} for r in todo])

        def batch(b):
            res = _run_chunk(inp, out, list(b["rel"]))
            return {"rel": [r for r, _, _ in res], "ok": [o for _, o, _ in res],
                    "reason": [w for _, _, w in res]}

        rows = ds.map_batches(batch, batch_size=16, num_cpus=1, concurrency=n,
                              batch_format="numpy").take_all()
        return [(r["rel"], bool(r["ok"]), r["reason"]) for r in rows]
    finally:
        ray.shutdown()


def run_daft(todo, inp, out, n):
    import daft

    @daft.udf(return_dtype=daft.DataType.bool(), concurrency=n)
    def proc(rels):
        return [ok for _, ok, _ in _run_chunk(inp, out, rels.to_pylist())]

    df = daft.from_pydict({"rel": todo})
    got = df.with_column("ok", proc(df["rel"])).to_pydict()
    return [(r, bool(o), "" if o else "failed") for r, o in zip(got["rel"], got["ok"])]


RUNNERS = {"dask": run_dask, "ray": run_ray, "daft": run_daft}


def main() -> int:
    ap = argparse.ArgumentParser(description="normalize_cv2.py's job on a data framework")
    ap.add_argument("framework", choices=sorted(RUNNERS))
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--processes", type=int, default=2)
    a = ap.parse_args()
    if not a.input.is_dir():
        print(f"error: input folder {a.input} does not exist", file=sys.stderr)
        return 2
    a.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    todo, skipped = base.discover(a.input)
    results = RUNNERS[a.framework](todo, str(a.input), str(a.output), max(1, a.processes))
    seconds = time.perf_counter() - t0
    ok = sum(1 for _, good, _ in results if good)
    failed = len(todo) - ok
    images = len(todo) + len(skipped)
    print(json.dumps({"images": images, "ok": ok, "failed": failed, "skipped": len(skipped),
                      "seconds": round(seconds, 6),
                      "images_per_s": round(images / seconds, 3) if seconds > 0 else 0.0}),
          flush=True)
    return 3 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
