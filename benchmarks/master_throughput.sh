#!/usr/bin/env bash
# Measures how many images per second the master can coordinate, with the
# engine switched off (--dry-run: workers neither read nor decode, every file
# is reported as skipped), and the master's peak memory; side by side without
# and with the state database (--data-dir), so the cost of persisting every
# result is read as a ratio from one run (the machines are shared and noisy).
#
#   benchmarks/master_throughput.sh [COUNT=100000] [WORKERS=8] [BATCH=256] [ROUNDS=3]
#
# Uses the release binary (builds it if needed; IMGNORM_BIN overrides).
# Prints one line per run, then the medians and the ratio.
set -euo pipefail
count=${1:-100000}
workers=${2:-8}
batch=${3:-256}
rounds=${4:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${IMGNORM_BIN:-}" ]]; then
    (cd "$root" && cargo build --release -q -p imgnorm)
fi
bin=${IMGNORM_BIN:-$target/release/imgnorm}
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
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "files: $count, workers: $workers, batch size: $batch, rounds: $rounds"
results="$work/results.tsv"
for r in $(seq "$rounds"); do
    for mode in memory sqlite; do
        out="$work/out-$mode-$r"
        extra=()
        if [[ $mode == sqlite ]]; then
            extra=(--data-dir "$work/state-$r")
        fi
        "$bin" run --quiet --dry-run --workers "$workers" --batch-size "$batch" \
            --input "$work/input" --output "$out" "${extra[@]}" >"$work/line" || true
        db=0
        if [[ $mode == sqlite ]]; then
            db=$(du -sk "$work/state-$r" | cut -f1)
        fi
        python3 - "$out/stats.json" "$mode" "$r" "$db" >>"$results" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{s['elapsed_s']}\t{s['images_per_s']}\t{s.get('peak_rss_mib')}\t{sys.argv[4]}")
PY
        tail -1 "$results" | awk -F'\t' '{printf "round %s %-6s %7.3f s %9.0f images/s  master peak RSS %s MiB  state dir %s KiB\n", $2, $1, $3, $4, $5, $6}'
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
med = {}
print()
print("| state | median seconds | median images/s | master peak RSS MiB |")
print("|---|---|---|---|")
for mode in ("memory", "sqlite"):
    rs = [r for r in rows if r[0] == mode]
    secs = statistics.median(float(r[2]) for r in rs)
    ips = statistics.median(float(r[3]) for r in rs)
    rss = max(float(r[4]) for r in rs)
    med[mode] = ips
    label = "in memory" if mode == "memory" else "--data-dir (SQLite)"
    print(f"| {label} | {secs:.3f} | {ips:,.0f} | {rss:.1f} |")
print()
print(f"throughput with --data-dir / without: {med['sqlite'] / med['memory']:.2f}")
PY
