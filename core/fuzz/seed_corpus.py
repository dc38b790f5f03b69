#!/usr/bin/env python3
"""Seeds core/fuzz/corpus/<target>/ from the committed test vectors, so fuzzing starts from
valid keys, tokens, envelopes and bodies instead of from nothing. Run from anywhere:
    python3 core/fuzz/seed_corpus.py
Targets whose input is a tuple (signed_request, decide, snapshot_payload) start empty:
libFuzzer's arbitrary encoding of tuples is not worth reproducing here."""
import hashlib, json, pathlib

here = pathlib.Path(__file__).resolve().parent
vectors = here.parent / "tests" / "vectors"

def load(name):
    return json.loads((vectors / name).read_text())

def put(target, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)

for c in load("keys.json")["cases"]:
    put("key_parse", c["input"].encode())
for c in load("tokens.json")["cases"]:
    put("token_verify", c["input"]["token"].encode())
snaps = load("snapshots.json")
for env in snaps["context"]["envelopes"].values():
    put("snapshot_decode", bytes.fromhex(env))
for c in snaps["cases"]:
    for env in c["input"]["envelopes"]:
        put("snapshot_decode", bytes.fromhex(env))
for c in load("decisions.json")["cases"]:
    if "body" in c["input"]:
        put("body_model", c["input"]["body"].encode())
print("seeded", sorted(p.name for p in (here / "corpus").iterdir()))
