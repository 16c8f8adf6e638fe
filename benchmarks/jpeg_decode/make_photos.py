"""Writes the 1000 JPEG photos of the decode benchmark (docs/BENCHMARKS.md):
random 256-768 px crops of scikit-image's colour photographs, written by
OpenCV at quality 75-95, 4:2:0 with every 7th 4:4:4 and every 10th
progressive. Deterministic (seed 1).

    python3 benchmarks/jpeg_decode/make_photos.py OUT_DIR
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data as d

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(1)
srcs = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket(), d.retina(), d.hubble_deep_field(),
        d.immunohistochemistry()]
for i in range(1000):
    s = srcs[i % len(srcs)]
    H, W = s.shape[:2]
    h = int(rng.integers(min(256, H), min(768, H) + 1))
    w = int(rng.integers(min(256, W), min(768, W) + 1))
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))]
    if i % 10 == 0:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    if i % 7 == 0:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    cv2.imwrite(str(out / f"p{i:04d}.jpg"), np.ascontiguousarray(s[y : y + h, x : x + w, ::-1]), params)
