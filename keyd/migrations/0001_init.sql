-- keyd schema, one file for SQLite and PostgreSQL: only types and statements both dialects
-- run the same way (BIGINT integers, digests and seeds as hex TEXT), so the schema cannot drift
-- between them. Add a per-dialect folder only if a later migration needs different SQL.

-- One row: the global snapshot version and the head of the audit chain. Every write
-- transaction starts by updating this row, which serialises writers (on PostgreSQL across
-- instances too) so versions and audit sequence numbers are gap-free and linear.
CREATE TABLE chain (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL,
    audit_seq BIGINT NOT NULL,
    audit_hash TEXT NOT NULL
);
INSERT INTO chain (id, version, audit_seq, audit_hash)
VALUES (1, 0, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- API keys and registered Ollama public keys. `digest` is SHA-256 of the key text (api_key)
-- or the Ed25519 public key (ollama_key). `version` is the snapshot version of the last change.
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    prev_digest TEXT,
    prev_valid_until BIGINT,
    status TEXT NOT NULL,
    routes BIGINT NOT NULL,
    models TEXT NOT NULL,
    rate TEXT,
    burst BIGINT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT,
    revoked_at BIGINT,
    revoke_reason TEXT,
    version BIGINT NOT NULL
);
CREATE INDEX keys_version ON keys (version);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    which TEXT NOT NULL,
    seed TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    version BIGINT NOT NULL
);

CREATE TABLE filter_credentials (
    id TEXT PRIMARY KEY,
    name TEXT,
    digest TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    key_id TEXT,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_key ON audit (key_id, seq);
CREATE INDEX audit_action ON audit (action, seq);
