#!/usr/bin/env bash
# Stop the one-node test SLURM cluster started by start_cluster.sh.
# Idempotent: does nothing for daemons that are not running. Stops slurmd,
# then slurmctld, then munged. Job state (and finished jobs, see MinJobAge)
# is kept in /var/lib/slurm/slurmctld and survives a restart.
#
# Usage: stop_cluster.sh [--purge-state]
#   --purge-state  also delete the saved controller state (job records)
#                  and the slurm logs, for a fresh cluster on next start.
set -euo pipefail

log() { printf '[stop_cluster] %s\n' "$*"; }

if [[ ${EUID} -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    log "ERROR: must run as root" >&2
    exit 1
fi

purge=0
[[ ${1:-} == --purge-state ]] && purge=1

# stop PIDFILE NAME BINARY
stop() {
    local pf=$1 name=$2 bin=$3 pids="" pid i
    if [[ -s $pf ]]; then
        pid=$(<"$pf")
        if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(</proc/$pid/comm) == "$name" ]]; then
            pids=$pid
        fi
    fi
    # Fallback for a lost/stale pid file: processes whose executable is
    # exactly this daemon binary (not a broad name match).
    if [[ -z $pids ]]; then
        for d in /proc/[0-9]*; do
            [[ $(readlink "$d/exe" 2>/dev/null || true) == "$bin" ]] && pids+=" ${d#/proc/}"
        done
    fi
    pids=${pids# }
    if [[ -z $pids ]]; then
        log "$name not running"
        rm -f "$pf"
        return 0
    fi
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 75); do
        local alive=0
        for pid in $pids; do [[ -d /proc/$pid ]] && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for pid in $pids; do
        if [[ -d /proc/$pid ]]; then
            kill -KILL "$pid" 2>/dev/null || true
            log "$name (pid $pid) did not exit on TERM, killed"
        fi
    done
    rm -f "$pf"
    log "stopped $name (pid $pids)"
}

# Cancel queued/running jobs first so no job steps (slurmstepd) outlive the
# cluster. Finished job records are kept.
if command -v squeue >/dev/null 2>&1; then
    jobs=$(timeout 10 squeue -h -o %i -t PENDING,RUNNING,SUSPENDED,CONFIGURING 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        log "cancelling active jobs: $(echo $jobs)"
        timeout 10 scancel $jobs 2>/dev/null || true
        for i in $(seq 1 50); do
            [[ -z $(timeout 10 squeue -h -o %i -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING 2>/dev/null || true) ]] && break
            sleep 0.2
        done
    fi
fi

stop /run/slurm/slurmd.pid slurmd /usr/sbin/slurmd
stop /run/slurm/slurmctld.pid slurmctld /usr/sbin/slurmctld
stop /run/munge/munged.pid munged /usr/sbin/munged

if ((purge)); then
    rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/* /var/log/slurm/*
    log "purged controller state, slurmd spool and logs"
fi
