"""End-to-end output checks of the imgnorm binary against OpenCV (owns only this file).

Runs ``$IMGNORM_BIN centralized`` on the committed fixtures
(``tests/fixtures``, made by ``scripts/make_fixtures.py``; expectations in
``tests/fixtures/EXPECTED.md``) and checks the ``.npy`` outputs, the
manifest, the summary line and the exit codes, with OpenCV + NumPy as the
reference (``cv2.normalize(img, None, a, b, NORM_MINMAX, CV_32F)`` over
``cv2.imread(path, IMREAD_UNCHANGED)``).

    IMGNORM_BIN=target/release/imgnorm python3 -m pytest -q tests/python

The whole module is skipped (with a message saying so) when ``IMGNORM_BIN``
is unset. Needs numpy, opencv-python-headless, pillow, pytest
(``scripts/py-deps.sh``); ``xxhash``, if installed, enables the checksum check.

Tolerances, and why:
* lossless formats (PNG of every kind, BMP, TIFF, WebP lossless, GIF,
  palette expansion): 1e-6 absolute. Same integers in, so only float
  rounding differs (cv2 itself lands 2e-9 off 0 and 1e-7 past the bounds).
* JPEG (and CMYK JPEG, lossy WebP): max 5/255, mean < 1/255 absolute on the
  normalized values. Lossy WebP: imgnorm decodes with image-webp, OpenCV
  with libwebp (identical on these fixtures). JPEG is now decoded by
  libjpeg-turbo like OpenCV, and test_jpeg_exact.py checks it exactly on a
  few hundred photos; the loose JPEG tolerance here is kept only so these
  checks do not depend on the JPEG decoder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip(
        "IMGNORM_BIN is not set: build imgnorm and run with "
        "IMGNORM_BIN=path/to/imgnorm to check its outputs",
        allow_module_level=True,
    )

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is needed (scripts/py-deps.sh)")

BIN = shutil.which(BIN_ENV) or BIN_ENV
if not (Path(BIN).is_file() and os.access(BIN, os.X_OK)):
    pytest.fail(f"IMGNORM_BIN={BIN_ENV!r} is not an executable file", pytrace=False)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FORMATS = FIXTURES / "formats"
HOSTILE = FIXTURES / "hostile"
TIMEOUT_S = 120

EXACT = 1e-6
JPEG_MAX = 5 / 255 + 1e-6
JPEG_MEAN = 1 / 255

# rel path -> (H, W, C) with default options, bits per sample, format name,
# how values compare with OpenCV ("exact" | "jpeg").
# C None: 3 or 4 accepted (GIF: the image crate decodes to RGBA, OpenCV gives
# BGRA with alpha 255; RGB would be fine too).
F = {
    "jpeg_baseline.jpg": ((48, 64, 3), 8, "jpeg", "jpeg"),
    "jpeg_progressive.jpg": ((64, 40, 3), 8, "jpeg", "jpeg"),
    "jpeg_gray.jpg": ((40, 56, 1), 8, "jpeg", "jpeg"),
    "jpeg_cmyk.jpg": ((32, 48, 3), 8, "jpeg", "jpeg"),
    "png_rgb8.png": ((40, 72, 3), 8, "png", "exact"),
    "png_rgba8.png": ((48, 36, 4), 8, "png", "exact"),
    "png_gray8.png": ((33, 47, 1), 8, "png", "exact"),
    "png_graya8.png": ((30, 44, 2), 8, "png", "exact"),
    "png_palette.png": ((36, 52, 3), 8, "png", "exact"),
    "png_palette_trns.png": ((36, 52, 4), 8, "png", "exact"),
    "png_rgb16.png": ((40, 56, 3), 16, "png", "exact"),
    "png_gray16.png": ((44, 30, 1), 16, "png", "exact"),
    "png_rgba16.png": ((28, 40, 4), 16, "png", "exact"),
    "bmp_rgb.bmp": ((37, 50, 3), 8, "bmp", "exact"),
    "tiff_rgb8.tif": ((40, 48, 3), 8, "tiff", "exact"),
    "tiff_rgb16.tif": ((36, 44, 3), 16, "tiff", "exact"),
    "tiff_gray16.tif": ((40, 52, 1), 16, "tiff", "exact"),
    "webp_lossless.webp": ((44, 60, 3), 8, "webp", "exact"),
    "webp_lossy.webp": ((44, 60, 3), 8, "webp", "jpeg"),
    "gif_anim.gif": ((40, 56, None), 8, "gif", "exact"),
    "upper/IMAGE.JPG": ((36, 60, 3), 8, "jpeg", "jpeg"),
    "noext/photo": ((32, 40, 3), 8, "png", "exact"),
    "odd names/ünïcödé café.png": ((24, 34, 3), 8, "png", "exact"),
    "tiny/one_pixel.png": ((1, 1, 3), 8, "png", "exact"),
    "constant/flat.png": ((20, 30, 3), 8, "png", "exact"),
    "exif/rotated.jpg": ((40, 64, 3), 8, "jpeg", "jpeg"),
}
CONSTANT = {"constant/flat.png"}
HOSTILE_EXPECTED = {
    "bomb.png": "failed",
    "data.bin": "skipped",
    "empty.jpg": "failed",
    "notes.txt": "skipped",
    "random.jpg": "failed",
    "text.png": "failed",
    "truncated.jpg": "failed",
    "truncated.png": "failed",
}
SUMMARY_KEYS = {"images", "ok", "failed", "skipped", "seconds", "images_per_s"}


# --------------------------------------------------------------------------
# Running the binary (each distinct invocation once per session).
# --------------------------------------------------------------------------
@dataclass
class Run:
    proc: subprocess.CompletedProcess
    out: Path
    rows: list[dict]
    summary: dict | None
    seconds: float

    @property
    def by_path(self) -> dict[str, dict]:
        return {r["path"]: r for r in self.rows}

    def array(self, rel: str) -> np.ndarray:
        row = self.by_path[rel]
        assert row["status"] == "ok", row
        return np.load(self.out / row["output"], allow_pickle=False)

    def why(self) -> str:
        return f"exit {self.proc.returncode}\nstdout:\n{self.proc.stdout[-3000:]}\nstderr:\n{self.proc.stderr[-3000:]}"


_RUNS: dict[tuple, Run] = {}


@pytest.fixture(scope="session")
def imgnorm(tmp_path_factory):
    """imgnorm(input_dir, *options) -> Run, cached per arguments."""

    def go(input_dir: Path, *opts: str) -> Run:
        key = (str(input_dir), opts)
        if key in _RUNS:
            return _RUNS[key]
        out = tmp_path_factory.mktemp("imgnorm") / "out"  # does not exist yet
        cmd = [BIN, "centralized", "--input", str(input_dir), "--output", str(out), *opts]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"{' '.join(cmd)} ran over {TIMEOUT_S}s (stderr: {e.stderr!r})")
        seconds = time.monotonic() - t0
        rows: list[dict] = []
        manifest = out / "manifest.jsonl"
        if manifest.is_file():
            rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
        summary = None
        lines = proc.stdout.strip().splitlines()
        if lines:
            try:
                summary = json.loads(lines[-1])
            except json.JSONDecodeError:
                summary = None
        run = Run(proc, out, rows, summary, seconds)
        _RUNS[key] = run
        return run

    return go


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------
# OpenCV reference.
# --------------------------------------------------------------------------
def cv2_raw(path: Path, channels: int | None, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2.imread as H×W×C in imgnorm's channel order, shaped to `channels`.

    OpenCV quirks handled here: 2-D gray → H×W×1; BGR(A) → RGB(A); gray+alpha
    PNG comes back as 4 channels B=G=R=L, A → (L, A); GIF comes back BGRA
    with alpha 255 → alpha dropped if imgnorm gives 3 channels.
    """
    img = cv2.imread(str(path), flags)
    assert img is not None, f"cv2 cannot read {path}"
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.shape[2] == 4:
        if channels == 2:
            assert (img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 1] == img[:, :, 2]).all()
            img = img[:, :, [0, 3]]
        elif channels == 3:
            img = img[:, :, [2, 1, 0]]
        else:
            img = img[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def cv2_norm(raw: np.ndarray, a: float = 0.0, b: float = 1.0) -> np.ndarray:
    out = cv2.normalize(raw, None, a, b, cv2.NORM_MINMAX, cv2.CV_32F)
    return out.reshape(raw.shape)


def cv2_norm_channels(raw: np.ndarray) -> np.ndarray:
    return np.stack([cv2_norm(np.ascontiguousarray(raw[:, :, c])) for c in range(raw.shape[2])], axis=-1)


def assert_close(out: np.ndarray, ref: np.ndarray, kind: str, what: str) -> None:
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != reference {ref.shape}"
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    if kind == "exact":
        assert diff.max() <= EXACT, f"{what}: max abs diff {diff.max():.3g} > {EXACT}"
    else:
        assert diff.max() <= JPEG_MAX, f"{what}: max abs diff {diff.max() * 255:.2f}/255 > 5/255"
        assert diff.mean() < JPEG_MEAN, f"{what}: mean abs diff {diff.mean() * 255:.3f}/255 >= 1/255"


def npy_header(path: Path) -> tuple[tuple, bool, np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)


def counts_in(obj) -> dict | None:
    """The {ok, failed, skipped} counts in stats.json, top level or nested."""
    if isinstance(obj, dict):
        if {"ok", "failed"} <= obj.keys() and all(isinstance(obj[k], int) for k in ("ok", "failed")):
            return obj
        for v in obj.values():
            found = counts_in(v)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------
# formats/: everything ok, default options.
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fmt_run(imgnorm) -> Run:
    return imgnorm(FORMATS)


def test_fixture_table_matches_disk():
    assert sorted(F) == all_files(FORMATS), "tests/fixtures/formats changed: update F (and EXPECTED.md)"
    assert sorted(HOSTILE_EXPECTED) == all_files(HOSTILE)


def test_formats_exit_code_and_summary(fmt_run):
    assert fmt_run.proc.returncode == 0, fmt_run.why()
    s = fmt_run.summary
    assert s is not None, "last stdout line is not JSON:\n" + fmt_run.why()
    assert SUMMARY_KEYS <= s.keys(), s
    assert (s["images"], s["ok"], s["failed"], s["skipped"]) == (len(F), len(F), 0, 0), s
    assert s["seconds"] >= 0 and s["images_per_s"] >= 0


def test_stats_json(fmt_run):
    stats = json.loads((fmt_run.out / "stats.json").read_text(encoding="utf-8"))
    assert isinstance(stats, dict)
    counts = counts_in(stats)
    if counts is not None:
        assert counts["ok"] == len(F) and counts["failed"] == 0, stats


def test_manifest_rows(fmt_run):
    paths = [r["path"] for r in fmt_run.rows]
    assert paths == sorted(paths), "manifest is not sorted by path"
    assert paths == sorted(F), "manifest rows != input files"
    for r in fmt_run.rows:
        rel = r["path"]
        (h, w, c), bits, fmt, _ = F[rel]
        assert r["status"] == "ok", r
        assert "reason" not in r, r
        assert r["output"] == rel + ".npy", r
        assert (fmt_run.out / r["output"]).is_file(), r
        assert (r["height"], r["width"]) == (h, w), r
        assert r["channels"] == c if c is not None else r["channels"] in (3, 4), r
        assert r["bit_depth"] == bits, r
        assert fmt in r["format"].lower(), r
        assert re.fullmatch(r"[0-9a-f]{32}", r["checksum"]), r
        assert len(r["min"]) == 1 and len(r["max"]) == 1, r
        assert all(isinstance(v, int) for v in r["min"] + r["max"]), r
        if rel in CONSTANT:
            assert r.get("constant") is True and r["min"] == r["max"], r
        else:
            assert "constant" not in r and r["min"][0] < r["max"][0], r


def assert_no_stray_files(out: Path, npys: set[str]) -> None:
    """Exactly the expected .npy files, no temp files; other files only at top level
    (the one hidden file is the inputs' stamps a rerun compares)."""
    files = set(all_files(out))
    assert {"manifest.jsonl", "stats.json", ".imgnorm-inputs.jsonl"} <= files
    assert {f for f in files if f.endswith(".npy")} == npys
    others = files - npys - {"manifest.jsonl", "stats.json", ".imgnorm-inputs.jsonl"}
    assert all("/" not in f and not f.startswith(".") and not f.endswith(".tmp") for f in others), others


def test_no_stray_files(fmt_run):
    assert_no_stray_files(fmt_run.out, {rel + ".npy" for rel in F})


@pytest.mark.parametrize("rel", sorted(F))
def test_array_layout_and_range(fmt_run, rel):
    (h, w, c), _, _, _ = F[rel]
    path = fmt_run.out / (rel + ".npy")
    shape, fortran, dtype = npy_header(path)
    assert dtype.str == "<f4" and not fortran, (dtype.str, fortran)
    arr = np.load(path, allow_pickle=False)
    assert arr.dtype == np.float32 and arr.ndim == 3
    assert arr.shape[:2] == (h, w) and (arr.shape[2] == c if c is not None else arr.shape[2] in (3, 4)), arr.shape
    assert np.isfinite(arr).all()
    assert arr.min() >= -EXACT and arr.max() <= 1 + EXACT
    if rel in CONSTANT:
        assert (arr == 0).all(), "constant image must be all = range low bound"
    else:
        assert abs(float(arr.min())) <= EXACT and abs(float(arr.max()) - 1) <= EXACT


@pytest.mark.parametrize("rel", sorted(F))
def test_matches_opencv(fmt_run, rel):
    _, _, _, kind = F[rel]
    out = fmt_run.array(rel)
    raw = cv2_raw(FORMATS / rel, out.shape[2])
    assert_close(out, cv2_norm(raw), kind, rel)
    if kind == "exact":  # same decoded integers: the manifest's min/max too
        row = fmt_run.by_path[rel]
        assert row["min"] == [int(raw.min())] and row["max"] == [int(raw.max())], row


def test_checksums(fmt_run):
    import xxhash  # installed by scripts/py-deps.sh

    for r in fmt_run.rows:
        data = (fmt_run.out / r["output"]).read_bytes()
        assert r["checksum"] == xxhash.xxh3_128_hexdigest(data), r["path"]


def test_one_pixel_values(fmt_run):
    """RGB (10, 200, 60) → (0, 1, 50/190) under the image scope."""
    out = fmt_run.array("tiny/one_pixel.png")
    np.testing.assert_allclose(out.reshape(-1), [0, 1, 50 / 190], atol=EXACT)


def test_gray_alpha_kept_as_two_channels(fmt_run):
    """OpenCV returns LA PNGs as 4 channels (B=G=R=L, A); imgnorm keeps (L, A)."""
    out = fmt_run.array("png_graya8.png")
    assert out.shape[2] == 2
    assert cv2.imread(str(FORMATS / "png_graya8.png"), cv2.IMREAD_UNCHANGED).shape[2] == 4


# --------------------------------------------------------------------------
# EXIF orientation.
# --------------------------------------------------------------------------
def test_exif_ignored_by_default(fmt_run):
    row = fmt_run.by_path["exif/rotated.jpg"]
    assert (row["height"], row["width"]) == (40, 64), row


def test_exif_apply(imgnorm):
    run = imgnorm(FORMATS, "--exif-orientation", "apply")
    assert run.proc.returncode == 0, run.why()
    out = run.array("exif/rotated.jpg")
    assert out.shape == (64, 40, 3), "Orientation=6 stored 64×40 must come out 40 wide × 64 high"
    row = run.by_path["exif/rotated.jpg"]
    assert (row["height"], row["width"]) == (64, 40), row
    # IMREAD_COLOR applies the EXIF orientation (IMREAD_UNCHANGED does not).
    ref = cv2_norm(cv2_raw(FORMATS / "exif/rotated.jpg", 3, cv2.IMREAD_COLOR))
    assert_close(out, ref, "jpeg", "exif/rotated.jpg (apply)")
    stored = cv2_norm(cv2_raw(FORMATS / "exif/rotated.jpg", 3))
    assert_close(out, np.rot90(stored, k=-1), "jpeg", "rotated 90° clockwise")
    # Files without the tag are unaffected.
    np.testing.assert_array_equal(run.array("png_rgb8.png"), imgnorm(FORMATS).array("png_rgb8.png"))


# --------------------------------------------------------------------------
# hostile/: failures are rows, not crashes.
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def hostile_run(imgnorm) -> Run:
    return imgnorm(HOSTILE)


def test_hostile_exit_code_and_summary(hostile_run):
    assert hostile_run.proc.returncode == 3, hostile_run.why()
    s = hostile_run.summary
    assert s is not None and SUMMARY_KEYS <= s.keys(), hostile_run.why()
    assert (s["images"], s["ok"], s["failed"], s["skipped"]) == (8, 0, 6, 2), s
    # The bomb must be refused from its header, not by trying to allocate 10 GB.
    assert hostile_run.seconds < 60


def test_hostile_rows(hostile_run):
    by = hostile_run.by_path
    assert sorted(by) == sorted(HOSTILE_EXPECTED)
    assert [r["path"] for r in hostile_run.rows] == sorted(by)
    for rel, status in HOSTILE_EXPECTED.items():
        r = by[rel]
        assert r["status"] == status, r
        assert isinstance(r.get("reason"), str) and r["reason"].strip(), f"{rel}: {status} row needs a reason: {r}"
        assert not (hostile_run.out / (rel + ".npy")).exists(), f"{rel}: no output expected"
        assert "checksum" not in r, r
    assert_no_stray_files(hostile_run.out, set())


def test_bomb_reason_mentions_pixel_limit(hostile_run):
    reason = hostile_run.by_path["bomb.png"]["reason"].lower()
    assert "pixel" in reason, reason
    assert re.search(r"limit|max|exceed|too (large|big|many)|100000000|100 ?000 ?000|1e8", reason), reason


def test_truncated_jpeg_allowed(imgnorm):
    run = imgnorm(HOSTILE, "--allow-truncated")
    assert run.proc.returncode == 3, run.why()  # the other hostile files still fail
    by = run.by_path
    r = by["truncated.jpg"]
    assert r["status"] == "ok", r
    assert isinstance(r.get("warning"), str) and r["warning"].strip(), r
    out = run.array("truncated.jpg")
    assert out.shape == (80, 96, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= -EXACT and out.max() <= 1 + EXACT
    for rel, status in HOSTILE_EXPECTED.items():
        if rel != "truncated.jpg":
            assert by[rel]["status"] == status, by[rel]
    assert run.summary is not None and (run.summary["ok"], run.summary["failed"]) == (1, 5), run.summary


def test_max_pixels_option(imgnorm):
    run = imgnorm(FORMATS, "--max-pixels", "100")
    assert run.proc.returncode == 3, run.why()
    by = run.by_path
    assert by["tiny/one_pixel.png"]["status"] == "ok"
    r = by["png_rgb8.png"]
    assert r["status"] == "failed" and "pixel" in r["reason"].lower(), r


# --------------------------------------------------------------------------
# Options: dtype, scope, range, channels.
# --------------------------------------------------------------------------
def test_dtype_u8(imgnorm):
    run = imgnorm(FORMATS, "--dtype", "u8")
    assert run.proc.returncode == 0, run.why()
    for rel in F:
        assert npy_header(run.out / (rel + ".npy"))[2].str == "|u1", rel
    out = run.array("png_rgb8.png")
    ref = cv2_norm(cv2_raw(FORMATS / "png_rgb8.png", 3)).astype(np.float64) * 255
    assert np.abs(out - ref).max() <= 0.5 + 1e-3  # rounded
    assert out.min() == 0 and out.max() == 255
    assert (run.array("constant/flat.png") == 0).all()


def test_dtype_u16(imgnorm):
    run = imgnorm(FORMATS, "--dtype", "u16")
    assert run.proc.returncode == 0, run.why()
    for rel in F:
        assert npy_header(run.out / (rel + ".npy"))[2].str == "<u2", rel
    out = run.array("png_rgb16.png")
    raw = cv2_raw(FORMATS / "png_rgb16.png", 3).astype(np.float64)
    ref = (raw - raw.min()) / (raw.max() - raw.min()) * 65535
    assert np.abs(out - ref).max() <= 0.5 + 1e-2
    assert out.min() == 0 and out.max() == 65535


def test_dtype_f16(imgnorm):
    run = imgnorm(FORMATS, "--dtype", "f16")
    assert run.proc.returncode == 0, run.why()
    for rel in F:
        assert npy_header(run.out / (rel + ".npy"))[2].str == "<f2", rel
    out = run.array("png_rgba16.png")
    ref = cv2_norm(cv2_raw(FORMATS / "png_rgba16.png", 4))
    assert np.abs(out.astype(np.float64) - ref).max() <= 2.5e-4  # f16 half-ulp below 1 is 2.4e-4
    assert out.min() == 0 and out.max() == 1


def test_scope_channel(imgnorm):
    run = imgnorm(FORMATS, "--scope", "channel")
    assert run.proc.returncode == 0, run.why()
    for rel in ("png_rgb8.png", "png_rgba8.png", "png_rgb16.png", "png_graya8.png", "bmp_rgb.bmp"):
        out = run.array(rel)
        raw = cv2_raw(FORMATS / rel, out.shape[2])
        assert_close(out, cv2_norm_channels(raw), "exact", rel + " --scope channel")
        flat = out.reshape(-1, out.shape[2])
        np.testing.assert_allclose(flat.min(axis=0), 0, atol=EXACT)
        np.testing.assert_allclose(flat.max(axis=0), 1, atol=EXACT)
        row = run.by_path[rel]
        rflat = raw.reshape(-1, raw.shape[2])
        assert row["min"] == rflat.min(axis=0).tolist() and row["max"] == rflat.max(axis=0).tolist(), row
        assert "constant" not in row
    # 1×1 RGB: every channel is constant on its own → all low bound.
    row = run.by_path["tiny/one_pixel.png"]
    assert row.get("constant") is True and len(row["min"]) == 3, row
    assert (run.array("tiny/one_pixel.png") == 0).all()
    jpeg = run.array("jpeg_baseline.jpg")
    assert_close(jpeg, cv2_norm_channels(cv2_raw(FORMATS / "jpeg_baseline.jpg", 3)), "jpeg", "jpeg --scope channel")


def test_range_minus_one_one(imgnorm):
    # "=" form: with a space, "-1,1" looks like a flag to clap unless the
    # option sets allow_hyphen_values.
    run = imgnorm(FORMATS, "--range=-1,1")
    assert run.proc.returncode == 0, run.why()
    for rel in ("png_rgb8.png", "png_rgba16.png", "tiff_gray16.tif"):
        out = run.array(rel)
        assert out.dtype == np.float32
        ref = cv2_norm(cv2_raw(FORMATS / rel, out.shape[2]), -1, 1)
        assert np.abs(out - ref).max() <= 2 * EXACT, rel
        assert abs(float(out.min()) + 1) <= EXACT and abs(float(out.max()) - 1) <= EXACT
    assert (run.array("constant/flat.png") == -1).all()
    for rel in F:
        arr = run.array(rel)
        assert arr.min() >= -1 - EXACT and arr.max() <= 1 + EXACT, rel


def test_range_inverted(imgnorm):
    """--range 1,0: a may exceed b, which flips the scale (cv2.normalize would not)."""
    run = imgnorm(FORMATS, "--range", "1,0")
    assert run.proc.returncode == 0, run.why()
    out = run.array("png_rgb8.png")
    ref = 1 - cv2_norm(cv2_raw(FORMATS / "png_rgb8.png", 3))
    assert np.abs(out - ref).max() <= 2 * EXACT


def test_channels_gray(imgnorm):
    run = imgnorm(FORMATS, "--channels", "gray")
    assert run.proc.returncode == 0, run.why()
    for rel in F:
        (h, w, _), *_ = F[rel]
        arr = run.array(rel)
        assert arr.shape == (h, w, 1), (rel, arr.shape)
        assert run.by_path[rel]["channels"] == 1
    # BT.601 luma (cv2.COLOR_RGB2GRAY weights), computed here in float64.
    # imgnorm may round the luma to the source's integer type first (as
    # OpenCV does): that moves each value and the min/max by <= 0.5 level,
    # so allow 1.5 levels of the luma's own range (palette content spans few
    # levels, which magnifies this).
    for rel in ("png_rgb8.png", "png_rgba8.png", "png_palette.png", "png_rgb16.png"):
        raw = cv2_raw(FORMATS / rel, 3).astype(np.float64)
        luma = 0.299 * raw[:, :, 0] + 0.587 * raw[:, :, 1] + 0.114 * raw[:, :, 2]
        levels = luma.max() - luma.min()
        ref = ((luma - luma.min()) / levels)[:, :, None]
        diff = np.abs(run.array(rel) - ref)
        assert diff.max() <= 1.5 / levels + EXACT, (rel, diff.max() * levels)
        assert diff.mean() <= 0.75 / levels, (rel, diff.mean() * levels)
    # The same within the same slack against OpenCV's own (uint8-rounded) luma.
    raw8 = cv2_raw(FORMATS / "png_rgb8.png", 3)
    ref8 = cv2_norm(cv2.cvtColor(raw8, cv2.COLOR_RGB2GRAY)[:, :, None])
    assert np.abs(run.array("png_rgb8.png") - ref8).max() <= 2 / 255
    # Gray input stays as it is; gray+alpha drops the alpha.
    for rel in ("png_gray8.png", "png_gray16.png"):
        assert_close(run.array(rel), cv2_norm(cv2_raw(FORMATS / rel, 1)), "exact", rel)
    la = cv2_raw(FORMATS / "png_graya8.png", 2)
    assert_close(run.array("png_graya8.png"), cv2_norm(np.ascontiguousarray(la[:, :, :1])), "exact", "LA → L")


def test_channels_rgb(imgnorm):
    run = imgnorm(FORMATS, "--channels", "rgb")
    assert run.proc.returncode == 0, run.why()
    for rel in F:
        assert run.array(rel).shape[2] == 3, rel
    g = run.array("png_gray8.png")
    assert (g[:, :, 0] == g[:, :, 1]).all() and (g[:, :, 1] == g[:, :, 2]).all()
    assert_close(g[:, :, :1], cv2_norm(cv2_raw(FORMATS / "png_gray8.png", 1)), "exact", "gray → rgb")
    assert_close(run.array("png_rgba8.png"), cv2_norm(cv2_raw(FORMATS / "png_rgba8.png", 3)), "exact", "rgba → rgb")


# --------------------------------------------------------------------------
# Usage / IO errors: exit 2.
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["--input", "/nonexistent/imgnorm-input"],
        ["--input", str(FORMATS), "--dtype", "f64"],
        ["--input", str(FORMATS), "--dtype", "u8", "--range=-1,1"],
        ["--input", str(FORMATS), "--range", "0,1,2"],
        ["--input", str(FORMATS), "--scope", "pixel"],
    ],
    ids=["missing-input", "bad-dtype", "range-outside-dtype", "bad-range", "bad-scope"],
)
def test_usage_errors_exit_2(tmp_path, args):
    proc = subprocess.run(
        [BIN, "centralized", *args, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
