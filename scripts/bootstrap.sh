#!/usr/bin/env bash
# Installs everything the demo and the test suite need, idempotently; quick when nothing is missing.
# Debian packages, the checkout's virtual environment (.venv, pinned), Azurite (npm, lockfile), the
# offline pip bootstrap that ansible-test wants, and the ansible_collections path.
set -euo pipefail
export LANG=C.UTF-8

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAMPS="$ROOT/.cache/bootstrap"
mkdir -p "$STAMPS"

say() { printf 'bootstrap: %s\n' "$*"; }

apt_packages=(xfsprogs btrfs-progs e2fsprogs util-linux shellcheck openssh-server openssh-client
  iproute2 rsync git make curl python3 python3-venv python3-dev nodejs npm
  fuse3 bindfs postgresql postgresql-contrib mariadb-server mariadb-client)
missing=()
for pkg in "${apt_packages[@]}"; do
  # nodejs/npm may come from another source (nodesource, nvm); only the commands matter.
  case "$pkg" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  [ "$(id -u)" -eq 0 ] || { echo "bootstrap: run as root to install: ${missing[*]}" >&2; exit 1; }
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # Database servers are for the tests, which start their own instances: keep the packages
  # from starting system services while they install.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$made_policy" ] || rm -f "$policy"
fi

python_bin=${PYTHON:-python3}
req_hash=$(sha256sum "$ROOT/requirements/dev.txt" | cut -c1-16)
if [ ! -x "$ROOT/.venv/bin/python" ] || [ "$(cat "$STAMPS/venv" 2>/dev/null)" != "$req_hash" ]; then
  say "creating the virtual environment .venv ($($python_bin --version))"
  [ -x "$ROOT/.venv/bin/python" ] || "$python_bin" -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements/dev.txt"
  echo "$req_hash" >"$STAMPS/venv"
fi

lock_hash=$(sha256sum "$ROOT/package-lock.json" | cut -c1-16)
if [ ! -x "$ROOT/node_modules/.bin/azurite-blob" ] || [ "$(cat "$STAMPS/npm" 2>/dev/null)" != "$lock_hash" ]; then
  say "installing Azurite from the lockfile"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_hash" >"$STAMPS/npm"
fi

# ansible-test bootstraps pip in its venvs with a script it downloads from a host we cannot reach;
# this stand-in installs pip from the registry's wheel instead (see toolchain-notes.md).
pip_version=24.2
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
wheel_dir="$HOME/.ansible/test/cache/pip-wheel"
if [ ! -f "$get_pip" ] || ! ls "$wheel_dir"/pip-"$pip_version"-*.whl >/dev/null 2>&1; then
  say "preparing the offline pip bootstrap for ansible-test"
  mkdir -p "$wheel_dir"
  "$ROOT/.venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$wheel_dir" "pip==$pip_version"
  install -m 0644 "$ROOT/scripts/get_pip_standin.py" "$get_pip"
fi

# The versions stage runs the playbooks on every older ansible-core minor the collection claims
# (meta/runtime.yml); the main .venv carries the newest. One small venv each, made when missing.
for core in 2.16.19 2.17.14 2.18.19; do
  venv="$ROOT/.cache/ansible-core-${core%.*}"
  if [ "$(cat "$venv/.pinned" 2>/dev/null)" != "$core" ]; then
    say "creating $venv (ansible-core $core)"
    rm -rf "$venv"
    "$python_bin" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$core"
    echo "$core" >"$venv/.pinned"
  fi
done

link="$ROOT/.cache/collections/ansible_collections/appconsistent/vmsnapshot"
if [ "$(readlink "$link" 2>/dev/null)" != "../../../.." ]; then
  mkdir -p "$(dirname "$link")"
  ln -sfn ../../../.. "$link"
fi
say "ready"
