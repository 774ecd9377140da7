#!/usr/bin/env bash
# The whole test suite, or some of its stages: scripts/test.sh [stage ...]
# Installs what it needs first (scripts/bootstrap.sh). Every stage runs even when an earlier one
# failed; the exit code is non-zero when any stage failed. Each stage's output is also kept in
# tests/output/logs/<stage>.log, which the secrets stage scans.
set -uo pipefail
export LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
bash scripts/bootstrap.sh || exit 1

export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
LOGS="$ROOT/tests/output/logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"

# What killed earlier runs left is reclaimed; what a live run beside this one holds is noted, so
# that the leftovers stage counts only what this run leaves behind.
.venv/bin/python tests/check_leftovers.py --before "$LOGS/../leftovers-before.json" || exit 1

all_stages=(lint sanity unit system integration molecule versions fleet faults databases build secrets leftovers)
stages=("$@")
((${#stages[@]})) || stages=("${all_stages[@]}")

# ansible-test insists on running inside .../ansible_collections/<ns>/<name>/; give it a copy of
# the tracked and new (not ignored) files.
ansible_test_tree() {
  local tree="$ROOT/.cache/ansible-test/ansible_collections/appconsistent/vmsnapshot"
  rm -rf "$tree"
  mkdir -p "$tree"
  git ls-files -z --cached --others --exclude-standard | grep -zv '^tests/output/' |
    rsync -a --from0 --files-from=- ./ "$tree/"
  # The copy lies inside this (git-ignored) checkout, so it gets a repository of its own:
  # ansible-test lists content with git and would otherwise see nothing.
  (cd "$tree" && git init -q && git add -A >/dev/null)
  # The harness in the copy starts Azurite from node_modules; the copy's git ignores the link.
  ln -sfn "$ROOT/node_modules" "$tree/node_modules"
  grep -qx node_modules "$tree/.git/info/exclude" || echo node_modules >>"$tree/.git/info/exclude"
  echo "$tree"
}

stage_lint() {
  ruff check . && ruff format --check . &&
    ansible-lint --profile production --offline roles playbooks extensions
}

stage_sanity() {
  local tree
  tree=$(ansible_test_tree) && cd "$tree" &&
    ansible-test sanity --local --python 3.11 --color no
}

stage_unit() { pytest -q tests/unit; }

stage_system() { pytest -q tests/system; }

stage_integration() {
  local tree
  tree=$(ansible_test_tree) && cd "$tree" &&
    ansible-test integration --local --allow-destructive --python 3.11 --color no
}

stage_molecule() {
  local scenario
  for scenario in extensions/molecule/*/molecule.yml; do
    scenario=$(basename "$(dirname "$scenario")")
    molecule test -s "$scenario" || return
  done
}

# The playbooks (configure, preflight, snapshot, restore, survey typos) on each older ansible-core
# minor that meta/runtime.yml claims; the newest is the .venv's, which every other stage runs.
stage_versions() {
  local core failed=0
  for core in 2.16 2.17 2.18; do
    echo "== ansible-core $core"
    VMSNAPSHOT_ANSIBLE_BIN="$ROOT/.cache/ansible-core-$core/bin" VMSNAPSHOT_ANSIBLE_CORE=$core \
      pytest -q tests/versions || failed=1
  done
  return "$failed"
}

stage_fleet() { pytest -q tests/fleet; }

stage_faults() { pytest -q tests/faults; }

stage_databases() { pytest -q tests/databases; }

stage_build() { bash scripts/check-build.sh; }

stage_secrets() { .venv/bin/python tests/scan_secrets.py "$ROOT/tests/output"; }

stage_leftovers() { .venv/bin/python tests/check_leftovers.py --since "$LOGS/../leftovers-before.json"; }

passed=() failed=()
for stage in "${stages[@]}"; do
  if ! declare -F "stage_$stage" >/dev/null; then
    echo "test.sh: unknown stage '$stage' (stages: ${all_stages[*]})" >&2
    exit 2
  fi
  printf '\n=== %s ===\n' "$stage"
  start=$SECONDS
  (stage_"$stage") 2>&1 | tee "$LOGS/$stage.log"
  rc=${PIPESTATUS[0]}
  took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    passed+=("$stage (${took}s)")
  else
    failed+=("$stage (${took}s, exit $rc)")
  fi
  printf '=== %s: exit %s after %ss ===\n' "$stage" "$rc" "$took"
done

printf '\npassed stages: %s\n' "${passed[*]:-none}"
printf 'failed stages: %s\n' "${failed[*]:-none}"
printf 'summary: %d passed, %d failed\n' "${#passed[@]}" "${#failed[@]}"
[ "${#failed[@]}" -eq 0 ]
