#!/usr/bin/env bash
# The main job on one machine, end to end, proven by a restore. A blob service (Azurite) holds two
# disks, page blobs attached as loop devices (every write a Put Page), with ext4 on one and xfs on
# the other; an application writes numbered records to a ledger on both. The configuration is
# rolled out with scripts that quiesce the application, preflight runs, the snapshot job snapshots
# both disks. Then the restore playbook copies each disk's snapshot into a new blob, the restored
# disks are attached, checked and mounted, and the proof reads their ledgers: exactly the records
# written before the application was quiesced, on both. Everything lives in a temporary directory
# and is removed at the end (also after a failure or Ctrl-C); run it as often as you like.
#
# --managed-disks: the same proof with Azure managed disks. A local stand-in for Resource Manager
# and the instance metadata service (tests/harness/armstandin.py; Azure itself is not reached)
# serves the two page blobs as managed disks; the snapshot module takes incremental snapshots of
# them through it under the freeze, and managed_disk_restore creates new managed disks from them.
set -euo pipefail
managed=''
case "${1:-}" in
  --managed-disks) managed=1 ;;
  '') ;;
  *) echo "usage: $0 [--managed-disks]" >&2; exit 2 ;;
esac
export LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/bootstrap.sh"
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
export ANSIBLE_NOCOLOR=1 ANSIBLE_PYTHON_INTERPRETER="$ROOT/.venv/bin/python"
azurite=(python "$ROOT/tests/harness/azurite.py")
blobdisk=(python "$ROOT/tests/harness/blobdisk.py")
armstandin=(python "$ROOT/tests/harness/armstandin.py")
work=$(mktemp -d /tmp/vmsnapshot-demo.XXXXXX)
disks=(disk0 disk1) fstypes=(ext4 xfs)
sizes=($((64 << 20)) $((320 << 20)))  # mkfs.xfs wants 300 MB or more
app_pid='' current='' proving=''

step() { current=$*; printf '\n== %s\n' "$*"; }
playbook() { ansible-playbook -i localhost, -c local "$@"; }
# shown LOG SED COMMAND...: COMMAND's output goes to $work/LOG and the sed script SED picks what
# to show of it; when COMMAND fails, the end of the log is shown too.
shown() {
  local log="$work/$1" pick=$2
  shift 2
  if "$@" >"$log" 2>&1; then sed -n "$pick" "$log"; return; fi
  sed -n "$pick" "$log"
  tail -n 20 "$log"
  return 1
}
# secret FILE COMMAND...: COMMAND's output (SAS URIs) into FILE, which only root can read.
secret() { local file=$1; shift; (umask 077 && "$@" >"$file"); }
# field FILE KEY: the value of KEY in the JSON object in FILE (a record, SAS URIs by blob name).
field() { python -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

cleanup() {
  local rc=$?
  trap '' INT TERM HUP  # a second Ctrl-C does not cut the cleanup short
  [ "$rc" -eq 0 ] || [ -n "$proving" ] || echo "PROOF FAILED (\"$current\" did not complete)"
  step "Cleaning up"
  [ -z "$app_pid" ] || { kill "$app_pid" 2>/dev/null; wait "$app_pid" 2>/dev/null; } || true
  for record in "$work"/disk[0-9]-restored.json "$work"/disk[0-9].json; do
    [ ! -e "$record" ] || "${blobdisk[@]}" down --json "$record" >/dev/null || true
  done
  [ ! -e "$work/arm.json" ] || "${armstandin[@]}" down --json "$work/arm.json" || true
  [ ! -e "$work/azurite.json" ] || "${azurite[@]}" down --json "$work/azurite.json" || true
  rm -rf "$work"
  echo "removed the application, the restored disks, the disks, the blob service and $work"
  exit $((rc != 0))
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

step "Starting the blob service (Azurite) and making two disks (page blobs of 64 and 320 MiB)"
"${azurite[@]}" up --json "$work/azurite.json" --base-dir "$work" >/dev/null
for i in 0 1; do
  secret "$work/${disks[i]}.uris.json" "${azurite[@]}" sas --json "$work/azurite.json" \
    --container disks --page-blob-size "${sizes[i]}" "${disks[i]}.vhd"
  secret "$work/${disks[i]}.sas" field "$work/${disks[i]}.uris.json" "${disks[i]}.vhd"
done
secret "$work/status.json" "${azurite[@]}" sas --json "$work/azurite.json" \
  --container status --permissions rcw status.json

step "Attaching the disks (loop devices on the page blobs), with ext4 and xfs on them"
mounts=()
for i in 0 1; do
  "${blobdisk[@]}" up --sas-file "$work/${disks[i]}.sas" --mkfs "${fstypes[i]}" --mount \
    --json "$work/${disks[i]}.json" >/dev/null
  mounts+=("$(field "$work/${disks[i]}.json" mount_point)")
  echo "${disks[i]}.vhd: ${fstypes[i]} on $(field "$work/${disks[i]}.json" device)," \
    "mounted at ${mounts[i]}"
done

step "Starting an application that writes to both filesystems continuously"
python "$ROOT/demo/app.py" --control "$work/app" "${mounts[@]}" &
app_pid=$!
sleep 1
echo "application pid $app_pid has written $(cat "$work/app/count" 2>/dev/null || echo 0) records"

secret "$work/vars.json" python "$ROOT/demo/make_vars.py" snapshot "$work" "$ROOT/demo" "${mounts[@]}"
job=(playbook -e "@$work/vars.json")

step "Rolling out the configuration and its quiesce scripts (configure playbook)"
recap="/^PLAY RECAP/,\$p"
shown configure.log "$recap" "${job[@]}" appconsistent.vmsnapshot.configure
step "Enforcing it again, as the nightly run does: nothing to change"
shown configure-again.log "$recap" "${job[@]}" appconsistent.vmsnapshot.configure

step "Preflight: would the next snapshot be application-consistent?"
shown preflight.log '/TASK \[appconsistent.vmsnapshot.configure_prepost : Print/,/^$/p' \
  "${job[@]}" appconsistent.vmsnapshot.preflight

if [ -n "$managed" ]; then
  step "Serving the two disks as managed disks (Resource Manager and IMDS stand-in, not Azure)"
  "${armstandin[@]}" up --json "$work/arm.json" --azurite-json "$work/azurite.json" \
    --base-dir "$work" >/dev/null
  secret "$work/managed.json" python "$ROOT/demo/managed.py" disks "$work"
  python -c 'import json,sys; [print(d["id"]) for d in json.load(open(sys.argv[1]))["managed_disks"]]' \
    "$work/managed.json"
  step "Taking incremental snapshots of the managed disks under the freeze, restoring each"
  shown managed.log '/TASK \[Print the result\]/,/^$/p' \
    "${job[@]}" -e "@$work/managed.json" -e "restored_file=$work/restored-disks.json" \
    "$ROOT/demo/managed-snapshot.yml"
  python "$ROOT/demo/managed.py" restored "$work" "$work/restored-disks.json"
else
step "Taking the snapshot (snapshot playbook)"
shown snapshot.log '/TASK \[appconsistent.vmsnapshot.snapshot : Print/,/^$/p' \
  "${job[@]}" appconsistent.vmsnapshot.snapshot

step "Restoring each disk's snapshot into a new blob (restore playbook)"
secret "$work/restored.uris.json" "${azurite[@]}" sas --json "$work/azurite.json" \
  --container disks --permissions rcw "${disks[@]/%/-restored.vhd}"
for disk in "${disks[@]}"; do
  secret "$work/$disk-restored.sas" field "$work/restored.uris.json" "$disk-restored.vhd"
done
secret "$work/restore.json" python "$ROOT/demo/make_vars.py" restore "$work"
shown restore.log 's/^ *"msg": "\(disk .*\)"$/\1/p' \
  playbook -e "@$work/restore.json" appconsistent.vmsnapshot.restore
fi

step "Attaching the restored disks"
for disk in "${disks[@]}"; do
  "${blobdisk[@]}" up --sas-file "$work/$disk-restored.sas" --json "$work/$disk-restored.json" \
    >/dev/null
  echo "$disk-restored.vhd: $(field "$work/$disk-restored.json" device)"
done

step "Proof"
proving=1  # from here on, the proof says itself whether it holds
python "$ROOT/demo/proof.py" "$work"
