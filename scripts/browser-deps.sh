#!/usr/bin/env bash
# Browser for the dashboard's end-to-end test (owns only this check-and-install
# step): Debian's `chromium` and `chromium-driver`, installed with apt-get when
# missing. Idempotent; quiet when both are present. Exits 0 without a browser
# when apt-get is unavailable (the test then skips loudly, or fails under
# IMGNORM_REQUIRE_BROWSER=1); exits non-zero when apt-get is there but fails.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser-deps: no apt-get here; install chromium and chromedriver yourself" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo -n"
    else
        echo "browser-deps: not root and no sudo: cannot install chromium" >&2
        exit 0
    fi
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
    echo "browser-deps: apt-get install chromium chromium-driver failed:" >&2
    cat "$log" >&2
    exit 1
fi
