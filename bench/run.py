#!/usr/bin/env python3
"""keygate benchmark runner: one command, everything on 127.0.0.1, A/B interleaved rounds.

    python3 bench/run.py                     # every configuration, 5 rounds of 10 s
    python3 bench/run.py --quick             # CI: 1 round of 2 s, a few configurations
    python3 bench/run.py --only envoy wasm-empty keygate-key-1k --rounds 7
    python3 bench/run.py --list

The proxy under test runs alone on core 0 (Envoy with --concurrency 1); wrk, the static
upstream (nginx `return 200`), keyd and the snapshot stand-in run on core 1. Each
configuration is paired with its baseline (Envoy, nginx or Caddy without auth) in every round.
Figures: requests/s, p50/p99 latency, proxy CPU µs per request (utime+stime over the run ÷
requests: the steady figure on this noisy machine), side-service CPU, proxy RSS. The table goes
to bench/RESULTS.md (with --quick: only printed, unless --out is given). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from runner import extras as X  # noqa: E402
from runner import procs  # noqa: E402
from runner import report  # noqa: E402
from runner.context import Context, Options, Unavailable  # noqa: E402
from runner.measure import measure, schedule  # noqa: E402
from runner.procs import BenchError  # noqa: E402
from runner.targets import BY_NAME, TARGETS  # noqa: E402

EXTRAS = {
    "latency": "p50/p99 at one connection for every running Envoy configuration",
    "sync": "snapshot sync time and Envoy RSS at 1k/100k/1M keys, --concurrency 1 and 2",
    "revocation": "revocation propagation: `keyctl revoke` returned → both Envoy workers reject",
    "verify": "keyd /v1/verify requests/s and CPU per request (wrk straight at keyd)",
    "issue": "keyd key issue throughput on SQLite (POST /v1/keys)",
}
QUICK_EXTRAS = ["latency", "sync", "revocation", "verify", "issue"]


def log(msg: str = "") -> None:
    print(msg, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 round of 2 s over a few configurations and small extras (CI)")
    p.add_argument("--rounds", type=int, help="A/B rounds (default 5; --quick: 1)")
    p.add_argument("--duration", type=float, help="seconds per run (default 10; --quick: 2)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per configuration (default 3)")
    p.add_argument("--method", choices=["interleaved", "concurrent"], default="interleaved",
                   help="interleaved: candidate and baseline one after the other (default); "
                        "concurrent: both loaded at once on the same core (tighter CPU figures)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="configurations and/or extras to run (see --list)")
    p.add_argument("--skip", nargs="+", metavar="NAME", default=[],
                   help="configurations and/or extras to leave out")
    p.add_argument("--revocations", type=int, help="revocations to time (default 100; --quick: 5)")
    p.add_argument("--out", type=Path, help="where to write the Markdown (default bench/RESULTS.md; "
                                            "--quick: not written)")
    p.add_argument("--benchmarks", type=Path,
                   help="document whose marked results block gets the table and targets "
                        "(default BENCHMARKS.md on a full run; --quick, --only: not written)")
    p.add_argument("--strict", action="store_true",
                   help="fail when a selected configuration cannot run (default when CI is set)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    p.add_argument("--list", action="store_true", help="list configurations and extras, then exit")
    a = p.parse_args(argv)
    a.rounds = a.rounds or (1 if a.quick else 5)
    a.duration = a.duration or (2.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 3.0)
    a.revocations = a.revocations or (5 if a.quick else 100)
    a.strict = a.strict or bool(os.environ.get("CI"))
    if a.rounds < 1 or a.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    return a


def selection(a: argparse.Namespace) -> tuple[list[str], list[str]]:
    names = set(BY_NAME) | set(EXTRAS)
    for n in (a.only or []) + a.skip:
        if n not in names:
            raise SystemExit(f"unknown configuration or extra {n!r}; --list shows them")
    if a.only:
        targets = [t.name for t in TARGETS if t.name in a.only]
        extras = [e for e in EXTRAS if e in a.only]
    elif a.quick:
        targets = [t.name for t in TARGETS if t.quick]
        extras = list(QUICK_EXTRAS)
    else:
        targets = [t.name for t in TARGETS]
        extras = list(EXTRAS)
    targets = [t for t in targets if t not in a.skip]
    extras = [e for e in extras if e not in a.skip]
    return targets, extras


def environment(ctx: Context, a: argparse.Namespace, load_at_start: float) -> list[str]:
    def out(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", str(ROOT), "status", "--porcelain"]) not in ("", "?")
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}"
        f"{' (with uncommitted changes)' if dirty else ''}",
        f"- machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
        f"1-minute load average at start {load_at_start:.2f}, at the end {os.getloadavg()[0]:.2f} "
        "(other work on the machine shows here)",
        f"- Envoy: {out([ctx.envoy_bin, '--version']).split('version: ')[-1] if ctx.envoy_bin else 'missing'}"
        f"; nginx: {out([ctx.nginx_bin, '-v']).split('/')[-1] if ctx.nginx_bin else 'missing'}"
        f"; Caddy: {out([ctx.caddy_bin, 'version']).split(' ')[0] if ctx.caddy_bin else 'missing'}"
        f"; wrk: {out(['wrk', '-v']).split(' ')[1] if ctx.wrk else 'missing'}",
        f"- load: wrk -t{a.threads} -c{a.connections} --latency, {a.duration:g} s per run, "
        f"{a.rounds} round(s) ({a.method}), {a.warmup:g} s warm-up; `GET /api/tags` with `Authorization: Bearer …`",
        "- placement: proxy under test on core 0 (Envoy `--concurrency 1`, nginx 1 worker, Caddy "
        "GOMAXPROCS=1); wrk, the static upstream (nginx `return 200`), keyd and the snapshot "
        "stand-in on core 1",
    ]
    return lines


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    if a.list:
        for t in TARGETS:
            log(f"{t.name:<22} {t.label}{'  [quick]' if t.quick else ''}\n{'':<22} {t.what}")
        for n, what in EXTRAS.items():
            log(f"{n:<22} (extra) {what}{'  [quick]' if n in QUICK_EXTRAS else ''}")
        return 0
    targets, extras = selection(a)
    out_path = a.out or (None if a.quick else HERE / "RESULTS.md")
    work = Path(tempfile.mkdtemp(prefix="keygate-bench-"))
    opts = Options(rounds=a.rounds, duration=a.duration, warmup=a.warmup,
                   connections=a.connections, threads=a.threads, quick=a.quick)
    ctx = Context.create(ROOT, work, opts)
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    log(f"keygate benchmark: work directory {work}")

    missing = [n for n, ok in (("wrk", ctx.wrk), ("envoy", ctx.envoy_bin),
                               ("nginx (the static upstream)", ctx.nginx_bin)) if not ok]
    if missing:
        log(f"error: {', '.join(missing)} not found. Run scripts/setup.sh "
            "(or apt-get install wrk nginx caddy; ENVOY_BIN=/path/to/envoy).")
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    running = {}
    unavailable: dict[str, str] = {}
    failed: dict[str, str] = {}
    extra_results: dict = {}
    notes: dict[str, list[str]] = {}
    pairs, samples = [], []
    try:
        # Baselines of selected candidates are always started.
        wanted = list(targets)
        for name in targets:
            base = BY_NAME[name].baseline
            if base and base not in wanted:
                wanted.append(base)
        wanted = [t.name for t in TARGETS if t.name in wanted]
        log("building helpers (bench/tools, bench/empty-filter) ...")
        ctx.kgbench()
        ctx.start_upstream()
        for name in wanted:
            t0 = time.monotonic()
            try:
                running[name] = BY_NAME[name].start(ctx)
                log(f"  started {name:<22} ({time.monotonic() - t0:.1f}s)")
            except Unavailable as e:
                unavailable[name] = str(e)
                log(f"  waiting {name:<22} {e}")
            except BenchError as e:
                failed[name] = str(e)
                log(f"  FAILED  {name:<22} {e}")
        candidates = []
        for name in targets:
            base = BY_NAME[name].baseline
            if name not in running:
                continue
            if base is None:
                if not any(BY_NAME[o].baseline == name and o in running for o in targets):
                    candidates.append((name, None))
            elif base in running:
                candidates.append((name, base))
            else:
                failed.setdefault(name, f"its baseline {base} did not start")
        if candidates:
            log(f"warm-up ({opts.warmup:g} s each) ...")
            if opts.warmup >= 1:
                for name, run in running.items():
                    measure(ctx, name, run, opts.warmup, 0)
            log(f"measuring: {len(candidates)} pair(s) × {opts.rounds} round(s) × "
                f"{opts.duration:g} s")
            try:
                schedule(ctx, running, candidates, pairs, samples, log, a.method == "concurrent")
            except BenchError as e:
                failed["measurement"] = str(e)
                log(f"  FAILED  measurement stopped: {e}")
        if "latency" in extras:
            log("extra: latency ...")
            try:
                extra_results["latency"] = X.latency(ctx, a, log, running)
            except Unavailable as e:
                unavailable["extra:latency"] = str(e)
                log(f"  waiting latency: {e}")
            except BenchError as e:
                failed["extra:latency"] = str(e)
                log(f"  FAILED  latency: {e}")
        for name, run in list(running.items()):
            notes.update({name: run.notes} if run.notes else {})
            run.stop()
        running.clear()
        for name in [e for e in extras if e != "latency"]:
            log(f"extra: {name} ...")
            try:
                extra_results[name] = X.RUN[name](ctx, a, log)
            except Unavailable as e:
                unavailable[f"extra:{name}"] = str(e)
                log(f"  waiting {name}: {e}")
            except BenchError as e:
                failed[f"extra:{name}"] = str(e)
                log(f"  FAILED  {name}: {e}")
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        procs.stop_all()
        return 130
    finally:
        procs.stop_all()

    rows = report.build_rows(pairs, samples)
    md = ["# keygate benchmark results", "",
          f"Command: `python3 bench/run.py {' '.join(argv)}`".replace("  ", " ").rstrip() + "  ",
          "Generated by bench/run.py; how to read it: bench/README.md.", ""]
    md += environment(ctx, a, load_at_start) + [""]
    if rows:
        md += ["## Requests through each configuration", "",
               "Median (min–max) over rounds. *added CPU* = (proxy + side CPU per request) minus its "
               "paired baseline's in the same round, median over rounds: the figure that carries "
               "to other hardware. Ratios of req/s are per round against the paired baseline.", ""]
        md += report.table(rows, [t.name for t in TARGETS]) + [""]
        md += ["Configurations:", ""]
        md += [f"- `{t.name}` — {t.label}: {t.what}"
               f"{' (note: ' + ', '.join(notes[t.name]) + ')' if t.name in notes else ''}"
               for t in TARGETS if t.name in rows]
        md += [""]
    md += ["## Targets (issue 7)", ""] + report.targets(rows, extra_results) + [""]
    for name in extras:
        if name in extra_results:
            md += X.render(name, extra_results[name]) + [""]
    if unavailable or failed:
        md += ["## Not measured", ""]
        md += [f"- `{n}` waits: {why}" for n, why in unavailable.items()]
        md += [f"- `{n}` FAILED: {why.splitlines()[0]}" for n, why in failed.items()]
        md += [""]
    md += [f"Total run time {time.monotonic() - started:.0f} s."]
    text = "\n".join(md) + "\n"
    log("")
    log(text)
    if out_path:
        out_path.write_text(text)
        log(f"written to {out_path}")
    bench_doc = a.benchmarks or (None if a.quick or a.only or a.out else ROOT / "BENCHMARKS.md")
    if bench_doc and rows:
        block = [environment(ctx, a, load_at_start)[0].replace("- date:", "Run of"), "",
                 f"Command: `python3 bench/run.py {' '.join(argv)}`".replace("  ", " ").rstrip(), ""]
        block += report.table(rows, [t.name for t in TARGETS]) + [""]
        block += report.targets(rows, extra_results)
        spliced = report.splice(bench_doc.read_text(), block) if bench_doc.exists() else None
        if spliced is None:
            log(f"note: {bench_doc} has no results markers; not updated")
        else:
            bench_doc.write_text(spliced)
            log(f"results block of {bench_doc} updated")
    if a.keep or failed:
        log(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    bad = sum(s.bad for s in samples)
    if failed or (a.strict and unavailable):
        log(f"error: {len(failed)} failed, {len(unavailable)} could not run"
            f"{' (--strict/CI)' if a.strict and unavailable else ''}")
        return 1
    if bad:
        log(f"error: {bad} requests got a non-2xx answer or a socket error during measurement")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
