#!/usr/bin/env bash
# Builds the collection tarball, installs it into a fresh collections path and runs its modules
# from there: what a user who installs the release gets.
set -euo pipefail
export LANG=C.UTF-8

ROOT=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$ROOT/.venv/bin/ansible-galaxy" collection build "$ROOT" --output-path "$work/dist" >/dev/null
tarball=$(ls "$work"/dist/appconsistent-vmsnapshot-*.tar.gz)
echo "built $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB)"

# What must never ship: environments, dependencies, caches, test output.
if tar -tzf "$tarball" | grep -E '(^|/)(\.venv|node_modules|\.cache|__pycache__|tests/output)/'; then
  echo "the tarball holds files that build_ignore should have left out" >&2
  exit 1
fi

# --force: the checkout itself is an installed copy on ANSIBLE_COLLECTIONS_PATH when run from test.sh.
"$ROOT/.venv/bin/ansible-galaxy" collection install --force "$tarball" -p "$work/collections" >/dev/null 2>&1
installed="$work/collections/ansible_collections/appconsistent/vmsnapshot"
for shipped in plugins/modules/{prepost_info,snapshot,snapshot_restore}.py playbooks/restore.yml \
  roles/configure_prepost/files/databases/{postgresql,mariadb}-{pre,post}.sh \
  roles/configure_prepost/files/databases/hold-lock.py; do
  [ -f "$installed/$shipped" ] || { echo "$shipped missing after install" >&2; exit 1; }
done

# Run a module of the installed copy: a config path that does not exist is the normal
# "not configured" case (316), answered without a traceback.
adhoc() {
  ANSIBLE_COLLECTIONS_PATH="$work/collections" "$ROOT/.venv/bin/ansible" localhost -i localhost, \
    -c local -e "ansible_python_interpreter=$ROOT/.venv/bin/python" "$@" 2>&1 || true
}
out=$(adhoc -m appconsistent.vmsnapshot.prepost_info -a "config_path=$work/absent.json")
grep -q '"status_code": 316' <<<"$out" || { echo "$out"; echo "prepost_info did not answer 316" >&2; exit 1; }
# And the snapshot module: a disk that is not a SAS URI is refused with code 11, not a traceback.
out=$(adhoc -m appconsistent.vmsnapshot.snapshot -a "disks=not-a-uri state_dir=$work/state" --check)
grep -q '"status_code": 11' <<<"$out" || { echo "$out"; echo "snapshot did not answer 11" >&2; exit 1; }
# And the restore module: a snapshot_uri that is not a SAS URI, likewise.
out=$(adhoc -m appconsistent.vmsnapshot.snapshot_restore -a "snapshot_uri=nope destination_uri=nope" --check)
grep -q '"status_code": 11' <<<"$out" || { echo "$out"; echo "snapshot_restore did not answer 11" >&2; exit 1; }
echo "installed collection works: prepost_info answered 316, snapshot and snapshot_restore 11"
