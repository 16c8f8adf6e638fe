"""Whole-dataset normalizations (``--scope dataset``, ``--standardize``)
recomputed with NumPy over the whole dataset.

The dataset mixes 8- and 16-bit, gray, RGB and RGBA lossless images (every
kind ``$IMGNORM_BIN gen --format mixed`` writes except JPEG and GIF, whose
decoders differ between OpenCV and imgnorm) plus one corrupt file, which must
be a failed row and must not count in the statistics. Each image is decoded
with ``cv2.imread(IMREAD_UNCHANGED)`` (BGR(A) turned into RGB(A)); channel
``k`` of the dataset is the ``k``-th channel of every image that has one. The
reference follows docs/FORMAT.md ("Whole-dataset normalization") in float64:

    u = a + (x - lo) * (b - a) / (hi - lo)      lo, hi per the scope
    z = (u - mean[k]) / std[k]                  population mean/std of u

    IMGNORM_BIN=target/release/imgnorm python3 -m pytest -q tests/python/test_scope.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

BIN_ENV = os.environ.get("IMGNORM_BIN", "").strip()
if not BIN_ENV:
    pytest.skip(
        "IMGNORM_BIN is not set: build imgnorm and run with "
        "IMGNORM_BIN=path/to/imgnorm to check its outputs",
        allow_module_level=True,
    )

BIN = shutil.which(BIN_ENV) or BIN_ENV
if not (Path(BIN).is_file() and os.access(BIN, os.X_OK)):
    pytest.fail(f"IMGNORM_BIN={BIN_ENV!r} is not an executable file", pytrace=False)

TIMEOUT_S = 120
# float32 outputs of values within a few units of 0: one rounding step is
# about 2.4e-7 per unit; 1e-6 absolute leaves room for that and no more.
ATOL = 1e-6
# Parameters are f64 on both sides; only the summation order differs.
RTOL_PARAMS = 1e-9


def run(*args: str, rc: int = 0) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [BIN, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert p.returncode == rc, f"{args}: rc={p.returncode} (want {rc})\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scope") / "in"
    run("gen", "--out", str(root), "--format", "mixed", "--size", "40x32",
        "--count", "48", "--seed", "5")
    for p in list(root.rglob("*")):
        if p.suffix.lower() in {".jpg", ".jpeg", ".gif"}:
            p.unlink()
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


def load(path: Path) -> np.ndarray:
    """cv2.imread(IMREAD_UNCHANGED) as H×W×C, RGB(A) order."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"cv2 cannot read {path}"
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.shape[2] == 4:
        img = img[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def normalize(input_dir: Path, out: Path, *opts: str, rc: int = 3):
    """Runs centralized (the corrupt file makes it exit 3); returns the ok
    rows with their raw (cv2) and written arrays, and stats.json."""
    run("centralized", "--quiet", "--input", str(input_dir), "--output", str(out), *opts, rc=rc)
    rows = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    broken = [r for r in rows if r["path"] == "broken.png"]
    assert broken and broken[0]["status"] == "failed" and broken[0]["reason"], broken
    assert not (out / "broken.png.npy").exists()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 12, f"only {len(ok)} ok rows"
    items = []
    for r in ok:
        raw = load(input_dir / r["path"])
        got = np.load(out / r["output"])
        if got.shape[2] == 3 and raw.shape[2] != 3:  # --channels rgb
            raw = np.repeat(raw, 3, axis=2) if raw.shape[2] == 1 else raw[:, :, :3]
        assert got.shape == raw.shape, r["path"]
        items.append((r, raw.astype(np.float64), got.astype(np.float64)))
    stats = json.loads((out / "stats.json").read_text())
    return items, stats


def channel_values(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Channel k of the dataset: the k-th channel of every array having one."""
    c = max(a.shape[2] for a in arrays)
    return [np.concatenate([a[:, :, k].ravel() for a in arrays if a.shape[2] > k]) for k in range(c)]


def full_scale(raw_row: dict) -> float:
    return 65535.0 if raw_row["bit_depth"] == 16 else 255.0


def minmax(x: np.ndarray, lo, hi, a=0.0, b=1.0) -> np.ndarray:
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, a + (x - lo) * (b - a) / span, a)


def zscore(us: list[np.ndarray]):
    vals = channel_values(us)
    mean = np.array([v.mean() for v in vals])
    std = np.array([v.std() for v in vals])
    return mean, std


def apply_z(u: np.ndarray, mean, std) -> np.ndarray:
    c = u.shape[2]
    s = np.where(std[:c] > 0, std[:c], 1.0)
    return (u - mean[:c]) / s


def assert_close_all(items, refs, what):
    for (r, _, got), ref in zip(items, refs):
        diff = np.abs(got - ref).max()
        assert diff <= ATOL * max(1.0, np.abs(ref).max()), f"{what} {r['path']}: max diff {diff:.3g}"


def assert_params(got, want, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: {got} vs {want}"
    assert np.allclose(got, want, rtol=RTOL_PARAMS, atol=1e-12), f"{what}: {got} vs {want}"


def test_scope_dataset_global(dataset: Path, tmp_path: Path):
    items, stats = normalize(dataset, tmp_path / "o", "--scope", "dataset", "--range", "-1,1")
    raws = [raw for _, raw, _ in items]
    lo = min(r.min() for r in raws)
    hi = max(r.max() for r in raws)
    assert_close_all(items, [minmax(r, lo, hi, -1.0, 1.0) for r in raws], "dataset scope")
    n = stats["normalization"]
    assert n["scope"] == "dataset" and n["per_channel"] is False
    assert (n["min"], n["max"]) == ([int(lo)], [int(hi)])
    assert "mean" not in n


def test_scope_dataset_per_channel(dataset: Path, tmp_path: Path):
    items, stats = normalize(dataset, tmp_path / "o", "--scope", "dataset", "--per-channel")
    raws = [raw for _, raw, _ in items]
    vals = channel_values(raws)
    lo = np.array([v.min() for v in vals])
    hi = np.array([v.max() for v in vals])
    refs = [minmax(r, lo[: r.shape[2]], hi[: r.shape[2]]) for r in raws]
    assert_close_all(items, refs, "per-channel dataset scope")
    n = stats["normalization"]
    assert n["min"] == [int(v) for v in lo] and n["max"] == [int(v) for v in hi]


def test_standardize_full_range(dataset: Path, tmp_path: Path):
    """--standardize alone: ToTensor-like x / full scale, then the dataset's
    per-channel mean and std."""
    items, stats = normalize(dataset, tmp_path / "o", "--standardize")
    us = [raw / full_scale(r) for r, raw, _ in items]
    mean, std = zscore(us)
    assert_close_all(items, [apply_z(u, mean, std) for u in us], "standardize")
    n = stats["normalization"]
    assert n["scope"] == "full" and n["standardize"] == "dataset"
    assert_params(n["mean"], mean, "mean")
    assert_params(n["std"], std, "std")
    # The written values of each channel have mean 0 and std 1.
    for k, v in enumerate(channel_values([got for _, _, got in items])):
        assert abs(v.mean()) < 1e-6 and abs(v.std() - 1.0) < 1e-6, (k, v.mean(), v.std())


def test_standardize_after_dataset_minmax(dataset: Path, tmp_path: Path):
    items, stats = normalize(
        dataset, tmp_path / "o", "--scope", "dataset", "--per-channel", "--standardize", "--dtype", "f16"
    )
    raws = [raw for _, raw, _ in items]
    vals = channel_values(raws)
    lo = np.array([v.min() for v in vals])
    hi = np.array([v.max() for v in vals])
    us = [minmax(r, lo[: r.shape[2]], hi[: r.shape[2]]) for r in raws]
    mean, std = zscore(us)
    assert_params(stats["normalization"]["mean"], mean, "mean")
    assert_params(stats["normalization"]["std"], std, "std")
    for (r, _, got), u in zip(items, us):
        ref = apply_z(u, mean, std)
        # float16: half a unit in the last place of the value.
        tol = np.maximum(np.abs(ref) * 2.0**-11, 2.0**-24)
        assert (np.abs(got - ref) <= tol).all(), r["path"]


def test_standardize_after_image_minmax(dataset: Path, tmp_path: Path):
    """Per-image min-max first: the statistics are those of the scaled values."""
    items, stats = normalize(dataset, tmp_path / "o", "--scope", "image", "--standardize")
    us = [minmax(raw, raw.min(), raw.max()) for _, raw, _ in items]
    mean, std = zscore(us)
    assert_params(stats["normalization"]["mean"], mean, "mean")
    assert_close_all(items, [apply_z(u, mean, std) for u in us], "image+standardize")


def test_given_mean_std_imagenet(dataset: Path, tmp_path: Path):
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    items, stats = normalize(
        dataset, tmp_path / "o", "--channels", "rgb",
        "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)),
    )
    refs = [(raw / full_scale(r) - mean) / std for r, raw, _ in items]
    for (r, _, got), ref in zip(items, refs):
        assert np.abs(got - ref).max() <= 1e-5, r["path"]
    assert stats["normalization"]["standardize"] == "given"
    assert_params(stats["normalization"]["mean"], mean, "mean")


def test_standardize_refuses_integer_output(dataset: Path, tmp_path: Path):
    p = run("centralized", "--quiet", "--input", str(dataset), "--output", str(tmp_path / "o"),
            "--standardize", "--dtype", "u8", rc=2)
    assert "float output" in p.stderr


def test_scope_full_without_standardize(dataset: Path, tmp_path: Path):
    """--scope full alone: x / 255 or x / 65535 into --range, one pass."""
    items, stats = normalize(dataset, tmp_path / "o", "--scope", "full", "--range", "0,2")
    refs = [minmax(raw, 0.0, full_scale(r), 0.0, 2.0) for r, raw, _ in items]
    assert_close_all(items, refs, "full scope")
    n = stats["normalization"]
    assert n["scope"] == "full" and "min" not in n and "standardize" not in n


def bins_of(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """docs/FORMAT.md's bin rule: floor((v - lo) / (hi - lo) * 256), clamped."""
    idx = np.clip(np.floor((values - lo) / (hi - lo) * 256), 0, 255).astype(np.int64)
    return np.bincount(idx, minlength=256)


def test_output_statistics_of_standardized_arrays(dataset: Path, tmp_path: Path):
    """stats.json "dataset" describes the written z-scores; its histogram
    range is where [a, b] lands, over all channels."""
    items, stats = normalize(dataset, tmp_path / "o", "--scope", "dataset", "--standardize")
    n, d = stats["normalization"], stats["dataset"]
    ends = [(e - m) / s for m, s in zip(n["mean"], n["std"]) for e in (0.0, 1.0)]
    lo, hi = d["histogram_range"]
    assert lo == pytest.approx(min(ends), rel=1e-12) and hi == pytest.approx(max(ends), rel=1e-12)
    for k, values in enumerate(channel_values([got for _, _, got in items])):
        got = d["channels"][k]
        assert got["count"] == values.size
        assert got["min"] == values.min() and got["max"] == values.max()
        assert got["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
        assert got["std"] == pytest.approx(values.std(), rel=1e-9, abs=1e-12)
        assert got["histogram"] == bins_of(values, lo, hi).tolist()
