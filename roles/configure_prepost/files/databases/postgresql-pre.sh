#!/bin/sh
# Pre-script for PostgreSQL (appconsistent.vmsnapshot; preScriptLocation). It runs as root right
# before the filesystems are frozen and, when it fits in its time, runs a CHECKPOINT: every change
# committed so far is written to the data files, so the snapshot needs almost no WAL replay when
# it is started.
#
# No lock is held, on purpose. The snapshot freezes every filesystem of the host and snapshots
# every disk while all of them are frozen, so it is atomic: the data directory, pg_wal and the
# tablespaces are taken at one instant, and PostgreSQL's documentation ("File System Level Backup")
# says such a snapshot starts like after a power loss and recovers every committed transaction
# (they are in the WAL, flushed at commit). The CHECKPOINT only shortens that replay. The
# low-level backup API (pg_backup_start and pg_backup_stop in PostgreSQL 15; pg_start_backup is
# gone) is for copies that are not atomic: its backup_label comes from pg_backup_stop, after the
# snapshot, and the restore then also needs the archived WAL up to the end of the backup. Use it
# (with WAL archiving) when the data directory and pg_wal are on disks that are not snapshotted
# in the same run.
#
# Why the CHECKPOINT is asked for only when it fits: the checkpointer process does the work, not
# the session that asked (checkpointer.c, RequestCheckpoint). Cancelling that session
# (statement_timeout here, pg_cancel_backend, or killing psql) only ends its wait; the checkpoint
# goes on, at full speed, into the freeze, and nothing short of a server crash stops it. So with
# checkpoint=auto the script asks for one only when the last one is idle and the work is small:
# the WAL written since the last checkpoint's redo point (every page changed since then is in it)
# is at most max_wal_mb, and, once a checkpoint of this host was timed, the time it predicts is
# at most half of timeout. Otherwise it skips the CHECKPOINT (the snapshot is still consistent;
# the restore replays that WAL) and says so.
#
# Parameters (preScriptParams), each KEY=VALUE, all optional; give the post-script the same state_dir:
#   host=/var/run/postgresql   the socket directory (or a host name)
#   port=5432
#   os_user=postgres           the operating-system user psql runs as (peer authentication)
#   db_user=                   the database role (default: the os_user's name); it needs
#                              pg_checkpoint and pg_monitor, or superuser
#   database=postgres
#   checkpoint=auto            auto: only when it fits (above); always: whenever the checkpointer
#                              is idle; never: no CHECKPOINT (the restore replays more WAL)
#   max_wal_mb=32              auto: the most WAL since the last checkpoint it will take on
#   timeout=15                 the longest this script runs; keep it 10 s or more below the
#                              plugin's timeoutInSeconds. The CHECKPOINT is cancelled at
#                              timeout - 2 s (statement_timeout)
#   state_dir=/run/vmsnapshot-db/postgresql   where the quiesce and the last checkpoint's pace are
#                              kept (never frozen)
#   psql=psql                  the client (for example /usr/pgsql-16/bin/psql)
#
# Exit codes: 0 quiesced (checkpointed, or the checkpoint skipped; stderr says which and why);
#             1 failed (no server, bad parameter, or the CHECKPOINT ran past its time: the
#               checkpointer then finishes it on its own, and the next run with checkpoint=auto
#               skips until the pace it measured fits).

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

host=/var/run/postgresql port=5432 os_user=postgres db_user='' database=postgres timeout=15
checkpoint=auto max_wal_mb=32 state_dir=/run/vmsnapshot-db/postgresql psql=psql
for arg in "$@"; do
    case $arg in
    host=*) host=${arg#*=} ;;
    port=*) port=${arg#*=} ;;
    os_user=*) os_user=${arg#*=} ;;
    db_user=*) db_user=${arg#*=} ;;
    database=*) database=${arg#*=} ;;
    checkpoint=auto | checkpoint=always | checkpoint=never) checkpoint=${arg#*=} ;;
    max_wal_mb=*) max_wal_mb=${arg#*=} ;;
    timeout=*) timeout=${arg#*=} ;;
    state_dir=*) state_dir=${arg#*=} ;;
    psql=*) psql=${arg#*=} ;;
    *) fail "unknown parameter '$arg'" ;;
    esac
done
case $timeout$port$max_wal_mb in *[!0-9]*) fail "timeout, port and max_wal_mb are whole numbers" ;; esac
[ "$timeout" -ge 4 ] || fail "timeout must be 4 seconds or more"
[ -n "$db_user" ] || db_user=$os_user

now_ms() { echo $(($(date +%s%N) / 1000000)); }
started_ms=$(now_ms)
deadline_ms=$((started_ms + timeout * 1000))

# sql TIMEOUT_MS STATEMENT: one statement as the database's own user, from a directory it can
# read; the server cancels it at TIMEOUT_MS, and timeout(1) ends a client that hangs beyond that.
sql() {
    (cd / && PGOPTIONS="-c statement_timeout=$1" PGCONNECT_TIMEOUT=5 \
        timeout $(($1 / 1000 + 3)) runuser -u "$os_user" -- "$psql" -X -q -A -t \
        -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U "$db_user" -d "$database" -c "$2")
}

(umask 077 && mkdir -p -- "$state_dir") || fail "cannot make the state directory $state_dir"
rm -f -- "$state_dir/quiesced"

# The checkpointer waits in CheckpointerMain between checkpoints; any other wait (or none: it is
# writing) means a checkpoint is running. The WAL since the last redo point is what a checkpoint
# now has to cover (and what a restore replays without one).
# A third of the time for this query. When the server cannot answer it in time (its disk is
# so far behind that even reading pg_control waits), a CHECKPOINT would not fit either: skip it.
state=$(sql $((timeout * 1000 / 3)) "SELECT coalesce((SELECT coalesce(wait_event, 'busy') FROM
    pg_stat_activity WHERE backend_type = 'checkpointer'), 'unknown') || ' ' ||
    pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE
    pg_current_wal_lsn() END, (pg_control_checkpoint()).redo_lsn)::bigint / 1024" \
    2>"$state_dir/query.err")
code=$?
if [ "$code" -eq 124 ] || grep -q 'statement timeout' "$state_dir/query.err"; then
    state="slow 0"
elif [ "$code" -ne 0 ]; then
    cat -- "$state_dir/query.err" >&2
    fail "cannot query the server (see above)"
fi
checkpointer=${state% *} wal_kb=${state#* }
wal_mb=$(((wal_kb + 1023) / 1024))

# The pace of this host's last timed CHECKPOINT: milliseconds per MB of WAL it covered. One that
# was cancelled counts as if its time had covered 1 MB (it did not finish: more is unknown),
# which makes the next runs skip. A pace is kept for a day, then measured again: a skip never
# measures, and a slow hour must not stop checkpoints for good.
ms_per_mb='' measured_at=0
[ -f "$state_dir/pace" ] && read -r ms_per_mb measured_at _ <"$state_dir/pace"
case $ms_per_mb$measured_at in '' | *[!0-9]*) ms_per_mb='' measured_at=0 ;; esac
if [ $((started_ms / 1000 - measured_at)) -gt 86400 ]; then
    ms_per_mb=''
fi
budget_ms=$((deadline_ms - $(now_ms) - 2000))

skip=''
if [ "$checkpoint" = never ]; then
    skip="checkpoint=never"
elif [ "$checkpointer" = slow ]; then
    skip="the server did not answer within $((timeout / 3))s"
elif [ "$checkpointer" != CheckpointerMain ]; then
    # Asking now would wait for the running checkpoint and then for a whole new one.
    skip="a checkpoint is already running (checkpointer: $checkpointer)"
elif [ "$checkpoint" = auto ] && [ "$wal_mb" -gt "$max_wal_mb" ]; then
    skip="${wal_mb} MB of WAL since the last checkpoint, more than max_wal_mb=$max_wal_mb"
elif [ "$checkpoint" = auto ] && [ -n "$ms_per_mb" ] &&
    [ $((wal_mb * ms_per_mb)) -gt $((budget_ms / 2)) ]; then
    skip="it would take about $((wal_mb * ms_per_mb)) ms at the last one's pace, more than half of the ${budget_ms} ms left"
fi

if [ -n "$skip" ]; then
    checkpoint_ms=0 outcome=skipped
else
    [ "$budget_ms" -gt 0 ] || fail "no time left for the CHECKPOINT within timeout=${timeout}s"
    begin_ms=$(now_ms)
    sql "$budget_ms" CHECKPOINT
    code=$?
    checkpoint_ms=$(($(now_ms) - begin_ms))
    if [ "$code" -eq 0 ]; then
        pace="$((checkpoint_ms / (wal_mb > 0 ? wal_mb : 1))) $((begin_ms / 1000)) completed"
    else
        pace="$checkpoint_ms $((begin_ms / 1000)) cancelled"
    fi
    echo "$pace" >"$state_dir/pace.tmp" && mv -f -- "$state_dir/pace.tmp" "$state_dir/pace"
    if [ "$code" -ne 0 ]; then
        fail "CHECKPOINT failed or was cancelled after ${checkpoint_ms} ms (${wal_mb} MB of WAL to cover); a cancelled checkpoint goes on in the checkpointer, and the next runs skip it until it fits"
    fi
    outcome=taken
fi

end=$(date +%s%N)
quiesced_at=$(printf '%s.%06d' "$((end / 1000000000))" "$(((end % 1000000000) / 1000))")
facts="quiesced_at=$quiesced_at checkpoint=$outcome checkpoint_ms=$checkpoint_ms wal_mb=$wal_mb"
echo "$facts" >"$state_dir/quiesced" || fail "cannot write $state_dir/quiesced"
if [ -n "$skip" ]; then
    log "quiesced: $facts (no CHECKPOINT: $skip; a restore replays that WAL; no lock held)"
else
    log "quiesced: $facts (no lock held: see the comment)"
fi
exit 0
