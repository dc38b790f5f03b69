#!/usr/bin/env python3
"""Per-hostcall cost inside Envoy's V8 wasm runtime: the profile behind the filter's budget.

    python3 bench/hostcalls.py                      # every operation, 3 rounds × 5 s, n = 20
    python3 bench/hostcalls.py --ops property set_header --rounds 5
    python3 bench/hostcalls.py --keygate old.wasm new.wasm   # A/B of keygate filter builds

For each operation, Envoy (one worker, core 0) runs bench/probe-filter doing that operation
`n` times per request, loaded at the same time as a second Envoy with the same filter doing
nothing extra (`none 0`), each with its own wrk on core 1: both see the same machine, so the
difference in Envoy CPU per request, divided by `n`, is what one operation costs. Every probe
reads the `authorization` header once, as the empty filter does. Prints a Markdown table
(median and min–max over rounds). A measurement, not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from runner import envoy as E  # noqa: E402
from runner import procs  # noqa: E402
from runner.context import PROXY_CORE, Context, Options  # noqa: E402
from runner.measure import measure_together  # noqa: E402
from runner import targets as T  # noqa: E402
from runner.targets import Running  # noqa: E402

OPS = {
    "none": "nothing (the same filter as the baseline: shows the pairing bias)",
    "get_header": "proxy_get_header_map_value (`authorization`)",
    "get_headers": "proxy_get_header_map_pairs (the whole request header map)",
    "time": "proxy_get_current_time_nanoseconds",
    "property": "proxy_get_property (`source.address`)",
    "shared_get": "proxy_get_shared_data, a 96-byte entry (a key record's size)",
    "shared_get_missing": "proxy_get_shared_data of an absent entry",
    "shared_get_empty": "proxy_get_shared_data of an entry whose value is empty",
    "shared_set": "proxy_set_shared_data, 4 bytes (a limiter update)",
    "set_header": "proxy_replace_header_map_value (`x-probe`)",
    "remove_header": "proxy_remove_header_map_value of an absent header",
    "metric": "proxy_increment_metric",
    "sha256": "SHA-256 of the credential inside wasm (no hostcall)",
    "parse_key": "keygate-core `ParsedKey::parse` of an API key (format and CRC check)",
    "classify": "keygate-core `routes::classify` of `GET /api/tags`",
    "extract": "keygate-core `extract_credential` of `Authorization: Bearer`",
    "authenticate": "keygate-core `authenticate` of an API key against a one-key store",
    "alloc": "one 32-byte allocation and free inside wasm",
    "required": "what keygate's contract requires of any filter on allow: read the header map, "
                "strip `authorization`, set `x-keygate-key-id` and `x-keygate-key-name` (run with --n 1)",
}


def start(ctx: Context, name: str, config: str) -> Running:
    up = ctx.start_upstream()
    cfg = E.bootstrap(up.port, [E.wasm_filter("probe", ctx.probe_wasm(), config)])
    e = E.Envoy(ctx.need_envoy(), name, cfg, ctx.work, PROXY_CORE, 1).wait_ready()
    status, _, _ = procs.http("GET", e.url + "/api/tags", headers={"Authorization": "Bearer x"})
    if status != 200:
        raise procs.BenchError(f"{name}: probe answered {status}")
    return Running(e.url, e.proc, headers={"Authorization": "Bearer kg_" + "a" * 70}, stop=e.stop)


def start_keygate(ctx: Context, name: str, wasm: Path) -> Running:
    """A keygate filter build, 1k keys from the snapshot stand-in, sent a valid API key."""
    ctx._cache["keygate_wasm"] = wasm
    e = T.start_keygate(ctx, name, "1k")
    T.check_auth(name, e.url, T.bearer(T._key(ctx)), T.bearer(T.WRONG_KEY))
    return Running(e.url, e.proc, headers=T.bearer(T._key(ctx)), stop=e.stop)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", nargs="+", choices=sorted(OPS), default=list(OPS))
    p.add_argument("--n", type=int, default=20, help="operations per request (default 20)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--keygate", nargs="+", type=Path, default=[], metavar="WASM",
                   help="instead of --ops: builds of the keygate filter, each paired the same way "
                        "(API key, 1k keys); prints µs per request over the empty probe")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="keygate-hostcalls-"))
    ctx = Context.create(HERE.parent, work, Options(a.rounds, a.duration, 1.0, 32, 1, False))
    rows = []
    try:
        base = start(ctx, "baseline", "none 0")
        if a.keygate:
            a.n, a.ops = 1, [str(w) for w in a.keygate]
            OPS.update({w: "keygate filter build, API key, 1k keys: µs per request" for w in a.ops})
        for i, op in enumerate(a.ops):
            run = (start_keygate(ctx, f"keygate-{i}", Path(op)) if a.keygate
                   else start(ctx, f"probe-{op}", f"{op} {a.n}"))
            measure_together(ctx, {"baseline": base, op: run}, 1.0, 0)
            per_op = []
            for rnd in range(1, a.rounds + 1):
                got = measure_together(ctx, {"baseline": base, op: run}, a.duration, rnd)
                per_op.append((got[op].cpu_us - got["baseline"].cpu_us) / a.n)
                print(f"  {op:<20} round {rnd}: none {got['baseline'].cpu_us:6.1f} µs/req, "
                      f"probe {got[op].cpu_us:7.1f} µs/req → {per_op[-1]:6.2f} µs/op", flush=True)
            run.stop()
            rows.append((op, statistics.median(per_op), min(per_op), max(per_op)))
    finally:
        procs.stop_all()
    print()
    print(f"| operation (× {a.n} per request) | µs per operation, median (min–max) of {a.rounds} |")
    print("|---|---|")
    for op, med, lo, hi in rows:
        print(f"| `{op}`: {OPS[op]} | {med:.2f} ({lo:.2f}–{hi:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
