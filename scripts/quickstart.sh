#!/usr/bin/env bash
# One command from a fresh clone to a protected Ollama:
#   keyd (SQLite, state in .state/) + Envoy with the keygate filter, in front of Ollama at
#   $OLLAMA_URL (default http://127.0.0.1:11434). When nothing answers there, the bundled
#   fake Ollama is started instead, and this says so.
# Issues a first key on the first run and prints it once. Re-running reuses .state/ (same
# keys, same admin token, same filter credential). Ctrl-C stops everything.
#
# Settings (environment): OLLAMA_URL, KEYGATE_LISTEN (default 127.0.0.1:8080),
# KEYD_LISTEN (default 127.0.0.1:7433), KEYGATE_ENVOY_ADMIN (Envoy's admin interface with
# the filter's stats, default 127.0.0.1:9901; "off" disables it), KEYGATE_STATE (default
# .state), KEYGATE_SKIP_SETUP=1 (do not run scripts/setup.sh first), ENVOY_BIN.
#
# Output: progress on stderr; on stdout, once everything answers, a banner whose first line
# starts with "keygate is running" (the key, when there is one, follows it) and whose last
# line ends with "Ctrl-C stops everything."
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Everything written under the state directory is private: it holds the admin token, the
# database (signing keys) and the Envoy config (filter credential).
umask 077

OLLAMA_URL="${OLLAMA_URL:-http://127.0.0.1:11434}"
LISTEN="${KEYGATE_LISTEN:-127.0.0.1:8080}"
KEYD_LISTEN="${KEYD_LISTEN:-127.0.0.1:7433}"
ENVOY_ADMIN="${KEYGATE_ENVOY_ADMIN:-127.0.0.1:9901}"
STATE="${KEYGATE_STATE:-$ROOT/.state}"

# in_use HOST:PORT: something already accepts connections there.
in_use() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for addr in "$LISTEN" "$KEYD_LISTEN" $([ "$ENVOY_ADMIN" = off ] || echo "$ENVOY_ADMIN"); do
  if in_use "$addr"; then
    echo "error: $addr is already in use (another quickstart?): stop it, or choose other" \
      "addresses with KEYGATE_LISTEN, KEYD_LISTEN and KEYGATE_ENVOY_ADMIN" >&2
    exit 1
  fi
done

mkdir -p "$STATE"
chmod 700 "$STATE"
STATE=$(cd "$STATE" && pwd)
rm -f "$STATE/quickstart.ready"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "${KEYGATE_SKIP_SETUP:-}" != 1 ]; then
  bash scripts/setup.sh
fi
KEYD="$ROOT/target/release/keyd"
KEYCTL="$ROOT/target/release/keyctl"
ENVOY="${ENVOY_BIN:-$ROOT/.venv/bin/envoy}"
WASM="$ROOT/target/wasm32-wasip1/release/keygate_filter.wasm"
for f in "$KEYD" "$KEYCTL" "$ENVOY" "$WASM"; do
  if [ ! -x "$f" ] && [ ! -f "$f" ]; then
    echo "error: $f is missing: run 'bash scripts/setup.sh' (or drop KEYGATE_SKIP_SETUP)" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # Give each component 5 s to finish in-flight requests, then stop it hard: Ctrl-C must
    # never leave a process behind.
    local alive
    for _ in $(seq 50); do
      alive=()
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
      [ ${#alive[@]} -eq 0 ] && break
      sleep 0.1
    done
    if [ ${#alive[@]} -gt 0 ]; then
      echo "warning: killing what did not stop within 5 s (pids ${alive[*]})" >&2
      kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# die_if_gone PID WHAT LOG: a component that exited during start-up is an error, reported
# with the end of its log rather than after a long timeout.
die_if_gone() {
  if ! kill -0 "$1" 2>/dev/null; then
    echo "error: $2 exited during start-up; the end of $3:" >&2
    tail -n 15 "$3" >&2 || true
    exit 1
  fi
}

wait_http() { # url, what, seconds, pid, log
  local url=$1 what=$2 tries=$(( ${3:-20} * 10 ))
  for _ in $(seq "$tries"); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    die_if_gone "$4" "$what" "$5"
    sleep 0.1
  done
  echo "error: $what did not come up at $url (see $5)" >&2
  exit 1
}

# status URL [KEY]: the HTTP status of a GET, the key sent as a Bearer credential through
# a file descriptor so it never appears in a command line.
status() {
  if [ -n "${2:-}" ]; then
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
      -H @<(printf 'Authorization: Bearer %s\n' "$2") "$1" || true
  else
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true
  fi
}

# 1. Ollama, or the fake.
UPSTREAM="$OLLAMA_URL"
if curl -fsS -o /dev/null --max-time 2 "$OLLAMA_URL/api/version" 2>/dev/null; then
  say "Ollama answers at $OLLAMA_URL"
else
  say "nothing answers at $OLLAMA_URL: starting the bundled FAKE Ollama (canned replies; set OLLAMA_URL for a real one)"
  rm -f "$STATE/fake-ollama.port"
  python3 tests/fake_ollama/fake_ollama.py --listen 127.0.0.1:0 --port-file "$STATE/fake-ollama.port" \
    >"$STATE/fake-ollama.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    [ -s "$STATE/fake-ollama.port" ] && break
    die_if_gone "${pids[-1]}" "the fake Ollama" "$STATE/fake-ollama.log"
    sleep 0.1
  done
  UPSTREAM="http://127.0.0.1:$(cat "$STATE/fake-ollama.port")"
  wait_http "$UPSTREAM/api/version" "the fake Ollama" 10 "${pids[-1]}" "$STATE/fake-ollama.log"
fi

# 2. keyd on SQLite; the admin token is generated on first start into $STATE/admin-token.
say "starting keyd on $KEYD_LISTEN (database $STATE/keyd.db)"
NO_COLOR=1 KEYD_DATABASE_URL="sqlite://$STATE/keyd.db" KEYD_LISTEN="$KEYD_LISTEN" \
  "$KEYD" serve >"$STATE/keyd.log" 2>&1 &
pids+=($!)
KEYD_PID=${pids[-1]}
# keyd prints "listening: ADDR" on stdout once it has bound its port.
for _ in $(seq 200); do
  grep -q '^listening: ' "$STATE/keyd.log" && break
  die_if_gone "$KEYD_PID" keyd "$STATE/keyd.log"
  sleep 0.1
done
wait_http "http://$KEYD_LISTEN/healthz" keyd 20 "$KEYD_PID" "$STATE/keyd.log"
KEYD_URL="http://$KEYD_LISTEN"
TOKEN_FILE="$STATE/admin-token"
for _ in $(seq 50); do [ -s "$TOKEN_FILE" ] && break; sleep 0.1; done
if [ ! -s "$TOKEN_FILE" ]; then
  echo "error: keyd did not write its admin token to $TOKEN_FILE (see $STATE/keyd.log)" >&2
  exit 1
fi
keyctl() { "$KEYCTL" --url "$KEYD_URL" --admin-token-file "$TOKEN_FILE" "$@"; }

# 3. Envoy with the filter. The filter credential is created once and kept in
#    $STATE/filter-credential; the snapshot keys to pin are read from keyd each time (so a
#    rotated snapshot key is picked up by a restart).
CRED_FILE="$STATE/filter-credential"
credential_ok() {
  [ -s "$CRED_FILE" ] || return 1
  local version
  version=$(curl -fsS --max-time 2 "$KEYD_URL/healthz" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
  [ "$(status "$KEYD_URL/v1/snapshot?since=$version&wait=0" "$(cat "$CRED_FILE")")" = 304 ]
}
if ! credential_ok; then
  python3 - "$KEYD_URL" "$TOKEN_FILE" >"$CRED_FILE.tmp" <<'PY'
import json, sys, urllib.request
url, token_file = sys.argv[1], sys.argv[2]
with open(token_file) as f:
    token = f.read().strip()
req = urllib.request.Request(
    url + "/v1/filter-credentials",
    data=json.dumps({"name": "quickstart-envoy"}).encode(),
    headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    method="POST",
)
with urllib.request.urlopen(req, timeout=10) as r:
    print(json.load(r)["credential"])
PY
  mv "$CRED_FILE.tmp" "$CRED_FILE"
fi
SNAPSHOT_KEYS=()
while read -r k; do SNAPSHOT_KEYS+=(--snapshot-key "$k"); done < <(
  curl -fsS --max-time 2 "$KEYD_URL/v1/snapshot-keys" |
    python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["keys"]))')
ADMIN_ARGS=()
if [ "$ENVOY_ADMIN" != off ]; then ADMIN_ARGS=(--admin "$ENVOY_ADMIN"); fi

say "starting Envoy on $LISTEN with the keygate filter"
KEYGATE_FILTER_CREDENTIAL="$(cat "$CRED_FILE")" "$KEYCTL" config envoy \
  --listen "$LISTEN" --upstream "$UPSTREAM" --keyd "$KEYD_URL" --wasm "$WASM" \
  "${ADMIN_ARGS[@]}" "${SNAPSHOT_KEYS[@]}" >"$STATE/envoy.yaml"
"$ENVOY" -c "$STATE/envoy.yaml" --concurrency 2 --log-level warn --use-dynamic-base-id \
  --file-flush-interval-msec 1000 >"$STATE/envoy.log" 2>&1 &
pids+=($!)
ENVOY_PID=${pids[-1]}

# Envoy is ready once the filter has its first snapshot: an unauthenticated request gets 401
# (503 before that).
code=""
for _ in $(seq 300); do
  code=$(status "http://$LISTEN/api/version")
  [ "$code" = 401 ] && break
  die_if_gone "$ENVOY_PID" Envoy "$STATE/envoy.log"
  sleep 0.1
done
if [ "$code" != 401 ]; then
  echo "error: Envoy did not become ready on $LISTEN (last status ${code:-none}); see $STATE/envoy.log" >&2
  exit 1
fi

# 4. The first key, only on the first run: a secret is shown once. Printed only once the
#    filter has it (the key's snapshot reaches Envoy within milliseconds).
FIRST=""
if [ ! -s "$STATE/first-key-id" ]; then
  issued=$(keyctl --json issue --name first-key)
  FIRST=$(printf '%s' "$issued" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  for _ in $(seq 50); do
    [ "$(status "http://$LISTEN/api/version" "$FIRST")" = 200 ] && break
    sleep 0.1
  done
  printf '%s' "$issued" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' \
    >"$STATE/first-key-id"
fi

echo
echo "keygate is running: Envoy on http://$LISTEN -> $UPSTREAM (keyd on $KEYD_URL)"
if [ -n "$FIRST" ]; then
  cat <<MSG

Your first API key (shown once, keyd stores only its hash):

  $FIRST

  curl -H "Authorization: Bearer $FIRST" http://$LISTEN/api/tags
  OLLAMA_API_KEY=$FIRST OLLAMA_HOST=http://$LISTEN $ROOT/.venv/bin/python -c 'import ollama; print(ollama.list())'
MSG
else
  cat <<MSG

State reused from $STATE: your first key ($(cat "$STATE/first-key-id")) still works.
MSG
fi
cat <<MSG

keyctl, from another terminal (the admin token is in $TOKEN_FILE):
  export PATH="$ROOT/target/release:\$PATH" KEYD_URL=$KEYD_URL KEYD_ADMIN_TOKEN="\$(cat $TOKEN_FILE)"
  keyctl issue --name alice
MSG
if [ "$ENVOY_ADMIN" != off ]; then
  echo "Envoy stats: curl -s 'http://$ENVOY_ADMIN/stats?filter=keygate'"
fi
echo "Logs: $STATE/*.log        Ctrl-C stops everything."
echo "READY" >"$STATE/quickstart.ready"
wait -n "${pids[@]}" || true
echo "error: a component exited; see the logs in $STATE/" >&2
exit 1
