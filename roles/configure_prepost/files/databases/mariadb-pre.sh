#!/bin/sh
# Pre-script for MariaDB and MySQL (appconsistent.vmsnapshot; preScriptLocation). It runs as root
# right before the filesystems are frozen and takes the server's backup lock in a supervised
# session (hold-lock.py) that stays open across the freeze and the snapshot:
#   MariaDB >= 10.4  BACKUP STAGE START, FLUSH, BLOCK_DDL, BLOCK_COMMIT (what mariabackup uses:
#                    non-transactional tables are flushed and closed, DDL and commits wait);
#   MySQL, older     FLUSH TABLES WITH READ LOCK (after a FLUSH TABLES without the lock, so that
#                    the locked flush is short).
# then FLUSH ENGINE LOGS, so InnoDB's log is on disk whatever innodb_flush_log_at_trx_commit is.
# Reads and running statements go on; commits, DDL and writes to non-transactional tables wait
# until mariadb-post.sh releases the lock, or until hold_seconds pass (the holder's own timer: a
# lost post-script never leaves the server locked; the snapshot run then reports the post-script
# failed, so the snapshot is not called application-consistent).
#
# Parameters (preScriptParams), each KEY=VALUE, all optional; give the post-script the same
# state_dir and helper:
#   socket=PATH          the server's socket (default: the client's own default)
#   defaults_file=PATH   client option file with the credentials (default: root over the socket,
#                        which is unix_socket authentication on Debian and Ubuntu)
#   user=NAME            the account, when not in defaults_file
#   lock=auto|backup_stage|ftwrl   (default auto: backup_stage on MariaDB >= 10.4)
#   hold_seconds=60      the longest the lock is held; keep it above the whole snapshot run
#   acquire_timeout=20   the longest the lock may take to get (long transactions delay it);
#                        keep it below the plugin's timeoutInSeconds
#   state_dir=/run/vmsnapshot-db/mariadb   where the holder keeps its state (never frozen)
#   helper=/etc/azure/vmsnapshot-hold-lock  hold-lock.py, root-owned, not group/other-writable
#   python=python3       the Python 3 that runs it (default: python3, else RHEL's platform-python)
#   client=mariadb       the command-line client (default: mariadb, else mysql)
#
# Exit codes: 0 locked (stderr says when and how long it took); 1 not locked, nothing held.

set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
TAG=mariadb-pre

log() {
    printf '%s: %s\n' "$TAG" "$*" >&2
    logger -t "$TAG" -- "$*" 2>/dev/null || :
}
fail() {
    log "FAILED: $*"
    exit 1
}

socket='' defaults_file='' user='' lock=auto hold_seconds=60 acquire_timeout=20
state_dir=/run/vmsnapshot-db/mariadb helper=/etc/azure/vmsnapshot-hold-lock client='' python=''
for arg in "$@"; do
    case $arg in
    socket=*) socket=${arg#*=} ;;
    defaults_file=*) defaults_file=${arg#*=} ;;
    user=*) user=${arg#*=} ;;
    lock=auto | lock=backup_stage | lock=ftwrl) lock=${arg#*=} ;;
    hold_seconds=*) hold_seconds=${arg#*=} ;;
    acquire_timeout=*) acquire_timeout=${arg#*=} ;;
    state_dir=*) state_dir=${arg#*=} ;;
    helper=*) helper=${arg#*=} ;;
    client=*) client=${arg#*=} ;;
    python=*) python=${arg#*=} ;;
    *) fail "unknown parameter '$arg'" ;;
    esac
done
case $hold_seconds$acquire_timeout in *[!0-9]*) fail "hold_seconds and acquire_timeout are whole seconds" ;; esac

# The helper runs as root: the same rules as for the scripts themselves.
if [ ! -f "$helper" ] || [ -L "$helper" ]; then
    fail "the lock helper $helper is missing (or a symlink)"
fi
case $(stat -c '%u %A' -- "$helper") in
0\ -????-??-?) ;;
*) fail "the lock helper $helper must be owned by root and not group/other-writable" ;;
esac

if [ -z "$python" ]; then
    python=$(command -v python3 || command -v /usr/libexec/platform-python) ||
        fail "no python3 to run the lock helper"
fi
if [ -z "$client" ]; then
    client=$(command -v mariadb || command -v mysql) || fail "no mariadb or mysql client in PATH"
fi
# --defaults-extra-file must come first; --unbuffered so every answer reaches the holder at once.
set -- "$client"
[ -z "$defaults_file" ] || set -- "$@" "--defaults-extra-file=$defaults_file"
set -- "$@" --batch --skip-column-names --unbuffered --connect-timeout=10
[ -z "$socket" ] || set -- "$@" "--socket=$socket"
[ -z "$user" ] || set -- "$@" "--user=$user"

if [ "$lock" = auto ]; then
    version=$(timeout 15 "$@" -e 'SELECT VERSION()') || fail "cannot query the server (see above)"
    lock=ftwrl
    case $version in
    *MariaDB*)
        major=${version%%.*} rest=${version#*.}
        minor=${rest%%.*}
        if [ "$major" -gt 10 ] || { [ "$major" -eq 10 ] && [ "$minor" -ge 4 ]; }; then
            lock=backup_stage
        fi
        ;;
    esac
fi
# The server gives up waiting for the lock itself, a little before the helper would.
wait_sql="SET SESSION lock_wait_timeout = $acquire_timeout;"
if [ "$lock" = backup_stage ]; then
    lock_sql="$wait_sql BACKUP STAGE START; BACKUP STAGE FLUSH; BACKUP STAGE BLOCK_DDL;
BACKUP STAGE BLOCK_COMMIT; FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS;"
    release_sql="BACKUP STAGE END;"
else
    lock_sql="$wait_sql FLUSH NO_WRITE_TO_BINLOG TABLES; FLUSH TABLES WITH READ LOCK;
FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS;"
    release_sql="UNLOCK TABLES;"
fi

answer=$(timeout $((acquire_timeout + 15)) "$python" "$helper" acquire --state-dir "$state_dir" \
    --hold-seconds "$hold_seconds" --acquire-timeout "$((acquire_timeout + 2))" \
    --lock-sql "$lock_sql" --release-sql "$release_sql" -- "$@") ||
    fail "the $lock lock was not taken (the holder's log is $state_dir/holder.log)"
# answer: locked_at=<epoch> acquire_ms=<n>
log "quiesced: $lock lock held from $answer, for at most ${hold_seconds}s"
exit 0
