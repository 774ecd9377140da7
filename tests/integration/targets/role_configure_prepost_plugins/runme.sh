#!/usr/bin/env bash
# Several applications on one host (VMSnapshotPluginHost.conf), the way back to one plugin,
# state absent, and a configuration the role refuses (the validation fails the host).
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
    -e "test_root=$test_root" "$here/playbook.yml" "$@" >"$out" 2>&1
}
fail() { cat "$out"; echo "FAILED: $*" >&2; exit 1; }
expect_changed() {
  grep -Eq "^localhost +: ok=[0-9]+ +changed=$1 +unreachable=0 +failed=0 " "$out" || fail "expected changed=$1"
}

# Two plugins: one config each, the host file lists both, and prepost_info passes them all.
role -e case=two || fail "two plugins"
grep -q '"consistency": "application"' "$out" || fail "two plugins are not application-consistent"
grep -Fxq "numberOfPlugins: 2" "$azure/VMSnapshotPluginHost.conf" || fail "host file"
grep -Fxq "pluginConfigPath1: $azure/VMSnapshotScriptPluginConfig-web.json" "$azure/VMSnapshotPluginHost.conf" || fail "host file"
python3 - "$azure" <<'PY' || fail "plugin configs"
import json, sys
azure = sys.argv[1]
db = json.load(open(f"{azure}/VMSnapshotScriptPluginConfig-db.json"))
web = json.load(open(f"{azure}/VMSnapshotScriptPluginConfig-web.json"))
assert db["pluginName"] == "db" and db["timeoutInSeconds"] == 120, db
assert db["preScriptLocation"] == f"{azure}/db-pre-script.sh", db
assert web["appName"] == "nginx" and web["timeoutInSeconds"] == 30, web
assert web["preScriptParams"][0].endswith("/web.quiesced") and web["preScriptParams"][1] == "7", web
PY
for f in VMSnapshotPluginHost.conf VMSnapshotScriptPluginConfig-db.json VMSnapshotScriptPluginConfig-web.json; do
  [ "$(stat -c '%a %u' "$azure/$f")" = "600 0" ] || fail "$f mode"
done
role -e case=two || fail "two plugins again"
expect_changed 0

# Back to one plugin: the host file the role wrote goes, the single config comes.
role -e case=one || fail "one plugin"
[ ! -e "$azure/VMSnapshotPluginHost.conf" ] || fail "the host file is still there"
[ -f "$azure/VMSnapshotScriptPluginConfig.json" ] || fail "no single config"

# A host file someone else wrote is never removed.
printf '[pre_post]\nnumberOfPlugins: 1\npluginName0: ScriptRunner\npluginConfigPath0: %s\n' \
  "$azure/VMSnapshotScriptPluginConfig.json" >"$azure/VMSnapshotPluginHost.conf"
chmod 0600 "$azure/VMSnapshotPluginHost.conf"
role -e case=one || fail "one plugin with a foreign host file"
[ -e "$azure/VMSnapshotPluginHost.conf" ] || fail "a foreign host file was removed"
rm "$azure/VMSnapshotPluginHost.conf"

# state absent with the two-plugin list removes their files and leaves the directory.
role -e case=two || fail "two plugins before absent"
role -e case=two -e configure_prepost_state=absent || fail "absent"
for f in VMSnapshotPluginHost.conf VMSnapshotScriptPluginConfig-db.json db-pre-script.sh web-post-script.sh; do
  [ ! -e "$azure/$f" ] || fail "$f is still there"
done
[ -d "$azure" ] || fail "the directory was removed"

# A pre-script the role does not deploy and that does not exist: the host fails with 302.
if role -e case=none -e "configure_prepost_pre_script_path=$test_root/missing.sh"; then
  fail "the role accepted a missing pre-script"
fi
grep -q "status 302 (FailedPrepostPreScriptNotFound)" "$out" || fail "no 302 in the failure"
echo "configure_prepost: plugins, back to one, foreign host file, absent and validation all behave"
