#!/usr/bin/env bash
# Stops the single-node Slurm cluster of scripts/slurm-up.sh: cancels every
# job still queued (there should be none: the tests check that), then stops
# slurmd, slurmctld and munged. Leaves the packages and the config in place,
# so slurm-up.sh starts the same cluster again quickly. Idempotent.
set -euo pipefail

sudo=""
[ "$(id -u)" != 0 ] && sudo="sudo -n"

if command -v squeue >/dev/null 2>&1 && squeue -h >/dev/null 2>&1; then
    left="$(squeue -h -o '%i' | tr '\n' ' ')"
    if [ -n "${left// /}" ]; then
        echo "slurm-down: cancelling jobs still queued: $left" >&2
        # shellcheck disable=SC2086
        $sudo scancel $left || true
    fi
fi

stop() {
    local pidfile="$1"
    [ -f "$pidfile" ] || return 0
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        $sudo kill "$pid" || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && $sudo kill -9 "$pid" || true
    fi
    $sudo rm -f "$pidfile"
}
stop /run/imgnorm-slurmd.pid
stop /run/imgnorm-slurmctld.pid
stop /run/munge/munged.pid
echo "slurm-down: stopped" >&2
