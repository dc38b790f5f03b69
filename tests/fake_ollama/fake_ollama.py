#!/usr/bin/env python3
"""Fake Ollama server for keygate's end-to-end tests.

Why this exists: keygate is an auth proxy in front of Ollama. Its end-to-end tests need an
upstream that behaves like Ollama on the wire (HTTP/1.1 keep-alive, chunked NDJSON and SSE
streams that arrive chunk by chunk, Ollama's and OpenAI's JSON shapes, Ollama's loopback Host
check) without downloading models or needing a GPU. It also records every request it receives
so a test can assert what the proxy forwarded: headers stripped or added, Host rewritten, body
passed through unchanged, denied requests never reaching the upstream.

Standard library only (Python 3.11). Any model name is accepted; replies are deterministic.

Usage:
    python3 fake_ollama.py --listen 127.0.0.1:0 [--chunk-delay 0.05]
                           [--loopback-host-check] [--port-file PATH]

Once listening it prints `LISTENING HOST:PORT` on stdout (and writes PORT to --port-file).
Control endpoints (never recorded, never Host-checked):
    GET  /__fake/requests  -> JSON array of {"method","path","headers","body"}
    POST /__fake/reset     -> clears the recorded requests
    GET  /__fake/health    -> 200 {"status":"ok"}
"""

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

VERSION = "0.12.0"
# The assistant's reply, one token per streamed chunk (9 chunks + the final "done" chunk).
REPLY = ["The", " sky", " is", " blue", " because", " of", " Rayleigh", " scattering", "."]
REPLY_TEXT = "".join(REPLY)
NDJSON = "application/x-ndjson"
JSON_CT = "application/json; charset=utf-8"  # what Go's gin sends
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")  # Ollama's blob digest format

# The installed models reported by /api/tags, /api/ps and /v1/models.
MODELS = [
    # (name, size, digest, family, parameter_size, quantization_level)
    ("llama3.2:latest", 2019393189,
     "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72", "llama", "3.2B", "Q4_K_M"),
    ("qwen3:8b", 5225388164,
     "500a1f067a9f782620b40bee6f7b0c89e17ae61f686b92c24933e4ca4b2b8b41", "qwen3", "8.2B", "Q4_K_M"),
    ("nomic-embed-text:latest", 274302450,
     "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f", "nomic-bert", "137M", "F16"),
]


def rfc3339(t=None):
    """Go-style RFC 3339 timestamp, nanosecond precision, as Ollama in a UTC zone prints it."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def details(family, params, quant):
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": params, "quantization_level": quant}


def model_entry(m):
    name, size, digest, family, params, quant = m
    return {"name": name, "model": name, "modified_at": rfc3339(1746405464.706015),
            "size": size, "digest": digest, "details": details(family, params, quant)}


def dims_of(req):
    """Embedding size: the request's "dimensions" if a sane positive int, else 16."""
    d = req.get("dimensions")
    return d if isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 4096 else 16


def embedding(text, dims=16):
    """Deterministic unit vector derived from the text (same text -> same vector)."""
    h = hashlib.sha256(str(text).encode("utf-8", "replace")).digest()
    v = [(h[i % 32] + i - 127.5) for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [round(x / norm, 6) for x in v]


def ndjson(obj):
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def sse(obj, event=None):
    """One Server-Sent Event: optional `event:` line, `data:` line, blank line."""
    head = f"event: {event}\n" if event else ""
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"{head}data: {data}\n\n".encode()


def count_tokens(value):
    """Rough prompt token count: whitespace-separated words of the prompt/messages."""
    if isinstance(value, list):
        return sum(count_tokens(m.get("content", "") if isinstance(m, dict) else m) for m in value)
    return max(1, len(str(value or "").split()))


def ollama_stats(prompt_tokens):
    return {"total_duration": 4883583458, "load_duration": 1334875,
            "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 342546000,
            "eval_count": len(REPLY), "eval_duration": 4535599000}


class BadRequest(Exception):
    """Raised by handlers to answer 400 in the error shape of the route's API family."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has Content-Length or is chunked

    def version_string(self):  # "Server:" header
        return "fake-ollama/" + VERSION

    # ---- logging: silent per request, errors still go to stderr -----------------------------
    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_ollama: %s\n" % (fmt % args))

    # ---- one entry point for every method ----------------------------------------------------
    def do_GET(self):
        self.dispatch()

    do_POST = do_HEAD = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_GET

    def dispatch(self):
        self.headers_sent = False
        try:
            self.raw_body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return self.send_json(400, {"error": "malformed request body"})
        self.route, _, _ = self.path.partition("?")
        try:
            if self.route.startswith("/__fake/"):
                return self.control()
            self.server.record(self)
            if self.server.loopback_host_check and not self.host_is_loopback():
                return self.send_body(403, b"", "text/plain; charset=utf-8")
            handler = self.find_handler()
            if handler is None:
                return self.send_json(404, {"error": "404 page not found"})
            handler()
        except BadRequest as e:
            self.send_error_shape(400, str(e))
        except DISCONNECTS:
            self.close_connection = True  # client went away mid-response: nothing to report
        except Exception as e:  # never crash the server on bad input
            traceback.print_exc()
            self.close_connection = True
            if not self.headers_sent:
                try:
                    self.send_error_shape(500, f"fake_ollama internal error: {e}")
                except DISCONNECTS:
                    pass

    def read_body(self):
        """Read the request body (Content-Length or chunked) so keep-alive stays in sync."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)  # CRLF after each chunk
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(n) if n else b""

    def host_is_loopback(self):
        """Real Ollama bound to loopback rejects non-local Host headers (DNS-rebinding defence).
        This check is deliberately stricter: only localhost, 127.x.x.x and [::1], any port."""
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[1:host.find("]")] if "]" in host else ""
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in ("localhost", "::1") or re.fullmatch(r"127(\.\d{1,3}){3}", name) is not None

    # ---- routing ------------------------------------------------------------------------------
    EXACT = {
        ("GET", "/"): "root", ("HEAD", "/"): "root",
        ("GET", "/api/version"): "version", ("HEAD", "/api/version"): "version",
        ("GET", "/api/tags"): "tags", ("HEAD", "/api/tags"): "tags",
        ("POST", "/api/show"): "show", ("GET", "/api/ps"): "ps",
        ("POST", "/api/chat"): "chat", ("POST", "/api/generate"): "generate",
        ("POST", "/api/embed"): "embed", ("POST", "/api/embeddings"): "embeddings",
        ("POST", "/api/pull"): "pull", ("POST", "/api/push"): "push",
        ("POST", "/api/create"): "create", ("POST", "/api/copy"): "copy",
        ("DELETE", "/api/delete"): "delete",
        ("GET", "/v1/models"): "v1_models",
        ("POST", "/v1/chat/completions"): "v1_chat", ("POST", "/v1/completions"): "v1_completions",
        ("POST", "/v1/embeddings"): "v1_embeddings", ("POST", "/v1/responses"): "v1_responses",
        ("POST", "/v1/messages"): "v1_messages",
    }

    def find_handler(self):
        name = self.EXACT.get((self.command, self.route))
        if name is None and self.command == "GET" and self.route.startswith("/v1/models/"):
            name = "v1_model"
        if name is None and self.command in ("HEAD", "POST") and self.route.startswith("/api/blobs/"):
            name = "blob"
        # Like gin, a wrong method on a known path is a plain 404.
        return getattr(self, "r_" + name) if name else None

    # ---- response helpers ---------------------------------------------------------------------
    def send_body(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.headers_sent = True
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj):
        self.send_body(status, json.dumps(obj, separators=(",", ":")).encode(), JSON_CT)

    def send_error_shape(self, status, msg):
        """Errors look like what each API family's clients expect."""
        kind = "invalid_request_error" if status < 500 else "api_error"
        if self.route.startswith("/v1/messages"):
            self.send_json(status, {"type": "error", "error": {"type": kind, "message": msg}})
        elif self.route.startswith("/v1/"):
            self.send_json(status, {"error": {"message": msg, "type": kind,
                                              "param": None, "code": None}})
        else:
            self.send_json(status, {"error": msg})

    def stream(self, ctype, pieces):
        """Chunked response: one HTTP chunk per piece, flushed, --chunk-delay between pieces."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if ctype == "text/event-stream":
            self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.headers_sent = True
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(self.server.chunk_delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def json_body(self):
        """The request body as a JSON object, or BadRequest with Ollama-like messages."""
        if not self.raw_body.strip():
            raise BadRequest("missing request body")
        try:
            obj = json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"invalid character in JSON body: {e}")
        if not isinstance(obj, dict):
            raise BadRequest("json: cannot unmarshal %s into Go value of type api.Request"
                             % type(obj).__name__)
        return obj

    def need_model(self, req, allow_name=False):
        model = req.get("model") or (req.get("name") if allow_name else None)
        if not model or not isinstance(model, str):
            raise BadRequest("model is required")
        return model

    # ---- control endpoints (not recorded) -----------------------------------------------------
    def control(self):
        if self.command == "GET" and self.route == "/__fake/requests":
            return self.send_json(200, self.server.snapshot())
        if self.command == "POST" and self.route == "/__fake/reset":
            return self.send_json(200, {"cleared": self.server.reset()})
        if self.command in ("GET", "HEAD") and self.route == "/__fake/health":
            return self.send_json(200, {"status": "ok"})
        self.send_json(404, {"error": "404 page not found"})

    # ---- Ollama read routes -------------------------------------------------------------------
    def r_root(self):
        self.send_body(200, b"Ollama is running", "text/plain; charset=utf-8")

    def r_version(self):
        self.send_json(200, {"version": VERSION})

    def r_tags(self):
        self.send_json(200, {"models": [model_entry(m) for m in MODELS]})

    def r_show(self):
        req = self.json_body()
        model = self.need_model(req, allow_name=True)
        self.send_json(200, {
            "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
            "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {model}\n"
                         "TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\nPARAMETER stop <|eot_id|>\n",
            "parameters": "stop                           \"<|eot_id|>\"",
            "template": "{{ .Prompt }}",
            "details": details("llama", "3.2B", "Q4_K_M"),
            "model_info": {"general.architecture": "llama", "general.parameter_count": 3212749888,
                           "llama.context_length": 131072, "llama.embedding_length": 3072},
            "capabilities": ["completion", "tools"],
            "modified_at": rfc3339(1746405464.706015),
        })

    def r_ps(self):
        e = {k: v for k, v in model_entry(MODELS[0]).items() if k != "modified_at"}
        e.update(expires_at=rfc3339(time.time() + 300), size_vram=e["size"], context_length=4096)
        self.send_json(200, {"models": [e]})

    # ---- Ollama inference routes --------------------------------------------------------------
    def _ollama_completion(self, key):
        """/api/chat (key "message") and /api/generate (key "response"): NDJSON by default."""
        req = self.json_body()
        model = self.need_model(req)
        stream = req.get("stream") is not False  # Ollama streams unless told otherwise
        chat = key == "message"
        prompt = req.get("messages") if chat else req.get("prompt")
        wrap = (lambda t: {"role": "assistant", "content": t}) if chat else (lambda t: t)
        base = lambda: {"model": model, "created_at": rfc3339()}
        if not prompt:  # empty prompt/messages just loads the model, as Ollama does
            return self.send_json(200, {**base(), key: wrap(""), "done": True, "done_reason": "load"})
        final = {key: wrap(""), "done": True, "done_reason": "stop"}
        if not chat:
            final["context"] = [128006, 882, 128007, 271, 791, 13180, 374, 6437, 13]
        final.update(ollama_stats(count_tokens(prompt)))
        if not stream:
            final[key] = wrap(REPLY_TEXT)
            return self.send_json(200, {**base(), **final})

        def pieces():
            for tok in REPLY:
                yield ndjson({**base(), key: wrap(tok), "done": False})
            yield ndjson({**base(), **final})
        self.stream(NDJSON, pieces())

    r_chat = lambda self: self._ollama_completion("message")
    r_generate = lambda self: self._ollama_completion("response")

    def r_embed(self):
        req = self.json_body()
        model = self.need_model(req)
        inp = req.get("input")
        inputs = [] if inp is None else (inp if isinstance(inp, list) else [inp])
        self.send_json(200, {"model": model, "embeddings": [embedding(t, dims_of(req)) for t in inputs],
                             "total_duration": 14143917, "load_duration": 1019500,
                             "prompt_eval_count": count_tokens(inputs)})

    def r_embeddings(self):  # legacy endpoint: "prompt" in, "embedding" out
        req = self.json_body()
        self.need_model(req)
        prompt = req.get("prompt")
        self.send_json(200, {"embedding": embedding(prompt) if prompt else []})

    # ---- Ollama admin routes ------------------------------------------------------------------
    def _status_stream(self, req, statuses):
        if req.get("stream") is False:
            return self.send_json(200, {"status": "success"})
        self.stream(NDJSON, (ndjson(s) for s in statuses))

    def r_pull(self):
        req = self.json_body()
        self.need_model(req, allow_name=True)
        layer = {"status": "pulling " + MODELS[0][2][:12], "digest": "sha256:" + MODELS[0][2],
                 "total": 2019377376}
        self._status_stream(req, [{"status": "pulling manifest"}]
                            + [{**layer, "completed": layer["total"] * i // 2} for i in range(3)]
                            + [{"status": s} for s in ("verifying sha256 digest", "writing manifest",
                                                       "success")])

    def r_push(self):
        req = self.json_body()
        self.need_model(req, allow_name=True)
        digest = "sha256:" + MODELS[0][2]
        self._status_stream(req, [
            {"status": "retrieving manifest"},
            {"status": "starting upload", "digest": digest, "total": 1928429856},
            {"status": "starting upload", "digest": digest, "total": 1928429856,
             "completed": 1928429856},
            {"status": "pushing manifest"}, {"status": "success"}])

    def r_create(self):
        req = self.json_body()
        self.need_model(req, allow_name=True)
        self._status_stream(req, [
            {"status": "reading model metadata"}, {"status": "creating system layer"},
            {"status": "using already created layer sha256:" + MODELS[0][2]},
            {"status": "writing manifest"}, {"status": "success"}])

    def r_copy(self):
        req = self.json_body()
        if not req.get("source") or not req.get("destination"):
            raise BadRequest("source and destination are required")
        self.send_body(200, b"", JSON_CT)

    def r_delete(self):
        self.need_model(self.json_body(), allow_name=True)
        self.send_body(200, b"", JSON_CT)

    def r_blob(self):
        if not DIGEST_RE.match(unquote(self.route[len("/api/blobs/"):])):
            raise BadRequest("invalid digest format")
        self.send_body(200 if self.command == "HEAD" else 201, b"", JSON_CT)

    # ---- OpenAI-compatible routes -------------------------------------------------------------
    @staticmethod
    def oa_model(name):
        return {"id": name, "object": "model", "created": 1746405464, "owned_by": "library"}

    def r_v1_models(self):
        self.send_json(200, {"object": "list", "data": [self.oa_model(m[0]) for m in MODELS]})

    def r_v1_model(self):
        name = unquote(self.route[len("/v1/models/"):])
        if not name:
            return self.send_json(404, {"error": "404 page not found"})
        self.send_json(200, self.oa_model(name))

    def _oa_completion(self, chat):
        """/v1/chat/completions and /v1/completions; SSE when "stream": true."""
        req = self.json_body()
        model = self.need_model(req)
        prompt_tokens = count_tokens(req.get("messages") if chat else req.get("prompt"))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(REPLY),
                 "total_tokens": prompt_tokens + len(REPLY)}
        obj = "chat.completion" if chat else "text_completion"
        head = {"id": ("chatcmpl-" if chat else "cmpl-") + str(random.randint(100, 999)), "object": obj,
                "created": int(time.time()), "model": model, "system_fingerprint": "fp_ollama"}

        def choice(text, finish, streaming):
            if not chat:
                return {"text": text, "index": 0, "finish_reason": finish}
            msg = {"role": "assistant", "content": text}
            return {"index": 0, ("delta" if streaming else "message"): msg, "finish_reason": finish}

        if req.get("stream") is not True:
            return self.send_json(200, {**head, "choices": [choice(REPLY_TEXT, "stop", False)],
                                        "usage": usage})
        if chat:
            head["object"] = "chat.completion.chunk"
        opts = req.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True

        def pieces():
            for tok in REPLY:
                yield sse({**head, "choices": [choice(tok, None, True)]})
            yield sse({**head, "choices": [choice("", "stop", True)]})
            if include_usage:
                yield sse({**head, "choices": [], "usage": usage})
            yield sse("[DONE]")
        self.stream("text/event-stream", pieces())

    r_v1_chat = lambda self: self._oa_completion(chat=True)
    r_v1_completions = lambda self: self._oa_completion(chat=False)

    def r_v1_embeddings(self):
        req = self.json_body()
        model = self.need_model(req)
        inp = req.get("input")
        if inp in (None, "", []):
            raise BadRequest("invalid input")
        # A list of ints is one tokenised input; a list of strings (or token lists) is a batch.
        one = isinstance(inp, str) or not isinstance(inp, list) or isinstance(inp[0], int)
        data = []
        for i, text in enumerate([inp] if one else inp):
            vec = embedding(text, dims_of(req))
            if req.get("encoding_format") == "base64":  # little-endian float32, as OpenAI does
                vec = base64.b64encode(struct.pack("<%df" % len(vec), *vec)).decode()
            data.append({"object": "embedding", "embedding": vec, "index": i})
        n = count_tokens([inp] if one else inp)
        self.send_json(200, {"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": n, "total_tokens": n}})

    def r_v1_responses(self):
        """Minimal OpenAI Responses API: one assistant message with one output_text part."""
        req = self.json_body()
        model = self.need_model(req)
        n = count_tokens(req.get("input"))
        rid, mid = "resp_%06d" % random.randint(0, 999999), "msg_%06d" % random.randint(0, 999999)
        part = {"type": "output_text", "text": REPLY_TEXT, "annotations": []}
        item = {"type": "message", "id": mid, "status": "completed", "role": "assistant",
                "content": [part]}
        resp = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                "model": model, "output": [item], "output_text": REPLY_TEXT, "error": None,
                "incomplete_details": None, "instructions": req.get("instructions"),
                "usage": {"input_tokens": n, "output_tokens": len(REPLY),
                          "total_tokens": n + len(REPLY)}}
        if req.get("stream") is not True:
            return self.send_json(200, resp)
        started = {**resp, "status": "in_progress", "output": [], "usage": None}
        loc = {"item_id": mid, "output_index": 0, "content_index": 0}
        events = [("response.created", {"response": started}),
                  ("response.output_item.added",
                   {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}}),
                  ("response.content_part.added", {**loc, "part": {**part, "text": ""}})]
        events += [("response.output_text.delta", {**loc, "delta": tok}) for tok in REPLY]
        events += [("response.output_text.done", {**loc, "text": REPLY_TEXT}),
                   ("response.content_part.done", {**loc, "part": part}),
                   ("response.output_item.done", {"output_index": 0, "item": item}),
                   ("response.completed", {"response": resp})]
        self.stream("text/event-stream", (sse({"type": t, "sequence_number": i, **d}, t)
                                          for i, (t, d) in enumerate(events)))

    def r_v1_messages(self):
        """Minimal Anthropic Messages API (Ollama serves it for Claude-compatible clients)."""
        req = self.json_body()
        model = self.need_model(req)
        n = count_tokens(req.get("messages"))
        msg = {"id": "msg_%06d" % random.randint(0, 999999), "type": "message", "role": "assistant",
               "model": model, "content": [{"type": "text", "text": REPLY_TEXT}],
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": n, "output_tokens": len(REPLY)}}
        if req.get("stream") is not True:
            return self.send_json(200, msg)
        start = {**msg, "content": [], "stop_reason": None,
                 "usage": {"input_tokens": n, "output_tokens": 0}}
        events = [("message_start", {"message": start}),
                  ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
        events += [("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": tok}})
                   for tok in REPLY]
        events += [("content_block_stop", {"index": 0}),
                   ("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"output_tokens": len(REPLY)}}),
                   ("message_stop", {})]
        self.stream("text/event-stream", (sse({"type": t, **d}, t) for t, d in events))


class FakeOllamaServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not block shutdown
    allow_reuse_address = True
    request_queue_size = 128  # default 5 drops SYNs when a test opens many connections at once

    def __init__(self, addr, chunk_delay, loopback_host_check, ipv6=False):
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        super().__init__(addr, Handler)
        self.chunk_delay = chunk_delay
        self.loopback_host_check = loopback_host_check
        self._lock = threading.Lock()
        self._requests = []

    def record(self, h):
        headers = {}
        for name, value in h.headers.items():
            key = name.lower()
            headers[key] = headers[key] + ", " + value if key in headers else value
        entry = {"method": h.command, "path": h.path, "headers": headers,
                 "body": h.raw_body.decode("utf-8", "replace")}
        with self._lock:
            self._requests.append(entry)

    def snapshot(self):
        with self._lock:
            return list(self._requests)

    def reset(self):
        with self._lock:
            n = len(self._requests)
            self._requests.clear()
            return n

    def handle_error(self, request, client_address):
        # Disconnects are normal for a streaming server; anything else is worth a traceback.
        if isinstance(sys.exc_info()[1], DISCONNECTS + (TimeoutError,)):
            return
        super().handle_error(request, client_address)


def parse_listen(value):
    """'127.0.0.1:0' or '[::1]:0' -> (host, port, ipv6)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:0")
    ipv6 = host.startswith("[") and host.endswith("]")
    return (host[1:-1] if ipv6 else host), int(port), ipv6


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Ollama server for keygate end-to-end tests.")
    ap.add_argument("--listen", type=parse_listen, default=parse_listen("127.0.0.1:0"),
                    help="HOST:PORT to bind (port 0 picks a free port); default 127.0.0.1:0")
    ap.add_argument("--chunk-delay", type=float, default=0.05,
                    help="seconds between streamed chunks (default 0.05)")
    ap.add_argument("--loopback-host-check", action="store_true",
                    help="answer 403 when the Host header is not localhost/127.0.0.1/[::1]")
    ap.add_argument("--port-file", help="write the bound port to this file once listening")
    args = ap.parse_args(argv)

    host, port, ipv6 = args.listen
    server = FakeOllamaServer((host, port), max(0.0, args.chunk_delay), args.loopback_host_check, ipv6)
    bound = server.server_address[1]
    if args.port_file:  # write-then-rename so a poller never reads a half-written file
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(bound))
        os.replace(tmp, args.port_file)
    shown = f"[{host}]" if ipv6 else host
    print(f"LISTENING {shown}:{bound}", flush=True)

    # A plain flag, not threading.Event: Event.set() in a signal handler can deadlock when
    # the signal lands while the main thread holds the Event's lock inside wait().
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    while not stopping:  # short sleeps keep the main thread responsive to signals
        time.sleep(0.1)
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
