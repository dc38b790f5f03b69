#!/usr/bin/env python3
"""Checks the docker-compose demo (demo/) without a Docker engine.

Why: nothing here can run containers, yet the demo must work the first time someone runs
`docker compose up` on it. So this checks everything that can be checked without Docker:

  static    the compose file's structure and services; Ollama and keyd not published, Envoy
            published on loopback only; every referenced Dockerfile, build context, target
            and file exists; the depends_on graph is valid and acyclic; the Dockerfile's
            stages are sane (a build stage that builds keyd, keyctl and the wasm filter, a
            non-root runtime stage, COPY sources present and not excluded from the context);
            the services agree on ports, paths, users and volumes.
  config    the Envoy config the init service would write is byte for byte what
            `keyctl config envoy` prints for the compose file's addresses (placeholders for
            the credential and snapshot key, so no keyd is needed), and `envoy --mode
            validate` accepts it (with the local filter build at the wasm path).
  init run  demo/init.sh runs for real against a local keyd laid out like the container
            (XDG_DATA_HOME, admin token file): it writes a private config and the filter,
            prints a first key once, is idempotent; the config it wrote runs in the real Envoy
            in front of the fake Ollama, and the first key gets 200 through it.

Usage: python3 scripts/check_compose.py
Prints one line per check and `compose: N passed, M failed`; exits 1 on any failure.
Needs PyYAML (scripts/setup.sh installs it into .venv; this re-runs itself with
.venv/bin/python when the current Python lacks it), target/release/{keyd,keyctl}, the wasm
filter and Envoy (ENVOY_BIN, else .venv/bin/envoy, else PATH).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "demo")
COMPOSE = os.path.join(DEMO, "docker-compose.yml")

try:
    import yaml
except ImportError:
    venv_py = os.path.join(ROOT, ".venv", "bin", "python")
    if os.path.exists(venv_py) and os.path.realpath(sys.executable) != os.path.realpath(venv_py):
        os.execv(venv_py, [venv_py] + sys.argv)
    sys.exit("check_compose: PyYAML is missing: run scripts/setup.sh (it installs "
             "tests/requirements.txt into .venv)")

KEYCTL = os.path.join(ROOT, "target", "release", "keyctl")
KEYD = os.path.join(ROOT, "target", "release", "keyd")
WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "keygate_filter.wasm")
SERVICES = {"ollama", "keyd", "init", "envoy"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


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


def envoy_bin():
    for cand in (os.environ.get("ENVOY_BIN"), os.path.join(ROOT, ".venv", "bin", "envoy"),
                 shutil.which("envoy")):
        if cand and os.path.exists(cand):
            return cand
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- Dockerfile and .dockerignore ---------------------------------------------------------

def dockerfile_instructions(path):
    """[(lineno, KEYWORD, rest)] with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue  # comment lines inside a continued instruction
            if not buf:
                start = n
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            kw, _, rest = buf.strip().partition(" ")
            out.append((start, kw.upper(), rest.strip()))
            buf = ""
    return out


def parse_stages(instrs):
    """Global ARG defaults and stages: [{name, image, index, instrs}]."""
    args, stages = {}, []
    for n, kw, rest in instrs:
        if kw == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif kw == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                           lambda m: args.get(m.group(1) or m.group(2), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"name": name, "image": image, "line": n, "instrs": []})
        elif stages:
            stages[-1]["instrs"].append((n, kw, rest))
    return args, stages


def ignore_patterns(path):
    pats = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    pats.append(line.strip("/"))
    return pats


def ignored(rel, patterns):
    """True when context path `rel` (or a parent directory of it) matches a pattern."""
    def rx(p):
        out = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif p.startswith("**", i):
                out += ".*"
                i += 2
            elif p[i] == "*":
                out += "[^/]*"
                i += 1
            elif p[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(p[i])
                i += 1
        return re.compile(out + "(?:/.*)?$")
    result = False
    for p in patterns:
        neg = p.startswith("!")
        if rx(p.lstrip("!")).match(rel):
            result = not neg
    return result


# ---- compose helpers -----------------------------------------------------------------------

def env_of(service):
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(x.split("=", 1) for x in e)
    return {k: str(v) for k, v in e.items()}


def mounts(service):
    """[(source, target, read_only)] from short-syntax volume strings."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source"), v.get("target"), bool(v.get("read_only"))))
            continue
        parts = v.split(":")
        out.append((parts[0], parts[1] if len(parts) > 1 else parts[0],
                    len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def url_host_port(url):
    m = re.match(r"^https?://([^/:]+):(\d+)/?$", url or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


def listen_port(addr):
    m = re.match(r"^.*:(\d+)$", addr or "")
    return int(m.group(1)) if m else None


def depends(service):
    d = service.get("depends_on") or {}
    if isinstance(d, list):
        d = {k: {"condition": "service_started"} for k in d}
    return d


def has_cycle(graph):
    state = {}

    def visit(n):
        if state.get(n) == 1:
            return True
        if state.get(n) == 2:
            return False
        state[n] = 1
        if any(visit(m) for m in graph.get(n, ())):
            return True
        state[n] = 2
        return False
    return any(visit(n) for n in graph)


# ---- the checks ----------------------------------------------------------------------------

def static_checks(c, doc):
    services = doc.get("services") or {}
    c.check("compose: the services are ollama, keyd, init and envoy",
            set(services) == SERVICES, f"found {sorted(services)}")
    if not SERVICES <= set(services):
        return None
    ollama, keyd, init, envoy = (services[s] for s in ("ollama", "keyd", "init", "envoy"))

    # Exposure.
    c.check("ollama: official image", str(ollama.get("image", "")).startswith("ollama/ollama"),
            ollama.get("image"))
    for name in ("ollama", "keyd", "init"):
        s = services[name]
        c.check(f"{name}: not published on the host (no ports, no host network)",
                not s.get("ports") and s.get("network_mode") != "host",
                f"ports={s.get('ports')} network_mode={s.get('network_mode')}")
    envoy_image = str(envoy.get("image", ""))
    c.check("envoy: official image, 1.40 line", envoy_image.startswith("envoyproxy/envoy:v1.40"),
            envoy_image)
    ports = [str(p) for p in envoy.get("ports") or []]
    c.check("envoy: published, and only on the host's loopback",
            bool(ports) and all(p.startswith("127.0.0.1:") for p in ports), str(ports))
    c.check("envoy: no host network", envoy.get("network_mode") != "host")

    # Images that are not built are pinned to a tag.
    for name, s in services.items():
        if "build" not in s:
            image = str(s.get("image", ""))
            c.check(f"{name}: image names an explicit tag", ":" in image.split("/")[-1], image)

    # Builds: context, Dockerfile, target.
    stages_by_dockerfile = {}
    for name, s in services.items():
        b = s.get("build")
        if b is None:
            continue
        if isinstance(b, str):
            b = {"context": b}
        ctx = os.path.normpath(os.path.join(DEMO, b.get("context", ".")))
        df = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
        ok = c.check(f"{name}: build context and Dockerfile exist",
                     os.path.isdir(ctx) and os.path.isfile(df), f"{ctx} {df}")
        if not ok:
            continue
        if df not in stages_by_dockerfile:
            stages_by_dockerfile[df] = (ctx, dockerfile_checks(c, df, ctx))
        stages = stages_by_dockerfile[df][1]
        target = b.get("target")
        c.check(f"{name}: build target '{target}' is a stage of {os.path.relpath(df, ROOT)}",
                target is None or target in {st["name"] for st in stages})

    # Volumes: named ones declared, declared ones used.
    declared = set((doc.get("volumes") or {}).keys())
    used = set()
    for name, s in services.items():
        for src, tgt, _ in mounts(s):
            if src.startswith((".", "/")):
                c.check(f"{name}: bind mount source {src} exists",
                        os.path.exists(os.path.join(DEMO, src)))
            else:
                used.add(src)
                c.check(f"{name}: volume '{src}' is declared", src in declared)
    c.check("compose: every declared volume is used", declared <= used,
            f"unused: {sorted(declared - used)}")

    # depends_on.
    graph = {n: set(depends(s)) for n, s in services.items()}
    for name, s in services.items():
        for dep, spec in depends(s).items():
            cond = (spec or {}).get("condition", "service_started")
            ok = c.check(f"{name}: depends on existing service '{dep}' ({cond})",
                         dep in services and cond in CONDITIONS)
            if ok and cond == "service_healthy":
                c.check(f"{name}: '{dep}' has a healthcheck to wait for",
                        bool((services[dep].get("healthcheck") or {}).get("test")))
            if ok and cond == "service_completed_successfully":
                c.check(f"{name}: '{dep}' is one-shot (restart: \"no\")",
                        str(services[dep].get("restart", "no")) == "no")
    c.check("compose: depends_on has no cycle", not has_cycle(graph))
    c.check("init: waits for keyd to be healthy",
            (depends(init).get("keyd") or {}).get("condition") == "service_healthy")
    c.check("envoy: starts after init completed",
            (depends(envoy).get("init") or {}).get("condition")
            == "service_completed_successfully")
    return services, stages_by_dockerfile


def dockerfile_checks(c, df, ctx):
    rel = os.path.relpath(df, ROOT)
    args, stages = parse_stages(dockerfile_instructions(df))
    names = [s["name"] for s in stages]
    c.check(f"{rel}: stages named build and keyd", "build" in names and "keyd" in names,
            str(names))
    for st in stages:
        image = st["image"]
        c.check(f"{rel}: stage {st['name']} base image {image} is resolved and tagged",
                "$" not in image and ":" in image.split("/")[-1])
    patterns = ignore_patterns(df + ".dockerignore") or ignore_patterns(
        os.path.join(ctx, ".dockerignore"))
    c.check(f"{rel}: has a Dockerfile-specific ignore file keeping target/ and .venv/ out",
            ignored("target", patterns) and ignored(".venv", patterns), str(patterns))
    # Workspace members must all be in the context, or cargo cannot load the workspace.
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        cargo = f.read()
    m = re.search(r"members\s*=\s*\[([^\]]*)\]", cargo)
    members = re.findall(r'"([^"]+)"', m.group(1)) if m else []
    missing = [p for p in ["Cargo.toml", "Cargo.lock"] + members if ignored(p, patterns)
               or not os.path.exists(os.path.join(ctx, p))]
    c.check(f"{rel}: the build context holds Cargo.toml, Cargo.lock and every workspace member",
            bool(members) and not missing, f"missing or ignored: {missing}")

    seen = []
    for st in stages:
        for n, kw, rest in st["instrs"]:
            if kw in ("COPY", "ADD"):
                words = rest.split()
                frm = [w.split("=", 1)[1] for w in words if w.startswith("--from=")]
                srcs = [w for w in words if not w.startswith("--")][:-1]
                if frm:
                    c.check(f"{rel}:{n}: COPY --from={frm[0]} names an earlier stage",
                            frm[0] in seen)
                else:
                    for s in srcs:
                        path = os.path.normpath(os.path.join(ctx, s))
                        relp = os.path.relpath(path, ctx)
                        c.check(f"{rel}:{n}: COPY source {s} exists in the context and is not ignored",
                                os.path.exists(path) and (relp == "." or not ignored(relp, patterns)))
        seen.append(st["name"])

    build = next((s for s in stages if s["name"] == "build"), None)
    runtime = next((s for s in stages if s["name"] == "keyd"), None)
    if build:
        runs = " ".join(r for _, kw, r in build["instrs"] if kw == "RUN")
        c.check(f"{rel}: build stage adds the wasm32-wasip1 target",
                "rustup target add wasm32-wasip1" in runs)
        c.check(f"{rel}: build stage builds keyd and keyctl (release, --locked)",
                re.search(r"cargo build --locked --release -p keyd -p keyctl", runs) is not None)
        c.check(f"{rel}: build stage builds the filter for wasm32-wasip1 (release, --locked)",
                re.search(r"cargo build --locked --release -p keygate-filter --target wasm32-wasip1",
                          runs) is not None)
    if runtime:
        instrs = runtime["instrs"]
        users = [r for _, kw, r in instrs if kw == "USER"]
        c.check(f"{rel}: runtime stage runs as a non-root user",
                bool(users) and users[-1].split(":")[0] not in ("0", "root"), str(users))
        copies = " ".join(r for _, kw, r in instrs if kw == "COPY")
        for f in ("keyd", "keyctl", "keygate_filter.wasm", "keygate-init"):
            c.check(f"{rel}: runtime stage contains {f}", f in copies)
        runs = " ".join(r for _, kw, r in instrs if kw == "RUN")
        c.check(f"{rel}: runtime stage installs curl (healthcheck, init script)",
                re.search(r"apt-get install[^&]*\bcurl\b", runs) is not None)
        cmd = [r for _, kw, r in instrs if kw == "CMD"]
        c.check(f"{rel}: runtime stage runs keyd serve by default",
                bool(cmd) and json.loads(cmd[-1])[:2] == ["keyd", "serve"], str(cmd))
    return stages


def image_env(stages):
    """ENV of the runtime stage (KEY=VALUE pairs, one instruction may hold several)."""
    env = {}
    runtime = next((s for s in stages if s["name"] == "keyd"), None)
    for _, kw, rest in (runtime or {}).get("instrs", []):
        if kw == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                env[k] = v
    return env


def image_user(stages):
    runtime = next((s for s in stages if s["name"] == "keyd"), None)
    users = [r for _, kw, r in (runtime or {}).get("instrs", []) if kw == "USER"]
    return users[-1] if users else None


def wiring_checks(c, services, stages):
    """The services agree with each other and with the image; returns init's environment."""
    keyd, init, envoy = services["keyd"], services["init"], services["envoy"]
    ienv, kenv = env_of(init), env_of(keyd)
    img = image_env(stages)
    keyd_port = listen_port(kenv.get("KEYD_LISTEN") or img.get("KEYD_LISTEN"))
    c.check("keyd: listens on every interface of its container (0.0.0.0)",
            (kenv.get("KEYD_LISTEN") or "").startswith("0.0.0.0:"), kenv.get("KEYD_LISTEN"))
    h, p = url_host_port(ienv.get("KEYD_URL"))
    c.check("init: KEYD_URL is the keyd service on keyd's port", h == "keyd" and p == keyd_port,
            f"{ienv.get('KEYD_URL')} vs KEYD_LISTEN port {keyd_port}")
    h, p = url_host_port(ienv.get("OLLAMA_URL"))
    c.check("init: OLLAMA_URL is the ollama service on Ollama's port 11434",
            h == "ollama" and p == 11434, ienv.get("OLLAMA_URL"))
    hc = " ".join(str(x) for x in (keyd.get("healthcheck") or {}).get("test", []))
    c.check("keyd: the healthcheck asks keyd's /healthz on its port",
            f"127.0.0.1:{keyd_port}/healthz" in hc, hc)

    # Ports: Envoy listens where compose publishes; the key message names the host side.
    eport = listen_port(ienv.get("ENVOY_LISTEN"))
    published = [str(x).split(":") for x in envoy.get("ports") or []]
    c.check("envoy: the published container port is the one the config listens on",
            bool(published) and all(int(x[-1]) == eport for x in published),
            f"ENVOY_LISTEN={ienv.get('ENVOY_LISTEN')} ports={envoy.get('ports')}")
    c.check("envoy: the config listens on every interface of its container",
            (ienv.get("ENVOY_LISTEN") or "").startswith("0.0.0.0:"))
    host_side = [f"http://{x[0]}:{x[1]}" for x in published if len(x) == 3]
    c.check("init: GATEWAY_URL is where compose publishes Envoy",
            ienv.get("GATEWAY_URL") in host_side, f"{ienv.get('GATEWAY_URL')} vs {host_side}")

    # Volumes and paths.
    imounts = {src: (tgt, ro) for src, tgt, ro in mounts(init)}
    emounts = {src: (tgt, ro) for src, tgt, ro in mounts(envoy)}
    kmounts = {src: (tgt, ro) for src, tgt, ro in mounts(keyd)}
    shared = [v for v in imounts if v in emounts and not v.startswith((".", "/"))]
    c.check("init and envoy share one volume", len(shared) == 1, str(shared))
    if len(shared) == 1:
        vol = shared[0]
        c.check("init: GATEWAY_DIR is where it mounts the shared volume",
                ienv.get("GATEWAY_DIR") == imounts[vol][0] and not imounts[vol][1],
                f"{ienv.get('GATEWAY_DIR')} vs {imounts[vol]}")
        etgt, ero = emounts[vol]
        c.check("envoy: mounts the shared volume read-only", ero)
        c.check("init: ENVOY_WASM is the filter's path in Envoy's mount",
                ienv.get("ENVOY_WASM") == f"{etgt}/keygate_filter.wasm", ienv.get("ENVOY_WASM"))
        cmd = envoy.get("command") or []
        cfg = cmd[cmd.index("-c") + 1] if "-c" in cmd else None
        c.check("envoy: runs the config init writes (envoy.yaml in the shared volume)",
                cfg == f"{etgt}/envoy.yaml", str(cmd))
    data_dir = f"{img.get('XDG_DATA_HOME', '')}/keygate"
    kd = [s for s, (t, _) in kmounts.items() if t == data_dir]
    c.check("keyd: its state directory ($XDG_DATA_HOME/keygate) is a named volume",
            len(kd) == 1 and not kmounts[kd[0]][1], f"{data_dir} {kmounts}")
    if kd:
        c.check("init: mounts keyd's volume read-only where keyctl looks for the admin token",
                imounts.get(kd[0]) == (data_dir, True), str(imounts.get(kd[0])))
    user = image_user(stages)
    c.check("envoy: runs as the image's user, so it can read the private config and filter",
            str(envoy.get("user")) == user, f"{envoy.get('user')} vs {user}")
    c.check("init: runs the init script (keygate-init)", init.get("command") == ["keygate-init"],
            str(init.get("command")))
    return ienv, keyd_port


# A valid Ed25519 public key (RFC 8032, test 1) to pin in place of keyd's: the filter checks
# that a pinned key is a curve point, so random bytes would not do.
PLACEHOLDER_SNAPSHOT_KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def placeholders():
    return "kgf_compose_check_placeholder", PLACEHOLDER_SNAPSHOT_KEY


def tls_args(ienv):
    """The TLS options init.sh adds when the compose file sets them (off in the demo)."""
    args = []
    if ienv.get("ENVOY_TLS_CERT"):
        args += ["--tls-cert", ienv["ENVOY_TLS_CERT"], "--tls-key", ienv.get("ENVOY_TLS_KEY", "")]
    if ienv.get("ENVOY_CLIENT_CA"):
        args += ["--client-ca", ienv["ENVOY_CLIENT_CA"]]
    return args


def config_checks(c, ienv, envoy_path, tmp):
    """init.sh's Envoy config == keyctl's, and Envoy validates it."""
    cred, key = placeholders()
    env = dict(os.environ, PATH=f"{os.path.dirname(KEYCTL)}:{os.environ['PATH']}", **ienv)
    env.pop("KEYGATE_FILTER_CREDENTIAL", None)
    extra = ["--filter-credential", cred, "--snapshot-key", key]
    via_init = subprocess.run(["sh", os.path.join(DEMO, "init.sh"), "envoy-config"] + extra,
                              env=env, capture_output=True, text=True, timeout=30)
    c.check("init.sh envoy-config prints a config", via_init.returncode == 0
            and via_init.stdout.startswith("# keygate"), via_init.stderr[-500:])
    direct = subprocess.run(
        [KEYCTL, "config", "envoy", "--listen", ienv["ENVOY_LISTEN"],
         "--upstream", ienv["OLLAMA_URL"], "--keyd", ienv["KEYD_URL"],
         "--wasm", ienv["ENVOY_WASM"]] + tls_args(ienv) + extra,
        capture_output=True, text=True, timeout=30)
    c.check("the init service's Envoy config is exactly `keyctl config envoy`'s",
            direct.returncode == 0 and via_init.stdout == direct.stdout,
            direct.stderr[-500:] or "they differ")
    if not envoy_path:
        c.check("envoy --mode validate on the generated config", False,
                "no envoy binary: run scripts/setup.sh or set ENVOY_BIN")
        return
    # Envoy loads the filter while validating: point the wasm path at the local build.
    quoted = json.dumps(ienv["ENVOY_WASM"])
    text = direct.stdout
    c.check("the generated config names the filter where Envoy mounts it", quoted in text)
    cfg = os.path.join(tmp, "envoy-compose.yaml")
    with open(cfg, "w") as f:
        f.write(text.replace(quoted, json.dumps(WASM)))
    r = subprocess.run([envoy_path, "--mode", "validate", "-c", cfg, "--log-level", "warn"],
                       capture_output=True, text=True, timeout=120)
    c.check("envoy --mode validate accepts the generated config (filter loaded and configured)",
            r.returncode == 0 and "OK" in r.stdout + r.stderr, (r.stdout + r.stderr)[-800:])


def wait_for(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def http_status(url, key=None):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def init_run_checks(c, ienv, envoy_path, tmp):
    """demo/init.sh for real, laid out like the containers, then its config in Envoy."""
    procs = []
    try:
        data_home = os.path.join(tmp, "var-lib")          # XDG_DATA_HOME, as in the image
        gateway = os.path.join(tmp, "gateway")            # the shared volume
        os.makedirs(gateway, mode=0o700)
        keyd_port, envoy_port = free_port(), free_port()
        base = dict(os.environ, XDG_DATA_HOME=data_home,
                    PATH=f"{os.path.dirname(KEYCTL)}:{os.environ['PATH']}")
        for k in ("KEYD_ADMIN_TOKEN", "KEYD_DATABASE_URL", "KEYGATE_FILTER_CREDENTIAL",
                  "KEYD_URL"):
            base.pop(k, None)
        keyd = subprocess.Popen([KEYD, "serve", "--listen", f"127.0.0.1:{keyd_port}"],
                                env=dict(base, NO_COLOR="1"), stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "keyd.log"), "w"))
        procs.append(keyd)
        port_file = os.path.join(tmp, "ollama.port")
        fake = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fake_ollama",
                                                              "fake_ollama.py"),
                                 "--listen", "127.0.0.1:0", "--port-file", port_file],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(fake)
        ok = wait_for(lambda: http_status(f"http://127.0.0.1:{keyd_port}/healthz") == 200, 20)
        if not c.check("init run: a local keyd starts with the image's layout", ok):
            return
        wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), 10)
        ollama = f"http://127.0.0.1:{open(port_file).read().strip()}"
        env = dict(base, **ienv)
        env.update({"KEYD_URL": f"http://127.0.0.1:{keyd_port}", "OLLAMA_URL": ollama,
                    "ENVOY_LISTEN": f"127.0.0.1:{envoy_port}", "GATEWAY_DIR": gateway,
                    "ENVOY_WASM": os.path.join(gateway, "keygate_filter.wasm"),
                    "WASM_SOURCE": WASM})
        first = subprocess.run(["sh", os.path.join(DEMO, "init.sh")], env=env,
                               capture_output=True, text=True, timeout=90)
        c.check("init run: exits 0", first.returncode == 0, first.stderr[-800:])
        keys = re.findall(r"\bkg_[a-z0-9]{12}_[a-z0-9]{20,}\b", first.stdout)
        c.check("init run: prints one first key", len(set(keys)) == 1, first.stdout[-500:])
        cfg = os.path.join(gateway, "envoy.yaml")
        modes = {f: oct(os.stat(os.path.join(gateway, f)).st_mode & 0o777)
                 for f in ("envoy.yaml", "keygate_filter.wasm") if
                 os.path.exists(os.path.join(gateway, f))}
        c.check("init run: writes the config and the filter, private (0600)",
                modes == {"envoy.yaml": "0o600", "keygate_filter.wasm": "0o600"}, str(modes))
        with open(cfg) as f:
            before = f.read()
        again = subprocess.run(["sh", os.path.join(DEMO, "init.sh")], env=env,
                               capture_output=True, text=True, timeout=90)
        with open(cfg) as f:
            after = f.read()
        c.check("init run: a second run succeeds, prints no key and keeps the config",
                again.returncode == 0 and "kg_" not in again.stdout and before == after,
                again.stderr[-500:])
        if not envoy_path or not keys:
            c.check("init run: Envoy runs the written config", False, "no envoy or no key")
            return
        envoy = subprocess.Popen([envoy_path, "-c", cfg, "--log-level", "warn",
                                  "--concurrency", "1", "--use-dynamic-base-id"],
                                 stdout=open(os.path.join(tmp, "envoy.log"), "w"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(envoy)
        gw = f"http://127.0.0.1:{envoy_port}"
        ready = wait_for(lambda: http_status(f"{gw}/api/tags") == 401, 30)
        c.check("init run: Envoy runs the written config (no key: 401)", ready)
        c.check("init run: the first key gets 200 through that Envoy",
                wait_for(lambda: http_status(f"{gw}/api/tags", keys[0]) == 200, 5))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def main():
    c = Checks()
    for f, what in ((KEYCTL, "keyctl"), (KEYD, "keyd"), (WASM, "the wasm filter")):
        if not os.path.exists(f):
            c.check(f"{what} is built", False, f"{f} is missing: run scripts/setup.sh")
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    c.check("compose: demo/docker-compose.yml parses to a mapping with services",
            isinstance(doc, dict) and isinstance(doc.get("services"), dict))
    unknown = {k for k in doc if not k.startswith("x-")} - {"name", "services", "volumes",
                                                           "networks", "configs", "secrets"}
    c.check("compose: only known top-level keys (no obsolete `version`)", not unknown,
            str(sorted(unknown)))
    res = static_checks(c, doc)
    tmp = tempfile.mkdtemp(prefix="keygate-compose-")
    try:
        if res and res[1]:
            services, dockerfiles = res
            stages = next(iter(dockerfiles.values()))[1]
            ienv, _ = wiring_checks(c, services, stages)
            if not c.failed:
                envoy_path = envoy_bin()
                config_checks(c, ienv, envoy_path, tmp)
                init_run_checks(c, ienv, envoy_path, tmp)
            else:
                print("# static checks failed: config and init-run checks skipped")
    finally:
        if c.failed:
            print(f"# logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"compose: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
