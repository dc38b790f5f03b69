#!/usr/bin/env bash
# Runs every test: unit, property and vector tests, keyd against SQLite and PostgreSQL, and
# the end-to-end tests with the real Envoy, nginx, Caddy, keyd, keyctl, the fake Ollama and
# the real ollama/openai clients. Sets up what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/setup.sh

export ENVOY_BIN="${ENVOY_BIN:-$ROOT/.venv/bin/envoy}"
export KEYGATE_PYTHON="${KEYGATE_PYTHON:-$ROOT/.venv/bin/python}"
export KEYGATE_WASM="${KEYGATE_WASM:-$ROOT/target/wasm32-wasip1/release/keygate_filter.wasm}"
export KEYD_TEST_DATABASE_URL="${KEYD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PATH="/usr/sbin:$PATH"

# PostgreSQL runs on this kind of machine; start it if it stopped.
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi

echo "==> cargo test --workspace" >&2
cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" || exit $?
cargo_status=$?

# Script-level checks: the README's first command, the compose demo, every command in the
# docs, and the benchmark runners (unit tests and one short run of each: it proves they work,
# it asserts no timing).
failed=0
passed=0
run_check() {
  echo "==> $*" >&2
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $*" >&2; fi
}
export PATH="$ROOT/target/release:$PATH"
run_check "$KEYGATE_PYTHON" scripts/check_quickstart.py
run_check "$KEYGATE_PYTHON" scripts/check_compose.py
run_check "$KEYGATE_PYTHON" scripts/check_docs.py
run_check python3 -m unittest discover -s bench -p 'test_*.py'
run_check python3 bench/run.py --quick
run_check python3 bench/hostcalls.py --ops get_header required --n 1 --rounds 1 --duration 1
echo "checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || exit 1
exit "$cargo_status"
