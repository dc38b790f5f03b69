"""Child processes: started pinned to a core, measured through /proc, always cleaned up.

CPU time is utime+stime of a process *tree* (nginx's master and workers count together), read
from /proc/PID/stat, which counts every thread including ones that have exited. The unit is a
clock tick (1/100 s here), so runs are kept long enough that a tick is well under 1%.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Every process this runner started, so an interrupted run still cleans up.
_LIVE: list["Proc"] = []


class BenchError(RuntimeError):
    """A failure the runner reports in one line (a process that did not come up, ...)."""


def free_port() -> int:
    """A port free right now on 127.0.0.1, for programs that cannot report a port-0 bind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        rest = stat[stat.rfind(b")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of the given processes (each including its threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2 :].split()
        # Fields 14 and 15 of stat (1-based) are utime and stime; rest starts at field 3.
        total += int(rest[11]) + int(rest[12])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


class Proc:
    """A child process, pinned with taskset when `core` is given, logging to a file."""

    def __init__(self, name: str, argv: list[str], log: Path, core: int | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name = name
        self.log = log
        full = list(argv)
        if core is not None:
            full = [shutil.which("taskset") or "taskset", "-c", str(core)] + full
        merged = dict(os.environ)
        merged.update(env or {})
        self._logf = open(log, "wb")
        # taskset execs the program, so the pid is the program's own.
        self.popen = subprocess.Popen(full, stdout=self._logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=merged, cwd=cwd,
                                      start_new_session=True)
        self.pid = self.popen.pid
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.popen.returncode}; "
                             f"last lines of {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def pids(self) -> list[int]:
        return tree(self.pid) if self.alive() else []

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def wait_log(self, needle: str, timeout: float) -> str:
        """Waits until `needle` appears in the log; returns the line holding it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            for line in self.log.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not print {needle!r} within {timeout:.0f}s; "
                         f"see {self.log}:\n{self.tail()}")

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=10)
        self._logf.close()
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    for p in reversed(list(_LIVE)):
        try:
            p.stop()
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


def http(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None,
         timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One request to a local service; never raises on an HTTP status."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_until(what: str, probe, timeout: float, proc: Proc | None = None,
               interval: float = 0.02):
    """Calls `probe()` until it returns a truthy value; returns it, or raises after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check_alive()
        try:
            got = probe()
            if got:
                return got
            last = got
        except (OSError, urllib.error.URLError) as e:
            last = e
        time.sleep(interval)
    extra = f"\n{proc.name} log ({proc.log}):\n{proc.tail()}" if proc else ""
    raise BenchError(f"{what} not ready within {timeout:.0f}s (last: {last!r}){extra}")
