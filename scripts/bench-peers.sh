#!/usr/bin/env bash
# Installs the data frameworks `imgnorm bench --peers` compares against
# (Dask with distributed, Ray Data, Daft), on request only: they are large
# (Ray alone is some hundreds of MB) and no test needs them. The OpenCV peers
# need only scripts/py-deps.sh. Idempotent: installs what does not import.
#   scripts/bench-peers.sh            # all three
#   scripts/bench-peers.sh dask       # some of them
#   PYTHON=python3.11 scripts/bench-peers.sh
set -euo pipefail

PY="${PYTHON:-python3}"
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(dask ray daft)

"$(dirname "$0")/py-deps.sh"
for w in "${want[@]}"; do
    case "$w" in
        dask) mod='dask.distributed'; pkg='dask[distributed]' ;;
        ray) mod='ray.data'; pkg='ray[data]' ;;
        daft) mod='daft'; pkg='daft' ;;
        *) echo "bench-peers: unknown peer '$w' (dask, ray, daft)" >&2; exit 2 ;;
    esac
    if ! "$PY" -c "import $mod" >/dev/null 2>&1; then
        echo "bench-peers: installing $pkg" >&2
        "$PY" -m pip install -q --disable-pip-version-check "$pkg" >&2
    fi
    "$PY" -c "import $mod"
done
echo "bench-peers: ready: ${want[*]}" >&2
