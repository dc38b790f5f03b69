"""The configurations compared, each started once and kept running for all rounds.

Every configuration answers the same request, `GET /api/tags` with `Authorization: Bearer
<credential>`, where the credential is what that configuration checks (an API key, or an
EdDSA token); the baselines get an API key in the same header so the bytes on the wire match.
Before it is measured each configuration must prove it really checks: the credential gets 200,
no credential gets 401, a wrong one gets 401 (a filter that lets everything through, or
rejects everything, would otherwise look fast).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from . import envoy as E
from .context import PROXY_CORE, Context
from .keyd import Keyd
from .load import WrkResult
from .procs import BenchError, Proc, http, wait_until
from .proxies import Caddy, Nginx, nginx_proxy_block

PATH = "/api/tags"
WRONG_KEY = "kg_aaaaaaaaaaaa_" + "a" * 52 + "aaaaaa"


@dataclass
class Running:
    """A started configuration."""
    url: str
    proxy: Proc
    side: list[Proc] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    stop: Callable[[], None] = lambda: None
    # For per-request credentials: returns (script, args) for the next run and is told how
    # many requests that run made.
    script: Callable[[], tuple] | None = None
    after: Callable[[WrkResult], None] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Target:
    name: str
    label: str
    what: str
    family: str                 # envoy | nginx | caddy
    baseline: str | None        # the configuration it is paired with; None for a baseline
    start: Callable[[Context], Running]
    quick: bool = False


def bearer(cred: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cred}"}


def check(name: str, url: str, headers: dict[str, str], expect: int) -> None:
    status, _, body = http("GET", url + PATH, headers=headers, timeout=5)
    if status != expect:
        raise BenchError(f"{name}: expected {expect} for {PATH} with "
                         f"{'a credential' if headers else 'no credential'}, got {status}: "
                         f"{body[:200]!r}")


def check_auth(name: str, url: str, good: dict[str, str], bad: dict[str, str]) -> None:
    check(name, url, good, 200)
    check(name, url, {}, 401)
    check(name, url, bad, 401)


# --- Envoy ----------------------------------------------------------------------------------

def _envoy(ctx: Context, name: str, filters: list[dict], clusters: list[dict] = (),
           concurrency: int = 1) -> E.Envoy:
    """Envoy with one worker is pinned to the proxy core; with more it gets both cores."""
    up = ctx.start_upstream()
    cfg = E.bootstrap(up.port, filters, clusters)
    core = PROXY_CORE if concurrency == 1 else None
    return E.Envoy(ctx.need_envoy(), name, cfg, ctx.work, core, concurrency).wait_ready()


def _key(ctx: Context) -> str:
    return ctx.info("1k")["first_key"]


def start_envoy_plain(ctx: Context) -> Running:
    e = _envoy(ctx, "envoy", [])
    check("envoy", e.url, bearer(_key(ctx)), 200)
    return Running(e.url, e.proc, headers=bearer(_key(ctx)), stop=e.stop)


def start_wasm_empty(ctx: Context) -> Running:
    e = _envoy(ctx, "wasm-empty", [E.wasm_filter("empty", ctx.empty_wasm())])
    check("wasm-empty", e.url, bearer(_key(ctx)), 200)
    return Running(e.url, e.proc, headers=bearer(_key(ctx)), stop=e.stop)


def start_api_key_auth(ctx: Context) -> Running:
    keys = [tuple(line.split()) for line in
            (ctx.keyset("1k") / "apikeys.txt").read_text().splitlines()][:1000]
    e = _envoy(ctx, "api-key-auth", [E.api_key_auth_filter(keys)])
    check_auth("api-key-auth", e.url, bearer(_key(ctx)), bearer(WRONG_KEY))
    return Running(e.url, e.proc, headers=bearer(_key(ctx)), stop=e.stop)


def _bad_token(ctx: Context) -> str:
    t = ctx.first_token()
    # Flip one character of the signature: a well-formed token that must fail to verify.
    return t[:-3] + ("A" if t[-3] != "A" else "B") + t[-2:]


def start_jwt(cache: bool) -> Callable[[Context], Running]:
    def start(ctx: Context) -> Running:
        name = "jwt-cache" if cache else "jwt"
        e = _envoy(ctx, name, [E.jwt_authn_filter(ctx.jwks(), "keyd", cache)])
        tok = ctx.first_token()
        check_auth(name, e.url, bearer(tok), bearer(_bad_token(ctx)))
        return Running(e.url, e.proc, headers=bearer(tok), stop=e.stop)
    return start


def start_ext_authz(ctx: Context) -> Running:
    keyd, key = ctx.keyd()
    f, c = E.ext_authz_filter(keyd.port)
    e = _envoy(ctx, "ext-authz", [f], [c])
    check_auth("ext-authz", e.url, bearer(key), bearer(WRONG_KEY))
    return Running(e.url, e.proc, side=[keyd.proc], headers=bearer(key), stop=e.stop)


def keygate_config(ctx: Context, snapshot_port_name: str) -> tuple[dict, dict]:
    """The keygate filter pointed at a stand-in snapshot server; returns filter and cluster."""
    wasm = ctx.keygate_wasm()
    _, port = ctx.snapshot_server(snapshot_port_name)
    info = ctx.info(snapshot_port_name)
    plugin = {
        "snapshot_public_keys": [info["snapshot_public_key"]],
        "filter_credential": "kgf_bench_stand_in_credential",
        "keyd_cluster": "keyd",
    }
    return E.wasm_filter("keygate", wasm, json.dumps(plugin)), E.cluster("keyd", port)


@dataclass
class SyncRecord:
    """How long an Envoy with the keygate filter took to serve its first allowed request."""
    keys: str
    concurrency: int
    snapshot_bytes: int
    ready_s: float          # Envoy started → first 200
    after_download_s: float | None  # snapshot fully sent by the stand-in → first 200
    rss: int                # Envoy RSS right after


def _served_end(log_path, since: float, until: float) -> float | None:
    """When the stand-in last finished sending a full snapshot in [since, until]."""
    best = None
    try:
        for line in open(log_path):
            if line.startswith("SERVED full"):
                end = float(line.rsplit("end=", 1)[1])
                if since <= end <= until:
                    best = end
    except (OSError, ValueError):
        return None
    return best


def start_keygate(ctx: Context, name: str, keys: str, concurrency: int = 1) -> E.Envoy:
    """Envoy with the keygate filter fed by the stand-in for key set `keys`; returns once a
    valid key is allowed (until the first snapshot is applied the filter answers 503), and
    records how long that took (ctx.sync_records)."""
    f, c = keygate_config(ctx, keys)
    started = time.time()
    e = _envoy(ctx, name, [f], [c], concurrency)
    good = bearer(_key(ctx))
    timeout = {"1k": 60, "100k": 300, "1m": 1200}[keys]
    wait_until(f"{name}: first snapshot applied ({keys} keys)",
               lambda: http("GET", e.url + PATH, headers=good, timeout=5)[0] == 200,
               timeout, e.proc, interval=0.02)
    ready = time.time()
    # Touch every worker (each new connection goes to one) before reading RSS.
    for _ in range(20 * concurrency):
        http("GET", e.url + PATH, headers=good, timeout=5)
    server, _ = ctx.snapshot_server(keys)
    served = _served_end(server.log, started, ready)
    ctx.sync_records.setdefault((keys, concurrency), SyncRecord(
        keys, concurrency, ctx.info(keys)["snapshot_bytes"], ready - started,
        ready - served if served else None, e.proc.rss()))
    return e


def start_keygate_key(keys: str) -> Callable[[Context], Running]:
    def start(ctx: Context) -> Running:
        name = f"keygate-key-{keys}"
        e = start_keygate(ctx, name, keys)
        check_auth(name, e.url, bearer(_key(ctx)), bearer(WRONG_KEY))
        return Running(e.url, e.proc, headers=bearer(_key(ctx)), stop=e.stop)
    return start


def start_keygate_token_repeat(ctx: Context) -> Running:
    e = start_keygate(ctx, "keygate-token-repeat", "1k")
    tok = ctx.first_token()
    check_auth("keygate-token-repeat", e.url, bearer(tok), bearer(_bad_token(ctx)))
    return Running(e.url, e.proc, headers=bearer(tok), stop=e.stop)


def start_keygate_token_first(ctx: Context) -> Running:
    e = start_keygate(ctx, "keygate-token-first", "1k")
    check_auth("keygate-token-first", e.url, bearer(ctx.first_token()), bearer(_bad_token(ctx)))
    tokens = ctx.tokens()
    total = ctx.token_count()
    state = {"offset": 1}  # line 1 was used by the checks above
    run = Running(e.url, e.proc, headers=bearer(ctx.first_token()), stop=e.stop)

    def script():
        return ctx.wrk.cycle_script, [str(tokens), str(state["offset"])]

    def after(res: WrkResult):
        state["offset"] += res.requests + 64
        if state["offset"] > total and "tokens reused" not in run.notes:
            run.notes.append("tokens reused")
        state["offset"] %= total

    run.script, run.after = script, after
    return run


# --- nginx and Caddy ------------------------------------------------------------------------

def start_nginx(with_keyd: bool) -> Callable[[Context], Running]:
    def start(ctx: Context) -> Running:
        up = ctx.start_upstream()
        name = "nginx-auth" if with_keyd else "nginx"
        keyd: Keyd | None = None
        cred = _key(ctx)
        if with_keyd:
            keyd, cred = ctx.keyd()
        n = Nginx(ctx.need_nginx(), name, ctx.work,
                  nginx_proxy_block(up.port, keyd.port if keyd else None), PROXY_CORE).wait_ready()
        if keyd:
            check_auth(name, n.url, bearer(cred), bearer(WRONG_KEY))
        else:
            check(name, n.url, bearer(cred), 200)
        return Running(n.url, n.proc, side=[keyd.proc] if keyd else [], headers=bearer(cred),
                       stop=n.stop)
    return start


def start_caddy(with_keyd: bool) -> Callable[[Context], Running]:
    def start(ctx: Context) -> Running:
        up = ctx.start_upstream()
        name = "caddy-auth" if with_keyd else "caddy"
        keyd: Keyd | None = None
        cred = _key(ctx)
        if with_keyd:
            keyd, cred = ctx.keyd()
        c = Caddy(ctx.need_caddy(), name, ctx.work, up.port, keyd.port if keyd else None,
                  PROXY_CORE).wait_ready()
        if keyd:
            check_auth(name, c.url, bearer(cred), bearer(WRONG_KEY))
        else:
            check(name, c.url, bearer(cred), 200)
        return Running(c.url, c.proc, side=[keyd.proc] if keyd else [], headers=bearer(cred),
                       stop=c.stop)
    return start


TARGETS: list[Target] = [
    Target("envoy", "Envoy, no filter", "the ceiling: Envoy routing to the static upstream",
           "envoy", None, start_envoy_plain, quick=True),
    Target("wasm-empty", "Envoy + empty wasm filter",
           "a proxy-wasm filter (bench/empty-filter) that reads one header and continues: "
           "the floor any wasm filter pays", "envoy", "envoy", start_wasm_empty, quick=True),
    Target("api-key-auth", "Envoy + native api_key_auth, 1k keys",
           "Envoy's built-in `api_key_auth` with 1,000 keys, key stripped, client id forwarded",
           "envoy", "envoy", start_api_key_auth, quick=True),
    Target("jwt", "Envoy + native jwt_authn EdDSA, no cache",
           "Envoy's built-in `jwt_authn`, Ed25519 local JWKS: one signature check per request",
           "envoy", "envoy", start_jwt(False)),
    Target("jwt-cache", "Envoy + native jwt_authn EdDSA + jwt_cache_config",
           "as above with `jwt_cache_config` (the same token every request: cache hits)",
           "envoy", "envoy", start_jwt(True)),
    Target("ext-authz", "Envoy + ext_authz (HTTP) → keyd /v1/verify",
           "the out-of-process pattern: every request is checked by keyd over HTTP",
           "envoy", "envoy", start_ext_authz),
    Target("keygate-key-1k", "keygate filter, API key, 1k keys",
           "the keygate wasm filter, snapshot of 1,000 keys, API key in Authorization",
           "envoy", "envoy", start_keygate_key("1k"), quick=True),
    Target("keygate-key-100k", "keygate filter, API key, 100k keys",
           "as above with 100,000 keys in the snapshot", "envoy", "envoy",
           start_keygate_key("100k")),
    Target("keygate-key-1m", "keygate filter, API key, 1M keys",
           "as above with 1,000,000 keys in the snapshot", "envoy", "envoy",
           start_keygate_key("1m")),
    Target("keygate-token-first", "keygate filter, token first-seen",
           "a different EdDSA token on every request (wrk Lua cycling pre-minted tokens): one "
           "Ed25519 verify in wasm per request", "envoy", "envoy", start_keygate_token_first),
    Target("keygate-token-repeat", "keygate filter, token repeated",
           "the same token on every request: served from the verified-token cache",
           "envoy", "envoy", start_keygate_token_repeat),
    Target("nginx", "nginx, plain", "nginx proxy_pass to the upstream (1 worker)",
           "nginx", None, start_nginx(False), quick=True),
    Target("nginx-auth", "nginx + auth_request → keyd",
           "nginx `auth_request` to keyd /v1/verify on every request", "nginx", "nginx",
           start_nginx(True), quick=True),
    Target("caddy", "Caddy, plain", "Caddy reverse_proxy to the upstream (GOMAXPROCS=1)",
           "caddy", None, start_caddy(False)),
    Target("caddy-auth", "Caddy + forward_auth → keyd",
           "Caddy `forward_auth` to keyd /v1/verify on every request", "caddy", "caddy",
           start_caddy(True)),
]

BY_NAME = {t.name: t for t in TARGETS}
