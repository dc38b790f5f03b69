"""keyd, started the way scripts/quickstart.sh starts it (SQLite in a temp directory), and the
admin calls the benchmark needs (issuing keys over one kept-alive connection)."""

from __future__ import annotations

import http.client as httpclient
import json
import secrets
from pathlib import Path

from .procs import BenchError, Proc, http, wait_until


class Keyd:
    """`keyd serve` on 127.0.0.1 port 0 (it prints `listening: ADDR`), SQLite in its own
    directory, the admin token given through KEYD_ADMIN_TOKEN."""

    def __init__(self, binary: str, name: str, workdir: Path, core: int | None):
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = "kgadm_bench_" + secrets.token_urlsafe(24)
        env = {
            "KEYD_DATABASE_URL": f"sqlite://{self.dir}/keyd.db",
            "KEYD_LISTEN": "127.0.0.1:0",
            "KEYD_STATE_DIR": str(self.dir),
            "KEYD_ADMIN_TOKEN": self.admin_token,
            "RUST_LOG": "warn",
        }
        self.proc = Proc(f"keyd[{name}]", [binary, "serve"], self.dir / "keyd.log", core=core,
                         env=env)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> "Keyd":
        line = self.proc.wait_log("listening: ", timeout)
        self.port = int(line.rsplit(":", 1)[1].strip())
        wait_until(f"{self.name} /healthz",
                   lambda: http("GET", f"{self.url}/healthz", timeout=2)[0] == 200,
                   timeout, self.proc)
        return self

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"}

    def issue(self, count: int, prefix: str = "bench") -> list[dict]:
        """Issues `count` keys; returns keyd's answers (`id`, `key`, ...)."""
        conn = httpclient.HTTPConnection("127.0.0.1", self.port, timeout=10)
        out = []
        try:
            for i in range(count):
                body = json.dumps({"name": f"{prefix}-{i}"})
                conn.request("POST", "/v1/keys", body=body, headers=self.admin_headers())
                r = conn.getresponse()
                data = r.read()
                if r.status != 201:
                    raise BenchError(f"keyd POST /v1/keys answered {r.status}: {data[:300]!r}")
                out.append(json.loads(data))
        finally:
            conn.close()
        return out

    def revoke(self, key_id: str) -> None:
        status, _, body = http("POST", f"{self.url}/v1/keys/{key_id}/revoke",
                               headers=self.admin_headers(), body=b"{}")
        if status != 200:
            raise BenchError(f"keyd revoke {key_id} answered {status}: {body[:300]!r}")

    def stop(self) -> None:
        self.proc.stop()
