#!/usr/bin/env bash
# mypy over the package as it is installed, read through the tree of links
# scripts/installed_tree.sh builds. Extra arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(bash scripts/installed_tree.sh)
exec .venv/bin/mypy "$@" "$tree/sessionledger"
