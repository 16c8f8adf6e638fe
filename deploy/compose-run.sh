#!/bin/sh
# Runs one job on a compose cluster (deploy/compose.yaml) and returns the
# master's exit code (0 all images ok, 3 some failed, 2 error), while a
# worker container that dies (OOM kill, `docker kill`) costs only its
# in-flight images, which the master hands to the others:
#
#     export IMGNORM_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
#     deploy/compose-run.sh 4            # 4 workers (default 2)
#
# Why not `compose up --exit-code-from master`: it implies
# --abort-on-container-exit, so the first worker to die stops every
# container, master included. This script starts the cluster detached
# (`up -d`, workers once the master is healthy), waits for the master
# container alone (`docker wait`), then stops the workers (SIGTERM: they
# drain and exit 0). Works with `docker compose` (v2) and `docker-compose`
# (1.29). Ctrl-C or SIGTERM stops the cluster (the master keeps its state:
# run the script again to resume the job). Containers stay for their logs
# (`logs master`); `down -v` removes them and the volumes.
#
# Variables, besides those of deploy/compose.yaml (here relative paths are
# relative to the current directory, not to deploy/):
#   IMGNORM_INPUT   default ./demo/input (where `imgnorm demo` writes)
#   IMGNORM_OUTPUT  default ./demo/output; created if missing
#   IMGNORM_USER    default: your uid:gid, so the output is yours and
#                   writable by the containers
#   COMPOSE_PROJECT_NAME  as for compose (default: deploy)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
workers=${1:-2}
case $workers in
    '' | *[!0-9]*) echo "usage: $0 [WORKERS]" >&2; exit 2 ;;
esac

if docker compose version >/dev/null 2>&1; then
    compose="docker compose"
elif command -v docker-compose >/dev/null 2>&1; then
    compose=docker-compose
else
    echo "compose-run: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 2
fi

absolute() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}
IMGNORM_INPUT=$(absolute "${IMGNORM_INPUT:-demo/input}")
IMGNORM_OUTPUT=$(absolute "${IMGNORM_OUTPUT:-demo/output}")
IMGNORM_USER=${IMGNORM_USER:-$(id -u):$(id -g)}
export IMGNORM_INPUT IMGNORM_OUTPUT IMGNORM_USER
if [ ! -d "$IMGNORM_INPUT" ]; then
    echo "compose-run: input folder $IMGNORM_INPUT does not exist (imgnorm demo writes ./demo/input)" >&2
    exit 2
fi
# Created by us, not by Docker (which would make it root's, unwritable by
# the containers' user).
mkdir -p "$IMGNORM_OUTPUT"

c() { $compose -f "$here/compose.yaml" "$@"; }

waiter=
stop() {
    [ -n "$waiter" ] && kill "$waiter" 2>/dev/null
    c stop -t 30 >&2 || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

c up -d --scale "worker=$workers" >&2
master=$(c ps -q master)
if [ -z "$master" ]; then
    echo "compose-run: the master container did not start" >&2
    stop
    exit 2
fi
# `docker wait` prints the container's exit code once it has stopped; run
# in the background so that a signal to this script is handled at once.
result=$(mktemp "${TMPDIR:-/tmp}/compose-run.XXXXXX")
docker wait "$master" >"$result" &
waiter=$!
wait "$waiter" || true
waiter=
code=$(cat "$result")
rm -f "$result"
c logs --no-color --tail 20 master >&2 || true
stop
case $code in
    '' | *[!0-9]*) echo "compose-run: cannot read the master's exit code" >&2; exit 2 ;;
esac
exit "$code"
