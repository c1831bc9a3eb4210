#!/usr/bin/env bash
# Builds .installed_tree/sessionledger/: links laid out as the installed package
# (sessionledger.domain -> domain/, ...). Tools that read the code from disk rather than
# import it (mypy, import-linter's grimp) do not follow setuptools' package-dir mapping,
# so they read it through this tree. Run from the repository root; prints the tree's path.
set -euo pipefail
tree=.installed_tree/sessionledger
rm -rf .installed_tree
mkdir -p "$tree"
ln -s ../../sessionledger/__init__.py ../../sessionledger/py.typed "$tree/"
for layer in domain infrastructure projections migrations; do
  ln -s "../../$layer" "$tree/$layer"
done
echo .installed_tree
