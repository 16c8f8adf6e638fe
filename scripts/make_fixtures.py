#!/usr/bin/env python3
"""Generate the committed test fixtures under tests/fixtures/ (owns that tree).

This script owns every file in ``tests/fixtures/formats/`` and
``tests/fixtures/hostile/`` plus ``tests/fixtures/EXPECTED.md``: it deletes
those two folders and rewrites them from scratch. Everything is deterministic
(seeded NumPy RNG, no timestamps written), so re-running it with the same
NumPy / OpenCV / Pillow versions reproduces the committed bytes; encoder
versions may change the compressed bytes but not what the fixtures test.

Usage:  python3 scripts/make_fixtures.py [--out tests/fixtures]
Needs:  numpy, opencv-python-headless, pillow  (see scripts/py-deps.sh)
"""
from __future__ import annotations

import argparse
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SEED = 20240611
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# Content: smooth gradients + a disc + a fine checker + seeded noise patch.
# --------------------------------------------------------------------------
def _field(h: int, w: int, rng: np.random.Generator, phase: float) -> np.ndarray:
    """One float64 plane in [0, 1]: smooth waves plus detailed regions."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    yn = y / max(h - 1, 1)
    xn = x / max(w - 1, 1)
    smooth = 0.5 + 0.25 * np.sin(2 * np.pi * (xn * 1.3 + phase)) + 0.25 * np.cos(
        2 * np.pi * (yn * 0.9 - phase)
    )
    # A disc with a sharp edge.
    cy, cx, r = 0.55 * h, 0.4 * w, 0.22 * min(h, w)
    disc = ((y - cy) ** 2 + (x - cx) ** 2) <= r * r
    smooth = np.where(disc, 1.0 - smooth * 0.6, smooth)
    # A fine checkerboard in the top-right quarter.
    checker = ((x.astype(int) // 2 + y.astype(int) // 2) % 2).astype(np.float64)
    quarter = (x >= w * 0.6) & (y < h * 0.35)
    smooth = np.where(quarter, 0.15 + 0.7 * checker, smooth)
    # A seeded noise patch in the bottom-left corner.
    noise = rng.random((h, w))
    patch = (x < w * 0.3) & (y >= h * 0.7)
    smooth = np.where(patch, 0.5 * smooth + 0.5 * noise, smooth)
    # Guarantee the full range is used (but still not trivially constant).
    smooth[0, 0] = 0.0
    smooth[-1, -1] = 1.0
    return np.clip(smooth, 0.0, 1.0)


def rgb(h: int, w: int, seed: int, channels: int = 3, depth: int = 8) -> np.ndarray:
    """H×W×channels uint8/uint16 test picture (RGB order when channels >= 3)."""
    rng = np.random.default_rng(SEED + seed)
    planes = [_field(h, w, rng, phase=0.17 * i + 0.05 * seed) for i in range(channels)]
    if channels == 4:
        # Alpha: a horizontal ramp, not the same content as the colour planes.
        ramp = np.linspace(0.1, 1.0, w)[None, :].repeat(h, axis=0)
        planes[3] = ramp
    img = np.stack(planes, axis=-1)
    top = 255 if depth == 8 else 65535
    dtype = np.uint8 if depth == 8 else np.uint16
    return np.rint(img * top).astype(dtype)


def gray(h: int, w: int, seed: int, depth: int = 8) -> np.ndarray:
    """H×W gray picture."""
    return rgb(h, w, seed, channels=1, depth=depth)[:, :, 0]


def to_bgr(img: np.ndarray) -> np.ndarray:
    """RGB(A) → BGR(A) for cv2.imwrite."""
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, ::-1])
    if img.ndim == 3 and img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, [2, 1, 0, 3]])
    return img


def cv_write(path: Path, img_rgb: np.ndarray, params: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", to_bgr(img_rgb), params or [])
    if not ok:
        raise RuntimeError(f"cv2 could not encode {path}")
    path.write_bytes(buf.tobytes())


def pil_save(path: Path, im: Image.Image, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)


# --------------------------------------------------------------------------
# PNG chunk helpers (for the decompression-bomb header).
# --------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose IHDR claims width×height 8-bit gray; IDAT is a few bytes.

    All CRCs are right so the header parses; the IDAT only holds the first
    couple of (zero) rows, so a decoder that allocates first and reads later
    would try to get 10 GB before noticing the data runs out.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # Two rows of filter byte 0 + zeros, compressed: tiny.
    idat = zlib.compress(b"\x00" * (2 * (width + 1)), 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------
# The fixtures.
# --------------------------------------------------------------------------
def make_formats(d: Path) -> None:
    # JPEG. Chroma subsampling is explicit: 4:2:0 (the common case) for the
    # baseline file, 4:4:4 for the progressive one and elsewhere. zune-jpeg
    # and libjpeg-turbo upsample 4:2:0 chroma differently: at sharp colour
    # edges they differ by 3..11/255 depending on content (measured with
    # image 0.25.10 / zune-jpeg 0.5.15 vs OpenCV 5.0's libjpeg-turbo 3.1);
    # jpeg_baseline.jpg is at 3/255, 4:4:4 files at <= 2/255 (IDCT rounding
    # only), all under the tests' 5/255 tolerance.
    jpg_q = [cv2.IMWRITE_JPEG_QUALITY, 92]
    s420 = jpg_q + [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    s444 = jpg_q + [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]

    cv_write(d / "jpeg_baseline.jpg", rgb(48, 64, 1), s420)
    cv_write(d / "jpeg_progressive.jpg", rgb(64, 40, 2), s444 + [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    cv_write(d / "jpeg_gray.jpg", gray(40, 56, 3), jpg_q)
    cmyk = Image.fromarray(rgb(32, 48, 4), "RGB").convert("CMYK")
    pil_save(d / "jpeg_cmyk.jpg", cmyk, "JPEG", quality=92)

    # PNG 8-bit
    cv_write(d / "png_rgb8.png", rgb(40, 72, 5))
    cv_write(d / "png_rgba8.png", rgb(48, 36, 6, channels=4))
    cv_write(d / "png_gray8.png", gray(33, 47, 7))
    la = rgb(30, 44, 8, channels=2)  # L, A
    pil_save(d / "png_graya8.png", Image.fromarray(la, "LA"), "PNG")

    # PNG palette: adaptive palette, no dithering (deterministic), with and
    # without a tRNS chunk.
    pal = Image.fromarray(rgb(36, 52, 9), "RGB").quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pil_save(d / "png_palette.png", pal, "PNG")
    pal_t = Image.fromarray(rgb(36, 52, 10), "RGB").quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    # Per-index alpha (tRNS with several entries): index i gets alpha 8*i,
    # index 0 is fully transparent.
    trns = bytes(min(255, 8 * i) for i in range(32))
    pil_save(d / "png_palette_trns.png", pal_t, "PNG", transparency=trns)

    # PNG 16-bit (cv2 writes 16-bit PNGs from uint16 arrays)
    cv_write(d / "png_rgb16.png", rgb(40, 56, 11, depth=16))
    cv_write(d / "png_gray16.png", gray(44, 30, 12, depth=16))
    cv_write(d / "png_rgba16.png", rgb(28, 40, 13, channels=4, depth=16))

    # BMP / TIFF / WebP
    cv_write(d / "bmp_rgb.bmp", rgb(37, 50, 14))  # odd width*3 → row padding
    cv_write(d / "tiff_rgb8.tif", rgb(40, 48, 15))
    cv_write(d / "tiff_rgb16.tif", rgb(36, 44, 16, depth=16))
    cv_write(d / "tiff_gray16.tif", gray(40, 52, 17, depth=16))
    pil_save(d / "webp_lossless.webp", Image.fromarray(rgb(44, 60, 18), "RGB"), "WEBP", lossless=True, quality=100, method=4)
    pil_save(d / "webp_lossy.webp", Image.fromarray(rgb(44, 60, 19), "RGB"), "WEBP", quality=80, method=4)

    # GIF: 3 frames, each its own adaptive palette; frame 0 is the reference.
    frames = [
        Image.fromarray(rgb(40, 56, 20 + i), "RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        for i in range(3)
    ]
    pil_save(d / "gif_anim.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, disposal=1)

    # Names and paths
    cv_write(d / "upper" / "IMAGE.JPG", rgb(36, 60, 23), s444)
    png_bytes = cv2.imencode(".png", to_bgr(rgb(32, 40, 24)))[1].tobytes()
    (d / "noext").mkdir(parents=True, exist_ok=True)
    (d / "noext" / "photo").write_bytes(png_bytes)
    cv_write(d / "odd names" / "ünïcödé café.png", rgb(24, 34, 25))

    # Edge cases
    # 1×1 RGB with three different channel values: not constant under the
    # default (image) scope, constant per channel under --scope channel.
    cv_write(d / "tiny" / "one_pixel.png", np.array([[[10, 200, 60]]], dtype=np.uint8))
    cv_write(d / "constant" / "flat.png", np.full((20, 30, 3), 77, dtype=np.uint8))

    # EXIF orientation 6 ("rotate 90° CW to display"), stored 64 wide × 40 high.
    im = Image.fromarray(rgb(40, 64, 26), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    pil_save(d / "exif" / "rotated.jpg", im, "JPEG", quality=92, subsampling=0, exif=exif.tobytes())


def make_hostile(d: Path) -> None:
    rng = np.random.default_rng(SEED + 1000)
    d.mkdir(parents=True, exist_ok=True)
    (d / "empty.jpg").write_bytes(b"")

    jpg = cv2.imencode(".jpg", to_bgr(rgb(80, 96, 40)), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    (d / "truncated.jpg").write_bytes(jpg[: int(len(jpg) * 0.6)])
    png = cv2.imencode(".png", to_bgr(rgb(64, 80, 41)))[1].tobytes()
    (d / "truncated.png").write_bytes(png[: int(len(png) * 0.6)])

    # Random bytes, but make sure they do not start like any image format.
    rnd = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    rnd[0:4] = b"RND0"
    (d / "random.jpg").write_bytes(bytes(rnd))
    (d / "text.png").write_bytes(b"This is not a PNG, it is plain ASCII text.\nSecond line.\n" * 4)
    (d / "bomb.png").write_bytes(bomb_png())
    (d / "notes.txt").write_text("Fixture notes: this file is not an image and must be skipped.\n", encoding="ascii")
    data = bytearray(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    data[0:4] = b"DAT0"
    (d / "data.bin").write_bytes(bytes(data))


EXPECTED_MD = """\
# Fixture expectations

Generated by `scripts/make_fixtures.py` (deterministic, seeded); do not edit
by hand, re-run the script. `tests/python/test_outputs.py` checks these.

Status rules (from `imgnorm-core::record::Status`): **ok** = decoded,
normalized, written; **failed** = looks like an image by content *or*
extension but cannot be processed; **skipped** = neither content nor
extension says image. Skipped files do not make the exit code non-zero.

Shapes are H×W×C of the output array with the default options
(`--channels keep --exif-orientation ignore`).

## formats/ (all expected `ok`; `centralized` exits 0)

| path | shape | expected | notes / cv2 reference |
|---|---|---|---|
| `jpeg_baseline.jpg` | 48×64×3 | ok | cv2 baseline JPEG q92, 4:2:0; vs cv2 within 5/255 max, 1/255 mean (zune-jpeg vs libjpeg-turbo IDCT and chroma upsampling differ; measured 3/255) |
| `jpeg_progressive.jpg` | 64×40×3 | ok | cv2 `IMWRITE_JPEG_PROGRESSIVE`, 4:4:4; same tolerance (measured 2/255) |
| `jpeg_gray.jpg` | 40×56×1 | ok | 1-component JPEG; same tolerance (measured 1/255) |
| `jpeg_cmyk.jpg` | 32×48×3 | ok | Pillow CMYK (Adobe APP14, transform 0, inverted CMYK) → RGB; both decoders invert it the same way; JPEG tolerance (measured 2/255) |
| `png_rgb8.png` | 40×72×3 | ok | exact vs cv2 (1e-6) |
| `png_rgba8.png` | 48×36×4 | ok | alpha ramp; alpha included in min/max; exact |
| `png_gray8.png` | 33×47×1 | ok | exact |
| `png_graya8.png` | 30×44×2 | ok | Pillow LA. cv2 `IMREAD_UNCHANGED` gives 4 channels (B=G=R=L, A); test compares against channels (0, 3) |
| `png_palette.png` | 36×52×3 | ok | P mode, 32 colours, no tRNS → expanded to RGB; exact |
| `png_palette_trns.png` | 36×52×4 | ok | P mode + tRNS (per-index alpha) → expanded to RGBA; exact |
| `png_rgb16.png` | 40×56×3 | ok | 16-bit; exact |
| `png_gray16.png` | 44×30×1 | ok | 16-bit; exact |
| `png_rgba16.png` | 28×40×4 | ok | 16-bit with alpha; exact |
| `bmp_rgb.bmp` | 37×50×3 | ok | 24-bit BMP (row padding: 150 bytes → 152); exact |
| `tiff_rgb8.tif` | 40×48×3 | ok | cv2-written TIFF; exact |
| `tiff_rgb16.tif` | 36×44×3 | ok | 16-bit TIFF; exact |
| `tiff_gray16.tif` | 40×52×1 | ok | 16-bit TIFF; exact |
| `webp_lossless.webp` | 44×60×3 | ok | VP8L, no alpha used; exact |
| `webp_lossy.webp` | 44×60×3 | ok | VP8 q80; JPEG tolerance (image-webp 0.2.4 and libwebp measured identical) |
| `gif_anim.gif` | 40×56×4 (3 accepted) | ok | 3 frames, frame 0 is the reference; the `image` crate and cv2 (`IMREAD_UNCHANGED`) both give RGBA with alpha 255; exact (palette lookup) |
| `upper/IMAGE.JPG` | 36×60×3 | ok | uppercase extension, 4:4:4; JPEG tolerance |
| `noext/photo` | 32×40×3 | ok | PNG bytes without extension: recognised by content; exact |
| `odd names/ünïcödé café.png` | 24×34×3 | ok | space + non-ASCII (UTF-8, NFC) in the path; output `odd names/ünïcödé café.png.npy`; exact |
| `tiny/one_pixel.png` | 1×1×3 | ok | RGB (10,200,60): not constant under `--scope image` (→ 0, 1, 50/190 = 0.2632); every channel constant under `--scope channel` |
| `constant/flat.png` | 20×30×3 | ok | all 77: `constant: true`, output all = range low bound (0) |
| `exif/rotated.jpg` | 40×64×3 | ok | EXIF Orientation=6, stored 64 wide × 40 high, 4:4:4; default (`ignore`) like `IMREAD_UNCHANGED`; with `--exif-orientation apply` → 64×40×3 (rotated 90° clockwise), like `IMREAD_COLOR` |

## hostile/ (`centralized` exits 3)

| path | expected | why |
|---|---|---|
| `empty.jpg` | failed | 0 bytes; `.jpg` extension says image |
| `truncated.jpg` | failed | valid baseline JPEG (96×80) cut at 60%, no EOI; with `--allow-truncated` → ok (80×96×3) with a `warning` (missing part filled). Note: the `image` crate (zune-jpeg 0.5.15) decodes it *without any error*, so imgnorm has to detect the truncation itself |
| `truncated.png` | failed | valid PNG cut at 60% (IDAT incomplete, no IEND) |
| `random.jpg` | failed | 4 KiB random bytes (no known magic); `.jpg` extension says image |
| `text.png` | failed | ASCII text; `.png` extension says image |
| `bomb.png` | failed | IHDR claims 100000×100000 (1e10 px > default `--max-pixels` 100000000); IDAT is ~200 bytes; must be refused from the header, reason mentions the pixel limit (the `image` crate alone says "Memory limit exceeded") |
| `notes.txt` | skipped | plain text, no image extension or magic |
| `data.bin` | skipped | random bytes, no image extension or magic |

## What OpenCV (the Python baseline, `IMREAD_UNCHANGED`) does with these

* Gray+alpha PNG: 4 channels, B=G=R=L plus A (imgnorm keeps 2: L, A).
* Palette PNG: expanded to BGR, or BGRA when there is a tRNS chunk.
* GIF (OpenCV >= 4.11 has its own decoder): first frame, 4 channels BGRA,
  alpha 255 where opaque; `IMREAD_COLOR` gives 3.
* 16-bit PNG/TIFF: uint16 kept (Pillow, by contrast, reads the 16-bit RGB
  TIFF as 8-bit RGB).
* Truncated JPEG: `cv2.imread` returns the image with the missing part
  filled gray (128) and only prints "Premature end of JPEG file";
  `cv2.imdecode` of the same bytes returns None. The baseline (imread)
  therefore counts it ok.
* Bomb PNG: `cv2.imread` *raises* `cv2.error` (`pixels <=
  CV_IO_MAX_IMAGE_PIXELS`, 2^30) instead of returning None.
* `cv2.normalize` does not land exactly on the bounds: 1×1 (10,200,60) →
  1.86e-9 instead of 0; with range -1,1 → -0.99999994 and 1.0000001.

The table below is regenerated on every run (cv2.imdecode of the bytes):

PROBE_TABLE
"""


def probe(fixtures: Path) -> str:
    """What cv2.imread(IMREAD_UNCHANGED) returns for every fixture."""
    rows = ["| path | cv2 result |", "|---|---|"]
    for p in sorted(fixtures.rglob("*")):
        if not p.is_file() or p.name == "EXPECTED.md":
            continue
        rel = p.relative_to(fixtures).as_posix()
        data = np.frombuffer(p.read_bytes(), dtype=np.uint8)
        try:
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        except cv2.error as e:  # pragma: no cover - depends on the build
            img = None
            rel += f" (cv2.error: {str(e).strip().splitlines()[-1]})"
        if img is None:
            rows.append(f"| `{rel}` | None (fails) |")
        else:
            rows.append(f"| `{rel}` | {'×'.join(map(str, img.shape))} {img.dtype} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    args = ap.parse_args()
    out: Path = args.out
    for sub in ("formats", "hostile"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    make_formats(out / "formats")
    make_hostile(out / "hostile")
    cv2_versions = f"OpenCV {cv2.__version__}, NumPy {np.__version__}, Pillow {Image.__version__}"
    md = EXPECTED_MD.replace("PROBE_TABLE", f"Versions: {cv2_versions}\n\n" + probe(out))
    (out / "EXPECTED.md").write_text(md, encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    n = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"wrote {n} files, {total} bytes under {out}")


if __name__ == "__main__":
    main()
