#!/bin/sh
# Post-script for PostgreSQL (appconsistent.vmsnapshot; postScriptLocation). postgresql-pre.sh
# holds no lock, so there is nothing to undo: this script reports how long ago the checkpoint was
# (the window in which WAL accumulated before the snapshot) and clears the state. It runs also
# when the pre-script failed or never ran.
#
# Parameters (postScriptParams): the pre-script's list (only state_dir is used here).
# Exit code: 0 (1 only for an unknown parameter).

set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
TAG=postgresql-post

log() {
    printf '%s: %s\n' "$TAG" "$*" >&2
    logger -t "$TAG" -- "$*" 2>/dev/null || :
}

state_dir=/run/vmsnapshot-db/postgresql
for arg in "$@"; do
    case $arg in
    state_dir=*) state_dir=${arg#*=} ;;
    host=* | port=* | os_user=* | db_user=* | database=* | timeout=* | psql=* | checkpoint=* | max_wal_mb=*) ;;
    *)
        log "FAILED: unknown parameter '$arg'"
        exit 1
        ;;
    esac
done
if [ -f "$state_dir/quiesced" ]; then
    log "done: $(cat -- "$state_dir/quiesced"), no lock to release"
    rm -f -- "$state_dir/quiesced"
else
    log "nothing to undo: the pre-script did not checkpoint"
fi
exit 0
