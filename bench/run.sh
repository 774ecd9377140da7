#!/usr/bin/env bash
# Every benchmark with one command: bench/run.sh [--quick] [--only NAME ...]
# Installs what is missing first (scripts/bootstrap.sh), then runs bench/run.py with the
# checkout's virtual environment. Results: bench/results/<name>.json and summary.json.
set -euo pipefail
export LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/python" "$ROOT/bench/run.py" "$@"
