"""Unit tests of the runner's pure parts (no processes, no timings):
`python3 -m unittest discover -s bench -p 'test_*.py'`."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import extras, load, report  # noqa: E402
from runner.measure import Pair, Sample  # noqa: E402
from runner.procs import BenchError  # noqa: E402

WRK_OUT = """Running 2s test @ http://127.0.0.1:40000/api/tags
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  500.00us  12.00ms   90.00%
    Req/Sec    15.00k     1.00k   16.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    2.00ms
     90%    3.00ms
     99%    1.20s
  30123 requests in 2.00s, 4.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  15061.50
Transfer/sec:      2.00MB
"""


def sample(name: str, rnd: int, rps: float, cpu: float, side: float = 0.0) -> Sample:
    return Sample(target=name, round=rnd, rps=rps, p50_us=100, p99_us=200, cpu_us=cpu,
                  side_us=side, rss=64 * 2**20, requests=1000, bad=0)


class Splice(unittest.TestCase):
    def test_replaces_only_between_the_markers(self):
        doc = f"intro\n{report.BEGIN}\nold table\n{report.END}\noutro\n"
        got = report.splice(doc, ["| new |", ""])
        self.assertEqual(got, f"intro\n{report.BEGIN}\n| new |\n{report.END}\noutro\n")

    def test_missing_markers_leave_the_document_alone(self):
        self.assertIsNone(report.splice("no markers here", ["x"]))
        self.assertIsNone(report.splice(f"{report.END}\n{report.BEGIN}", ["x"]))


class WrkParse(unittest.TestCase):
    def test_reads_every_figure_with_units(self):
        r = load.parse(WRK_OUT)
        self.assertEqual(r.requests, 30123)
        self.assertAlmostEqual(r.seconds, 2.0)
        self.assertAlmostEqual(r.rps, 15061.5)
        self.assertAlmostEqual(r.p50_us, 850.0)
        self.assertAlmostEqual(r.p99_us, 1.2e6)
        self.assertEqual(r.non2xx, 7)
        self.assertEqual(r.socket_errors, 3)

    def test_clean_run_has_no_errors(self):
        out = WRK_OUT.replace("  Non-2xx or 3xx responses: 7\n", "").replace(
            "  Socket errors: connect 0, read 2, write 0, timeout 1\n", "")
        r = load.parse(out)
        self.assertEqual((r.non2xx, r.socket_errors), (0, 0))

    def test_unexpected_output_is_an_error_not_a_zero(self):
        with self.assertRaises(BenchError):
            load.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


class Report(unittest.TestCase):
    def rows(self):
        pairs = []
        for rnd, (b1, e, b2, k) in enumerate([(100, 130, 100, 160), (120, 150, 110, 170),
                                               (90, 125, 95, 150)], start=1):
            pairs.append(Pair(rnd, sample("wasm-empty", rnd, 800, e), sample("envoy", rnd, 1000, b1)))
            pairs.append(Pair(rnd, sample("keygate-key-1k", rnd, 700, k),
                              sample("envoy", rnd, 1000, b2)))
        samples = [s for p in pairs for s in (p.target, p.baseline)]
        return report.build_rows(pairs, samples)

    def test_added_cpu_is_paired_per_round(self):
        rows = self.rows()
        self.assertEqual(rows["wasm-empty"].extra_us, [30, 30, 35])
        self.assertEqual(rows["keygate-key-1k"].extra_us, [60, 60, 55])
        self.assertEqual(len(rows["envoy"].samples), 6)

    def test_ratios_against_the_empty_filter(self):
        rows = self.rows()
        ratios, x = report.vs_empty(rows["keygate-key-1k"], rows["wasm-empty"])
        self.assertEqual([round(r, 3) for r in ratios], [0.875] * 3)
        self.assertAlmostEqual(x, 60 / 30)

    def test_targets_report_a_miss_as_text(self):
        lines = report.targets(self.rows(), {})
        line = next(item for item in lines if item.startswith("- `keygate-key-1k`"))
        self.assertIn("**missed**", line)
        self.assertIn("2.00×", line)

    def test_table_has_one_row_per_measured_configuration(self):
        t = report.table(self.rows(), ["envoy", "wasm-empty", "keygate-key-1k", "jwt"])
        self.assertEqual(len(t), 2 + 3)
        self.assertIn("+60.0 (+55.0–+60.0)", t[-1])

    def test_side_cpu_counts_in_added_cpu(self):
        p = Pair(1, sample("ext-authz", 1, 500, 150, side=25), sample("envoy", 1, 1000, 100))
        rows = report.build_rows([p], [p.target, p.baseline])
        self.assertEqual(rows["ext-authz"].extra_us, [75])


class Percentile(unittest.TestCase):
    def test_nearest_rank(self):
        xs = list(range(1, 101))
        self.assertEqual(extras.pct(xs, 50), 50)
        self.assertEqual(extras.pct(xs, 99), 99)
        self.assertEqual(extras.pct([7.0], 99), 7.0)


if __name__ == "__main__":
    unittest.main()
