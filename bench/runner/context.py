"""What the configurations share: found programs, built artefacts, the static upstream, key
sets, tokens, stand-in snapshot servers and keyd, each made once and only when needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .envoy import find_envoy
from .keyd import Keyd
from .load import Wrk
from .procs import BenchError, Proc
from .proxies import Nginx, find_caddy, find_nginx, static_upstream_block

# Cores: the proxy under test alone on PROXY_CORE; the load generator and every helper
# (upstream, keyd, snapshot stand-in) on LOAD_CORE.
PROXY_CORE = 0
LOAD_CORE = 1

KEY_SETS = {"1k": 1_000, "100k": 100_000, "1m": 1_000_000}
SEED = 7


@dataclass
class Options:
    rounds: int
    duration: float
    warmup: float
    connections: int
    threads: int
    quick: bool


class Unavailable(Exception):
    """A configuration that cannot run yet (a piece is missing); says which."""


def _cargo(args: list[str], cwd: Path, env: dict[str, str] | None, log: Path) -> bool:
    merged = dict(os.environ)
    merged.update(env or {})
    with open(log, "ab") as f:
        f.write(f"$ cargo {' '.join(args)}  (in {cwd})\n".encode())
        f.flush()
        done = subprocess.run(["cargo"] + args, cwd=cwd, env=merged, stdout=f,
                              stderr=subprocess.STDOUT, timeout=1800)
    return done.returncode == 0


@dataclass
class Context:
    root: Path
    work: Path
    opts: Options
    envoy_bin: str | None = None
    wrk: Wrk | None = None
    nginx_bin: str | None = None
    caddy_bin: str | None = None
    upstream: Nginx | None = None
    _cache: dict = field(default_factory=dict)
    # (key set, concurrency) → targets.SyncRecord, filled whenever a keygate Envoy starts.
    sync_records: dict = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, work: Path, opts: Options) -> "Context":
        ctx = cls(root=root, work=work, opts=opts)
        ctx.envoy_bin = find_envoy(root)
        ctx.nginx_bin = find_nginx()
        ctx.caddy_bin = find_caddy()
        wrk_bin = Wrk.find()
        if wrk_bin:
            ctx.wrk = Wrk(wrk_bin, LOAD_CORE, opts.threads, opts.connections, work)
        return ctx

    # --- programs -------------------------------------------------------------------------

    def need_envoy(self) -> str:
        if not self.envoy_bin:
            raise Unavailable("Envoy not found (ENVOY_BIN, .venv/bin/envoy or PATH): run scripts/setup.sh")
        return self.envoy_bin

    def need_nginx(self) -> str:
        if not self.nginx_bin:
            raise Unavailable("nginx not found: apt-get install nginx (scripts/setup.sh does)")
        return self.nginx_bin

    def need_caddy(self) -> str:
        if not self.caddy_bin:
            raise Unavailable("caddy not found: apt-get install caddy (scripts/setup.sh does)")
        return self.caddy_bin

    @property
    def build_log(self) -> Path:
        return self.work / "build.log"

    def _built(self, key: str, build) -> Path:
        if key not in self._cache:
            try:
                self._cache[key] = build()
            except Unavailable as e:
                self._cache[key] = e
        got = self._cache[key]
        if isinstance(got, Unavailable):
            raise got
        return got

    def kgbench(self) -> Path:
        """The Rust helper (bench/tools): keys, tokens, snapshots, stand-in server."""
        def build():
            target = self.root / "target/bench"
            if not _cargo(["build", "--release", "--quiet"], self.root / "bench/tools",
                          {"CARGO_TARGET_DIR": str(target)}, self.build_log):
                raise BenchError(f"building bench/tools failed; see {self.build_log}")
            return target / "release/kgbench"
        return self._built("kgbench", build)

    def _bench_wasm(self, folder: str, artifact: str) -> Path:
        """A wasm filter of bench/ (its own workspace), built into target/bench."""
        def build():
            target = self.root / "target/bench"
            if not _cargo(["build", "--release", "--quiet", "--target", "wasm32-wasip1"],
                          self.root / "bench" / folder, {"CARGO_TARGET_DIR": str(target)},
                          self.build_log):
                raise BenchError(f"building bench/{folder} failed; see {self.build_log}")
            return target / "wasm32-wasip1/release" / artifact
        return self._built(folder, build)

    def empty_wasm(self) -> Path:
        return self._bench_wasm("empty-filter", "keygate_bench_empty_filter.wasm")

    def probe_wasm(self) -> Path:
        """bench/probe-filter: one kind of hostcall N times per request (bench/hostcalls.py)."""
        return self._bench_wasm("probe-filter", "keygate_bench_probe_filter.wasm")

    def keygate_wasm(self) -> Path:
        def build():
            if not _cargo(["build", "--release", "--quiet", "-p", "keygate-filter", "--target",
                           "wasm32-wasip1"], self.root, None, self.build_log):
                raise Unavailable(f"the keygate filter does not build yet (see {self.build_log})")
            path = self.root / "target/wasm32-wasip1/release/keygate_filter.wasm"
            if not path.exists():
                raise Unavailable(f"{path} missing after the build")
            return path
        return self._built("keygate_wasm", build)

    def _workspace_bin(self, name: str) -> Path:
        def build():
            # Both together, as scripts/setup.sh builds them, so features unify the same way
            # and nothing is rebuilt when setup already ran.
            if not _cargo(["build", "--release", "--quiet", "-p", "keyd", "-p", "keyctl"],
                          self.root, None, self.build_log):
                raise Unavailable(f"keyd/keyctl do not build (see {self.build_log})")
            return self.root / f"target/release/{name}"
        return self._built(f"bin-{name}", build)

    def keyd_bin(self) -> Path:
        return self._workspace_bin("keyd")

    def keyctl_bin(self) -> Path:
        return self._workspace_bin("keyctl")

    # --- data -----------------------------------------------------------------------------

    def keyset(self, name: str) -> Path:
        """A directory with `KEY_SETS[name]` keys as a signed snapshot (same seed, so the first
        key and the token signer are the same in every set), `info.json`, `apikeys.txt`."""
        def build():
            d = self.work / f"keys-{name}"
            subprocess.run([str(self.kgbench()), "keys", "--dir", str(d), "--count",
                            str(KEY_SETS[name]), "--seed", str(SEED), "--export", "1000"],
                           check=True, stdout=subprocess.DEVNULL, timeout=600)
            return d
        return self._built(f"keyset-{name}", build)

    def info(self, name: str = "1k") -> dict:
        return json.loads((self.keyset(name) / "info.json").read_text())

    def tokens(self) -> Path:
        """Enough distinct tokens (for the first key of every set) that no run reuses one."""
        def build():
            d = self.keyset("1k")
            per_run = int((self.opts.duration + 2) * 8000)
            count = per_run * (self.opts.rounds + 1) + 20_000
            subprocess.run([str(self.kgbench()), "tokens", "--dir", str(d), "--count", str(count),
                            "--seed", str(SEED)], check=True, stdout=subprocess.DEVNULL, timeout=900)
            return d / "tokens.txt"
        return self._built("tokens", build)

    def first_token(self) -> str:
        with open(self.tokens()) as f:
            return f.readline().strip()

    def token_count(self) -> int:
        if "token_count" not in self._cache:
            with open(self.tokens(), "rb") as f:
                self._cache["token_count"] = sum(1 for _ in f)
        return self._cache["token_count"]

    def jwks(self) -> str:
        self.tokens()
        return (self.keyset("1k") / "jwks.json").read_text()

    # --- services -------------------------------------------------------------------------

    def start_upstream(self) -> Nginx:
        if self.upstream is None:
            self.upstream = Nginx(self.need_nginx(), "upstream", self.work,
                                  static_upstream_block(), LOAD_CORE).wait_ready()
        return self.upstream

    def snapshot_server(self, name: str) -> tuple[Proc, int]:
        """The stand-in for keyd's snapshot endpoint, serving key set `name`."""
        key = f"snapserver-{name}"
        if key not in self._cache:
            d = self.keyset(name)
            self.tokens()  # jwks.json beside the snapshot
            port_file = self.work / f"{key}.port"
            port_file.unlink(missing_ok=True)
            p = Proc(key, [str(self.kgbench()), "serve", "--dir", str(d), "--port-file",
                           str(port_file)], self.work / f"{key}.log", core=LOAD_CORE)
            p.wait_log("LISTENING", 10)
            self._cache[key] = (p, int(port_file.read_text()))
        return self._cache[key]

    def keyd(self) -> tuple[Keyd, str]:
        """keyd on SQLite with 1,000 keys issued, on the load core (a side service); returns
        it and the key the configurations send (the first issued)."""
        if "keyd" not in self._cache:
            k = Keyd(str(self.keyd_bin()), "keyd", self.work, LOAD_CORE).wait_ready()
            issued = k.issue(1000)
            self._cache["keyd"] = (k, issued[0]["key"])
            self._cache["keyd_issued"] = issued
        return self._cache["keyd"]

    def keyd_issued(self) -> list[dict]:
        self.keyd()
        return self._cache["keyd_issued"]
