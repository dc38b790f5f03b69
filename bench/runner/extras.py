"""Experiments beside the request table: snapshot sync time and memory by key count and
worker count, revocation propagation, keyd /v1/verify throughput, keyd issue throughput."""

from __future__ import annotations

import http.client as httpclient
import math
import os
import statistics
import subprocess
import time

from . import envoy as E
from .context import LOAD_CORE, PROXY_CORE, Context, Unavailable
from .keyd import Keyd
from .procs import BenchError, http, wait_until
from .report import rng as report_rng
from .targets import PATH, WRONG_KEY, _envoy, bearer, start_keygate

MIB = 2 ** 20


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


# --- snapshot sync and memory -----------------------------------------------------------------

def sync(ctx: Context, a, log) -> dict:
    ctx.keygate_wasm()
    sets = ["1k"] if a.quick else ["1k", "100k", "1m"]
    for keys in sets:
        for conc in (1, 2):
            if (keys, conc) in ctx.sync_records:
                continue
            e = start_keygate(ctx, f"sync-{keys}-c{conc}", keys, conc)
            r = ctx.sync_records[(keys, conc)]
            log(f"  {keys:>5} keys, --concurrency {conc}: first allowed request after "
                f"{r.ready_s:.2f} s, RSS {r.rss / MIB:.0f} MiB")
            e.stop()
    ref: dict[int, dict[str, int]] = {}
    for conc in (1, 2):
        ref[conc] = {}
        for label, filters in (("no filter", []),
                               ("empty wasm", [E.wasm_filter("empty", ctx.empty_wasm())])):
            e = _envoy(ctx, f"rss-{label.replace(' ', '-')}-c{conc}", filters, (), conc)
            for _ in range(20 * conc):
                http("GET", e.url + PATH, timeout=5)
            ref[conc][label] = e.proc.rss()
            e.stop()
    keyset = {}
    big = next((k for k in ("1m", "100k") if k in sets), None)
    if big:
        for conc in (1, 2):
            lo, hi = ctx.sync_records.get(("1k", conc)), ctx.sync_records.get((big, conc))
            if lo and hi:
                keyset[conc] = (hi.rss - lo.rss) / MIB
    return {"records": sorted(ctx.sync_records.values(), key=lambda r: (r.concurrency, r.rss)),
            "ref": ref, "keyset_mib": keyset, "keyset_of": big}


def render_sync(r: dict) -> list[str]:
    out = ["## Snapshot sync and memory", "",
           "Envoy with the keygate filter fed a full signed snapshot by the stand-in server "
           "(`kgbench serve`, standing in for keyd's `/v1/snapshot`). *Ready* = Envoy started → "
           "first request with a valid key answered 200 (includes Envoy's own start-up); "
           "*after download* = the stand-in finished sending the snapshot → that 200 "
           "(verify, decode, apply). RSS is taken after requests reached every worker.", "",
           "| keys | snapshot MB | --concurrency | ready s | after download s | Envoy RSS MiB |",
           "|---|---|---|---|---|---|"]
    for rec in r["records"]:
        ad = f"{rec.after_download_s:.2f}" if rec.after_download_s is not None else "–"
        out.append(f"| {rec.keys} | {rec.snapshot_bytes / 1e6:.1f} | {rec.concurrency} | "
                   f"{rec.ready_s:.2f} | {ad} | {rec.rss / MIB:.0f} |")
    out.append("")
    refs = "; ".join(f"--concurrency {c}: " + ", ".join(f"{k} {v / MIB:.0f} MiB" for k, v in d.items())
                     for c, d in r["ref"].items())
    out.append(f"Reference RSS without keygate: {refs}.")
    if r["keyset_mib"]:
        out.append("Key-set memory (RSS with " + r["keyset_of"] + " keys − RSS with 1k keys): " +
                   ", ".join(f"--concurrency {c}: {v:.0f} MiB" for c, v in r["keyset_mib"].items())
                   + ".")
    return out


# --- latency at one connection -----------------------------------------------------------------

LATENCY_ORDER = ["envoy", "wasm-empty", "api-key-auth", "jwt", "jwt-cache", "ext-authz",
                 "keygate-key-1k", "keygate-key-100k", "keygate-key-1m", "keygate-token-first",
                 "keygate-token-repeat"]


def latency(ctx: Context, a, log, running: dict) -> dict:
    """One connection, no queueing: what a single client waits for, per Envoy configuration;
    rounds interleave every configuration so drift falls on all of them."""
    from .measure import measure
    names = [n for n in LATENCY_ORDER if n in running]
    if "envoy" not in names:
        raise Unavailable("needs the `envoy` configuration running")
    got: dict[str, list] = {n: [] for n in names}
    for rnd in range(1, ctx.opts.rounds + 1):
        order = names if rnd % 2 else list(reversed(names))
        for n in order:
            got[n].append(measure(ctx, n, running[n], min(ctx.opts.duration, 5), rnd,
                                  connections=1))
    for n in names:
        log(f"  {n:<22} p50 {statistics.median(s.p50_us for s in got[n]):.0f} µs")
    return {"samples": got}


def render_latency(r: dict) -> list[str]:
    got = r["samples"]
    base = statistics.median(s.p50_us for s in got["envoy"])
    empty = (statistics.median(s.p50_us for s in got["wasm-empty"])
             if "wasm-empty" in got else None)
    out = ["## Latency at one connection", "",
           "wrk with a single connection (no queueing), each configuration alone on core 0, "
           "rounds interleaved; median (min–max) of p50/p99 over rounds, and the p50 added "
           "over Envoy without a filter and over the empty wasm filter (issue 5 target: the "
           "keygate filter adds under 50 µs p50 over the empty filter).", "",
           "| configuration | p50 µs | p99 µs | req/s | p50 added vs no filter µs | p50 added vs empty wasm µs |",
           "|---|---|---|---|---|---|"]
    for n, ss in got.items():
        p50 = [s.p50_us for s in ss]
        m = statistics.median(p50)
        out.append(f"| {n} | {report_rng(p50, '.0f')} | {report_rng([s.p99_us for s in ss], '.0f')} | "
                   f"{report_rng([s.rps for s in ss], ',.0f')} | {m - base:+.0f} | "
                   f"{'–' if empty is None or n in ('envoy', 'wasm-empty') else format(m - empty, '+.0f')} |")
    return out


# --- revocation propagation -----------------------------------------------------------------

def _worker_of(e: E.Envoy, before: dict[str, int]) -> int | None:
    after = e.stats("listener.")
    for name, v in after.items():
        if ".worker_" in name and name.endswith(".downstream_cx_total") and v > before.get(name, 0):
            return int(name.split(".worker_")[1].split(".")[0])
    return None


def _conn_per_worker(e: E.Envoy, src: str, headers: dict[str, str], workers: int
                     ) -> dict[int, httpclient.HTTPConnection]:
    """Opens kept-alive connections from `src` until each worker holds one (Envoy hands each
    new connection to one worker; the admin per-worker listener stats say which)."""
    conns: dict[int, httpclient.HTTPConnection] = {}
    for _ in range(40):
        before = e.stats("listener.")
        c = httpclient.HTTPConnection("127.0.0.1", e.port, timeout=5, source_address=(src, 0))
        c.request("GET", PATH, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise BenchError(f"revocation: a valid key got {r.status} before its revocation")
        w = _worker_of(e, before)
        if w is not None and w not in conns:
            conns[w] = c
        else:
            c.close()
        if len(conns) == workers:
            return conns
    raise BenchError(f"revocation: could not get a connection on each of {workers} workers")


def revocation(ctx: Context, a, log) -> dict:
    keyctl = ctx.keyctl_bin()
    wasm = ctx.keygate_wasm()
    keyd, _ = ctx.keyd()
    issued = ctx.keyd_issued()
    n = min(a.revocations, len(issued) - 1)
    up = ctx.start_upstream()
    env = dict(os.environ, KEYD_URL=keyd.url, KEYD_ADMIN_TOKEN=keyd.admin_token)
    from .procs import free_port
    listen, admin = free_port(), free_port()
    done = subprocess.run([str(keyctl), "config", "envoy", "--listen", f"127.0.0.1:{listen}",
                           "--upstream", f"http://127.0.0.1:{up.port}", "--keyd", keyd.url,
                           "--wasm", str(wasm), "--admin", f"127.0.0.1:{admin}"],
                          capture_output=True, text=True, env=env, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"keyctl config envoy failed ({done.returncode}): {done.stderr.strip()}")
    e = E.Envoy(ctx.need_envoy(), "revocation", done.stdout, ctx.work, None, 2).wait_ready()
    try:
        first = bearer(issued[1]["key"])
        wait_until("revocation Envoy: first snapshot applied",
                   lambda: http("GET", e.url + PATH, headers=first, timeout=5)[0] == 200,
                   60, e.proc)
        lat, per_worker, keyctl_s, limited = [], {0: [], 1: []}, [], 0
        for i in range(n):
            rec = issued[1 + i]
            hdr = bearer(rec["key"])
            # A fresh client address per revocation, so the filter's per-address backoff
            # after failed authentications never turns the next probes into 429s.
            src = f"127.0.0.{2 + i % 250}"
            conns = _conn_per_worker(e, src, hdr, 2)
            t_cmd = time.monotonic()
            r = subprocess.run([str(keyctl), "revoke", rec["id"]], capture_output=True,
                               text=True, env=env, timeout=30)
            t0 = time.monotonic()
            if r.returncode != 0:
                raise BenchError(f"keyctl revoke failed ({r.returncode}): {r.stderr.strip()}")
            keyctl_s.append(t0 - t_cmd)
            seen: dict[int, float] = {}
            while len(seen) < len(conns) and time.monotonic() - t0 < 10:
                for w, c in conns.items():
                    if w in seen:
                        continue
                    c.request("GET", PATH, headers=hdr)
                    resp = c.getresponse()
                    resp.read()
                    if resp.status in (401, 403):
                        seen[w] = time.monotonic() - t0
                    elif resp.status == 429:
                        limited += 1
                time.sleep(0.002)
            for c in conns.values():
                c.close()
            if len(seen) < len(conns):
                raise BenchError(f"revocation: key still allowed by a worker 10 s after "
                                 f"`keyctl revoke` returned (revocation {i + 1})")
            for w, s in seen.items():
                per_worker.setdefault(w, []).append(s * 1000)
            lat.append(max(seen.values()) * 1000)
        log(f"  {n} revocations: p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms, "
            f"max {max(lat):.0f} ms")
        return {"n": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat),
                "min_ms": min(lat), "per_worker": {w: (pct(v, 50), pct(v, 99))
                                                   for w, v in per_worker.items() if v},
                "keyctl_ms": statistics.median(keyctl_s) * 1000, "limited": limited}
    finally:
        e.stop()


def render_revocation(r: dict) -> list[str]:
    out = ["## Revocation propagation", "",
           f"{r['n']} keys revoked one after another with `keyctl revoke`, through Envoy with the "
           "keygate filter at `--concurrency 2`, configured by `keyctl config envoy`, syncing "
           "from a real keyd (SQLite). Time from `keyctl revoke` returning until a kept-alive "
           "connection on *each* of the two workers gets 401 (probed every ~2 ms per worker).", "",
           "| p50 ms | p99 ms | min ms | max ms | `keyctl revoke` itself (median) ms |",
           "|---|---|---|---|---|",
           f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['min_ms']:.0f} | {r['max_ms']:.0f} | "
           f"{r['keyctl_ms']:.0f} |", ""]
    out.append("Per worker (p50 / p99 ms): " + "; ".join(
        f"worker {w}: {a:.0f} / {b:.0f}" for w, (a, b) in sorted(r["per_worker"].items())) + ".")
    if r["limited"]:
        out.append(f"({r['limited']} probes were answered 429 and retried.)")
    return out


# --- keyd /v1/verify and key issue ------------------------------------------------------------

def _keyd_alone(ctx: Context, name: str) -> Keyd:
    return Keyd(str(ctx.keyd_bin()), name, ctx.work, PROXY_CORE).wait_ready()


def _runs(ctx: Context, keyd: Keyd, url: str, rounds: int, seconds: float, **kw) -> list[dict]:
    out = []
    for _ in range(rounds):
        c0 = keyd.proc.cpu()
        res = ctx.wrk.run(url, seconds, **kw)
        c1 = keyd.proc.cpu()
        out.append({"rps": res.rps, "p50": res.p50_us, "p99": res.p99_us, "bad": res.non2xx,
                    "cpu_us": (c1 - c0) / max(1, res.requests) * 1e6, "requests": res.requests})
    return out


def verify(ctx: Context, a, log) -> dict:
    keyd = _keyd_alone(ctx, "keyd-verify")
    try:
        key = keyd.issue(1000)[0]["key"]
        hdr = {"X-Original-Method": "GET", "X-Original-URI": PATH}
        for cred, want in ((key, 200), (WRONG_KEY, 401)):
            got = http("GET", keyd.url + "/v1/verify", headers={**hdr, **bearer(cred)})[0]
            if got != want:
                raise BenchError(f"keyd /v1/verify answered {got} for a "
                                 f"{'valid' if want == 200 else 'wrong'} key, expected {want}")
        runs = _runs(ctx, keyd, keyd.url + "/v1/verify", ctx.opts.rounds, ctx.opts.duration,
                     headers={**hdr, **bearer(key)})
    finally:
        keyd.stop()
    log(f"  /v1/verify: {statistics.median(r['rps'] for r in runs):,.0f} req/s, "
        f"{statistics.median(r['cpu_us'] for r in runs):.1f} µs CPU/req")
    return {"runs": runs}


def issue(ctx: Context, a, log) -> dict:
    keyd = _keyd_alone(ctx, "keyd-issue")
    try:
        keyd.issue(1)
        runs = _runs(ctx, keyd, keyd.url + "/v1/keys", ctx.opts.rounds, ctx.opts.duration,
                     headers={"Authorization": f"Bearer {keyd.admin_token}"},
                     script=ctx.wrk.post_script, connections=8)
    finally:
        keyd.stop()
    log(f"  issue: {statistics.median(r['rps'] for r in runs):,.0f} keys/s")
    return {"runs": runs}


def _render_runs(title: str, intro: str, unit: str, runs: list[dict]) -> list[str]:
    def m(k, f):
        xs = [r[k] for r in runs]
        med = statistics.median(xs)
        return format(med, f) if len(xs) == 1 else f"{format(med, f)} ({format(min(xs), f)}–{format(max(xs), f)})"
    return [f"## {title}", "", intro, "",
            f"| {unit}/s | p50 µs | p99 µs | keyd CPU µs per {unit[:-1] if unit.endswith('s') else unit} | non-2xx |",
            "|---|---|---|---|---|",
            f"| {m('rps', ',.0f')} | {m('p50', '.0f')} | {m('p99', '.0f')} | {m('cpu_us', '.1f')} | "
            f"{sum(r['bad'] for r in runs)} |"]


def render_verify(r: dict) -> list[str]:
    return _render_runs("keyd /v1/verify", "wrk straight at keyd's `/v1/verify` (as nginx "
                        "`auth_request` calls it: `X-Original-Method`, `X-Original-URI`, the key "
                        "in `Authorization`), keyd alone on core 0 with 1,000 keys, SQLite.",
                        "requests", r["runs"])


def render_issue(r: dict) -> list[str]:
    return _render_runs("keyd key issue throughput", "`POST /v1/keys` with the admin token, 8 "
                        "connections, keyd alone on core 0, SQLite (each issue is a committed "
                        "transaction with its audit row).", "keys", r["runs"])


RUN = {"sync": sync, "revocation": revocation, "verify": verify, "issue": issue}
RENDER = {"latency": render_latency, "sync": render_sync, "revocation": render_revocation, "verify": render_verify,
          "issue": render_issue}


def render(name: str, result: dict) -> list[str]:
    return RENDER[name](result)
