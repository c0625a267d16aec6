#!/usr/bin/env bash
# Create .venv and install the project with its test dependencies (idempotent).
# torch is installed first and pinned, so the CPU build is used; everything else takes a range 2.13.0 satisfies.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet --disable-pip-version-check "torch==${LEDGER_TORCH_VERSION:-2.13.0}"
fi
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
