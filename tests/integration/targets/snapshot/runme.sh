#!/usr/bin/env bash
# The snapshot module through ansible-playbook against a real Azurite and a real loop-mounted
# ext4: check mode, a real run, the same task again. The harness makes and removes both.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# ansible-test runs a copy of this target below the collection's tests/output; the collection
# root is the nearest directory above that holds galaxy.yml.
root=$here
until [ -f "$root/galaxy.yml" ]; do root=$(dirname "$root"); done
work=$(mktemp -d)
harness="$root/tests/harness"

teardown() {
  python "$harness/azurite.py" down --json "$work/azurite.json" || true
  python "$harness/loopfs.py" down --json "$work/fs.json" || true
  rm -rf "$work"
}
trap teardown EXIT

python "$harness/loopfs.py" up --fstype ext4 --size-mb 64 --json "$work/fs.json" >/dev/null
python "$harness/azurite.py" up --json "$work/azurite.json" --base-dir "$work" >/dev/null
python "$harness/azurite.py" sas --json "$work/azurite.json" --container disks \
  --page-blob-size 65536 disk0.vhd disk1.vhd >"$work/disks.json"

python - "$work" <<'PY'
import json, sys
work = sys.argv[1]
disks = json.load(open(f"{work}/disks.json"))
fs = json.load(open(f"{work}/fs.json"))
json.dump(
    {"disks": list(disks.values()), "mount_point": fs["mount_point"], "work": work},
    open(f"{work}/vars.json", "w"),
)
PY

ANSIBLE_ROLES_PATH="$here/.." ansible-playbook -i localhost, -c local \
  -e "ansible_python_interpreter=$(command -v python)" -e "@$work/vars.json" \
  "$here/playbook.yml" "$@"

# The blob service's own word: one snapshot per disk, holding the disks' bytes.
python - "$work" "$harness" <<'PY'
import json, sys
work, harness = sys.argv[1], sys.argv[2]
sys.path.insert(0, harness + "/..")
from harness.azurite import Azurite
server = Azurite.from_state(json.load(open(f"{work}/azurite.json")))
for name in ("disk0.vhd", "disk1.vhd"):
    snapshots = server.list_snapshots("disks", name)
    assert len(snapshots) == 1, (name, snapshots)
    assert snapshots[0]["metadata"]["appconsistentLevel"] == "application", snapshots
    taken = server.read_snapshot("disks", name, snapshots[0]["snapshot"])
    assert taken == server.read_blob("disks", name), name
print("blob service: one application-consistent snapshot per disk")
PY
