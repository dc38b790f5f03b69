#!/usr/bin/env python3
"""Checks the README's first command, scripts/quickstart.sh, end to end.

Why: the quickstart is the first thing a newcomer runs; it must bring the stack up, print a
key that works through Envoy, refuse requests without one, stop every process it started on
Ctrl-C, and reuse its state on a second run. This drives it exactly like a user would, in a
temporary state directory on free loopback ports, and checks each of those promises:

  run 1  fresh state, nothing at OLLAMA_URL: the fake Ollama is started and announced; the
         printed key gets 200 through Envoy (the printed curl and python lines are run as
         printed), no key and a wrong key get 401; state files are private; the printed
         keyctl lines work; a second quickstart on the same ports refuses to start and
         leaves the first one running; Ctrl-C (SIGINT to the process group, as a terminal
         sends it) stops every process.
  run 2  same state: no new key is printed and the first key still works; Ctrl-C.
  run 3  same state, an Ollama already answering at OLLAMA_URL (the fake, started here): it
         is used, not replaced; requests reach it with the key id and without the
         credential; Ctrl-C stops the quickstart's processes but not that Ollama.

Usage: python3 scripts/check_quickstart.py [--setup] [--keep]
  --setup  let quickstart.sh run scripts/setup.sh (default: only when a build is missing)
  --keep   keep the temporary state directory (its logs) even when everything passed

Prints one line per check and `quickstart: N passed, M failed`; exits 1 on any failure.
Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_RE = re.compile(r"\bkg_[a-z0-9]{12}_[a-z0-9]{20,}\b")
BANNER_END = "Ctrl-C stops everything."
ARTIFACTS = [
    "target/release/keyd",
    "target/release/keyctl",
    "target/wasm32-wasip1/release/keygate_filter.wasm",
    ".venv/bin/envoy",
]


def free_port():
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_status(url, key=None, timeout=5):
    """Status of a GET with curl (what the README tells people to use)."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(timeout)]
    if key is not None:
        # The key goes through stdin, not the command line.
        cmd += ["-H", "@-"]
    r = subprocess.run(cmd + [url], input=(f"Authorization: Bearer {key}\n" if key else ""),
                       capture_output=True, text=True, timeout=timeout + 5)
    return r.stdout.strip()


def session_pids(sid):
    """Processes in session `sid` (the quickstart and everything it started)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        rest = stat.rsplit(")", 1)[-1].split()
        if len(rest) > 3 and rest[3] == str(sid) and rest[0] != "Z":
            pids.append(int(d))
    return pids


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class Quickstart:
    """One run of scripts/quickstart.sh in its own session (like a terminal's job)."""

    def __init__(self, env, log_path):
        self.env = env
        self.lines = []
        self.stderr_path = log_path
        self.stderr = open(log_path, "w")
        self.proc = subprocess.Popen(
            ["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def stdout(self):
        return "\n".join(self.lines)

    def stderr_text(self):
        self.stderr.flush()
        with open(self.stderr_path) as f:
            return f.read()

    def wait_ready(self, timeout):
        """True once the banner's last line is out; False if it exited or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(BANNER_END in l for l in self.lines):
                return True
            if self.proc.poll() is not None:
                self.reader.join(2)
                return any(BANNER_END in l for l in self.lines)
            time.sleep(0.1)
        return False

    def interrupt(self, timeout=20):
        """Ctrl-C: SIGINT to the whole process group. Returns the exit code or None."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.reader.join(2)

    def leftovers(self, grace=5):
        """Processes of this run still alive after `grace` seconds."""
        deadline = time.monotonic() + grace
        while True:
            left = session_pids(self.proc.pid)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def kill_all(self):
        for pid in session_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.stderr.close()


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   - {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL - {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok


def stack_env(state, setup):
    """Environment for a quickstart on free ports with `state` as its state directory."""
    env = dict(os.environ)
    ports = {"listen": free_port(), "keyd": free_port(), "admin": free_port(),
             "closed": free_port()}
    env.update({
        "KEYGATE_STATE": state,
        "KEYGATE_LISTEN": f"127.0.0.1:{ports['listen']}",
        "KEYD_LISTEN": f"127.0.0.1:{ports['keyd']}",
        "KEYGATE_ENVOY_ADMIN": f"127.0.0.1:{ports['admin']}",
        # Nothing listens there, so the quickstart starts its fake Ollama.
        "OLLAMA_URL": f"http://127.0.0.1:{ports['closed']}",
    })
    env.pop("KEYD_ADMIN_TOKEN", None)
    env.pop("KEYGATE_FILTER_CREDENTIAL", None)
    if not setup:
        env["KEYGATE_SKIP_SETUP"] = "1"
    return env, ports


def need_setup(force):
    return force or not all(os.path.exists(os.path.join(ROOT, a)) for a in ARTIFACTS)


def stop_and_check(c, qs, label, ports):
    """Ctrl-C, then: exit status 130, nothing of the run left, ports released."""
    code = qs.interrupt()
    c.check(f"{label}: Ctrl-C ends the quickstart (exit 130)", code == 130,
            f"exit status {code}")
    if "warning: killing" in qs.stderr_text():
        print(f"# note: {label}: a component ignored SIGTERM for 5 s and was killed:",
              [l for l in qs.stderr_text().splitlines() if "warning: killing" in l])
    left = qs.leftovers()
    c.check(f"{label}: no process left after Ctrl-C", not left,
            "; ".join(f"{p} {cmdline(p)}" for p in left))
    busy = [p for p in (ports["listen"], ports["keyd"], ports["admin"]) if port_open(p)]
    c.check(f"{label}: ports released", not busy, f"still open: {busy}")
    qs.kill_all()


def run_printed(line, env, timeout=60):
    """Runs a line the banner printed, as the user would paste it."""
    return subprocess.run(["bash", "-c", line.strip()], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    c = Checks()
    setup = need_setup(args.setup)
    ready_timeout = 3600 if setup else 120
    tmp = tempfile.mkdtemp(prefix="keygate-quickstart-")
    state = os.path.join(tmp, "state")
    env, ports = stack_env(state, setup)
    gateway = f"http://{env['KEYGATE_LISTEN']}"
    print(f"# state in {state}; Envoy {gateway}, keyd {env['KEYD_LISTEN']}"
          + ("" if setup else " (setup skipped: builds present)"), flush=True)
    runs = []
    fake = None
    try:
        # ---- run 1: fresh state -------------------------------------------------------
        qs = Quickstart(env, os.path.join(tmp, "run1.stderr"))
        runs.append(qs)
        ready = c.check("run 1: the quickstart comes up and prints its banner",
                        qs.wait_ready(ready_timeout),
                        f"stderr:\n{qs.stderr_text()[-3000:]}\nstdout:\n{qs.stdout[-2000:]}")
        if not ready:
            return finish(c, tmp, args.keep)
        out = qs.stdout
        c.check("run 1: the banner starts with the ready line",
                any(l.startswith("keygate is running") for l in qs.lines), out)
        c.check("run 1: the fake Ollama is started and announced",
                "FAKE Ollama" in qs.stderr_text(), qs.stderr_text()[-1000:])
        keys = set(KEY_RE.findall(out))
        c.check("run 1: exactly one API key is printed", len(keys) == 1, f"found {len(keys)}")
        key = next(iter(keys), "")
        c.check("run 1: the key gets 200 through Envoy",
                http_status(f"{gateway}/api/tags", key) == "200")
        c.check("run 1: no key gets 401", http_status(f"{gateway}/api/tags") == "401")
        wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
        c.check("run 1: a wrong key gets 401", http_status(f"{gateway}/api/tags", wrong) == "401")
        curl_line = next((l for l in qs.lines if l.strip().startswith("curl ")), "")
        r = run_printed(curl_line, env)
        c.check("run 1: the printed curl line works", r.returncode == 0 and '"models"' in r.stdout,
                f"{curl_line!r}: exit {r.returncode} {r.stdout[:200]} {r.stderr[:200]}")
        py_line = next((l for l in qs.lines if l.strip().startswith("OLLAMA_API_KEY=")), "")
        r = run_printed(py_line, env)
        c.check("run 1: the printed ollama-python line works",
                r.returncode == 0 and "llama3.2" in r.stdout,
                f"exit {r.returncode} {r.stdout[:200]} {r.stderr[-500:]}")
        export = next((l for l in qs.lines if l.strip().startswith("export PATH=")), "")
        r = run_printed(export + "\nkeyctl issue --name alice --quiet", env)
        c.check("run 1: the printed keyctl lines work",
                r.returncode == 0 and KEY_RE.search(r.stdout) is not None,
                f"exit {r.returncode} {r.stderr[-500:]}")
        modes = {}
        for name in ("admin-token", "envoy.yaml", "keyd.db", "filter-credential"):
            p = os.path.join(state, name)
            modes[name] = oct(os.stat(p).st_mode & 0o777) if os.path.exists(p) else "missing"
        c.check("run 1: secrets in the state directory are private (0600)",
                all(m == "0o600" for m in modes.values()), str(modes))
        c.check("run 1: the state directory is private (0700)",
                oct(os.stat(state).st_mode & 0o777) == "0o700")
        stats_line = next((l for l in qs.lines if l.startswith("Envoy stats:")), "")
        r = run_printed(stats_line.split(":", 1)[-1], env)
        c.check("run 1: the printed Envoy stats line shows the filter's stats",
                r.returncode == 0 and "keygate.allowed" in r.stdout, r.stdout[:300])
        second = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        c.check("run 1: a second quickstart on the same addresses refuses to start",
                second.returncode != 0 and "already in use" in second.stderr,
                f"exit {second.returncode}: {second.stderr[-500:]}")
        c.check("run 1: ... and the first one keeps serving",
                http_status(f"{gateway}/api/tags", key) == "200" and qs.proc.poll() is None)
        stop_and_check(c, qs, "run 1", ports)

        # ---- run 2: same state ---------------------------------------------------------
        qs = Quickstart(env, os.path.join(tmp, "run2.stderr"))
        runs.append(qs)
        if c.check("run 2: the quickstart comes up again on the same state",
                   qs.wait_ready(120), qs.stderr_text()[-3000:]):
            c.check("run 2: no new key is printed", not KEY_RE.search(qs.stdout), qs.stdout)
            c.check("run 2: it says the state was reused", "State reused" in qs.stdout, qs.stdout)
            c.check("run 2: the first key still gets 200",
                    http_status(f"{gateway}/api/tags", key) == "200")
            c.check("run 2: no key still gets 401", http_status(f"{gateway}/api/tags") == "401")
        stop_and_check(c, qs, "run 2", ports)

        # ---- run 3: an Ollama already answers ------------------------------------------
        port_file = os.path.join(tmp, "ollama.port")
        fake = subprocess.Popen(
            [sys.executable, "tests/fake_ollama/fake_ollama.py", "--listen", "127.0.0.1:0",
             "--port-file", port_file, "--loopback-host-check"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.1)
        ollama = f"http://127.0.0.1:{open(port_file).read().strip()}"
        env3 = dict(env, OLLAMA_URL=ollama)
        qs = Quickstart(env3, os.path.join(tmp, "run3.stderr"))
        runs.append(qs)
        if c.check("run 3: the quickstart comes up in front of an answering Ollama",
                   qs.wait_ready(120), qs.stderr_text()[-3000:]):
            err = qs.stderr_text()
            c.check("run 3: it uses that Ollama and starts no fake",
                    "Ollama answers at" in err and "FAKE" not in err, err[-1000:])
            urllib.request.urlopen(urllib.request.Request(f"{ollama}/__fake/reset",
                                                          method="POST"), timeout=5).read()
            c.check("run 3: the first key gets 200 from that Ollama",
                    http_status(f"{gateway}/api/tags", key) == "200")
            with urllib.request.urlopen(f"{ollama}/__fake/requests", timeout=5) as r:
                seen = json.load(r)
            hdrs = seen[-1]["headers"] if seen else {}
            c.check("run 3: Ollama got the key id and not the credential",
                    len(seen) == 1 and hdrs.get("x-keygate-key-id") == key.split("_")[1]
                    and "authorization" not in hdrs, json.dumps(seen)[:500])
        stop_and_check(c, qs, "run 3", ports)
        c.check("run 3: the Ollama that was already running is left running",
                fake.poll() is None and port_open(int(ollama.rsplit(":", 1)[1])))
    finally:
        for qs in runs:
            qs.kill_all()
        if fake is not None:
            fake.terminate()
            try:
                fake.wait(5)
            except subprocess.TimeoutExpired:
                fake.kill()
    return finish(c, tmp, args.keep)


def finish(c, tmp, keep):
    if c.failed or keep:
        print(f"# logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"quickstart: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
