#!/usr/bin/env bash
# The wheel as a user gets it: built from this tree, installed (not editable) into a fresh venv, and run from
# another directory with no source tree on the path. Reuses pip's cache and local wheels, so it takes minutes.
# Usage: bash .ci/wheel_check.sh [PYTHON]   (after scripts/setup.sh, whose .venv builds the wheel)
# WHEEL_VENV=DIR keeps the venv in DIR between runs (it still gets this tree's freshly built wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${1:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/budgetplan-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PIP="--disable-pip-version-check -q"

# 1. the wheel (the setup venv has setuptools; no build isolation needed)
.venv/bin/pip wheel $PIP --no-deps --no-build-isolation -w "$WORK/dist" . >/dev/null
WHEEL=$(ls "$WORK"/dist/budgetplan-*.whl)
"$PYTHON" -c "import sys, zipfile; print('\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))" "$WHEEL" > "$WORK/contents"
for data in budgetplan/profiles/jetson-nano.toml budgetplan/profiles/fleets/demo.toml budgetplan/schemas/plan.schema.json \
    budgetplan/assets/minilm-demo-profile.json "budgetplan-*.dist-info/licenses/LICENSE"; do
  grep -qx "${data//\*/.*}" "$WORK/contents" || { echo "wheel check: $data is not in $WHEEL"; exit 1; }
done

# 2. a fresh venv with the wheel and the tested dependency set (no dev/flower extras: what `pip install` gives)
VENV=${WHEEL_VENV:-$WORK/venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install $PIP -c constraints.txt "$WHEEL"
"$VENV/bin/pip" install $PIP --no-deps --force-reinstall "$WHEEL"  # this tree's wheel even when the version is unchanged
BIN=$VENV/bin

# 3. from another directory, nothing of the source tree importable
mkdir "$WORK/elsewhere" && cd "$WORK/elsewhere"
unset PYTHONPATH
export HF_HUB_OFFLINE=1
"$BIN/python" -c "import budgetplan, sys; f = budgetplan.__file__; sys.exit(0 if '$REPO' not in f else f'imported from the source tree: {f}')"
"$BIN/budgetplan" --version
# to a file first: `| grep -q` closes the pipe at the first match, and the rest of the listing then hits a broken pipe
"$BIN/budgetplan" devices list > devices.txt
grep -q jetson-orin-nano-8gb devices.txt || { echo "wheel check: devices list lacks jetson-orin-nano-8gb"; exit 1; }
"$BIN/budgetplan" solve --device jetson-nano --json plan.json
# the bundled demo fleet names the bundled profile measured at the demo's sizes: every class gets a plan (exit 0)
"$BIN/budgetplan" solve --fleet demo --json - > fleet-plan.json
"$BIN/python" -c "import json; assert json.load(open('fleet-plan.json'))['kind'] == 'budgetplan-plan'"
"$BIN/budgetplan" profile tiny-bert --batch-size 2 --seq-len 16 --lora-ranks 4 --no-measure --json profile.json
for example in "$REPO"/examples/*.py; do
  "$BIN/python" "$example" "$WORK/example-$(basename "$example" .py)"
done
# 4. the declared ranges resolve next to an older numpy and transformers, keeping them (no install: --dry-run)
"$BIN/pip" install $PIP --dry-run --ignore-installed --report "$WORK/compat.json" "$WHEEL" numpy==2.3.5 transformers==5.23.0
"$BIN/python" - "$WORK/compat.json" <<'PY'
import json, sys
chosen = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
assert chosen["numpy"] == "2.3.5" and chosen["transformers"] == "5.23.0", chosen
print(f"resolves next to numpy 2.3.5 and transformers 5.23.0 (torch {chosen['torch']}, peft {chosen['peft']})")
PY
echo "wheel check passed: $(basename "$WHEEL") installed and ran outside the source tree"
