"""The load generator: wrk, pinned to its own core, with fixed threads and connections."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .procs import BenchError

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}

# Cycles through a file of tokens, one per request, starting at a given line, so every
# request of a run carries a token the filter has not seen before.
CYCLE_LUA = r"""
local tokens = {}
local i = 0
local header = "Authorization"
local prefix = "Bearer "
init = function(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  i = tonumber(args[2]) or 0
end
request = function()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format(nil, nil, { [header] = prefix .. tokens[i] })
end
"""

# A POST with a JSON body (keyd issue throughput).
POST_LUA = r"""
wrk.method = "POST"
wrk.body = '{"name":"bench-issue"}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_us: float
    p99_us: float
    non2xx: int
    socket_errors: int
    raw: str


def _dur(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise BenchError(f"cannot read wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)] * 1e6


def parse(out: str) -> WrkResult:
    def grab(pattern: str) -> re.Match:
        m = re.search(pattern, out, re.M)
        if not m:
            raise BenchError(f"unexpected wrk output (no {pattern!r}):\n{out}")
        return m

    total = grab(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_dur(total.group(2) + total.group(3)) / 1e6,
        rps=float(grab(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_us=_dur(grab(r"^\s+50%\s+(\S+)").group(1)),
        p99_us=_dur(grab(r"^\s+99%\s+(\S+)").group(1)),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        raw=out,
    )


class Wrk:
    def __init__(self, binary: str, core: int, threads: int, connections: int, workdir: Path):
        self.binary = binary
        self.core = core
        self.threads = threads
        self.connections = connections
        self.cycle_script = workdir / "cycle.lua"
        self.cycle_script.write_text(CYCLE_LUA)
        self.post_script = workdir / "post.lua"
        self.post_script.write_text(POST_LUA)

    @staticmethod
    def find() -> str | None:
        return shutil.which("wrk")

    def run(self, url: str, seconds: float, headers: dict[str, str] | None = None,
            script: Path | None = None, script_args: list[str] | None = None,
            connections: int | None = None) -> WrkResult:
        argv = [shutil.which("taskset") or "taskset", "-c", str(self.core), self.binary,
                f"-t{self.threads}", f"-c{connections or self.connections}",
                f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
        for k, v in (headers or {}).items():
            argv += ["-H", f"{k}: {v}"]
        if script is not None:
            argv += ["-s", str(script)]
        argv.append(url)
        if script_args:
            argv += ["--"] + script_args
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"wrk did not finish within {seconds + 60:.0f}s") from e
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
        return parse(done.stdout)
