#!/bin/sh
# Example post-script for appconsistent.vmsnapshot (postScriptLocation in
# VMSnapshotScriptPluginConfig.json). It runs as root after the filesystems are thawed, and also
# when the pre-script failed or timed out (then the snapshot may not have been taken): it must
# bring the application back to normal from any state the pre-script may have left.
#
# Exit code contract:
#   0          the application runs normally again.
#   any other  failure (2 is NOT a warning). The snapshot is already taken, but the result is
#              no longer application-consistent, or the job fails with continueBackupOnFailure=false.
#
# Arguments (postScriptParams): [STATE_FILE], the same file as the pre-script's.

set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

TAG=vmsnapshot-post
STATE_FILE=${1:-/run/vmsnapshot-example.quiesced}
STEP_TIMEOUT=20

log() {
    printf '%s: %s\n' "$TAG" "$*" >&2
    logger -t "$TAG" -- "$*" 2>/dev/null || :
}

resume_application() {
    # For example: timeout "$STEP_TIMEOUT" systemctl start myapp-writer.service
    :
}

if [ -e "$STATE_FILE" ]; then
    log "resuming the application, quiesced since $(cat -- "$STATE_FILE" 2>/dev/null)"
else
    # The pre-script failed before quiescing, or never ran: still make sure the application runs.
    log "no state file $STATE_FILE: the application was not quiesced; making sure it runs"
fi

if ! resume_application; then
    log "FAILED: the resume step failed or took longer than ${STEP_TIMEOUT}s"
    exit 1
fi
rm -f -- "$STATE_FILE" || {
    log "FAILED: cannot remove the state file $STATE_FILE"
    exit 1
}
log "application resumed"
exit 0
