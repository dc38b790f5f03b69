#!/usr/bin/env python3
"""Runs every command in the operator's guide (docs/*.md) against a running stack.

Why: documentation that was never run drifts from the code. Every fenced ```sh block in
docs/*.md is a command a reader will paste, so each one is run here, in order, and must exit
0. Commands that cannot run on a test machine (docker, apt, systemctl, GUI steps) and sample
output are fenced ```text or ```console instead, and are not run.

For each page with ```sh blocks:
  - a fresh stack is started with scripts/quickstart.sh (keyd + Envoy + the fake Ollama, temp
    state, free ports), as a reader would have it;
  - the page's blocks run in order in one bash session (`set -euo pipefail`), so variables a
    block defines are there for the next one, in a scratch working directory that links
    target/, .venv/, scripts/, tests/ and demo/ to the repository and .state/ to the stack's
    state, with HOME pointing at a scratch directory;
  - the environment has what a reader of the page has after its first block: PATH with
    target/release and .venv/bin, KEYD_URL, KEYD_ADMIN_TOKEN, GATEWAY, ENVOY_ADMIN, OLLAMA_URL
    (the stack's), a free loopback address for every `${NAME_ADDR:-127.0.0.1:PORT}` the page
    uses, and for pages that use $PG_URL a scratch PostgreSQL database holding a keyd schema
    (RESTORE_DB names another scratch database), dropped afterwards;
  - a command line ending in `# => TEXT` must print exactly TEXT (the page shows the result,
    this checks it);
  - half a second passes between blocks (a revocation reaches Envoy within a second; a reader
    is slower than that).

Relative links between pages, and their #anchors, must point at files and headings that
exist.

A block fails when any command in it fails; the blocks after it on that page are counted as
failed too (not run). Prints one line per block and `docs: N passed, M failed`; exits 1 on any
failure.

Usage: python3 scripts/check_docs.py [--keep] [docs/page.md …]
"""

import argparse
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_quickstart import ROOT, Quickstart, free_port, need_setup, session_pids, stack_env  # noqa: E402

RUNNABLE = {"sh", "bash"}
# Programs the pages' commands run, besides the repository's own builds and .venv.
NEEDED = ("curl", "openssl", "sqlite3", "psql", "pg_dump", "pg_restore", "createdb",
          "ssh-keygen", "nginx", "caddy", "base64")
EXPECT = re.compile(r"^(?P<cmd>[^#\n]*?\S)\s+# => (?P<want>.*\S)\s*$")
ADDR_VAR = re.compile(r"\$\{(\w+_ADDR):-127\.0\.0\.1:\d+\}")
PG_ADMIN = os.environ.get("KEYGATE_DOCS_PG", "postgres://postgres@127.0.0.1:5432/postgres")
PAGE_TIMEOUT = 600


def blocks(path):
    """[(line, lang, text)] for every fenced block of the page."""
    out, lang, start, buf = [], None, 0, []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fence = re.match(r"^(\s*)```(\S*)\s*$", line)
            if lang is None and fence:
                lang, start, buf = fence.group(2) or "", n, []
            elif lang is not None and re.match(r"^\s*```\s*$", line):
                out.append((start, lang, "".join(buf)))
                lang = None
            elif lang is not None:
                buf.append(line)
    return out


def lint(text):
    """Mistakes that make a block unrunnable when pasted."""
    for line in text.splitlines():
        if re.match(r"^\s*\$ ", line):
            return "a line starts with a '$ ' prompt: use a ```console block for transcripts"
    return None


def rewrite(text):
    """Turns `cmd  # => TEXT` lines into checks that cmd printed exactly TEXT."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = EXPECT.match(line)
        continued = i > 0 and lines[i - 1].rstrip().endswith("\\")
        if m and not continued:
            out.append(
                f"__kg_want={shlex.quote(m.group('want'))}; "
                f"__kg_out=$({m.group('cmd')}); printf '%s\\n' \"$__kg_out\"; "
                f"if [ \"$__kg_out\" != \"$__kg_want\" ]; then "
                f"printf 'check_docs: expected %s\\n' \"$__kg_want\" >&2; false; fi")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def psql(sql, url=PG_ADMIN):
    return subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                          capture_output=True, text=True, timeout=60)


def wait_http(url, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


class Postgres:
    """A scratch database with keyd's schema and a few keys, and a name for a restore."""

    def __init__(self, tmp):
        tag = f"{os.getpid()}_{int(time.time())}"
        self.db, self.restore = f"keygate_docs_{tag}", f"keygate_docs_restore_{tag}"
        base = PG_ADMIN.rsplit("/", 1)[0]
        self.url = f"{base}/{self.db}"
        r = psql(f"CREATE DATABASE {self.db}")
        if r.returncode != 0:
            raise RuntimeError(f"cannot create a PostgreSQL database at {PG_ADMIN} "
                               f"(set KEYGATE_DOCS_PG): {r.stderr.strip()}")
        keyd_bin = os.path.join(ROOT, "target", "release", "keyd")
        keyctl_bin = os.path.join(ROOT, "target", "release", "keyctl")
        port = free_port()
        env = dict(os.environ, KEYD_ADMIN_TOKEN="kga_docs_check_postgres_token_0123456789",
                   NO_COLOR="1")
        p = subprocess.Popen([keyd_bin, "serve", "--database", self.url, "--listen",
                              f"127.0.0.1:{port}", "--state-dir", tmp],
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(tmp, "keyd-postgres.log"), "w"))
        try:
            if not wait_http(f"http://127.0.0.1:{port}/healthz", 30):
                raise RuntimeError("keyd on PostgreSQL did not start (keyd-postgres.log)")
            for name in ("pg-alice", "pg-bob"):
                subprocess.run([keyctl_bin, "--url", f"http://127.0.0.1:{port}", "issue",
                                "--name", name, "--quiet"], env=env, check=True,
                               capture_output=True, timeout=30)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(15)

    def drop(self):
        for db in (self.db, self.restore):
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    h = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


def anchors(path):
    out, fenced = set(), False
    with open(path) as f:
        for line in f:
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif not fenced and line.startswith("#"):
                out.add(slug(line.lstrip("#")))
    return out


def check_links(page, results):
    """Relative links and their #anchors point at files and headings that exist."""
    rel = os.path.relpath(page, ROOT)
    with open(page) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(dest):
            bad.append(target)
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            bad.append(target)
    ok = not bad
    results.append((ok, f"{rel}: links", ", ".join(bad)))
    print(f"ok   - {rel}: links" if ok else f"FAIL - {rel}: broken links: {', '.join(bad)}",
          flush=True)


def run_page(page, tmp, results, keep):
    rel = os.path.relpath(page, ROOT)
    runnable = [(n, t) for n, lang, t in blocks(page) if lang in RUNNABLE]
    if not runnable:
        print(f"# {rel}: no sh blocks", flush=True)
        return
    with open(page) as f:
        text = f.read()
    name = os.path.splitext(os.path.basename(page))[0]
    pdir = os.path.join(tmp, name)
    work, home, state = (os.path.join(pdir, d) for d in ("work", "home", "state"))
    for d in (work, home):
        os.makedirs(d)
    # The scratch directory looks like the repository (cargo commands find the workspace and
    # its target/), but files the page writes land in the scratch directory.
    for entry in os.listdir(ROOT):
        if entry != ".state":
            os.symlink(os.path.join(ROOT, entry), os.path.join(work, entry))
    os.symlink(state, os.path.join(work, ".state"))

    def fail_all(why):
        for n, _ in runnable:
            results.append((False, f"{rel}:{n}", why))
            print(f"FAIL - {rel}:{n}: {why}", flush=True)

    for n, t in runnable:
        problem = lint(t)
        if problem:
            return fail_all(f"block at line {n}: {problem}")

    env, ports = stack_env(state, setup=False)
    qs = Quickstart(env, os.path.join(pdir, "quickstart.stderr"))
    pg = None
    proc = None
    try:
        if not qs.wait_ready(120):
            return fail_all(f"the stack did not start: {qs.stderr_text()[-1500:]}")
        with open(os.path.join(state, "admin-token")) as f:
            token = f.read().strip()
        with open(os.path.join(state, "fake-ollama.port")) as f:
            ollama = f"http://127.0.0.1:{f.read().strip()}"
        denv = {k: v for k, v in os.environ.items()
                if not k.startswith(("KEYD_", "KEYGATE_", "OLLAMA_", "XDG_"))}
        real_home = os.path.expanduser("~")
        denv.update({
            "HOME": home,
            # A scratch HOME must not hide the Rust toolchain.
            "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", os.path.join(real_home, ".rustup")),
            "CARGO_HOME": os.environ.get("CARGO_HOME", os.path.join(real_home, ".cargo")),
            "PATH": os.pathsep.join([os.path.join(ROOT, "target", "release"),
                                     os.path.join(ROOT, ".venv", "bin"), "/usr/sbin",
                                     os.environ.get("PATH", "")]),
            "KEYD_URL": f"http://{env['KEYD_LISTEN']}",
            "KEYD_ADMIN_TOKEN": token,
            "GATEWAY": f"http://{env['KEYGATE_LISTEN']}",
            "ENVOY_ADMIN": f"http://{env['KEYGATE_ENVOY_ADMIN']}",
            "OLLAMA_URL": ollama,
            "NO_COLOR": "1",
        })
        for var in sorted(set(ADDR_VAR.findall(text))):
            denv[var] = f"127.0.0.1:{free_port()}"
        if "PG_URL" in text:
            try:
                pg = Postgres(pdir)
            except (RuntimeError, subprocess.SubprocessError) as e:
                return fail_all(str(e))
            denv["PG_URL"], denv["RESTORE_DB"] = pg.url, pg.restore

        status = os.path.join(pdir, "status")
        script = ["set -euo pipefail", f"exec 3>'{status}'"]
        for i, (n, t) in enumerate(runnable):
            script += [f"echo 'begin {i}' >&3", f"echo '##### block at {rel}:{n}'",
                       rewrite(t), f"echo 'end {i}' >&3", "sleep 0.5"]
        with open(os.path.join(pdir, "page.sh"), "w") as f:
            f.write("\n".join(script) + "\n")
        log_path = os.path.join(pdir, "page.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(["bash", os.path.join(pdir, "page.sh")], cwd=work, env=denv,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(PAGE_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        with open(status) as f:
            done = {int(l.split()[1]) for l in f if l.startswith("end ")}
        with open(log_path) as f:
            log_text = f.read()
        first_failure = True
        for i, (n, t) in enumerate(runnable):
            where = f"{rel}:{n}"
            if i in done:
                results.append((True, where, ""))
                print(f"ok   - {where}", flush=True)
            elif first_failure:
                first_failure = False
                why = ("timed out" if proc.returncode is None
                       else f"exit status {proc.returncode}")
                tail = log_text.split(f"##### block at {where}\n", 1)[-1][-2500:]
                results.append((False, where, why))
                print(f"FAIL - {where}: {why}\n--- block:\n{t}--- output (end):\n{tail}",
                      flush=True)
            else:
                results.append((False, where, "not run"))
                print(f"FAIL - {where}: not run (an earlier block failed)", flush=True)
    finally:
        if proc is not None:
            for pid in session_pids(proc.pid) + [proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)
        code = qs.interrupt()
        left = qs.leftovers()
        if code != 130 or left:
            results.append((False, f"{rel}: stack shutdown", f"exit {code}, left {left}"))
            print(f"FAIL - {rel}: the stack did not stop cleanly (exit {code}, left {left})")
        qs.kill_all()
        if pg is not None:
            pg.drop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch directories")
    ap.add_argument("pages", nargs="*", help="pages to run (default: docs/*.md)")
    args = ap.parse_args()
    pages = [os.path.abspath(p) for p in args.pages] or sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md")))
    if need_setup(False):
        print("# builds missing: running scripts/setup.sh", flush=True)
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup.sh")], check=True)
    tmp = tempfile.mkdtemp(prefix="keygate-docs-")
    results = []
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [p for p in NEEDED if shutil.which(p, path=search) is None]
    if missing:
        why = (f"missing programs the pages use: {' '.join(missing)} (Debian: apt-get install "
               "curl openssl sqlite3 postgresql-client openssh-client nginx caddy)")
        results.append((False, "prerequisites", why))
        print(f"FAIL - {why}", flush=True)
    for page in pages:
        check_links(page, results)
        run_page(page, tmp, results, args.keep)
    passed = sum(1 for ok, _, _ in results if ok)
    failed = len(results) - passed
    if failed or args.keep:
        print(f"# scratch directories kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"docs: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
