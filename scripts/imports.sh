#!/usr/bin/env bash
# The import contracts of pyproject.toml ([tool.importlinter]: the layers point inward,
# no import cycles), checked over the package as it is installed: lint-imports runs in
# the tree of links scripts/installed_tree.sh builds, where `sessionledger` is found with
# every layer under it (from the repository root it would find sessionledger/ alone).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(bash scripts/installed_tree.sh)
cd "$tree"
exec ../.venv/bin/lint-imports --no-cache ../pyproject.toml
