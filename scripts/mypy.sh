#!/usr/bin/env bash
# mypy over the package as it is installed. mypy does not follow setuptools' package-dir
# mapping (sessionledger.domain -> domain/, ...), so it reads the code through a tree of
# links laid out as the installed package. Extra arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.mypy_tree/sessionledger
rm -rf .mypy_tree
mkdir -p "$tree"
ln -s ../../sessionledger/__init__.py ../../sessionledger/py.typed "$tree/"
for layer in domain infrastructure projections migrations; do
  ln -s "../../$layer" "$tree/$layer"
done
exec .venv/bin/mypy "$@" "$tree"
