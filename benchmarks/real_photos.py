#!/usr/bin/env python3
"""Real-photo benchmark data: crops of scikit-image's bundled photographs.

Takes the colour photographs scikit-image ships (astronaut, coffee, chelsea,
rocket, immunohistochemistry, hubble_deep_field, retina), and for each output
image picks one of them, a random crop and a random output size of 384-768
pixels per side, resizes the crop with OpenCV (INTER_AREA when shrinking,
INTER_CUBIC when enlarging) and encodes it with OpenCV:

    jpeg   JPEG quality 90 (default; the set docs/BENCHMARKS.md uses)
    png8   8-bit RGB PNG (compression 3, OpenCV's default)
    png16  16-bit RGB PNG: the 8-bit value times 257 plus seeded noise in
           the low byte (a 16-bit sensor's low bits are noisy)

The same seed gives the same files on every machine with the same OpenCV.

    pip install scikit-image opencv-python-headless numpy
    python3 benchmarks/real_photos.py --out /tmp/photos            # 1000 JPEGs
    python3 benchmarks/real_photos.py --out /tmp/p16 --format png16 --count 200
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


def load_photos():
    """The source photographs as BGR uint8 arrays (OpenCV's order)."""
    import cv2
    import skimage.data

    return [cv2.cvtColor(getattr(skimage.data, n)(), cv2.COLOR_RGB2BGR) for n in PHOTOS]


def make(out: Path, count: int, fmt: str, seed: int, lo: int, hi: int) -> int:
    """Writes `count` images into `out` (in 10 sub-folders); returns bytes."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    photos = load_photos()
    total = 0
    for i in range(count):
        src = photos[int(rng.integers(len(photos)))]
        h, w = src.shape[:2]
        ow, oh = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        # A crop of 40-100% of each side, at a random place.
        cw = int(w * rng.uniform(0.4, 1.0))
        ch = int(h * rng.uniform(0.4, 1.0))
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        crop = src[y : y + ch, x : x + cw]
        interp = cv2.INTER_AREA if ow * oh < cw * ch else cv2.INTER_CUBIC
        img = cv2.resize(crop, (ow, oh), interpolation=interp)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.ascontiguousarray(img)
        sub = out / f"{i % 10:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        if fmt == "jpeg":
            path = sub / f"photo_{i:05d}.jpg"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        else:
            path = sub / f"photo_{i:05d}.png"
            if fmt == "png16":
                noise = rng.integers(0, 256, size=img.shape, dtype=np.uint16)
                img = img.astype(np.uint16) * 257 ^ noise
            ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError(f"cannot encode {path}")
        path.write_bytes(buf.tobytes())
        total += buf.nbytes
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--format", choices=("jpeg", "png8", "png16"), default="jpeg")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-side", type=int, default=384)
    ap.add_argument("--max-side", type=int, default=768)
    a = ap.parse_args()
    if a.out.exists() and any(a.out.iterdir()):
        print(f"real_photos: {a.out} is not empty", file=sys.stderr)
        return 2
    total = make(a.out, a.count, a.format, a.seed, a.min_side, a.max_side)
    print(f"real_photos: {a.count} {a.format} files, {total / 1e6:.1f} MB in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
