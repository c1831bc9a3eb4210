#!/usr/bin/env bash
# The whole test suite, from nothing: PostgreSQL server binaries (for the server the
# tests start themselves), a virtualenv with the project and its dev tools, then
# lint, types, import contracts and tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
if ! have_pg; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL server binaries are missing: sudo apt-get install postgresql" >&2
    exit 1
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/mypy.sh
bash scripts/imports.sh
.venv/bin/pytest "$@"
