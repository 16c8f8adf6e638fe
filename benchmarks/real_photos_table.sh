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
# Each set's ratios land in OUT/<set>-<fs>/results.md (SETS="jpeg png8"
# runs only those: jpeg, png8, png16). Nothing else should
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

for set in ${SETS:-jpeg png8 png16}; do
    if [ ! -d "$out/photos-$set" ]; then
        python3 benchmarks/real_photos.py --out "$out/photos-$set" --format "$set"
    fi
done

# JPEG through libjpeg-turbo's SIMD, as OpenCV's: nasm must be there when
# mozjpeg-sys is built, and cargo keeps a build made before it was.
scripts/nasm-deps.sh
target="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --release --quiet
if ! find "$target/release/build" -path '*mozjpeg-sys-*' -name jconfig.h \
    -exec grep -qx '#define WITH_SIMD 1' {} \; -print | grep -q .; then
    echo "real_photos_table: libjpeg-turbo was built without SIMD; rebuilding it" >&2
    cargo clean --release --quiet -p mozjpeg-sys
    cargo build --release --quiet
fi
bin="$target/release/imgnorm"

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
sets=" ${SETS:-jpeg png8 png16} "
if [[ $sets == *" jpeg "* ]]; then
    bench jpeg-ext4 jpeg opencv,dask,ray,daft
    mkdir -p "$tmpfs"
    bench jpeg-tmpfs jpeg opencv --scratch "$tmpfs"
fi
[[ $sets == *" png8 "* ]] && bench png8-ext4 png8 opencv
[[ $sets == *" png16 "* ]] && bench png16-ext4 png16 opencv
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in "$out"/*-*/results.md; do
    echo "--- $r"
    cat "$r"
done
