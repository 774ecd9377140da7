#!/usr/bin/env bash
# The configure_prepost role as an operator sees it, under a temp root (never /etc/azure):
# check mode on a fresh host changes nothing; a run installs; a second run changes nothing;
# a mode, an owner and a content changed by hand are shown exactly by --check --diff, which
# changes nothing, and a real run repairs them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
test_root=$(mktemp -d)
out="$test_root.out"
trap 'rm -rf -- "$test_root" "$out"' EXIT
azure="$test_root/etc/azure"
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0

role() {
  ansible-playbook -i localhost, -c local \
    -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER:-/usr/bin/python3}" \
    -e "test_root=$test_root" "$here/playbook.yml" "$@" >"$out" 2>&1 || { cat "$out"; exit 1; }
}
expect_changed() {
  grep -Eq "^localhost +: ok=[0-9]+ +changed=$1 +unreachable=0 +failed=0 " "$out" || {
    cat "$out"; echo "expected changed=$1" >&2; exit 1
  }
}
expect_diff() {
  grep -Fxq -- "$1" "$out" || { cat "$out"; echo "expected the diff line: $1" >&2; exit 1; }
}
expect_stat() {
  [ "$(stat -c '%a %u' "$1")" = "$2" ] || { echo "$1: $(stat -c '%a %u' "$1"), expected $2" >&2; exit 1; }
}

role --check --diff
expect_changed 1
[ ! -e "$azure" ] || { echo "check mode created $azure" >&2; exit 1; }

role
expect_changed 1
role
expect_changed 0
expect_stat "$azure" "755 0"
expect_stat "$azure/VMSnapshotScriptPluginConfig.json" "600 0"
expect_stat "$azure/pre-script.sh" "700 0"
expect_stat "$azure/post-script.sh" "700 0"

chmod 0644 "$azure/VMSnapshotScriptPluginConfig.json"
chown 4242 "$azure/pre-script.sh"
echo "# edited by hand" >>"$azure/post-script.sh"
post_sum=$(sha256sum <"$azure/post-script.sh")

role --check --diff
expect_changed 1
expect_diff '-    "mode": "0644",'
expect_diff '+    "mode": "0600",'
expect_diff '-    "owner": 4242,'
expect_diff '+    "owner": 0,'
expect_diff '-# edited by hand'
expect_stat "$azure/VMSnapshotScriptPluginConfig.json" "644 0"
expect_stat "$azure/pre-script.sh" "700 4242"
[ "$(sha256sum <"$azure/post-script.sh")" = "$post_sum" ] || { echo "check mode changed a file" >&2; exit 1; }

role --diff
expect_changed 1
expect_stat "$azure/VMSnapshotScriptPluginConfig.json" "600 0"
expect_stat "$azure/pre-script.sh" "700 0"
! grep -q "edited by hand" "$azure/post-script.sh" || { echo "content not repaired" >&2; exit 1; }
role
expect_changed 0
echo "configure_prepost: idempotent, drift shown by --check --diff and repaired"
