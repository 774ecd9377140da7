#!/bin/sh
# Example pre-script for appconsistent.vmsnapshot (preScriptLocation in
# VMSnapshotScriptPluginConfig.json). It runs as root before the filesystems are frozen.
# Replace quiesce_application and resume_application with your application's commands.
#
# Exit code contract:
#   0          the application is quiesced: the snapshot can be application-consistent.
#   any other  failure. 2 is NOT a warning: it fails like 1. With continueBackupOnFailure=true the
#              snapshot is then file-system-consistent; with false it is not taken.
# The post-script runs whenever this script was attempted, also when it failed or timed out.
#
# Arguments (preScriptParams): [STATE_FILE], default /run/vmsnapshot-example.quiesced.
# The state file tells the post-script what to undo; it lives on /run, which is never frozen.

set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

TAG=vmsnapshot-pre
STATE_FILE=${1:-/run/vmsnapshot-example.quiesced}
# Bound for every step: the whole script must finish well inside timeoutInSeconds.
STEP_TIMEOUT=20

log() {
    # stderr is captured in the snapshot result; syslog keeps a record on the host.
    printf '%s: %s\n' "$TAG" "$*" >&2
    logger -t "$TAG" -- "$*" 2>/dev/null || :
}

quiesce_application() {
    # Your application's command, bounded, for example:
    #   timeout "$STEP_TIMEOUT" psql -X -c 'CHECKPOINT'
    # No global sync or fsfreeze here: the snapshot freezes (and so flushes) the filesystems itself.
    :
}

resume_application() {
    # The exact inverse of quiesce_application; it must succeed when nothing was quiesced.
    :
}

fail() {
    log "FAILED: $*"
    # Never leave the application locked: undo a partial quiesce before giving up.
    resume_application
    rm -f -- "$STATE_FILE"
    exit 1
}

if [ -e "$STATE_FILE" ]; then
    # Idempotent: a run whose post-script never came left this behind; quiesce again.
    log "state file $STATE_FILE already present (from $(cat -- "$STATE_FILE" 2>/dev/null)); quiescing again"
fi

log "quiescing the application"
quiesce_application || fail "the quiesce step failed or took longer than ${STEP_TIMEOUT}s"
date -u '+%Y-%m-%dT%H:%M:%SZ' >"$STATE_FILE" || fail "cannot write the state file $STATE_FILE"
log "application quiesced"
exit 0
