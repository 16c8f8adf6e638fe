#!/usr/bin/env bash
# A single-node Slurm cluster on this machine for the Slurm tests
# (tests/it/slurm.rs) and for trying `--autoscale slurm` by hand. Owns only
# this step: installs Debian's `slurm-wlm` and `munge` with apt-get when
# missing, writes /etc/slurm/slurm.conf for this host (NodeName = `hostname
# -s`, CPUs from nproc, RealMemory from /proc/meminfo, one partition
# `imgnorm`), starts munged, slurmctld and slurmd as root (no systemd
# needed), and waits until `sinfo` shows the node idle. Idempotent: with the
# same config and the daemons answering it only checks the node.
#
#   scripts/slurm-up.sh      # needs root (or passwordless sudo); CI runs as root
#   scripts/slurm-down.sh    # stops the daemons again
#
# Cgroups are not assumed to be delegated (containers, CI runners): process
# tracking is proctrack/linuxproc and there is no task plugin, so jobs are
# not confined to their CPUs. That is a test cluster, not a production one.
# Exit codes: 0 the node is idle; 1 it could not be installed or started
# (the reason and the daemons' log tails are printed).
set -euo pipefail

conf_dir=/etc/slurm
state=/var/lib/imgnorm-slurm
logs=/var/log/imgnorm-slurm
wait_s="${SLURM_UP_TIMEOUT:-60}"

say() { echo "slurm-up: $*" >&2; }
die() {
    say "$*"
    for f in "$logs"/slurmctld.log "$logs"/slurmd.log "$logs"/munged.log; do
        [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        die "needs root (or passwordless sudo) to install and start Slurm"
    fi
fi

# --- 1. Packages --------------------------------------------------------------
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 ||
    ! command -v munged >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "Slurm is not installed and there is no apt-get"
    say "installing slurm-wlm and munge with apt-get"
    log="$(mktemp)"
    if ! { $sudo apt-get update &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
            slurm-wlm munge; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get install slurm-wlm munge failed"
    fi
    rm -f "$log"
fi

# --- 2. Munge (authentication between the daemons and the clients) ---------------
$sudo mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge "$logs"
if ! id munge >/dev/null 2>&1; then
    die "the munge package did not create the munge user"
fi
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null 2>&1; then
        $sudo mungekey --create --keyfile=/etc/munge/munge.key
    else
        $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
$sudo chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
$sudo chmod 0700 /etc/munge
$sudo chmod 0400 /etc/munge/munge.key
$sudo chmod 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    $sudo rm -f /run/munge/munged.pid
    $sudo runuser -u munge -- /usr/sbin/munged --log-file=/var/log/munge/munged.log ||
        die "munged did not start"
    for _ in $(seq 1 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not answer"
fi

# --- 3. slurm.conf for this host -----------------------------------------------
host="$(hostname -s)"
cpus="$(nproc)"
mem_kib="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
# Leave 10% to the system: slurmd refuses a RealMemory above what it sees.
real_mib=$((mem_kib / 1024 * 9 / 10))
conf="$(mktemp)"
trap 'rm -f "$conf"' EXIT
cat >"$conf" <<EOF
# Written by imgnorm's scripts/slurm-up.sh: a single-node test cluster.
ClusterName=imgnorm
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=/run/imgnorm-slurmctld.pid
SlurmdPidFile=/run/imgnorm-slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Seconds between SIGTERM and SIGKILL on scancel, a time limit or preemption.
KillWait=10
SchedulerParameters=sched_interval=1
MessageTimeout=20
NodeName=$host CPUs=$cpus RealMemory=$real_mib State=UNKNOWN
PartitionName=imgnorm Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
$sudo mkdir -p "$conf_dir" "$state/ctld" "$state/d"
changed=0
if ! cmp -s "$conf" "$conf_dir/slurm.conf"; then
    $sudo cp "$conf" "$conf_dir/slurm.conf"
    $sudo chmod 0644 "$conf_dir/slurm.conf"
    changed=1
fi

# --- 4. Daemons ---------------------------------------------------------------
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$changed" = 1 ]; then
    for p in /run/imgnorm-slurmd.pid /run/imgnorm-slurmctld.pid; do
        if running "$p"; then
            say "config changed: restarting $(basename "$p" .pid)"
            $sudo kill "$(cat "$p")" || true
            for _ in $(seq 1 50); do running "$p" || break; sleep 0.1; done
        fi
    done
fi
if ! running /run/imgnorm-slurmctld.pid; then
    say "starting slurmctld"
    $sudo slurmctld || die "slurmctld did not start"
fi
if ! running /run/imgnorm-slurmd.pid; then
    say "starting slurmd"
    $sudo slurmd || die "slurmd did not start"
fi

# --- 5. Wait for the node ---------------------------------------------------------
deadline=$((SECONDS + wait_s))
state_now=""
while [ "$SECONDS" -lt "$deadline" ]; do
    state_now="$(sinfo -h -n "$host" -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$state_now" in
        idle | mixed | allocated) break ;;
        down* | drain* | drained*)
            # A node that was down when slurmctld restarted: take it back.
            $sudo scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state_now" in
    idle | mixed | allocated) say "node $host is $state_now (partition imgnorm, $cpus CPUs)" ;;
    *) die "node $host is '${state_now:-unknown}' after ${wait_s}s, not idle" ;;
esac

# --- 6. Leftovers of earlier test runs -----------------------------------------
# A test run that was killed (or a machine stopped mid-run) can leave its
# worker jobs queued; on this two-CPU cluster they would hold the CPUs the
# next run's workers wait for. Only jobs named by imgnorm masters
# (`imgnorm-…`) are cancelled.
stale="$(squeue -h -o '%i %j' 2>/dev/null | awk '$2 ~ /^imgnorm-/ {print $1}' || true)"
if [ -n "$stale" ]; then
    say "cancelling leftover jobs of earlier runs: $(echo $stale)"
    # shellcheck disable=SC2086
    $sudo scancel $stale || true
fi
