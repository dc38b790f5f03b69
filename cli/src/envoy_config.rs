//! Envoy configuration for the keygate filter: `keyctl config envoy` prints what
//! [`render`] returns, a complete bootstrap that runs as is with `envoy -c`.
//!
//! What it holds, and why:
//! - one listener (TLS 1.3 only when a certificate is given; client certificates required
//!   when a client CA is given), with an Envoy local rate limit as a global ceiling in
//!   front of the filter, so a flood is shed before any key is looked at;
//! - the keygate wasm filter (V8), configured with the pinned snapshot public key(s), the
//!   filter credential and the name of the keyd cluster it long-polls;
//! - the keyd cluster (every `--keyd` URL, health-checked on `/healthz`) and the upstream
//!   cluster; requests reach Ollama with the upstream's own `Host` (Ollama bound to
//!   loopback rejects others) and with `x-keygate-key-id`;
//! - a JSON access log on stdout naming the key id and the deny reason, never a secret;
//! - the admin interface only when asked for (it can change Envoy's state).
//!
//! Values are emitted as YAML double-quoted scalars with JSON escaping (valid in both), so
//! no path or credential can break out of its field.

/// Everything `keyctl config envoy` knows when it renders a config.
#[derive(Clone)]
pub struct EnvoyOpts {
    pub listen: String,
    pub upstream: String,
    pub keyd: Vec<String>,
    pub wasm: String,
    pub admin: Option<String>,
    pub snapshot_public_keys: Vec<String>,
    pub filter_credential: String,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub client_ca: Option<String>,
}

impl std::fmt::Debug for EnvoyOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyOpts")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("keyd", &self.keyd)
            .field("wasm", &self.wasm)
            .field("admin", &self.admin)
            .field("snapshot_public_keys", &self.snapshot_public_keys)
            .field("filter_credential", &"<redacted>")
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("client_ca", &self.client_ca)
            .finish()
    }
}

/// Global ceiling (requests per second for the whole listener) enforced by Envoy's local
/// rate limit before the filter runs; per-key rates are the filter's job.
pub const CEILING_PER_SEC: u32 = 1000;
/// Largest request body the filter reads on model-scoped routes (larger: 413).
pub const MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Envoy's per-connection buffer must hold a whole model-scoped body plus headroom,
/// or Envoy would answer 413 itself before the filter sees the body.
pub const CONNECTION_BUFFER_BYTES: u64 = MAX_BODY_BYTES + 1024 * 1024;

/// A parsed `http(s)://host:port` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
}

impl Url {
    /// `host:port` as the upstream expects it in `Host` (default ports omitted).
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (false, 80) | (true, 443) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

fn parse_host_port(s: &str, what: &str) -> Result<(String, Option<u16>), String> {
    let bad = || format!("{what}: '{s}' is not HOST:PORT (e.g. 127.0.0.1:11434 or [::1]:11434)");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(bad()),
            None => (s, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !valid_host {
        return Err(bad());
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| bad())?),
    };
    Ok((host.to_owned(), port))
}

fn parse_url(s: &str, what: &str) -> Result<Url, String> {
    let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!(
            "{what}: '{s}' must start with http:// or https:// (e.g. http://127.0.0.1:11434)"
        ));
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('/') || hostport.contains('?') || hostport.contains('@') {
        return Err(format!(
            "{what}: '{s}' must be scheme://host[:port] without a path, query or user"
        ));
    }
    let (host, port) = parse_host_port(hostport, what)?;
    Ok(Url {
        tls,
        host,
        port: port.unwrap_or(if tls { 443 } else { 80 }),
    })
}

fn parse_listen(s: &str, what: &str) -> Result<(String, u16), String> {
    match parse_host_port(s, what)? {
        (h, Some(p)) => Ok((h, p)),
        (_, None) => Err(format!("{what}: '{s}' needs a port (e.g. 0.0.0.0:8080)")),
    }
}

/// A YAML double-quoted scalar (JSON string escaping is valid YAML).
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cluster_yaml(name: &str, urls: &[Url], health: bool) -> String {
    let mut s = String::new();
    s.push_str(&format!("  - name: {name}\n"));
    s.push_str("    type: STRICT_DNS\n");
    s.push_str("    connect_timeout: 2s\n");
    s.push_str("    dns_lookup_family: V4_PREFERRED\n");
    s.push_str("    load_assignment:\n");
    s.push_str(&format!("      cluster_name: {name}\n"));
    s.push_str("      endpoints:\n");
    s.push_str("      - lb_endpoints:\n");
    for u in urls {
        s.push_str("        - endpoint:\n");
        s.push_str("            address:\n");
        s.push_str(&format!(
            "              socket_address: {{ address: {}, port_value: {} }}\n",
            q(&u.host),
            u.port
        ));
    }
    if health {
        s.push_str("    health_checks:\n");
        s.push_str("    - timeout: 1s\n");
        s.push_str("      interval: 2s\n");
        // Envoy checks a host that has carried no traffic yet only every
        // `no_traffic_interval` (60 s by default), which is every keyd when Envoy starts:
        // without this a keyd dying in Envoy's first minutes stayed in the cluster that long.
        s.push_str("      no_traffic_interval: 2s\n");
        s.push_str("      unhealthy_threshold: 2\n");
        s.push_str("      healthy_threshold: 1\n");
        s.push_str("      http_health_check: { path: /healthz }\n");
    }
    if let Some(tls) = urls.first().filter(|u| u.tls) {
        s.push_str("    transport_socket:\n");
        s.push_str("      name: envoy.transport_sockets.tls\n");
        s.push_str("      typed_config:\n");
        s.push_str("        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n");
        s.push_str(&format!("        sni: {}\n", q(&tls.host)));
        s.push_str("        common_tls_context:\n");
        s.push_str("          validation_context:\n");
        s.push_str("            trusted_ca: { filename: /etc/ssl/certs/ca-certificates.crt }\n");
    }
    s
}

/// The filter's plugin configuration (JSON, see `filter/src/config.rs`).
fn plugin_json(opts: &EnvoyOpts, keyd_authority: &str, upstream_host: &str) -> String {
    let keys: Vec<String> = opts.snapshot_public_keys.iter().map(|k| q(k)).collect();
    format!(
        "{{\"snapshot_public_keys\": [{}], \"filter_credential\": {}, \"keyd_cluster\": \"keyd\", \"keyd_authority\": {}, \"upstream_host\": {}, \"max_body_bytes\": {MAX_BODY_BYTES}, \"max_staleness\": \"15m\", \"poll_wait\": \"30s\", \"sync_backoff_max\": \"5s\"}}",
        keys.join(", "),
        q(&opts.filter_credential),
        q(keyd_authority),
        q(upstream_host),
    )
}

/// Renders a complete Envoy bootstrap YAML for `opts`. Errors name the option and say what
/// a valid value looks like.
pub fn render(opts: &EnvoyOpts) -> Result<String, String> {
    let (listen_host, listen_port) = parse_listen(&opts.listen, "--listen")?;
    let upstream = parse_url(&opts.upstream, "--upstream")?;
    if opts.keyd.is_empty() {
        return Err(
            "--keyd: at least one keyd URL is required (e.g. http://127.0.0.1:7433)".into(),
        );
    }
    let keyd = opts
        .keyd
        .iter()
        .map(|u| parse_url(u, "--keyd"))
        .collect::<Result<Vec<_>, _>>()?;
    if keyd
        .iter()
        .any(|u| u.tls != keyd.first().is_some_and(|f| f.tls))
    {
        return Err("--keyd: all keyd URLs must use the same scheme".into());
    }
    if opts.wasm.trim().is_empty() {
        return Err("--wasm: path to keygate_filter.wasm is required".into());
    }
    if opts.snapshot_public_keys.is_empty() {
        return Err(
            "no snapshot public key to pin: keyd's /v1/filter-credentials answer lists them".into(),
        );
    }
    for k in &opts.snapshot_public_keys {
        let ok = k.len() == 43
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "snapshot public key '{k}' is not 32 bytes of unpadded base64url"
            ));
        }
    }
    if opts.filter_credential.is_empty()
        || !opts.filter_credential.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err("the filter credential is empty or has spaces: create one with keyd's POST /v1/filter-credentials".into());
    }
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together: give both or neither".into()),
    };
    if opts.client_ca.is_some() && tls.is_none() {
        return Err(
            "--client-ca needs --tls-cert and --tls-key (client certificates need TLS)".into(),
        );
    }
    let admin = match &opts.admin {
        Some(a) => Some(parse_listen(a, "--admin")?),
        None => None,
    };
    let keyd_authority = keyd.first().map(Url::authority).unwrap_or_default();
    let plugin = plugin_json(opts, &keyd_authority, &upstream.authority());

    let mut y = String::new();
    y.push_str(
        "# keygate: Envoy in front of Ollama, every request checked by the keygate filter.\n",
    );
    y.push_str("# Generated by `keyctl config envoy`; regenerate rather than edit. Run: envoy -c THIS_FILE\n");
    y.push_str("# Holds the filter credential: keep this file readable only by Envoy's user.\n");
    if let Some((h, p)) = &admin {
        y.push_str("admin:\n");
        y.push_str("  address:\n");
        y.push_str(&format!(
            "    socket_address: {{ address: {}, port_value: {p} }}\n",
            q(h)
        ));
    }
    // Envoy's async HTTP client (the filter's snapshot fetch) drops response bodies over
    // 32 MiB by default; a full snapshot of 1M keys is ~78 MB.
    y.push_str("layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      http.async_response_buffer_limit: 268435456\n");
    y.push_str("static_resources:\n");
    y.push_str("  listeners:\n");
    y.push_str("  - name: keygate\n");
    y.push_str("    address:\n");
    y.push_str(&format!(
        "      socket_address: {{ address: {}, port_value: {listen_port} }}\n",
        q(&listen_host)
    ));
    y.push_str(&format!(
        "    per_connection_buffer_limit_bytes: {CONNECTION_BUFFER_BYTES}\n"
    ));
    y.push_str("    filter_chains:\n");
    y.push_str("    - filters:\n");
    y.push_str("      - name: envoy.filters.network.http_connection_manager\n");
    y.push_str("        typed_config:\n");
    y.push_str("          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n");
    y.push_str("          stat_prefix: keygate\n");
    y.push_str("          codec_type: AUTO\n");
    y.push_str("          use_remote_address: true\n");
    y.push_str("          access_log:\n");
    y.push_str("          - name: envoy.access_loggers.stdout\n");
    y.push_str("            typed_config:\n");
    y.push_str("              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\n");
    y.push_str("              log_format:\n");
    y.push_str("                json_format:\n");
    y.push_str("                  time: \"%START_TIME%\"\n");
    y.push_str("                  client: \"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\"\n");
    y.push_str("                  method: \"%REQ(:METHOD)%\"\n");
    y.push_str("                  path: \"%REQ(:PATH)%\"\n");
    y.push_str("                  status: \"%RESPONSE_CODE%\"\n");
    // Set by the filter as soon as the key is known, so refusals of a valid key
    // (403, 413, 429) are attributed too; never the secret.
    y.push_str("                  key_id: \"%REQ(X-KEYGATE-KEY-ID)%\"\n");
    y.push_str("                  deny: \"%RESP(X-KEYGATE-DENY)%\"\n");
    y.push_str("                  duration_ms: \"%DURATION%\"\n");
    y.push_str("                  bytes_received: \"%BYTES_RECEIVED%\"\n");
    y.push_str("                  bytes_sent: \"%BYTES_SENT%\"\n");
    y.push_str("                  flags: \"%RESPONSE_FLAGS%\"\n");
    y.push_str("          http_filters:\n");
    y.push_str("          - name: envoy.filters.http.local_ratelimit\n");
    y.push_str("            typed_config:\n");
    y.push_str("              \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n");
    y.push_str("              stat_prefix: keygate_ceiling\n");
    y.push_str("              token_bucket:\n");
    y.push_str(&format!(
        "                max_tokens: {}\n",
        CEILING_PER_SEC * 2
    ));
    y.push_str(&format!(
        "                tokens_per_fill: {CEILING_PER_SEC}\n"
    ));
    y.push_str("                fill_interval: 1s\n");
    y.push_str("              filter_enabled:\n");
    y.push_str("                runtime_key: keygate_ceiling_enabled\n");
    y.push_str("                default_value: { numerator: 100, denominator: HUNDRED }\n");
    y.push_str("              filter_enforced:\n");
    y.push_str("                runtime_key: keygate_ceiling_enforced\n");
    y.push_str("                default_value: { numerator: 100, denominator: HUNDRED }\n");
    y.push_str("          - name: envoy.filters.http.wasm\n");
    y.push_str("            typed_config:\n");
    y.push_str(
        "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n",
    );
    y.push_str("              config:\n");
    y.push_str("                name: keygate\n");
    y.push_str("                root_id: keygate\n");
    y.push_str("                fail_open: false\n");
    y.push_str(
        "                # Let the filter hold the headers while it reads a model-scoped body\n",
    );
    y.push_str("                # (otherwise a paused request never gets its body callbacks).\n");
    y.push_str("                allow_on_headers_stop_iteration: true\n");
    y.push_str("                vm_config:\n");
    y.push_str("                  vm_id: keygate\n");
    y.push_str("                  runtime: envoy.wasm.runtime.v8\n");
    y.push_str("                  code:\n");
    y.push_str(&format!(
        "                    local: {{ filename: {} }}\n",
        q(&opts.wasm)
    ));
    y.push_str("                configuration:\n");
    y.push_str("                  \"@type\": type.googleapis.com/google.protobuf.StringValue\n");
    y.push_str(&format!("                  value: {}\n", q(&plugin)));
    y.push_str("          - name: envoy.filters.http.router\n");
    y.push_str("            typed_config:\n");
    y.push_str("              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n");
    y.push_str("          route_config:\n");
    y.push_str("            name: ollama\n");
    y.push_str("            virtual_hosts:\n");
    y.push_str("            - name: ollama\n");
    y.push_str("              domains: [\"*\"]\n");
    y.push_str("              routes:\n");
    y.push_str("              - match: { prefix: \"/\" }\n");
    y.push_str("                route:\n");
    y.push_str("                  cluster: ollama\n");
    y.push_str("                  # Generation streams can run for minutes: no overall timeout,\n");
    y.push_str("                  # only the idle timeout between chunks.\n");
    y.push_str("                  timeout: 0s\n");
    y.push_str("                  idle_timeout: 300s\n");
    y.push_str(&format!(
        "                  host_rewrite_literal: {}\n",
        q(&upstream.authority())
    ));
    if let Some((cert, key)) = tls {
        y.push_str("      transport_socket:\n");
        y.push_str("        name: envoy.transport_sockets.tls\n");
        y.push_str("        typed_config:\n");
        y.push_str("          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n");
        if opts.client_ca.is_some() {
            y.push_str("          require_client_certificate: true\n");
        }
        y.push_str("          common_tls_context:\n");
        y.push_str("            tls_params:\n");
        y.push_str("              tls_minimum_protocol_version: TLSv1_3\n");
        y.push_str("              tls_maximum_protocol_version: TLSv1_3\n");
        y.push_str("            alpn_protocols: [\"h2\", \"http/1.1\"]\n");
        y.push_str("            tls_certificates:\n");
        y.push_str(&format!(
            "            - certificate_chain: {{ filename: {} }}\n",
            q(cert)
        ));
        y.push_str(&format!(
            "              private_key: {{ filename: {} }}\n",
            q(key)
        ));
        if let Some(ca) = &opts.client_ca {
            y.push_str("            validation_context:\n");
            y.push_str(&format!(
                "              trusted_ca: {{ filename: {} }}\n",
                q(ca)
            ));
        }
    }
    y.push_str("  clusters:\n");
    y.push_str(&cluster_yaml("keyd", &keyd, true));
    y.push_str(&cluster_yaml(
        "ollama",
        std::slice::from_ref(&upstream),
        false,
    ));
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> EnvoyOpts {
        EnvoyOpts {
            listen: "0.0.0.0:8080".into(),
            upstream: "http://127.0.0.1:11434".into(),
            keyd: vec!["http://127.0.0.1:7433".into()],
            wasm: "/opt/keygate/keygate_filter.wasm".into(),
            admin: None,
            snapshot_public_keys: vec!["A".repeat(43)],
            filter_credential: "kgf_secret".into(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
        }
    }

    #[test]
    fn renders_and_validates_options() {
        let y = render(&opts()).unwrap();
        assert!(y.contains("host_rewrite_literal: \"127.0.0.1:11434\""));
        assert!(!y.contains("admin:"));
        assert!(!format!("{:?}", opts()).contains("kgf_secret"));
        let mut o = opts();
        o.admin = Some("127.0.0.1:9901".into());
        assert!(render(&o).unwrap().contains("port_value: 9901"));
        o.upstream = "127.0.0.1:11434".into();
        assert!(render(&o).unwrap_err().contains("--upstream"));
        let mut o = opts();
        o.tls_cert = Some("c.pem".into());
        assert!(render(&o).unwrap_err().contains("--tls-key"));
        let mut o = opts();
        o.filter_credential = "a\"b".into();
        let y = render(&o);
        assert!(y.is_ok());
        let mut o = opts();
        o.wasm = "/x\"\n: evil".into();
        assert!(render(&o).unwrap().contains("\\\"\\n: evil"));
    }
}
