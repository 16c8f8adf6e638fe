#!/usr/bin/env bash
# nasm, the assembler libjpeg-turbo's x86 SIMD code needs (owns only this
# check-and-install step). The JPEG decoder (mozjpeg-sys, built by cargo)
# uses SIMD when `nasm` is on PATH at build time and plain C otherwise; the
# pixels are identical either way, only the speed differs, so a machine
# without nasm still builds. Installs Debian's `nasm` with apt-get when
# missing. Idempotent; quiet when present. Exits 0 without nasm when apt-get
# is unavailable or not permitted (the build then uses the C code, with a
# note); exits non-zero when apt-get is there and fails.
set -euo pipefail

if command -v nasm >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "nasm-deps: no nasm and no apt-get: the JPEG decoder builds without SIMD (same pixels, slower)" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "nasm-deps: not root and no sudo: the JPEG decoder builds without SIMD (same pixels, slower)" >&2
        exit 0
    fi
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends nasm; } >"$log" 2>&1; then
    echo "nasm-deps: apt-get install nasm failed:" >&2
    cat "$log" >&2
    exit 1
fi
echo "nasm-deps: installed nasm (libjpeg-turbo SIMD for the JPEG decoder)"
