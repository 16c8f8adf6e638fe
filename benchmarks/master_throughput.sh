#!/usr/bin/env bash
# Measures how many images per second the master can coordinate, with the
# engine switched off (--dry-run: workers neither read nor decode, every file
# is reported as skipped), and the master's peak memory.
#
#   benchmarks/master_throughput.sh [COUNT=100000] [WORKERS=8] [BATCH=256]
#
# Uses the release binary (builds it if needed). Prints the run's JSON line
# and the master's peak RSS from stats.json.
set -euo pipefail
count=${1:-100000}
workers=${2:-8}
batch=${3:-256}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release -q -p imgnorm)
bin=$target/release/imgnorm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/input" "$count" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"img_{i:07d}.png"), "wb").close()
PY
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "files: $count, workers: $workers, batch size: $batch"
"$bin" run --quiet --dry-run --workers "$workers" --batch-size "$batch" \
  --input "$work/input" --output "$work/out" | tail -1
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("master peak RSS MiB:", s.get("peak_rss_mib"))' "$work/out/stats.json"
