"""One measured run, and the A/B schedule: every configuration is paired with its baseline
in every round, the order inside a pair alternating between rounds, so drift of this shared
machine falls on both sides of each comparison."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .context import Context
from .procs import BenchError
from .targets import Running


@dataclass
class Sample:
    target: str
    round: int
    rps: float
    p50_us: float
    p99_us: float
    cpu_us: float        # proxy CPU per request
    side_us: float       # side-service CPU per request (keyd)
    rss: int             # proxy RSS after the run, bytes
    requests: int
    bad: int             # non-2xx responses + socket errors

    @property
    def total_us(self) -> float:
        return self.cpu_us + self.side_us


def measure(ctx: Context, name: str, run: Running, seconds: float, rnd: int,
            connections: int | None = None) -> Sample:
    return measure_together(ctx, {name: run}, seconds, rnd, connections)[name]


def measure_together(ctx: Context, runs: dict[str, Running], seconds: float,
                     rnd: int, connections: int | None = None) -> dict[str, Sample]:
    """Loads every configuration in `runs` at the same time, each with its own wrk; with one
    entry this is a plain run. Side services shared by several (keyd) are charged to each
    in proportion to its requests."""
    for run in runs.values():
        run.proxy.check_alive()
        for s in run.side:
            s.check_alive()
    scripts = {n: (r.script() if r.script else (None, None)) for n, r in runs.items()}
    sides = {p.pid: p for r in runs.values() for p in r.side}
    c0 = {n: r.proxy.cpu() for n, r in runs.items()}
    s0 = {pid: p.cpu() for pid, p in sides.items()}

    def one(n: str):
        r = runs[n]
        script, args = scripts[n]
        return ctx.wrk.run(r.url + "/api/tags", seconds, headers=r.headers, script=script,
                           script_args=args, connections=connections)

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        results = dict(zip(runs, pool.map(one, runs)))
    c1 = {n: r.proxy.cpu() for n, r in runs.items()}
    s_used = {pid: p.cpu() - s0[pid] for pid, p in sides.items()}
    out = {}
    for n, r in runs.items():
        res = results[n]
        if r.after:
            r.after(res)
        if res.requests == 0:
            raise BenchError(f"{n}: wrk made no request")
        side = 0.0
        for p in r.side:
            users = [m for m, o in runs.items() if any(q.pid == p.pid for q in o.side)]
            share = res.requests / sum(results[m].requests for m in users)
            side += s_used[p.pid] * share
        out[n] = Sample(target=n, round=rnd, rps=res.rps, p50_us=res.p50_us, p99_us=res.p99_us,
                        cpu_us=(c1[n] - c0[n]) / res.requests * 1e6,
                        side_us=side / res.requests * 1e6, rss=r.proxy.rss(),
                        requests=res.requests, bad=res.non2xx + res.socket_errors)
    return out


@dataclass
class Pair:
    round: int
    target: Sample
    baseline: Sample | None


def schedule(ctx: Context, running: dict[str, Running],
             candidates: list[tuple[str, str | None]], pairs: list[Pair], samples: list[Sample],
             log=print, concurrent: bool = False) -> None:
    """Runs `rounds` rounds; in each, every (candidate, baseline) pair back to back (a
    baseline selected alone is measured alone). With `concurrent`, the two of a pair are
    loaded at the same time on the same core instead, so both see exactly the same machine
    (the tighter comparison; req/s are then each about half). Appends to `pairs` and
    `samples` as it goes, so a failure mid-way keeps what was measured."""
    opts = ctx.opts
    total = opts.rounds * len(candidates)
    done = 0
    t_start = time.monotonic()
    for rnd in range(1, opts.rounds + 1):
        for i, (cand, base) in enumerate(candidates):
            order = [cand] if base is None else (
                [cand, base] if (rnd + i) % 2 == 0 else [base, cand])
            got = {}
            if concurrent and base is not None:
                got = measure_together(ctx, {n: running[n] for n in order}, opts.duration, rnd)
                samples.extend(got[n] for n in order)
            else:
                for name in order:
                    got[name] = measure(ctx, name, running[name], opts.duration, rnd)
                    samples.append(got[name])
            c, b = got[cand], got.get(base)
            pairs.append(Pair(rnd, c, b))
            done += 1
            eta = (time.monotonic() - t_start) / done * (total - done)
            vs = f" | {base:<8} {b.rps:9.0f} req/s {b.total_us:7.1f} µs/req" if b else ""
            log(f"  round {rnd}/{opts.rounds} {cand:<22} {c.rps:9.0f} req/s {c.total_us:7.1f} µs/req"
                f"{vs}{'  BAD RESPONSES' if c.bad or (b and b.bad) else ''}  (~{eta:.0f}s left)")
            sys.stdout.flush()
