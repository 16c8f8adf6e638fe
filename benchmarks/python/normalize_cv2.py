#!/usr/bin/env python3
"""Python + OpenCV + NumPy baseline for imgnorm (owns only this benchmark).

The reference implementation the Rust binary is benchmarked and checked
against: the same operation and output layout as `imgnorm centralized` with
default options, nothing more.

* Discovery: every regular file under --input, recursively, sorted by its
  '/'-separated relative path. Files with an image extension (jpg jpeg png
  bmp tif tiff webp gif, any case) or with no extension at all are decoded;
  anything else is counted as skipped.
* Decode: ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` (no EXIF rotation,
  16-bit kept, alpha kept, palettes expanded by OpenCV).
* Layout: gray H×W → H×W×1; BGR → RGB; BGRA → RGBA. (OpenCV returns
  gray+alpha PNGs as 4 channels B=G=R=L, A, and GIFs as 4 channels with
  alpha, so those come out with 4 channels here; imgnorm keeps LA as 2.)
* Op: ``cv2.normalize(img, None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F)`` (one
  min/max over all channels, alpha included; constant image → all 0).
* Output: ``OUT/<relative path>.npy`` (float32, C-order, little-endian),
  written with ``np.save`` to a temporary name and moved in place with
  ``os.replace``.
* A file that fails to decode (None or cv2.error) or write is counted as
  failed; it never stops the run. Exit 0 if none failed, 3 if some did,
  2 on a usage / input-folder error.
* ``cv2.setNumThreads(1)`` in every process; ``--processes N`` (N > 1) uses
  a ``multiprocessing.Pool`` of N worker processes.
* The last stdout line is JSON:
  ``{"images", "ok", "failed", "skipped", "seconds", "images_per_s"}``
  (``skipped`` is extra to the seed's keys, mirroring imgnorm's line; as
  in imgnorm's counts, ``images`` = ok + failed + skipped, and
  ``images_per_s`` = images / seconds, wall clock of the whole run
  including discovery and pool start-up).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def discover(root: Path) -> tuple[list[str], list[str]]:
    """(to_decode, skipped): relative '/'-separated paths, sorted."""
    todo: list[str] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if not full.is_file():
                continue
            rel = full.relative_to(root).as_posix()
            ext = full.suffix.lower()
            if ext in IMAGE_EXTS or ext == "":
                todo.append(rel)
            else:
                skipped.append(rel)
    todo.sort()
    skipped.sort()
    return todo, skipped


def to_rgb_layout(img: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) / 2-D gray → H×W×C in RGB(A) / gray order."""
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] == 3:
        return img[:, :, ::-1]
    if img.shape[2] == 4:
        return img[:, :, [2, 1, 0, 3]]
    return img


def normalize(img: np.ndarray) -> np.ndarray:
    """Min-max over every value to [0, 1] float32, shape kept as H×W×C."""
    shape = img.shape
    out = cv2.normalize(np.ascontiguousarray(img), None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F)
    return np.ascontiguousarray(out.reshape(shape), dtype="<f4")


_CTX: dict[str, Path] = {}


def _init(in_root: str, out_root: str) -> None:
    cv2.setNumThreads(1)
    _CTX["in"] = Path(in_root)
    _CTX["out"] = Path(out_root)


def process(rel: str) -> tuple[str, bool, str]:
    """Decode, normalize and write one file: (rel, ok, reason)."""
    src = _CTX["in"] / rel
    dst = _CTX["out"] / (rel + ".npy")
    try:
        img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        if img is None:
            return rel, False, "cv2.imread returned None"
        arr = normalize(to_rgb_layout(img))
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, dst)
        return rel, True, ""
    except cv2.error as e:
        return rel, False, "cv2.error: " + str(e).strip().splitlines()[-1]
    except Exception as e:  # noqa: BLE001 - a bad file must not stop the run
        return rel, False, f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OpenCV min-max normalizer baseline (writes <rel>.npy).")
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--processes", type=int, default=1, help="worker processes (default 1: in-process)")
    ap.add_argument("--verbose", action="store_true", help="print each failure to stderr")
    args = ap.parse_args(argv)
    if args.processes < 1:
        ap.error("--processes must be >= 1")
    if not args.input.is_dir():
        print(f"error: input folder {args.input} does not exist or is not a folder", file=sys.stderr)
        return 2
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create output folder {args.output}: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    todo, skipped = discover(args.input)
    if args.processes > 1 and len(todo) > 1:
        chunksize = max(1, min(64, len(todo) // (args.processes * 8)))
        with mp.get_context("fork" if sys.platform.startswith("linux") else "spawn").Pool(
            args.processes, initializer=_init, initargs=(str(args.input), str(args.output))
        ) as pool:
            results = list(pool.imap_unordered(process, todo, chunksize=chunksize))
    else:
        _init(str(args.input), str(args.output))
        results = [process(rel) for rel in todo]
    seconds = time.perf_counter() - t0

    ok = sum(1 for _, good, _ in results if good)
    failed = len(results) - ok
    if args.verbose:
        for rel, good, reason in sorted(results):
            if not good:
                print(f"failed: {rel}: {reason}", file=sys.stderr)
    summary = {
        "images": len(todo) + len(skipped),
        "ok": ok,
        "failed": failed,
        "skipped": len(skipped),
        "seconds": round(seconds, 6),
        "images_per_s": round((len(todo) + len(skipped)) / seconds, 3) if seconds > 0 else 0.0,
    }
    print(json.dumps(summary), flush=True)
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
