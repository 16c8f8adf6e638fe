#!/usr/bin/env bash
# Container tests (tests/docker): builds imgnorm:latest with
# scripts/build-image.sh, then runs a master and workers as containers on
# private Docker networks (kill, partition, restart, stream mode, compose).
#
#   scripts/test-docker.sh              # all container tests
#   scripts/test-docker.sh -k partition # extra arguments go to pytest
#
# IMGNORM_SKIP_DOCKER=1     skip (loudly) — e.g. on machines without Docker
# IMGNORM_REQUIRE_DOCKER=1  fail instead of skipping when Docker is missing
# CARGO_TARGET_DIR          reused for the static build (warm rebuilds are fast)
# Leaves no containers or networks behind; the only images are imgnorm:*.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

if [[ "${IMGNORM_SKIP_DOCKER:-0}" == 1 ]]; then
    echo "!!!!! test-docker: IMGNORM_SKIP_DOCKER=1 — container tests SKIPPED !!!!!" >&2
    exit 0
fi
if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    if [[ "${IMGNORM_REQUIRE_DOCKER:-0}" == 1 ]]; then
        echo "test-docker: IMGNORM_REQUIRE_DOCKER=1 but Docker is not available" >&2
        exit 1
    fi
    echo "!!!!! test-docker: Docker not available — container tests SKIPPED !!!!!" >&2
    exit 0
fi
if ! "$PY" -c 'import pytest' >/dev/null 2>&1; then
    "$PY" -m pip install --quiet pytest
fi
cd "$root"
exec "$PY" -m pytest -p no:cacheprovider -ra tests/docker "$@"
