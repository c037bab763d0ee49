#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for testing the workflow's SLURM profile:
# controller and compute node both on 127.0.0.1 (own ports), munge authentication with a fresh key,
# no accounting database (so the profile must poll with squeue).
#
#   sudo scripts/slurm_localhost.sh          # install (Debian/Ubuntu apt), configure, start, wait
#   sinfo; sbatch --wrap hostname            # then use it
#
# Idempotent: if the node already answers idle, it only says so. It writes /etc/slurm/slurm.conf
# (job steps read the config there; SLURM_CONF is not seen by them) and /etc/munge/munge.key, and
# starts munged, slurmctld and slurmd (pid files under /run). Ports: SLURM_LOCAL_CTLD_PORT (16817),
# SLURM_LOCAL_SLURMD_PORT (16818).
set -euo pipefail

NODE=localnode
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-16818}
CONF=/etc/slurm/slurm.conf
WAIT_S=${SLURM_LOCAL_WAIT_S:-90}

log() { echo "slurm_localhost: $*" >&2; }

# the node's state as sinfo prints it (idle, mix, down, ...); empty when the controller does not answer
node_state() {
    timeout 10 sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null | head -n1 | tr -d '*~#$@^-' || true
}

if [ "$(id -u)" != 0 ]; then
    log "needs root (apt-get, /etc/slurm, daemons)"
    exit 1
fi

if command -v sinfo >/dev/null && [ -f "$CONF" ] && [ "$(node_state)" = idle ]; then
    log "node $NODE is already idle"
    exit 0
fi

# ---------------------------------------------------------------- install
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "generating a munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
fi
munge -n </dev/null | unmunge >/dev/null

# ---------------------------------------------------------------- slurm.conf
# The node's CPUs and memory as slurmd measures them (RealMemory a little lower, so the node is
# never drained for having less memory than configured).
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
if [ -z "$MEM_MB" ]; then
    MEM_MB=$(($(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024))
fi
MEM_MB=$((MEM_MB * 95 / 100))

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >"$CONF" <<EOF
# written by scripts/slurm_localhost.sh: one node, controller and node on 127.0.0.1
ClusterName=localhost
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
MailProg=/bin/true
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# keep finished jobs visible to squeue for 5 minutes (the profile polls with squeue)
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# ---------------------------------------------------------------- daemons
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running /run/slurmctld.pid; then
    scontrol reconfigure
else
    log "starting slurmctld"
    slurmctld
fi
if ! running /run/slurmd.pid; then
    log "starting slurmd"
    slurmd -N "$NODE"
fi

log "waiting for node $NODE to be idle (up to ${WAIT_S}s)"
sleep 2
deadline=$((SECONDS + WAIT_S))
while [ "$SECONDS" -lt "$deadline" ]; do
    for daemon in slurmctld slurmd; do
        if ! running "/run/$daemon.pid"; then
            log "$daemon is not running; the end of its log:"
            tail -n 20 "/var/log/slurm/$daemon.log" >&2 || true
            exit 1
        fi
    done
    case "$(node_state)" in
        idle)
            log "node $NODE is idle ($CPUS CPUs, ${MEM_MB} MB)"
            exit 0
            ;;
        down | drain | drng | unk) timeout 10 scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
log "node $NODE did not become idle; state: '$(node_state)'"
sinfo -N -l >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
