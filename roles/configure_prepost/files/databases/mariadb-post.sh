#!/bin/sh
# Post-script for MariaDB and MySQL (appconsistent.vmsnapshot; postScriptLocation): releases the
# lock that mariadb-pre.sh took. It runs after the thaw, and also when the pre-script failed or
# timed out: with nothing held it only says so.
#
# Parameters (postScriptParams): the pre-script's list (state_dir, helper and python are used).
#
# Exit codes: 0 the lock was held until now and is released, or nothing was held;
#             1 the lock had ended before this script (its hold_seconds timer, or the session was
#               lost), so the snapshot may have been taken without it; or it could not be
#               released cleanly (the holder was killed: the server still ends the lock).

set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
TAG=mariadb-post

log() {
    printf '%s: %s\n' "$TAG" "$*" >&2
    logger -t "$TAG" -- "$*" 2>/dev/null || :
}

state_dir=/run/vmsnapshot-db/mariadb helper=/etc/azure/vmsnapshot-hold-lock python=''
for arg in "$@"; do
    case $arg in
    state_dir=*) state_dir=${arg#*=} ;;
    helper=*) helper=${arg#*=} ;;
    python=*) python=${arg#*=} ;;
    socket=* | defaults_file=* | user=* | lock=* | hold_seconds=* | acquire_timeout=* | client=*) ;;
    *)
        log "FAILED: unknown parameter '$arg'"
        exit 1
        ;;
    esac
done
if [ ! -d "$state_dir" ]; then
    log "nothing to release: no state in $state_dir"
    exit 0
fi
case $(stat -c '%u %A' -- "$helper" 2>/dev/null) in
0\ -????-??-?) ;;
*)
    log "FAILED: the lock helper $helper is missing or not root-owned; a held lock ends at its timer"
    exit 1
    ;;
esac

[ -n "$python" ] || python=$(command -v python3 || command -v /usr/libexec/platform-python)
answer=$(timeout 40 "$python" "$helper" release --state-dir "$state_dir")
code=$?
# answer: outcome=<released|expired|lost|release-failed|none> held_ms=<n>
case $code:$answer in
0:outcome=none*) log "nothing to release: no lock was held" ;;
0:*) log "released: $answer" ;;
*)
    log "FAILED: the lock was not held until now ($answer, exit $code); see $state_dir/holder.log"
    exit 1
    ;;
esac
exit 0
