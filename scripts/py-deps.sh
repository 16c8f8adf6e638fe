#!/usr/bin/env bash
# Python test/benchmark dependencies (owns only this check-and-install step).
#
# Makes every module in PACKAGES below import together, installing with pip
# only the packages that are missing. What each is for:
#   numpy, cv2 (opencv-python-headless), PIL (pillow), pytest: the output checks
#   pandas, webdataset: read the manifest and the shards (tests/python/test_formats.py)
#   boto3, moto.server: the S3 tests start a real moto_server
#   xxhash: recomputes the manifest's checksums
#   skimage (scikit-image): bundled photographs, the corpus of test_jpeg_exact.py
#       and of the real-photo benchmark
#   imagecodecs: JPEG writer for CMYK/YCCK/RGB-coded files, TIFF codecs
#   tifffile: writes and reads the TIFF variants of the conformance corpus
#       (scripts/conformance-corpus.py)
#   kubernetes_validate, yaml (pyyaml): check deploy/k8s against the API schema
#   selenium: drives Chromium in tests/python/test_dashboard_browser.py
# Idempotent: a no-op when all import. Quiet on success; prints pip's output
# and exits non-zero if pip fails or the imports still fail afterwards.
#   PYTHON=python3.11 scripts/py-deps.sh   # pick the interpreter (default python3)
set -euo pipefail

PY="${PYTHON:-python3}"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "py-deps: $PY not found" >&2
    exit 1
fi

# module:pip-package, one per line.
PACKAGES='
numpy:numpy
cv2:opencv-python-headless
PIL:pillow
pytest:pytest
pandas:pandas
webdataset:webdataset
boto3:boto3
moto.server:moto[server]
xxhash:xxhash
skimage:scikit-image
imagecodecs:imagecodecs
tifffile:tifffile
kubernetes_validate:kubernetes-validate
yaml:pyyaml
selenium:selenium
'

modules=()
for entry in $PACKAGES; do modules+=("${entry%%:*}"); done
ALL="import $(IFS=,; echo "${modules[*]}")"
if "$PY" -c "$ALL" >/dev/null 2>&1; then
    exit 0
fi

missing=()
for entry in $PACKAGES; do
    "$PY" -c "import ${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done

if [ "${#missing[@]}" -eq 0 ]; then
    # Each imports alone but not together (e.g. cv2 built against another numpy).
    echo "py-deps: the test packages import one by one but not together:" >&2
    "$PY" -c "$ALL" >&2 || true
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$PY" -m pip install -q --disable-pip-version-check "${missing[@]}" >"$log" 2>&1; then
    echo "py-deps: pip install ${missing[*]} failed:" >&2
    cat "$log" >&2
    exit 1
fi

if ! "$PY" -c "$ALL" 2>"$log"; then
    echo "py-deps: installed ${missing[*]} but the imports still fail:" >&2
    cat "$log" >&2
    exit 1
fi
echo "py-deps: installed ${missing[*]}"
