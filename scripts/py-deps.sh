#!/usr/bin/env bash
# Python test/benchmark dependencies (owns only this check-and-install step).
#
# Makes `python3 -c 'import numpy, cv2, PIL, pytest, pandas, webdataset,
# boto3, moto.server, xxhash, tifffile, imagecodecs'` work, installing with pip only the packages that are
# missing (numpy, opencv-python-headless, pillow, pytest; tifffile and
# imagecodecs write and read the TIFF variants of the conformance corpus
# (scripts/conformance-corpus.py); pandas and
# webdataset read the manifest and the shards in tests/python/test_formats.py;
# boto3 and moto[server]: the S3 tests start a real moto_server; xxhash
# recomputes the manifest's checksums). Idempotent:
# a no-op when all import. Quiet on
# success; prints pip's output and exits non-zero if pip fails or the
# imports still fail afterwards.
#   PYTHON=python3.11 scripts/py-deps.sh   # pick the interpreter (default python3)
set -euo pipefail

PY="${PYTHON:-python3}"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "py-deps: $PY not found" >&2
    exit 1
fi

# Selenium drives Chromium in tests/python/test_dashboard_browser.py.
if ! "$PY" -c 'import selenium' >/dev/null 2>&1; then
    if ! "$PY" -m pip install -q --disable-pip-version-check selenium >&2; then
        echo "py-deps: pip install selenium failed" >&2
        exit 1
    fi
fi

ALL='import numpy, cv2, PIL, pytest, pandas, webdataset, boto3, moto.server, xxhash, tifffile, imagecodecs'
if "$PY" -c "$ALL" >/dev/null 2>&1; then
    exit 0
fi

missing=()
"$PY" -c 'import numpy' >/dev/null 2>&1 || missing+=(numpy)
"$PY" -c 'import cv2' >/dev/null 2>&1 || missing+=(opencv-python-headless)
"$PY" -c 'import PIL' >/dev/null 2>&1 || missing+=(pillow)
"$PY" -c 'import pytest' >/dev/null 2>&1 || missing+=(pytest)
"$PY" -c 'import pandas' >/dev/null 2>&1 || missing+=(pandas)
"$PY" -c 'import webdataset' >/dev/null 2>&1 || missing+=(webdataset)
"$PY" -c 'import boto3' >/dev/null 2>&1 || missing+=(boto3)
"$PY" -c 'import moto.server' >/dev/null 2>&1 || missing+=('moto[server]')
"$PY" -c 'import xxhash' >/dev/null 2>&1 || missing+=(xxhash)
"$PY" -c 'import tifffile' >/dev/null 2>&1 || missing+=(tifffile)
"$PY" -c 'import imagecodecs' >/dev/null 2>&1 || missing+=(imagecodecs)

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
