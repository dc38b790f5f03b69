#!/bin/sh
# keygate-init: the demo's one-shot set-up, run by docker compose once keyd is healthy
# (service "init" in demo/docker-compose.yml). Idempotent: running it again changes nothing
# unless KEYGATE_REGENERATE=1 asks for a new Envoy config (after a snapshot-key rotation).
#
#   1. waits for keyd;
#   2. copies the filter (keygate_filter.wasm) into the volume Envoy mounts;
#   3. writes the Envoy config there with `keyctl config envoy` (keyctl asks keyd for a
#      filter credential and the snapshot public keys to pin);
#   4. issues the first API key and prints it, once (read it with `docker compose logs init`).
#
# `keygate-init envoy-config [keyctl options]` only prints the Envoy config for this
# environment (scripts/check_compose.py compares it with keyctl's own output).
#
# keyctl reads the admin token keyd generated from $XDG_DATA_HOME/keygate/admin-token
# (the keyd volume, mounted read-only here).
set -eu

: "${KEYD_URL:=http://keyd:7433}"
: "${OLLAMA_URL:=http://ollama:11434}"
: "${ENVOY_LISTEN:=0.0.0.0:8080}"
# The shared volume as mounted here, and the filter's path as Envoy sees it.
: "${GATEWAY_DIR:=/gateway}"
: "${ENVOY_WASM:=/etc/keygate/keygate_filter.wasm}"
: "${WASM_SOURCE:=/usr/local/lib/keygate/keygate_filter.wasm}"
# Where Envoy is published on the host (only used in the message that shows the key).
: "${GATEWAY_URL:=http://127.0.0.1:8080}"

# TLS (optional): certificate, key and client CA as Envoy sees them (docs/docker-compose.md).
envoy_config() {
  if [ -n "${ENVOY_CLIENT_CA:-}" ]; then set -- --client-ca "$ENVOY_CLIENT_CA" "$@"; fi
  if [ -n "${ENVOY_TLS_CERT:-}" ]; then
    set -- --tls-cert "$ENVOY_TLS_CERT" --tls-key "${ENVOY_TLS_KEY:?ENVOY_TLS_KEY goes with ENVOY_TLS_CERT}" "$@"
  fi
  keyctl config envoy --listen "$ENVOY_LISTEN" --upstream "$OLLAMA_URL" --keyd "$KEYD_URL" \
    --wasm "$ENVOY_WASM" "$@"
}

if [ "${1:-}" = envoy-config ]; then
  shift
  envoy_config "$@"
  exit
fi

log() { echo "keygate-init: $*" >&2; }

i=0
until curl -fsS -o /dev/null --max-time 2 "$KEYD_URL/healthz"; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    log "keyd did not answer at $KEYD_URL/healthz for 60 s; see 'docker compose logs keyd'"
    exit 1
  fi
  sleep 1
done

# Private files: the config holds the filter credential. Envoy runs as the same user.
umask 077
cp "$WASM_SOURCE" "$GATEWAY_DIR/keygate_filter.wasm.tmp"
chmod 600 "$GATEWAY_DIR/keygate_filter.wasm.tmp"
mv "$GATEWAY_DIR/keygate_filter.wasm.tmp" "$GATEWAY_DIR/keygate_filter.wasm"

if [ ! -s "$GATEWAY_DIR/envoy.yaml" ] || [ "${KEYGATE_REGENERATE:-0}" = 1 ]; then
  envoy_config >"$GATEWAY_DIR/envoy.yaml.tmp"
  mv "$GATEWAY_DIR/envoy.yaml.tmp" "$GATEWAY_DIR/envoy.yaml"
  log "wrote the Envoy config ($GATEWAY_DIR/envoy.yaml)"
else
  log "the Envoy config exists; KEYGATE_REGENERATE=1 writes a new one"
fi

if [ ! -e "$GATEWAY_DIR/first-key-issued" ]; then
  key=$(keyctl issue --name first-key --quiet)
  : >"$GATEWAY_DIR/first-key-issued"
  cat <<MSG

Your first API key (shown once; keyd stores only its hash):

  $key

  curl -H "Authorization: Bearer $key" $GATEWAY_URL/api/tags

More keys: docker compose exec keyd keyctl issue --name NAME
MSG
else
  log "the first key was issued before (keyctl list shows it): docker compose exec keyd keyctl list"
fi
