"""JPEG pixels identical to libjpeg-turbo, the decoder OpenCV, Pillow and
torchvision use (owns only this file).

Builds a few hundred small JPEGs from scikit-image's bundled photographs
(random crops of odd sizes, so partial MCUs and edge padding are covered),
encoded by OpenCV, Pillow and imagecodecs (all libjpeg-turbo) at several
qualities, with every chroma subsampling (4:4:4, 4:2:2, 4:2:0, 4:4:0,
4:1:1), baseline, optimized Huffman tables, progressive, restart intervals,
grayscale, an RGB colour space (Adobe transform 0), CMYK (Pillow and
imagecodecs, Adobe inverted) and YCCK, plus the committed arithmetic-coded
files of ``tests/fixtures/jpeg_arith``. ``$IMGNORM_BIN centralized`` runs once
over all of them; each ``.npy`` is compared with
``cv2.normalize(cv2.imread(path, IMREAD_UNCHANGED), NORM_MINMAX, CV_32F)``.

The claim is exact decoding: the 8-bit samples behind our float32 output are
the samples OpenCV decodes, difference 0. The normalized values themselves
may differ by one float32 step (FORMAT.md: ``x*scale + shift`` versus
``(x - lo) / (hi - lo)``), so the test checks both: float values within 1e-6,
and the samples recovered from them (``round(v * (hi - lo) + lo)``, exact
because one sample step is 1/255 >> 1e-6) equal to OpenCV's.

Truncated files (``--allow-truncated``) must come out as ``cv2.imread`` gives
them: what was decoded, the missing part filled grey (128).

    IMGNORM_BIN=target/release/imgnorm python3 -m pytest -q tests/python/test_jpeg_exact.py

Needs scikit-image and imagecodecs besides the packages of test_outputs.py
(``scripts/py-deps.sh`` installs them all).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

# Skips the whole module (with test_outputs' message) when IMGNORM_BIN is unset.
from test_outputs import BIN, EXACT, TIMEOUT_S, cv2, cv2_norm, cv2_raw

skdata = pytest.importorskip("skimage.data", reason="scikit-image is needed (scripts/py-deps.sh)")
Image = pytest.importorskip("PIL.Image", reason="pillow is needed (scripts/py-deps.sh)")
imagecodecs = pytest.importorskip("imagecodecs", reason="imagecodecs is needed (scripts/py-deps.sh)")

SEED = 15
ARITH = Path(__file__).resolve().parent.parent / "fixtures" / "jpeg_arith"
# OpenCV's IMWRITE_JPEG_SAMPLING_FACTOR values (luma h/v factors; chroma 1x1).
SAMPLING = {
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "440": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
    "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411,
}


def photos() -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(colour RGB photos, grayscale photos) bundled with scikit-image."""
    color = [
        ("astronaut", skdata.astronaut()),
        ("chelsea", skdata.chelsea()),
        ("coffee", skdata.coffee()),
        ("rocket", skdata.rocket()),
        ("ihc", skdata.immunohistochemistry()),
        ("retina", skdata.retina()),
        ("hubble", skdata.hubble_deep_field()),
    ]
    gray = [
        ("camera", skdata.camera()),
        ("moon", skdata.moon()),
        ("coins", skdata.coins()),
        ("grass", skdata.grass()),
        ("brick", skdata.brick()),
    ]
    return color, gray


def crop(rng: np.random.Generator, img: np.ndarray, lo: int = 17, hi: int = 130) -> np.ndarray:
    h, w = (int(rng.integers(lo, hi)) for _ in range(2))
    h, w = min(h, img.shape[0]), min(w, img.shape[1])
    y = int(rng.integers(0, img.shape[0] - h + 1))
    x = int(rng.integers(0, img.shape[1] - w + 1))
    return np.ascontiguousarray(img[y : y + h, x : x + w])


def cv2_jpeg(img: np.ndarray, *params: int) -> bytes:
    """OpenCV-encoded JPEG of an RGB (H×W×3) or gray (H×W) array."""
    bgr = img[:, :, ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), list(params))
    assert ok
    return buf.tobytes()


def pil_jpeg(img: np.ndarray, mode: str | None = None, **kw) -> bytes:
    im = Image.fromarray(img)
    if mode:
        im = im.convert(mode)
    f = io.BytesIO()
    im.save(f, "JPEG", **kw)
    return f.getvalue()


def opencv_cases(rng, color) -> dict[str, bytes]:
    q, prog = cv2.IMWRITE_JPEG_QUALITY, cv2.IMWRITE_JPEG_PROGRESSIVE
    rst, opt, sf = cv2.IMWRITE_JPEG_RST_INTERVAL, cv2.IMWRITE_JPEG_OPTIMIZE, cv2.IMWRITE_JPEG_SAMPLING_FACTOR
    out = {}
    for name, img in color:
        for s, factor in SAMPLING.items():
            for quality in (50, 85, 98):
                out[f"cv/{name}_{s}_q{quality}.jpg"] = cv2_jpeg(crop(rng, img), q, quality, sf, factor)
            out[f"cv/{name}_{s}_opt.jpg"] = cv2_jpeg(crop(rng, img), q, 90, sf, factor, opt, 1)
            out[f"cv/{name}_{s}_prog.jpg"] = cv2_jpeg(crop(rng, img), q, 75, sf, factor, prog, 1)
            out[f"cv/{name}_{s}_rst1.jpg"] = cv2_jpeg(crop(rng, img), q, 90, sf, factor, rst, 1)
            out[f"cv/{name}_{s}_rst3_prog.jpg"] = cv2_jpeg(crop(rng, img), q, 95, sf, factor, rst, 3, prog, 1)
    return out


def other_cases(rng, color, gray) -> dict[str, bytes]:
    q, prog, rst = cv2.IMWRITE_JPEG_QUALITY, cv2.IMWRITE_JPEG_PROGRESSIVE, cv2.IMWRITE_JPEG_RST_INTERVAL
    out = {}
    for name, img in gray:
        for quality in (40, 90, 100):
            out[f"gray/{name}_q{quality}.jpg"] = cv2_jpeg(crop(rng, img), q, quality)
        out[f"gray/{name}_prog.jpg"] = cv2_jpeg(crop(rng, img), q, 85, prog, 1)
        out[f"gray/{name}_rst2.jpg"] = cv2_jpeg(crop(rng, img), q, 85, rst, 2)
        # Colour photo saved as gray by Pillow.
        out[f"gray/pil_{name}.jpg"] = pil_jpeg(crop(rng, img), quality=80)
    for name, img in color:
        for sub in (0, 1, 2):  # Pillow: 4:4:4, 4:2:2, 4:2:0
            out[f"pil/{name}_sub{sub}.jpg"] = pil_jpeg(crop(rng, img), quality=88, subsampling=sub)
            out[f"pil/{name}_sub{sub}_prog.jpg"] = pil_jpeg(crop(rng, img), quality=70, subsampling=sub, progressive=True)
        out[f"pil/{name}_gray.jpg"] = pil_jpeg(crop(rng, img), "L", quality=85)
        # CMYK: Pillow writes Adobe-inverted CMYK; imagecodecs CMYK and YCCK.
        for quality in (75, 95):
            out[f"cmyk/{name}_pil_q{quality}.jpg"] = pil_jpeg(crop(rng, img), "CMYK", quality=quality)
        # Adobe CMYK JPEGs store inverted values; imagecodecs writes the array
        # as given, so invert it (un-inverted, K=0 makes every pixel black).
        cmyk = 255 - np.asarray(Image.fromarray(crop(rng, img)).convert("CMYK"))
        out[f"cmyk/{name}_ic.jpg"] = bytes(imagecodecs.jpeg8_encode(cmyk, level=90, colorspace="CMYK", outcolorspace="CMYK"))
        cmyk = 255 - np.asarray(Image.fromarray(crop(rng, img)).convert("CMYK"))
        out[f"cmyk/{name}_ycck.jpg"] = bytes(imagecodecs.jpeg8_encode(cmyk, level=90, colorspace="CMYK", outcolorspace="YCCK"))
        # Stored as RGB (no YCbCr transform).
        rgb = crop(rng, img)
        out[f"rgb/{name}_rgb.jpg"] = bytes(imagecodecs.jpeg8_encode(rgb, level=92, colorspace="RGB", outcolorspace="RGB"))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpeg_exact") / "in"
    rng = np.random.default_rng(SEED)
    color, gray = photos()
    files = {**opencv_cases(rng, color), **other_cases(rng, color, gray)}
    # Arithmetic coding: no Python library writes it; committed files (README there).
    for p in sorted(ARITH.glob("*.jpg")):
        files[f"arith/{p.name}"] = p.read_bytes()
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def run_imgnorm(input_dir: Path, out: Path, *opts: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    cmd = [BIN, "centralized", "--input", str(input_dir), "--output", str(out), *opts]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    manifest = out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()] if manifest.is_file() else []
    return proc, {r["path"]: r for r in rows}


def compare(path: Path, npy: Path) -> str | None:
    """None when imgnorm's array equals OpenCV's decode exactly; else why not."""
    raw = cv2_raw(path, None)
    ref = cv2_norm(raw)
    out = np.load(npy, allow_pickle=False)
    if out.shape != ref.shape:
        return f"shape {out.shape} != OpenCV {ref.shape}"
    diff = float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max())
    lo, hi = int(raw.min()), int(raw.max())
    samples = np.rint(out.astype(np.float64) * (hi - lo) + lo).astype(np.int64)
    worst = int(np.abs(samples - raw.astype(np.int64)).max())
    differing = float((samples != raw).mean())
    if worst != 0 or diff > EXACT:
        return f"max sample diff {worst}/255 on {differing:.1%} of values (float diff {diff:.3g})"
    return None


def test_every_jpeg_decodes_exactly_like_opencv(corpus, tmp_path):
    files = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*.jpg"))
    assert len(files) >= 250, len(files)
    proc, rows = run_imgnorm(corpus, tmp_path / "out")
    assert sorted(rows) == files, proc.stderr[-3000:]
    bad = {}
    for rel in files:
        row = rows[rel]
        if row["status"] != "ok":
            bad[rel] = f"{row['status']}: {row.get('reason')}"
            continue
        why = compare(corpus / rel, tmp_path / "out" / row["output"])
        if why:
            bad[rel] = why
    summary = "\n".join(f"  {k}: {v}" for k, v in sorted(bad.items()))
    assert not bad, f"{len(bad)} of {len(files)} JPEGs differ from OpenCV (libjpeg-turbo):\n{summary}"
    assert proc.returncode == 0, proc.stderr[-3000:]


def cut_in_scan(data: bytes) -> bytes:
    """`data` cut halfway between the end of the first SOS header and the end."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    return data[: start + (len(data) - start) // 2]


def differing_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Height and width of the box holding every pixel where a and b differ."""
    ys, xs = np.nonzero((a != b).any(axis=2))
    return (0, 0) if ys.size == 0 else (int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))


def test_truncated_jpegs_filled_grey_like_opencv(corpus, tmp_path):
    """--allow-truncated: what was decoded plus grey, as cv2.imread gives it.

    Exact with libjpeg-turbo's SIMD (a build with nasm, as ./test.sh makes):
    checked on these files and ~630 other cuts. The plain C build may differ
    inside the one MCU where the data stops: its coefficients are garbage
    there, and the C and SIMD IDCTs overflow differently on garbage (on
    valid data they are bit-exact). So at most one 16x16 MCU may differ.
    """
    src = tmp_path / "in"
    src.mkdir()
    names = ["cv/astronaut_420_q85.jpg", "cv/coffee_444_q98.jpg", "cv/rocket_422_rst1.jpg", "gray/camera_q90.jpg",
             "cv/chelsea_420_prog.jpg", "pil/coffee_sub2_prog.jpg", "cmyk/astronaut_pil_q95.jpg",
             "cmyk/coffee_ycck.jpg", "cv/retina_411_q98.jpg", "cv/hubble_440_rst3_prog.jpg"]
    for i, rel in enumerate(names):
        (src / f"t{i}.jpg").write_bytes(cut_in_scan((corpus / rel).read_bytes()))
    proc, rows = run_imgnorm(src, tmp_path / "strict")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert all(r["status"] == "failed" and "truncated" in r["reason"] for r in rows.values()), rows
    proc, rows = run_imgnorm(src, tmp_path / "out", "--allow-truncated")
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = {}
    for i, rel in enumerate(names):
        row = rows[f"t{i}.jpg"]
        assert row["status"] == "ok" and "truncated" in row["warning"], row
        raw = cv2_raw(src / f"t{i}.jpg", None)
        out = np.load(tmp_path / "out" / row["output"], allow_pickle=False).astype(np.float64)
        assert out.shape == raw.shape, (rel, out.shape, raw.shape)
        lo, hi = int(raw.min()), int(raw.max())
        samples = np.rint(out * (hi - lo) + lo).astype(np.int64)
        box = differing_box(samples, raw.astype(np.int64))
        if box[0] > 16 or box[1] > 16:
            bad[rel] = f"differs from cv2.imread over a {box[0]}x{box[1]} box"
    assert not bad, f"truncated JPEGs differ from cv2.imread beyond the MCU where the data ends: {bad}"
