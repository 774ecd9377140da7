#!/bin/sh
# Pre-script for PostgreSQL (appconsistent.vmsnapshot; preScriptLocation). It runs as root right
# before the filesystems are frozen and runs a CHECKPOINT: every change committed so far is written
# to the data files, so the snapshot needs almost no WAL replay when it is started.
#
# No lock is held, on purpose. The snapshot freezes every filesystem of the host and snapshots
# every disk while all of them are frozen, so it is atomic: the data directory, pg_wal and the
# tablespaces are taken at one instant, and PostgreSQL's documentation ("File System Level Backup")
# says such a snapshot starts like after a power loss and recovers every committed transaction
# (they are in the WAL, flushed at commit). The low-level backup API (pg_backup_start and
# pg_backup_stop in PostgreSQL 15; pg_start_backup is gone) is for copies that are not atomic: its
# backup_label comes from pg_backup_stop, after the snapshot, and the restore then also needs the
# archived WAL up to the end of the backup. Use it (with WAL archiving) when the data directory
# and pg_wal are on disks that are not snapshotted in the same run.
#
# Parameters (preScriptParams), each KEY=VALUE, all optional; give the post-script the same state_dir:
#   host=/var/run/postgresql   the socket directory (or a host name)
#   port=5432
#   os_user=postgres           the operating-system user psql runs as (peer authentication)
#   db_user=                   the database role (default: the os_user's name)
#   database=postgres
#   timeout=20                 the longest the CHECKPOINT may take; below timeoutInSeconds
#   state_dir=/run/vmsnapshot-db/postgresql   where the quiesce time is kept (never frozen)
#   psql=psql                  the client (for example /usr/pgsql-16/bin/psql)
#
# Exit codes: 0 checkpointed (stderr says when and how long it took); 1 failed.

set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
TAG=postgresql-pre

log() {
    printf '%s: %s\n' "$TAG" "$*" >&2
    logger -t "$TAG" -- "$*" 2>/dev/null || :
}
fail() {
    log "FAILED: $*"
    exit 1
}

host=/var/run/postgresql port=5432 os_user=postgres db_user='' database=postgres timeout=20
state_dir=/run/vmsnapshot-db/postgresql psql=psql
for arg in "$@"; do
    case $arg in
    host=*) host=${arg#*=} ;;
    port=*) port=${arg#*=} ;;
    os_user=*) os_user=${arg#*=} ;;
    db_user=*) db_user=${arg#*=} ;;
    database=*) database=${arg#*=} ;;
    timeout=*) timeout=${arg#*=} ;;
    state_dir=*) state_dir=${arg#*=} ;;
    psql=*) psql=${arg#*=} ;;
    *) fail "unknown parameter '$arg'" ;;
    esac
done
case $timeout$port in *[!0-9]*) fail "timeout and port are whole numbers" ;; esac
[ -n "$db_user" ] || db_user=$os_user

(umask 077 && mkdir -p -- "$state_dir") || fail "cannot make the state directory $state_dir"
rm -f -- "$state_dir/quiesced"
start=$(date +%s%N)
# runuser: the client runs as the database's own user, from a directory it can read.
if ! (cd / && timeout "$timeout" runuser -u "$os_user" -- "$psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$host" -p "$port" -U "$db_user" -d "$database" -c 'CHECKPOINT'); then
    fail "CHECKPOINT failed or took longer than ${timeout}s"
fi
end=$(date +%s%N)
checkpoint_ms=$(((end - start) / 1000000))
quiesced_at=$(printf '%s.%06d' "$((end / 1000000000))" "$(((end % 1000000000) / 1000))")
echo "quiesced_at=$quiesced_at checkpoint_ms=$checkpoint_ms" >"$state_dir/quiesced" ||
    fail "cannot write $state_dir/quiesced"
log "quiesced: quiesced_at=$quiesced_at checkpoint_ms=$checkpoint_ms (no lock held: see the comment)"
exit 0
