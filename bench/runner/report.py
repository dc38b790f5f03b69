"""The Markdown report: one table of medians and ranges with ratios, the issue's targets
checked against the figures (as text, never as a pass/fail exit), and the extra experiments."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .measure import Pair, Sample
from .targets import BY_NAME

EMPTY = "wasm-empty"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rng(xs: list[float], fmt: str) -> str:
    if not xs:
        return "–"
    m = med(xs)
    if len(xs) == 1:
        return format(m, fmt)
    return f"{format(m, fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


@dataclass
class Row:
    name: str
    samples: list[Sample]
    pairs: list[Pair]

    def col(self, attr: str) -> list[float]:
        return [getattr(s, attr) for s in self.samples]

    @property
    def rps_ratio(self) -> list[float]:
        return [p.target.rps / p.baseline.rps for p in self.pairs if p.baseline]

    @property
    def extra_us(self) -> list[float]:
        return [p.target.total_us - p.baseline.total_us for p in self.pairs if p.baseline]

    def by_round(self) -> dict[int, Pair]:
        return {p.round: p for p in self.pairs if p.baseline}


def build_rows(pairs: list[Pair], samples: list[Sample]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for s in samples:
        rows.setdefault(s.target, Row(s.target, [], [])).samples.append(s)
    for p in pairs:
        rows[p.target.target].pairs.append(p)
    return rows


def vs_empty(row: Row, empty: Row | None) -> tuple[list[float], float | None]:
    """Per-round req/s relative to the empty filter's (each normalised by its own paired
    baseline), and extra CPU as a multiple of the empty filter's extra CPU."""
    if empty is None or row.name == EMPTY or not empty.pairs:
        return [], None
    e = empty.by_round()
    ratios = []
    for rnd, p in row.by_round().items():
        if rnd in e:
            ep = e[rnd]
            ratios.append((p.target.rps / p.baseline.rps) / (ep.target.rps / ep.baseline.rps))
    e_extra = med(empty.extra_us)
    x = med(row.extra_us) / e_extra if empty.extra_us and row.extra_us and e_extra > 0 else None
    return ratios, x


def table(rows: dict[str, Row], order: list[str]) -> list[str]:
    empty = rows.get(EMPTY)
    out = [
        "| configuration | req/s | × baseline req/s | × empty-wasm req/s | p50 µs | p99 µs "
        "| proxy CPU µs/req | side CPU µs/req | added CPU µs/req vs baseline | added ÷ empty-wasm added "
        "| RSS MiB | bad responses |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        row = rows.get(name)
        if row is None:
            continue
        t = BY_NAME[name]
        vse, x = vs_empty(row, empty) if t.family == "envoy" else ([], None)
        side = row.col("side_us")
        out.append("| " + " | ".join([
            f"**{t.label}**" if t.baseline is None else t.label,
            rng(row.col("rps"), ",.0f"),
            rng(row.rps_ratio, ".2f") if t.baseline else "1 (baseline)",
            rng(vse, ".2f") if vse else ("1" if name == EMPTY else "–"),
            rng(row.col("p50_us"), ".0f"),
            rng(row.col("p99_us"), ".0f"),
            rng(row.col("cpu_us"), ".1f"),
            rng(side, ".1f") if any(side) else "–",
            rng(row.extra_us, "+.1f") if t.baseline else "–",
            f"{x:.2f}" if x is not None else ("1" if name == EMPTY else "–"),
            f"{med([r / 2**20 for r in row.col('rss')]):.0f}",
            str(sum(s.bad for s in row.samples)),
        ]) + " |")
    return out


def _fmt(v: float | None, f: str = ".1f") -> str:
    return "n/a" if v is None else format(v, f)


def targets(rows: dict[str, Row], extras: dict) -> list[str]:
    """The issue's targets, each with the figure it is judged by. Text only."""
    out = []
    empty = rows.get(EMPTY)
    e_extra = med(empty.extra_us) if empty and empty.extra_us else None

    def line(ok: bool | None, text: str) -> None:
        mark = {True: "met", False: "**missed**", None: "not measured"}[ok]
        out.append(f"- {text}: {mark}")

    for name in ("keygate-key-1k", "keygate-key-100k", "keygate-key-1m", "keygate-token-repeat"):
        row = rows.get(name)
        if row is None or e_extra is None:
            line(None, f"`{name}` added CPU ≤ 1.25× empty-wasm's, req/s ≥ 0.95× empty-wasm's")
            continue
        ratios, x = vs_empty(row, empty)
        r = med(ratios) if ratios else None
        ok = x is not None and r is not None and x <= 1.25 and r >= 0.95
        line(ok, f"`{name}` added CPU ≤ 1.25× empty-wasm's (is {_fmt(x, '.2f')}×: "
                 f"{_fmt(med(row.extra_us))} vs {_fmt(e_extra)} µs/req), req/s ≥ 0.95× "
                 f"empty-wasm's (is {_fmt(r, '.2f')})")
    first, jwt = rows.get("keygate-token-first"), rows.get("jwt")
    if first and jwt and jwt.extra_us:
        a, b = med(first.extra_us), med(jwt.extra_us)
        line(a <= 2 * b, f"`keygate-token-first` added CPU ≤ 2× native jwt_authn uncached "
                         f"(is {a:.1f} vs {b:.1f} µs/req = {a / b:.2f}×)")
    else:
        line(None, "`keygate-token-first` added CPU ≤ 2× native jwt_authn uncached")
    k1, k1m = rows.get("keygate-key-1k"), rows.get("keygate-key-1m")
    if k1 and k1m and k1.extra_us and k1m.extra_us:
        d = med(k1m.extra_us) - med(k1.extra_us)
        spread = max(max(k1.extra_us) - min(k1.extra_us), max(k1m.extra_us) - min(k1m.extra_us))
        line(abs(d) <= max(spread, 5.0), f"per-request cost flat from 1k to 1M keys (1M − 1k = "
                                         f"{d:+.1f} µs/req; run-to-run spread {spread:.1f})")
    else:
        line(None, "per-request cost flat from 1k to 1M keys")
    mem = extras.get("sync")
    if mem and mem.get("keyset_mib"):
        km = mem["keyset_mib"]
        c1, c2 = km.get(1), km.get(2)
        if c1 and c2:
            line(c2 < 1.5 * c1, f"key-set memory (1M − 1k keys) at --concurrency 2 not twice that "
                                f"at 1 ({c2:.0f} vs {c1:.0f} MiB)")
        else:
            line(None, "key-set memory at --concurrency 2 not twice that at 1")
    else:
        line(None, "key-set memory at --concurrency 2 not twice that at 1")
    rev = extras.get("revocation")
    if rev and rev.get("p99_ms") is not None:
        line(rev["p99_ms"] < 1000, f"revocation p99 < 1 s (is {rev['p99_ms']:.0f} ms over "
                                   f"{rev['n']} revocations)")
    else:
        line(None, "revocation p99 < 1 s")
    ext = rows.get("ext-authz")
    if ext and any(ext.col("side_us")):
        s = med(ext.col("side_us"))
        line(s <= 30, f"ext_authz → keyd /v1/verify side CPU ≤ 30 µs/req (is {s:.1f})")
    else:
        line(None, "ext_authz → keyd /v1/verify side CPU ≤ 30 µs/req")
    return out


BEGIN = "<!-- bench/run.py: results begin (written by the runner; edit outside these lines) -->"
END = "<!-- bench/run.py: results end -->"


def splice(doc: str, block: list[str]) -> str | None:
    """`doc` with the text between the BEGIN and END markers replaced by `block`; None when
    the markers are missing or out of order (the document is then left as it is)."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        return None
    head = doc[:start + len(BEGIN)]
    return head + "\n" + "\n".join(block).rstrip("\n") + "\n" + doc[end:]
