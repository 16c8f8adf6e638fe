#!/usr/bin/env bash
# The master's peak memory against the job's size: a dry run (--dry-run:
# workers neither read nor decode, every file is reported as skipped) of N
# files named in an --input-list (the files need not exist, so 10 M images
# cost no inodes), without and with the state database (--data-dir).
#
#   benchmarks/master_memory.sh [SIZES="100000 1000000"] [WORKERS=4] [BATCH=256]
#
# One row per size and mode: images, master peak RSS (VmHWM of the `run`
# process, which is the master; from stats.json), bytes per image, wall
# seconds, images/s, and the CPU seconds of every process (master and
# workers, from /usr/bin/time). Uses the release binary (IMGNORM_BIN
# overrides). Set FOLDER=1 to name the files by a folder of empty files
# instead of a list (for binaries without --input-list; slow to create).
# MODES="memory" runs without the state database only.
set -euo pipefail
sizes=${1:-"100000 1000000"}
workers=${2:-4}
batch=${3:-256}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${IMGNORM_BIN:-}" ]]; then
    (cd "$root" && cargo build --release -q -p imgnorm)
fi
bin=${IMGNORM_BIN:-$target/release/imgnorm}
work=$(mktemp -d "${TMPDIR:-/tmp}/imgnorm-mem.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary: $bin ($("$bin" --version))"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown) (of this script; the binary may be another)"
echo "workers: $workers, batch size: $batch"
echo
echo "| images | state | master peak RSS MiB | bytes/image | wall s | images/s | CPU s (all processes) |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for n in $sizes; do
    input=(--input-list "$work/list-$n.txt" --input "$work/in")
    if [[ -n "${FOLDER:-}" ]]; then
        python3 - "$work/in-$n" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"img_{i:07d}.png"), "wb").close()
PY
        input=(--input "$work/in-$n")
    else
        python3 - "$work/list-$n.txt" "$n" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(f"d{i // 1000:04d}/img_{i:07d}.png\n")
PY
    fi
    for mode in ${MODES:-memory sqlite}; do
        out="$work/out-$n-$mode"
        extra=()
        if [[ $mode == sqlite ]]; then
            extra=(--data-dir "$work/state-$n")
        fi
        /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
            "$bin" run --quiet --dry-run --workers "$workers" --batch-size "$batch" \
            "${input[@]}" --output "$out" "${extra[@]}" >"$work/line" || true
        read -r wall user sys _maxkb <"$work/time"
        python3 - "$out/stats.json" "$n" "$mode" "$wall" "$user" "$sys" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n, mode = int(sys.argv[2]), sys.argv[3]
wall, cpu = float(sys.argv[4]), float(sys.argv[5]) + float(sys.argv[6])
rss = s["peak_rss_mib"]
label = "in memory" if mode == "memory" else "--data-dir"
print(f"| {n:,} | {label} | {rss:.1f} | {rss * 1048576 / n:,.0f} | {wall:.1f} | {s['images_per_s']:,.0f} | {cpu:.1f} |")
PY
        rm -rf "$out" "$work/state-$n"
    done
    rm -rf "$work/in-$n" "$work/list-$n.txt"
done
