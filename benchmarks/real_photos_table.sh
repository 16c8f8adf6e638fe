#!/usr/bin/env bash
# The whole real-photo comparison of docs/BENCHMARKS.md in one command, for a
# quiet machine: makes the photo sets (benchmarks/real_photos.py), builds the
# release binary, then runs `imgnorm bench` on each set, interleaved round by
# round, with outputs on the chosen file systems:
#
#   JPEG set, ext4 and tmpfs: centralized, run --workers 1 and 2, the OpenCV
#                             script and Pool(2), Dask, Ray Data, Daft
#   PNG 8- and 16-bit, ext4:  centralized, run --workers 1 and 2, OpenCV
#
# Each set's ratios land in OUT/<set>-<fs>/results.md. Nothing else should
# run on the machine meanwhile (about 30 minutes on 2 cores); check with
# `uptime` first. Peers that do not import are skipped (scripts/bench-peers.sh
# installs them).
#
#   benchmarks/real_photos_table.sh OUT [REPEAT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${1:?usage: benchmarks/real_photos_table.sh OUT [REPEAT]}"
repeat="${2:-5}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

for set in jpeg png8 png16; do
    if [ ! -d "$out/photos-$set" ]; then
        python3 benchmarks/real_photos.py --out "$out/photos-$set" --format "$set"
    fi
done

cargo build --release --quiet
bin="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/imgnorm"

tmpfs=/dev/shm/imgnorm-bench-scratch
trap 'rm -rf "$tmpfs"' EXIT
echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

bench() { # NAME SET PEERS [--scratch DIR]
    local name="$1" set="$2" peers="$3"
    shift 3
    echo "==> $name"
    timeout -k 10 3600 "$bin" bench --input "$out/photos-$set" --workers 1,2 \
        --repeat "$repeat" --peers "$peers" --out "$out/$name" "$@"
}
bench jpeg-ext4 jpeg opencv,dask,ray,daft
mkdir -p "$tmpfs"
bench jpeg-tmpfs jpeg opencv --scratch "$tmpfs"
bench png8-ext4 png8 opencv
bench png16-ext4 png16 opencv
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in "$out"/*/results.md; do
    echo "--- $r"
    cat "$r"
done
