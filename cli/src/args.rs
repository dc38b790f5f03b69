//! The command line as clap parses it. Nothing here is validated beyond its shape: `cmd`
//! turns these into validated commands before anything is sent, so the rules live in one
//! place (keygate-core's constructors) and keyd and keyctl agree on them.

use crate::secret::Secret;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// keyd's default listen address (docs/api.md).
pub const DEFAULT_URL: &str = "http://127.0.0.1:7433";

#[derive(Debug, Parser)]
#[command(
    name = "keyctl",
    version,
    about = "Manage keygate API keys, tokens, audit log and proxy configs through keyd",
    after_help = "\
Examples:
  keyctl issue --name ci-runner --rate 10/s --expires-in 30d
  keyctl list --all
  keyctl audit --since 1h --verify

Exit codes: 0 ok, 1 other failure, 2 invalid argument, 3 keyd unreachable,
4 authentication failed, 5 not found, 6 conflict, 7 audit chain broken."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: CommandArgs,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// keyd's address.
    #[arg(
        long,
        global = true,
        env = "KEYD_URL",
        default_value = DEFAULT_URL,
        value_name = "URL"
    )]
    pub url: String,
    /// Admin token. Without it keyctl uses --admin-token-file, then env KEYD_ADMIN_TOKEN, then
    /// the file keyd writes beside its default database. Prefer those: other users can read
    /// command lines with `ps`.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub admin_token: Option<Secret>,
    /// Read the admin token from this file (takes precedence over KEYD_ADMIN_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Print JSON with stable field names (documented in docs/keyctl.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only what a script needs (the key, the token, the id).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    /// Issue a new API key and print it: the only time the key is shown.
    #[command(after_help = "\
Examples:
  keyctl issue --name laptop
  keyctl issue --name ci --routes inference --models 'llama3*,qwen2.5:7b' --rate 10/s --burst 20 --expires-in 30d
  KEY=$(keyctl issue --name script --quiet)")]
    Issue(IssueArgs),
    /// List keys (active ones unless --all), streaming pages as keyd sends them.
    #[command(after_help = "\
Examples:
  keyctl list
  keyctl list --all --json | jq '.[] | select(.status == \"revoked\") | .id'")]
    List(ListArgs),
    /// Show one key.
    #[command(after_help = "Example:\n  keyctl show 4f3k2mzq7abc")]
    Show(ShowArgs),
    /// Replace a key's secret; the old secret keeps working for the grace period.
    #[command(after_help = "\
Examples:
  keyctl rotate 4f3k2mzq7abc
  keyctl rotate 4f3k2mzq7abc --grace 24h --quiet > new-key.txt")]
    Rotate(RotateArgs),
    /// Revoke a key (and every token minted for it) at once.
    #[command(after_help = "Example:\n  keyctl revoke 4f3k2mzq7abc --reason 'laptop stolen'")]
    Revoke(RevokeArgs),
    /// Mint a short-lived signed token (JWT, EdDSA) for a key.
    #[command(after_help = "\
Examples:
  keyctl token 4f3k2mzq7abc --ttl 15m
  curl -H \"Authorization: Bearer $(keyctl token 4f3k2mzq7abc --quiet)\" https://gateway/api/tags")]
    Token(TokenArgs),
    /// Print the audit log, or check its hash chain with --verify.
    #[command(after_help = "\
Examples:
  keyctl audit --since 24h
  keyctl audit --key 4f3k2mzq7abc --action key.rotate --json
  keyctl audit --verify")]
    Audit(AuditArgs),
    /// Manage keyd's signing keys.
    #[command(subcommand)]
    SigningKey(SigningKeyArgs),
    /// Register an Ollama client public key (for `OLLAMA_AUTH=1 ollama …`) with a policy.
    #[command(after_help = "\
Examples:
  keyctl register --name alice-laptop --public-key \"$(cat ~/.ollama/id_ed25519.pub)\"
  keyctl register --name ci --public-key ./id_ed25519.pub --routes inference --rate 5/s")]
    Register(RegisterArgs),
    /// Print a ready proxy configuration (Envoy, nginx or Caddy).
    #[command(subcommand)]
    Config(ConfigArgs),
    /// Make certificates for a homelab or a test.
    #[command(subcommand)]
    Certs(CertsArgs),
}

/// Policy flags shared by `issue` and `register`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Route classes the key may use, comma-separated: inference, read, admin
    /// [keyd's default: inference,read].
    #[arg(long, value_delimiter = ',', value_name = "CLASS,...")]
    pub routes: Vec<String>,
    /// Model allowlist, comma-separated globs (e.g. 'llama3*,qwen2.5:7b') [default: every
    /// local model].
    #[arg(long, value_delimiter = ',', value_name = "GLOB,...")]
    pub models: Vec<String>,
    /// Request rate: N/s, N/m or N/h [default: unlimited].
    #[arg(long, value_name = "RATE")]
    pub rate: Option<String>,
    /// Requests allowed at once on top of --rate [default: the per-second rate].
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    /// Lifetime: 90s, 15m, 1h, 30d, 2w [default: never expires].
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// A name people recognise (who or what uses the key).
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include revoked and expired keys.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Key id (the 12 characters after `kg_`).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Key id.
    pub id: String,
    /// How long the old secret keeps working [keyd's default: 1h]. To end it now, revoke.
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Key id.
    pub id: String,
    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Key id.
    pub id: String,
    /// Token lifetime [keyd's default: 15m].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries at or after TIME: a duration ago (24h, 7d), a date (2026-01-31) or an
    /// RFC 3339 time (2026-01-31T09:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only entries before TIME (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only entries about this key id.
    #[arg(long, value_name = "ID")]
    pub key: Option<String>,
    /// Only this action: key.issue, key.rotate, key.revoke, token.mint, token.exchange,
    /// publickey.register, signing_key.rotate, filter_credential.create, admin.auth_failed.
    #[arg(long, value_name = "NAME")]
    pub action: Option<String>,
    /// Check the whole log's hash chain instead of printing it; exits 7 if it is broken.
    #[arg(long, conflicts_with_all = ["since", "until", "key", "action"])]
    pub verify: bool,
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyArgs {
    /// Start signing with a new key; the old public key stays published for a while, so
    /// tokens and snapshots signed with it keep verifying.
    #[command(after_help = "\
Examples:
  keyctl signing-key rotate
  keyctl signing-key rotate --which snapshot")]
    Rotate {
        /// Which key: the token signing key or the snapshot signing key.
        #[arg(long, value_enum, default_value_t = Which::Token)]
        which: Which,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    Token,
    Snapshot,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// A name people recognise.
    #[arg(long)]
    pub name: String,
    /// The client's `ssh-ed25519 AAAA… comment` line, or a path to its .pub file
    /// (usually ~/.ollama/id_ed25519.pub).
    #[arg(long, value_name = "KEY|FILE")]
    pub public_key: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// Where the proxy listens, what it protects, and which keyd decides.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address the proxy listens on: IP:PORT ([::]:PORT for IPv6) or :PORT for every interface.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Ollama's URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:11434")]
    pub upstream: String,
    /// keyd's URL; repeat for several keyd instances.
    #[arg(long, value_name = "URL", default_values_t = [DEFAULT_URL.to_owned()])]
    pub keyd: Vec<String>,
    /// Serve TLS 1.3 with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigArgs {
    /// Envoy with the keygate wasm filter (fetches a filter credential from keyd unless given).
    #[command(after_help = "\
Examples:
  keyctl config envoy --listen 127.0.0.1:8080 --wasm /opt/keygate/keygate_filter.wasm > envoy.yaml
  keyctl config envoy --listen 0.0.0.0:443 --wasm keygate_filter.wasm \\
      --tls-cert certs/server.crt --tls-key certs/server.key --client-ca certs/ca.crt")]
    Envoy(EnvoyArgs),
    /// nginx with auth_request to keyd's /v1/verify.
    #[command(after_help = "\
Examples:
  keyctl config nginx --listen 127.0.0.1:8080 > nginx.conf && nginx -p \"$PWD\" -c \"$PWD/nginx.conf\"
  keyctl config nginx --listen 0.0.0.0:443 --tls-cert certs/server.crt --tls-key certs/server.key")]
    Nginx(NginxArgs),
    /// Caddy with forward_auth to keyd's /v1/verify.
    #[command(after_help = "\
Examples:
  keyctl config caddy --listen 127.0.0.1:8080 > Caddyfile && caddy run --config Caddyfile
  keyctl config caddy --listen :443 --tls-cert certs/server.crt --tls-key certs/server.key --client-ca certs/ca.crt")]
    Caddy(CaddyArgs),
}

#[derive(Debug, Args)]
pub struct EnvoyArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// Path of keygate_filter.wasm as Envoy will see it.
    #[arg(long, value_name = "PATH")]
    pub wasm: String,
    /// Envoy admin interface address (off unless given).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Use this filter credential instead of asking keyd for a new one (needs --snapshot-key).
    #[arg(
        long,
        env = "KEYGATE_FILTER_CREDENTIAL",
        hide_env_values = true,
        value_name = "CREDENTIAL",
        requires = "snapshot_keys"
    )]
    pub filter_credential: Option<Secret>,
    /// keyd's snapshot public key (base64url) to pin; repeat during a key rotation.
    /// base64url keys may start with `-` (one in 64 does), so such a value is taken as the
    /// key, not as an option.
    #[arg(
        long = "snapshot-key",
        value_name = "KEY",
        requires = "filter_credential",
        allow_hyphen_values = true
    )]
    pub snapshot_keys: Vec<String>,
    /// Name of the filter credential keyd creates (shown in its audit log).
    #[arg(long, value_name = "NAME", default_value = "envoy")]
    pub credential_name: String,
}

#[derive(Debug, Args)]
pub struct NginxArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// Ceiling nginx enforces per verified key (keyd enforces each key's own rate).
    #[arg(long, value_name = "RATE", default_value = "50/s")]
    pub per_key_rate: String,
    /// Requests above --per-key-rate allowed at once.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub per_key_burst: u32,
}

#[derive(Debug, Args)]
pub struct CaddyArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Debug, Subcommand)]
pub enum CertsArgs {
    /// Create a local CA, a server certificate and client certificates in DIR.
    #[command(after_help = "\
Examples:
  keyctl certs init ./certs
  keyctl certs init ./certs --name gateway.lan --name 192.168.1.10 --client alice --client ci

Files: ca.crt, ca.key, server.crt, server.key, client-NAME.crt, client-NAME.key
(keys are written 0600, DIR is created 0700).")]
    Init(CertsInitArgs),
}

#[derive(Debug, Args)]
pub struct CertsInitArgs {
    /// Directory to write into (created if missing).
    pub dir: PathBuf,
    /// DNS name or IP address for the server certificate; repeat [default: localhost,
    /// 127.0.0.1, ::1].
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Make a client certificate for this name; repeat.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Days the server and client certificates stay valid.
    #[arg(long, value_name = "DAYS", default_value_t = 825)]
    pub days: u32,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.has_subcommands() {
                    walk(sub, &path);
                } else {
                    let help = sub
                        .get_after_help()
                        .map(|h| h.to_string())
                        .unwrap_or_default();
                    assert!(help.contains("keyctl"), "{path} has no example in --help");
                }
            }
        }
        walk(&Cli::command(), "keyctl");
    }

    #[test]
    fn lists_split_on_commas() {
        let cli = Cli::try_parse_from([
            "keyctl",
            "issue",
            "--name",
            "a",
            "--routes",
            "inference,admin",
            "--models",
            "llama3*,qwen",
        ])
        .unwrap();
        let CommandArgs::Issue(a) = cli.command else {
            panic!("not issue")
        };
        assert_eq!(a.policy.routes, ["inference", "admin"]);
        assert_eq!(a.policy.models, ["llama3*", "qwen"]);
    }

    #[test]
    fn tls_key_requires_cert() {
        let err = Cli::try_parse_from([
            "keyctl",
            "config",
            "nginx",
            "--listen",
            ":80",
            "--tls-key",
            "k",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
