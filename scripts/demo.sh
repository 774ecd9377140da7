#!/usr/bin/env bash
# The main job on one machine, end to end: a blob service (Azurite), two disks (page blobs) and
# two loop-mounted filesystems (ext4, xfs), an application writing to both, the configuration
# rolled out with scripts that quiesce it, preflight, the snapshot job, and the proof.
# Everything lives in a temporary directory and is removed at the end; run it as often as you like.
set -euo pipefail
export LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/bootstrap.sh"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
export ANSIBLE_NOCOLOR=1 ANSIBLE_PYTHON_INTERPRETER="$ROOT/.venv/bin/python"
harness="$ROOT/tests/harness"
work=$(mktemp -d /tmp/vmsnapshot-demo.XXXXXX)
app_pid=

step() { printf '\n== %s\n' "$*"; }
playbook() { ansible-playbook -i localhost, -c local -e "@$work/vars.json" "$@"; }

cleanup() {
  step "Cleaning up"
  [ -z "$app_pid" ] || { kill "$app_pid" 2>/dev/null; wait "$app_pid" 2>/dev/null; } || true
  for record in "$work"/fs-*.json; do
    [ ! -e "$record" ] || python "$harness/loopfs.py" down --json "$record" >/dev/null || true
  done
  [ ! -e "$work/azurite.json" ] || python "$harness/azurite.py" down --json "$work/azurite.json" || true
  rm -rf "$work"
  echo "removed the application, the filesystems, the blob service and $work"
}
trap cleanup EXIT

step "Starting the blob service (Azurite) and making two disks (page blobs)"
python "$harness/azurite.py" up --json "$work/azurite.json" --base-dir "$work" >/dev/null
python "$harness/azurite.py" sas --json "$work/azurite.json" --container disks \
  --page-blob-size 1048576 disk0.vhd disk1.vhd >"$work/disks.json"
python "$harness/azurite.py" sas --json "$work/azurite.json" --container status \
  --permissions rcw status.json >"$work/status.json"

step "Mounting two filesystems (ext4 and xfs on loop devices)"
python "$harness/loopfs.py" up --fstype ext4 --size-mb 64 --json "$work/fs-ext4.json" >/dev/null
python "$harness/loopfs.py" up --fstype xfs --json "$work/fs-xfs.json" >/dev/null
mapfile -t mounts < <(python -c 'import json,sys
for path in sys.argv[1:]: print(json.load(open(path))["mount_point"])' "$work"/fs-ext4.json "$work"/fs-xfs.json)
printf 'mounted %s\n' "${mounts[@]}"

step "Starting an application that writes to both filesystems continuously"
python "$ROOT/demo/app.py" --control "$work/app" "${mounts[@]}" &
app_pid=$!
sleep 1
echo "application pid $app_pid has written $(cat "$work/app/count" 2>/dev/null || echo 0) records"

python "$ROOT/demo/make_vars.py" "$work" "$ROOT/demo" "${mounts[@]}" >"$work/vars.json"

step "Rolling out the configuration and its quiesce scripts (configure playbook)"
playbook appconsistent.vmsnapshot.configure | tail -n 3
step "Enforcing it again, as the nightly run does: nothing to change"
playbook appconsistent.vmsnapshot.configure | tail -n 3

step "Preflight: would the next snapshot be application-consistent?"
playbook appconsistent.vmsnapshot.preflight | sed -n '/TASK \[appconsistent.vmsnapshot.configure_prepost : Print/,/^$/p'

step "Taking the snapshot (snapshot playbook)"
playbook appconsistent.vmsnapshot.snapshot | sed -n "/TASK \[appconsistent.vmsnapshot.snapshot : Print/,/^$/p"

step "Proof"
python "$ROOT/demo/proof.py" "$work"
