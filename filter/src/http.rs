//! One request through the filter: snapshot readiness, per-address failure backoff,
//! credential, route, rate, then either forward (credential stripped, key id added) or
//! answer with keygate-core's denial.
//!
//! Decided on headers alone except on routes whose policy depends on the model named in
//! the JSON body: only those are buffered, only up to `max_body_bytes` (413 beyond), and
//! only with an identity `Content-Encoding`. Responses are never touched, so NDJSON and
//! SSE streams pass through unbuffered.

use crate::cache::{digest, Verified};
use crate::config::Config;
use crate::host::Host;
use crate::keycache::LocalStore;
use crate::root::Worker;
use crate::shared;
use keygate_core::apikey::{looks_like_api_key, ParsedKey};
use keygate_core::deny;
use keygate_core::ollama_sig;
use keygate_core::ratelimit::{self, FailureBackoff};
use keygate_core::routes::{self, ApiFlavor};
use keygate_core::snapshot::{KeyKind, KeyStatus, KeyStore};
use keygate_core::token::looks_like_token;
use keygate_core::verify::{
    authenticate, authorize_body, authorize_route, check_api_key, extract_credential,
    principal_for_token, route_path, Credential, DenyReason, Principal, RouteOutcome, Via,
};
use keygate_core::TokenReject;
use std::net::IpAddr;
use std::rc::Rc;

/// Request headers the filter sets for the upstream (and removes when a client sends them).
pub const KEY_ID_HEADER: &str = "x-keygate-key-id";
pub const KEY_NAME_HEADER: &str = "x-keygate-key-name";

/// What the proxy should do with the request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward.
    Continue,
    /// Keep buffering the body (model-scoped route, body not complete yet).
    Pause,
    /// The filter answered; stop.
    Responded,
}

/// Per-request state: set when the body must still be checked.
#[derive(Debug, Default)]
pub struct Request {
    pending: Option<Pending>,
    done: bool,
    /// Body bytes buffered so far (model-scoped routes).
    body_size: usize,
    /// The key id header names the authenticated key (kept on a later denial, so the
    /// access log, `%REQ(x-keygate-key-id)%`, attributes refusals of a valid key).
    key_id_set: bool,
}

#[derive(Debug)]
struct Pending {
    principal: Rc<Principal>,
    flavor: ApiFlavor,
}

/// The first value of header `name` (lowercase) in a map read with
/// [`Host::request_headers`], as the proxy's single-header lookup would return it.
fn find<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn text<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    find(headers, name).and_then(|b| core::str::from_utf8(b).ok())
}

/// The client's address as a backoff bucket: the IP without port; IPv6 grouped by /64
/// (one host usually owns a whole /64, so per-address buckets would be free to rotate).
pub fn client_bucket(source_address: &str) -> Option<String> {
    let host = if let Some(rest) = source_address.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h)?
    } else {
        match source_address.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => source_address,
        }
    };
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(v4.to_string()),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!(
                "{:x}:{:x}:{:x}:{:x}::/64",
                s.first()?,
                s.get(1)?,
                s.get(2)?,
                s.get(3)?
            ))
        }
    }
}

fn deny<H: Host + ?Sized>(host: &H, w: &mut Worker, flavor: ApiFlavor, reason: DenyReason) {
    let r = deny::render(flavor, reason);
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    w.stats.denied(host, reason.code());
    host.send_response(r.status, &headers, r.body.as_bytes());
}

/// The signed-request cache entry's principal: re-checks the registration on every hit.
fn principal_for_signed<S: KeyStore + ?Sized>(
    store: &S,
    id: &str,
    public_key: &[u8; 32],
    now: i64,
) -> Result<Principal, DenyReason> {
    let rec = store.key(id).ok_or(DenyReason::UnregisteredPublicKey)?;
    if rec.kind != KeyKind::OllamaKey || rec.digest != *public_key {
        return Err(DenyReason::UnregisteredPublicKey);
    }
    if rec.status == KeyStatus::Revoked {
        return Err(DenyReason::KeyRevoked);
    }
    if rec.expires_at.is_some_and(|t| t <= now) {
        return Err(DenyReason::KeyExpired);
    }
    Ok(Principal {
        key_id: rec.id.clone(),
        name: rec.name.clone(),
        policy: rec.policy.clone(),
        via: Via::Signed,
        token_exp: None,
        jti: None,
    })
}

/// Authenticates, using the verified-credential cache for tokens and signed requests and
/// the worker's key cache for the records they name (so a repeated credential makes no
/// hostcall here, and an API key allocates nothing).
fn authenticate_cached<H: Host + ?Sized>(
    host: &H,
    w: &mut Worker,
    cred: &Credential<'_>,
    method: &str,
    path: &str,
    now: i64,
    cfg: &Config,
) -> Result<Rc<Principal>, DenyReason> {
    match cred {
        Credential::Secret(text) if looks_like_api_key(text) => {
            let parsed = ParsedKey::parse(text).map_err(DenyReason::Key)?;
            let entry = w
                .keys
                .key(host, parsed.id())
                .ok_or(DenyReason::UnknownKey)?;
            check_api_key(&parsed, &entry.record, now)?;
            Ok(Rc::clone(&entry.principal))
        }
        Credential::Secret(text) if looks_like_token(text) => {
            let key = digest(&[b"token", text.as_bytes()]);
            if let Some(Verified::Token { sub, jti, exp }) = w.cache.get(&key, now) {
                w.keys.warm_key(host, sub);
                w.keys.warm_jti(host, jti);
                let store = LocalStore::new(host, &w.keys, &w.view.signing);
                return principal_for_token(sub, jti, *exp, &store, now, &cfg.engine).map(Rc::new);
            }
            let mut r = {
                let store = LocalStore::new(host, &w.keys, &w.view.signing);
                authenticate(cred, method, path, &store, now, &cfg.engine)
            };
            if r == Err(DenyReason::Token(TokenReject::UnknownKid)) && w.view.refresh(host) {
                // A token signing key rotated since this worker last read kg:meta.
                w.keys.sync(w.view.version());
                let store = LocalStore::new(host, &w.keys, &w.view.signing);
                r = authenticate(cred, method, path, &store, now, &cfg.engine);
            }
            if let Ok(p) = &r {
                if let (Some(exp), Some(jti)) = (p.token_exp, p.jti.clone()) {
                    let v = Verified::Token {
                        sub: p.key_id.clone(),
                        jti,
                        exp,
                    };
                    w.cache
                        .insert(key, v, exp.saturating_add(cfg.engine.token_leeway), now);
                }
            }
            r.map(Rc::new)
        }
        Credential::Signed(header) => {
            let key = digest(&[
                b"signed",
                header.as_bytes(),
                method.as_bytes(),
                path.as_bytes(),
            ]);
            if let Some(Verified::Signed { public_key, ts }) = w.cache.get(&key, now).cloned() {
                if (now - ts).abs() > cfg.engine.sig.window_secs {
                    return Err(DenyReason::Signed(ollama_sig::SigReject::Stale));
                }
                let id = ollama_sig::key_id_for(&public_key);
                w.keys.warm_key(host, &id);
                let store = LocalStore::new(host, &w.keys, &w.view.signing);
                return principal_for_signed(&store, &id, &public_key, now).map(Rc::new);
            }
            let v = ollama_sig::verify(header, method, path, now, &cfg.engine.sig)
                .map_err(DenyReason::Signed)?;
            let id = ollama_sig::key_id_for(&v.public_key);
            w.keys.warm_key(host, &id);
            let p = {
                let store = LocalStore::new(host, &w.keys, &w.view.signing);
                principal_for_signed(&store, &id, &v.public_key, now)?
            };
            let until =
                v.ts.saturating_add(cfg.engine.sig.window_secs)
                    .saturating_add(1);
            w.cache.insert(
                key,
                Verified::Signed {
                    public_key: v.public_key,
                    ts: v.ts,
                },
                until,
                now,
            );
            Ok(Rc::new(p))
        }
        _ => {
            let store = LocalStore::new(host, &w.keys, &w.view.signing);
            authenticate(cred, method, path, &store, now, &cfg.engine).map(Rc::new)
        }
    }
}

/// The client's backoff bucket, from Envoy's `source.address` (one hostcall).
fn source_bucket<H: Host + ?Sized>(host: &H) -> Option<String> {
    host.property(&["source", "address"])
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|a| client_bucket(&a))
}

/// Counts one failed guess from `bucket`. When this failure starts a lockout, every worker
/// is told (they check addresses only while a lockout may run). Returns the remaining
/// lockout when the address was already locked out: a worker that had not looked yet
/// answers 429 then, as it would have had it looked first, and the guess is not counted.
fn record_failure<H: Host + ?Sized>(
    host: &H,
    w: &mut Worker,
    fb: &FailureBackoff,
    bucket: &str,
    now_us: u64,
) -> Option<u64> {
    let until = |secs: u64| now_us.saturating_add(secs.saturating_mul(1_000_000));
    let (already, started) = shared::cas_update(host, &shared::failure_entry(bucket), |cur| {
        if let Some(secs) = fb.blocked(cur, now_us) {
            return (None, (Some(secs), None));
        }
        let next = fb.record_failure(cur, now_us);
        let started = fb.blocked(Some(&next), now_us).map(until);
        (Some(next), (None, started))
    });
    if let Some(secs) = already {
        w.lockouts_until_us = w.lockouts_until_us.max(until(secs));
    }
    if let Some(until) = started {
        w.lockouts_until_us = w.lockouts_until_us.max(until);
        shared::publish_lockout(host, until);
        w.notify(host, now_us);
    }
    already
}

impl Request {
    /// The header phase. Everything except the model check happens here.
    pub fn on_headers<H: Host + ?Sized>(
        &mut self,
        host: &H,
        w: &mut Worker,
        end_of_stream: bool,
    ) -> Verdict {
        // One hostcall for every header the decision needs. Identity headers a client
        // sent are never trusted: the allow path replaces them, a denial removes them.
        let headers = host.request_headers();
        let method = text(&headers, ":method").unwrap_or_default();
        let path = text(&headers, ":path").unwrap_or_default();
        let cfg = Rc::clone(&w.cfg);
        let route = routes::classify(method, route_path(path, &cfg.engine.sig.mount_prefix));
        let flavor = route.flavor;
        let now_us = host.now_us();
        let now = i64::try_from(now_us / 1_000_000).unwrap_or(i64::MAX);

        if let Err(reason) = w.readiness(host, now_us) {
            return self.respond(host, w, flavor, reason);
        }

        // Addresses are checked only while some lockout may run (a worker is notified of
        // each one): otherwise the allow path reads no address at all.
        let mut bucket: Option<Option<String>> = None;
        if let Some(fb) = cfg.failure_backoff {
            if now_us < w.lockouts_until_us {
                let b = source_bucket(host);
                if let Some(b) = b.as_deref() {
                    let state = host.shared_get(&shared::failure_entry(b));
                    if let Some(secs) = fb.blocked(state.bytes(), now_us) {
                        let reason = DenyReason::TooManyFailures {
                            retry_after_secs: secs,
                        };
                        return self.respond(host, w, flavor, reason);
                    }
                }
                bucket = Some(b);
            }
        }

        // A header that is not UTF-8 cannot hold any credential keygate issues.
        let authorization = find(&headers, "authorization");
        let x_api_key = find(&headers, "x-api-key");
        let authz_text = authorization.map(core::str::from_utf8);
        let xkey_text = x_api_key.map(core::str::from_utf8);
        let cred = match (authz_text, xkey_text) {
            (Some(Err(_)), _) | (None, Some(Err(_))) => Credential::Unparseable,
            (a, x) => extract_credential(a.and_then(Result::ok), x.and_then(Result::ok)),
        };
        let principal = match authenticate_cached(host, w, &cred, method, path, now, &cfg) {
            Ok(p) => p,
            Err(mut reason) => {
                // A request without any credential guesses nothing: only wrong
                // credentials count toward the address's backoff.
                let guessed = reason.is_auth_failure() && reason != DenyReason::NoCredential;
                if let (Some(fb), true) = (cfg.failure_backoff, guessed) {
                    let b = bucket.unwrap_or_else(|| source_bucket(host));
                    if let Some(b) = b.as_deref() {
                        if let Some(secs) = record_failure(host, w, &fb, b, now_us) {
                            reason = DenyReason::TooManyFailures {
                                retry_after_secs: secs,
                            };
                        }
                    }
                }
                return self.respond(host, w, flavor, reason);
            }
        };
        // The key is known from here: the access log names it even if a later check
        // refuses the request. Setting replaces every value a client sent.
        host.set_request_header(KEY_ID_HEADER, Some(&principal.key_id));
        self.key_id_set = true;
        let is_signed = matches!(cred, Credential::Signed(_));
        drop(cred);

        let content_encoding = text(&headers, "content-encoding");
        let outcome = match authorize_route(&principal, &route, content_encoding) {
            Ok(o) => o,
            Err(reason) => return self.respond(host, w, flavor, reason),
        };

        if let Some(rate) = principal.policy.rate {
            let d = shared::cas_update(host, &shared::rate_entry(&principal.key_id), |cur| {
                let d = ratelimit::step(cur, &rate, now_us);
                (d.allowed.then(|| d.next_state.to_vec()), d)
            });
            if !d.allowed {
                let reason = DenyReason::RateLimited {
                    retry_after_secs: d.retry_after_secs,
                };
                return self.respond(host, w, flavor, reason);
            }
        }

        // From here the request is authenticated: the credential never goes upstream.
        if authorization.is_some() {
            host.set_request_header("authorization", None);
        }
        if x_api_key.is_some() {
            host.set_request_header("x-api-key", None);
        }
        if is_signed {
            host.set_request_header(":path", Some(ollama_sig::strip_ts(path)));
        }
        if principal.name.bytes().all(|b| b >= 0x20 && b != 0x7f) {
            host.set_request_header(KEY_NAME_HEADER, Some(&principal.name));
        } else {
            host.set_request_header(KEY_NAME_HEADER, None);
        }
        if let Some(h) = cfg.upstream_host.as_deref() {
            host.set_request_header(":authority", Some(h));
        }

        match outcome {
            RouteOutcome::Allow => {
                w.stats.allowed();
                self.done = true;
                Verdict::Continue
            }
            RouteOutcome::NeedBody => {
                let too_long = text(&headers, "content-length")
                    .and_then(|l| l.trim().parse::<u64>().ok())
                    .is_some_and(|l| l > cfg.max_body_bytes as u64);
                if too_long {
                    return self.respond(host, w, flavor, DenyReason::BodyTooLarge);
                }
                self.pending = Some(Pending { principal, flavor });
                if end_of_stream {
                    return self.finish_body(host, w, &[]);
                }
                Verdict::Pause
            }
        }
    }

    /// The body phase: only reached on model-scoped routes.
    pub fn on_body<H: Host + ?Sized>(
        &mut self,
        host: &H,
        w: &mut Worker,
        body_size: usize,
        end_of_stream: bool,
    ) -> Verdict {
        if self.done {
            return Verdict::Continue;
        }
        let Some(p) = &self.pending else {
            return Verdict::Continue;
        };
        if body_size > w.cfg.max_body_bytes {
            let flavor = p.flavor;
            return self.respond(host, w, flavor, DenyReason::BodyTooLarge);
        }
        self.body_size = body_size;
        if !end_of_stream {
            return Verdict::Pause;
        }
        let body = host.request_body(body_size).unwrap_or_default();
        self.finish_body(host, w, &body)
    }

    /// Trailers end the request body: decide on what was buffered.
    pub fn on_trailers<H: Host + ?Sized>(&mut self, host: &H, w: &mut Worker) -> Verdict {
        if self.done || self.pending.is_none() {
            return Verdict::Continue;
        }
        let body = host.request_body(self.body_size).unwrap_or_default();
        self.finish_body(host, w, &body)
    }

    fn finish_body<H: Host + ?Sized>(&mut self, host: &H, w: &mut Worker, body: &[u8]) -> Verdict {
        let Some(p) = self.pending.take() else {
            return Verdict::Continue;
        };
        match authorize_body(&p.principal, body) {
            Ok(()) => {
                w.stats.allowed();
                self.done = true;
                Verdict::Continue
            }
            Err(reason) => self.respond(host, w, p.flavor, reason),
        }
    }

    fn respond<H: Host + ?Sized>(
        &mut self,
        host: &H,
        w: &mut Worker,
        flavor: ApiFlavor,
        reason: DenyReason,
    ) -> Verdict {
        self.pending = None;
        self.done = true;
        // Nothing goes upstream, but the access log sees the request headers: a client's
        // own identity headers never survive a denial.
        if !self.key_id_set {
            host.set_request_header(KEY_ID_HEADER, None);
        }
        host.set_request_header(KEY_NAME_HEADER, None);
        deny(host, w, flavor, reason);
        Verdict::Responded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::*;
    use crate::shared::Meta;
    use keygate_core::model::ModelGlob;
    use keygate_core::ratelimit::{Rate, RateSpec};
    use keygate_core::snapshot::KeyRecord;
    use keygate_core::snapshot::{Delta, Payload, RevokedToken};

    fn run(
        host: &MockHost,
        w: &mut Worker,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Verdict, Option<Reply>) {
        host.request(headers, body);
        let mut req = Request::default();
        let eos = body.is_empty();
        let mut v = req.on_headers(host, w, eos);
        if v == Verdict::Pause {
            // Deliver the body in two chunks, as a proxy would.
            let half = body.len() / 2;
            v = req.on_body(host, w, half, false);
            if v == Verdict::Pause {
                v = req.on_body(host, w, body.len(), true);
            }
        }
        (v, host.take_reply())
    }

    fn get(path: &str, auth: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = vec![(":method", "GET".to_owned()), (":path", path.to_owned())];
        if let Some(a) = auth {
            h.push(("authorization", a.to_owned()));
        }
        h
    }

    fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        h.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn setup(keys: Vec<KeyRecord>) -> (MockHost, Worker) {
        let host = MockHost::default();
        let w = worker_with(&host, "", &snapshot(1, keys));
        (host, w)
    }

    /// keyd publishes a change: a delta applied to shared data, then every worker is
    /// notified (as the syncing worker does) and `w`'s note is delivered.
    fn publish(
        host: &MockHost,
        w: &mut Worker,
        upserts: Vec<KeyRecord>,
        revoked: Vec<RevokedToken>,
    ) {
        let meta = Meta::read(host).unwrap();
        let d = Delta {
            base: meta.version,
            version: meta.version + 1,
            issued_at: NOW,
            signing_keys: meta.signing,
            upserts,
            revoked_added: revoked,
            ..Delta::default()
        };
        crate::shared::apply(host, Payload::Delta(d), host.now_us()).unwrap();
        // A tick keeps each worker's heartbeat fresh; tests move the clock by hand.
        crate::shared::heartbeat(host, w.sync.worker(), host.now_us());
        w.notify(host, host.now_us());
        deliver(host, w);
    }

    fn rewrite(host: &MockHost, w: &mut Worker, rec: &KeyRecord) {
        publish(host, w, vec![rec.clone()], vec![]);
    }

    #[test]
    fn valid_key_is_forwarded_without_credential_and_with_its_id() {
        let (key, rec) = api_key(1);
        let (host, mut w) = setup(vec![rec.clone()]);
        let auth = format!("Bearer {}", key.expose_secret());
        let mut h = get("/api/tags", Some(&auth));
        h.push(("x-keygate-key-id", "spoofed".into()));
        h.push(("x-api-key", "also-dropped".into()));
        let (v, reply) = run(&host, &mut w, &refs(&h), b"");
        assert_eq!(v, Verdict::Continue, "{reply:?}");
        assert_eq!(host.header("authorization"), None);
        assert_eq!(host.header("x-api-key"), None);
        assert_eq!(host.header(KEY_ID_HEADER).as_deref(), Some(rec.id.as_str()));
        assert_eq!(host.header(KEY_NAME_HEADER).as_deref(), Some("key 1"));
        assert_eq!(
            host.header(":authority").as_deref(),
            Some("127.0.0.1:11434")
        );
        assert_eq!(
            host.metric(crate::stats::ALLOWED),
            0,
            "counted in the VM..."
        );
        w.stats.flush(&host);
        assert_eq!(
            host.metric(crate::stats::ALLOWED),
            1,
            "...and flushed on the tick"
        );
    }

    #[test]
    fn every_credential_form_is_accepted() {
        use base64::Engine as _;
        let (key, rec) = api_key(2);
        let (host, mut w) = setup(vec![rec]);
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("user:{}", key.expose_secret()));
        for h in [
            vec![("authorization", format!("Bearer {}", key.expose_secret()))],
            vec![("x-api-key", key.expose_secret().to_owned())],
            vec![("authorization", format!("Basic {basic}"))],
        ] {
            let mut all = get("/api/tags", None);
            all.extend(h.iter().cloned());
            let (v, reply) = run(&host, &mut w, &refs(&all), b"");
            assert_eq!(v, Verdict::Continue, "{h:?}: {reply:?}");
            assert_eq!(host.header("authorization"), None);
            assert_eq!(host.header("x-api-key"), None);
        }
    }

    #[test]
    fn bad_credentials_get_401_with_their_reason() {
        let (key, mut rec) = api_key(3);
        let (other, _) = api_key(4);
        let (host, mut w) = setup(vec![rec.clone()]);
        let wrong_secret = {
            // The right id with another key's secret (checksum recomputed by generate).
            let id = keygate_core::apikey::KeyId::parse(&rec.id).unwrap();
            keygate_core::apikey::ApiKey::generate(&id, [0xee; 32])
        };
        let mut bad_sum = key.expose_secret().to_owned();
        bad_sum.pop();
        bad_sum.push(if key.expose_secret().ends_with('a') {
            'b'
        } else {
            'a'
        });
        let cases: Vec<(Option<String>, &str)> = vec![
            (None, "no_credential"),
            (Some("Bearer garbage".into()), "key_wrong_prefix"),
            (
                Some(format!("Bearer {}", wrong_secret.expose_secret())),
                "key_wrong_secret",
            ),
            (Some(format!("Bearer {bad_sum}")), "key_bad_checksum"),
            (
                Some(format!("Bearer {}", other.expose_secret())),
                "key_unknown",
            ),
            (Some("Digest abc".into()), "credential_unparseable"),
        ];
        for (auth, code) in cases {
            let (v, reply) = run(
                &host,
                &mut w,
                &refs(&get("/api/tags", auth.as_deref())),
                b"",
            );
            let reply = reply.unwrap_or_else(|| panic!("{code}: no reply"));
            assert_eq!(v, Verdict::Responded);
            assert_eq!(
                (reply.status, reply.header("x-keygate-deny")),
                (401, Some(code))
            );
            assert!(reply.header("www-authenticate").is_some());
            let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            assert!(body["error"].as_str().is_some(), "{code}: {body}");
        }
        // Not UTF-8: refused, no panic.
        host.request(&[(":method", "GET"), (":path", "/api/tags")], b"");
        host.headers
            .borrow_mut()
            .push(("authorization".into(), vec![0xff, 0xfe]));
        let mut req = Request::default();
        assert_eq!(req.on_headers(&host, &mut w, true), Verdict::Responded);
        assert_eq!(host.take_reply().unwrap().status, 401);

        let auth = format!("Bearer {}", key.expose_secret());
        rec.status = KeyStatus::Revoked;
        rewrite(&host, &mut w, &rec);
        let (_, reply) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"");
        assert_eq!(reply.unwrap().header("x-keygate-deny"), Some("key_revoked"));
        rec.status = KeyStatus::Active;
        rec.expires_at = Some(NOW - 1);
        rewrite(&host, &mut w, &rec);
        let (_, reply) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"");
        assert_eq!(reply.unwrap().header("x-keygate-deny"), Some("key_expired"));
        assert_eq!(host.metric("keygate.denied.key_expired"), 1);
    }

    /// Every hostcall costs microseconds in V8 (bench/hostcalls.py): the allow path of a
    /// known API key makes six (headers, clock, key id, strip the credential, key name,
    /// authority) and touches no shared data: the record is read once per snapshot version,
    /// the address only while a lockout may run, and the counter is flushed on ticks.
    #[test]
    fn the_api_key_allow_path_makes_six_hostcalls() {
        let (key, rec) = api_key(20);
        let (host, mut w) = setup(vec![rec.clone()]);
        let auth = format!("Bearer {}", key.expose_secret());
        let h = get("/api/tags", Some(&auth));
        let once = |w: &mut Worker| {
            host.request(&refs(&h), b"");
            host.properties
                .borrow_mut()
                .insert("source.address".into(), b"10.9.8.7:4242".to_vec());
            let before = host.hostcalls.get();
            let v = Request::default().on_headers(&host, w, true);
            assert_eq!(v, Verdict::Continue);
            host.hostcalls.get() - before
        };
        // The first request reads the key record.
        assert_eq!(once(&mut w), 7);
        let writes = host.shared.borrow().writes;
        for _ in 0..3 {
            assert_eq!(once(&mut w), 6);
        }
        assert_eq!(host.shared.borrow().writes, writes, "no shared-data write");
        // A new snapshot version empties the worker's copy: read once more.
        rewrite(&host, &mut w, &rec);
        assert_eq!(once(&mut w), 7);
        assert_eq!(once(&mut w), 6);
    }

    #[test]
    fn a_revocation_reaches_every_worker_by_note_or_by_tick() {
        let (key, mut rec) = api_key(23);
        let (host, mut w1) = setup(vec![rec.clone()]);
        let host2 = host.sibling();
        let mut w2 = Worker::configure(&host2, Some(config_json("").as_bytes())).unwrap();
        let host3 = host.sibling();
        let mut w3 = Worker::configure(&host3, Some(config_json("").as_bytes())).unwrap();
        let auth = format!("Bearer {}", key.expose_secret());
        let h = get("/api/tags", Some(&auth));
        for (host, w) in [(&host, &mut w1), (&host2, &mut w2), (&host3, &mut w3)] {
            assert_eq!(run(host, w, &refs(&h), b"").0, Verdict::Continue);
        }
        // Worker 1 applies the revocation and notifies; worker 2 gets its note...
        rec.status = KeyStatus::Revoked;
        rewrite(&host, &mut w1, &rec);
        deliver(&host2, &mut w2);
        for (host, w) in [(&host, &mut w1), (&host2, &mut w2)] {
            let (_, r) = run(host, w, &refs(&h), b"");
            assert_eq!(r.unwrap().header("x-keygate-deny"), Some("key_revoked"));
        }
        // ...worker 3's note is lost: its cached copy holds until its next tick.
        assert_eq!(run(&host3, &mut w3, &refs(&h), b"").0, Verdict::Continue);
        w3.on_tick(&host3);
        let (_, r) = run(&host3, &mut w3, &refs(&h), b"");
        assert_eq!(r.unwrap().status, 401, "a tick re-reads shared data");
    }

    #[test]
    fn a_lockout_recorded_by_another_worker_applies_at_once() {
        let (key, rec) = api_key(21);
        let host = MockHost::default();
        let extra = r#","failure_backoff":{"free":0,"max":"60s","window":"600s"}"#;
        let mut w1 = worker_with(&host, extra, &snapshot(1, vec![rec]));
        let host2 = host.sibling();
        let mut w2 = Worker::configure(&host2, Some(config_json(extra).as_bytes())).unwrap();
        let good = get(
            "/api/tags",
            Some(&format!("Bearer {}", key.expose_secret())),
        );
        let bad = get("/api/tags", Some("Bearer kg_nope"));
        let send = |host: &MockHost, w: &mut Worker, h: &[(&'static str, String)]| {
            host.request(&refs(h), b"");
            host.properties
                .borrow_mut()
                .insert("source.address".into(), b"10.0.0.9:1".to_vec());
            Request::default().on_headers(host, w, true);
            host.take_reply().map(|r| r.status)
        };
        // Worker 1 saw the address clean; worker 2 then records a failure.
        assert_eq!(send(&host, &mut w1, &good), None);
        assert_eq!(send(&host2, &mut w2, &bad), Some(401));
        assert_eq!(
            send(&host2, &mut w2, &bad),
            Some(429),
            "blocked at once where recorded"
        );
        // The proxy delivers worker 2's note to worker 1's queue on worker 1's thread.
        deliver(&host, &mut w1);
        assert_eq!(send(&host, &mut w1, &good), Some(429), "on every worker");
    }

    #[test]
    fn spoofed_identity_headers_are_removed_on_denial() {
        let (host, mut w) = setup(vec![]);
        let mut h = get("/api/tags", Some("Bearer kg_nope"));
        h.push((KEY_ID_HEADER, "spoofed".into()));
        h.push((KEY_NAME_HEADER, "spoofed".into()));
        let (v, _) = run(&host, &mut w, &refs(&h), b"");
        assert_eq!(v, Verdict::Responded);
        assert_eq!(host.header(KEY_ID_HEADER), None);
        assert_eq!(host.header(KEY_NAME_HEADER), None);
        // A valid key refused by a later check is named by the key id header (the
        // access log reads it), never by the client's value.
        let (key, rec) = api_key(22);
        let (host, mut w) = setup(vec![rec.clone()]);
        let auth = format!("Bearer {}", key.expose_secret());
        let mut h = get("/api/pull", Some(&auth));
        h.push((KEY_ID_HEADER, "spoofed".into()));
        h.push((KEY_NAME_HEADER, "spoofed".into()));
        let (_, r) = run(&host, &mut w, &refs(&h), b"");
        assert_eq!(r.unwrap().status, 403);
        assert_eq!(host.header(KEY_ID_HEADER).as_deref(), Some(rec.id.as_str()));
        assert_eq!(host.header(KEY_NAME_HEADER), None);
    }

    #[test]
    fn openai_routes_get_openai_shaped_errors() {
        let (host, mut w) = setup(vec![]);
        let (_, reply) = run(&host, &mut w, &refs(&get("/v1/models", None)), b"");
        let body: serde_json::Value = serde_json::from_str(&reply.unwrap().body).unwrap();
        assert_eq!(body["error"]["code"], "no_credential");
        assert_eq!(body["error"]["type"], "authentication_error");
    }

    #[test]
    fn tokens_are_verified_once_then_rechecked_against_revocation() {
        let (_, mut rec) = api_key(5);
        let (host, mut w) = setup(vec![rec.clone()]);
        let t = token_for(&rec, "jti-1", NOW - 10, NOW + 600);
        let auth = format!("Bearer {t}");
        let (v, r) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"");
        assert_eq!(v, Verdict::Continue, "{r:?}");
        assert_eq!(w.cache.len(), 1);
        // A cache hit does not need the signing key any more...
        let keys = std::mem::take(&mut w.view.signing);
        let (v, _) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"");
        assert_eq!(v, Verdict::Continue);
        // ...but sees a revoked token id at once,
        let revoked = RevokedToken {
            jti: "jti-1".into(),
            exp: NOW + 600,
        };
        publish(&host, &mut w, vec![], vec![revoked]);
        let (_, r) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"");
        assert_eq!(r.unwrap().header("x-keygate-deny"), Some("token_revoked"));
        // and a revoked parent key.
        w.view.signing = keys;
        let t2 = token_for(&rec, "jti-2", NOW - 10, NOW + 600);
        let auth2 = format!("Bearer {t2}");
        assert_eq!(
            run(&host, &mut w, &refs(&get("/api/tags", Some(&auth2))), b"").0,
            Verdict::Continue
        );
        rec.status = KeyStatus::Revoked;
        rewrite(&host, &mut w, &rec);
        let (_, r) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth2))), b"");
        assert_eq!(r.unwrap().status, 401);
        // An expired cached token is refused.
        rec.status = KeyStatus::Active;
        rewrite(&host, &mut w, &rec);
        let t3 = token_for(&rec, "jti-3", NOW - 10, NOW + 5);
        let auth3 = format!("Bearer {t3}");
        assert_eq!(
            run(&host, &mut w, &refs(&get("/api/tags", Some(&auth3))), b"").0,
            Verdict::Continue
        );
        host.set_now(NOW + 40);
        let (_, r) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth3))), b"");
        assert_eq!(r.unwrap().header("x-keygate-deny"), Some("token_expired"));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let (_, rec) = api_key(6);
        let (host, mut w) = setup(vec![rec.clone()]);
        let good = token_for(&rec, "j", NOW - 10, NOW + 600);
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let none_header = keygate_core::codec::b64url_encode(br#"{"alg":"none","kid":"t1"}"#);
        let alg_none = format!("{none_header}.{}.", parts[1]);
        parts[1] = keygate_core::codec::b64url_encode(
            format!(
                r#"{{"iss":"keyd","sub":"{}","iat":{},"exp":{},"jti":"x"}}"#,
                rec.id,
                NOW,
                NOW + 9000
            )
            .as_bytes(),
        );
        let tampered = parts.join(".");
        let expired = token_for(&rec, "j2", NOW - 700, NOW - 600);
        let unknown = TokenSigner::from_seed("t1", [1; 32]).mint(&keygate_core::token::Claims {
            iss: "keyd".into(),
            sub: rec.id.clone(),
            iat: NOW,
            exp: NOW + 60,
            nbf: None,
            jti: "j3".into(),
            scope: vec![],
            models: vec![],
        });
        for (t, code) in [
            (alg_none, "token_alg_not_allowed"),
            (tampered, "token_bad_signature"),
            (expired, "token_expired"),
            (unknown, "token_bad_signature"),
        ] {
            let auth = format!("Bearer {t}");
            let (_, r) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"");
            let r = r.unwrap();
            assert_eq!((r.status, r.header("x-keygate-deny")), (401, Some(code)));
        }
        assert!(w.cache.is_empty(), "nothing unverified is cached");
    }

    use keygate_core::token::TokenSigner;

    #[test]
    fn ollama_signed_requests_are_accepted_and_ts_is_stripped() {
        let (sk, mut rec) = ollama_key(7);
        let (host, mut w) = setup(vec![rec.clone()]);
        let auth = ollama_sign(&sk, "GET", "/api/tags", NOW - 5);
        let path = format!("/api/tags?ts={}", NOW - 5);
        let (v, r) = run(&host, &mut w, &refs(&get(&path, Some(&auth))), b"");
        assert_eq!(v, Verdict::Continue, "{r:?}");
        assert_eq!(host.header(":path").as_deref(), Some("/api/tags"));
        assert_eq!(host.header("authorization"), None);
        assert_eq!(host.header(KEY_ID_HEADER).as_deref(), Some(rec.id.as_str()));
        // Cached, but revocation still applies.
        rec.status = KeyStatus::Revoked;
        rewrite(&host, &mut w, &rec);
        let (_, r) = run(&host, &mut w, &refs(&get(&path, Some(&auth))), b"");
        assert_eq!(r.unwrap().status, 401);
        // Stale ts, and an unregistered key.
        rec.status = KeyStatus::Active;
        rewrite(&host, &mut w, &rec);
        let old = ollama_sign(&sk, "GET", "/api/tags", NOW - 1000);
        let (_, r) = run(
            &host,
            &mut w,
            &refs(&get(&format!("/api/tags?ts={}", NOW - 1000), Some(&old))),
            b"",
        );
        assert_eq!(r.unwrap().header("x-keygate-deny"), Some("sig_stale"));
        let (sk2, _) = ollama_key(8);
        let other = ollama_sign(&sk2, "GET", "/api/tags", NOW);
        let (_, r) = run(
            &host,
            &mut w,
            &refs(&get(&format!("/api/tags?ts={NOW}"), Some(&other))),
            b"",
        );
        assert_eq!(
            r.unwrap().header("x-keygate-deny"),
            Some("sig_unregistered_key")
        );
        // A cached signature goes stale when the window passes.
        host.set_now(NOW + 400);
        let (_, r) = run(&host, &mut w, &refs(&get(&path, Some(&auth))), b"");
        assert_eq!(r.unwrap().header("x-keygate-deny"), Some("sig_stale"));
    }

    fn post(path: &str, auth: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (":method", "POST".to_owned()),
            (":path", path.to_owned()),
            ("authorization", auth.to_owned()),
        ];
        h.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        h
    }

    #[test]
    fn model_scoped_routes_check_the_body() {
        let (key, mut rec) = api_key(9);
        rec.policy.models = vec![ModelGlob::try_new("llama3*").unwrap()];
        let (host, mut w) = setup(vec![rec]);
        let auth = format!("Bearer {}", key.expose_secret());
        let ok = br#"{"model":"llama3.2","messages":[]}"#;
        let (v, r) = run(&host, &mut w, &refs(&post("/api/chat", &auth, &[])), ok);
        assert_eq!(v, Verdict::Continue, "{r:?}");
        for (path, body, code) in [
            (
                "/api/chat",
                &br#"{"model":"qwen3"}"#[..],
                "model_not_allowed",
            ),
            (
                "/api/generate",
                br#"{"model":"QWEN3:8b"}"#,
                "model_not_allowed",
            ),
            (
                "/v1/chat/completions",
                br#"{"model":"mistral"}"#,
                "model_not_allowed",
            ),
            ("/api/chat", br#"{"model":"llama3.2:cloud"}"#, "model_cloud"),
            ("/api/chat", br#"{"messages":[]}"#, "model_missing"),
            ("/api/chat", b"not json", "body_invalid"),
        ] {
            let (v, r) = run(&host, &mut w, &refs(&post(path, &auth, &[])), body);
            assert_eq!(v, Verdict::Responded, "{path} {code}");
            assert_eq!(r.unwrap().header("x-keygate-deny"), Some(code), "{path}");
        }
        let (_, r) = run(
            &host,
            &mut w,
            &refs(&post("/api/chat", &auth, &[("content-encoding", "zstd")])),
            ok,
        );
        assert_eq!(r.unwrap().status, 415);
        let (_, r) = run(
            &host,
            &mut w,
            &refs(&post(
                "/api/chat",
                &auth,
                &[("content-length", "99999999999")],
            )),
            ok,
        );
        assert_eq!(r.unwrap().status, 413);
        // A body growing past the bound while streaming in.
        let big = vec![b' '; crate::config::DEFAULT_MAX_BODY_BYTES + 10];
        let (_, r) = run(&host, &mut w, &refs(&post("/api/chat", &auth, &[])), &big);
        assert_eq!(r.unwrap().status, 413);
        // A body ended by trailers is checked too.
        host.request(
            &refs(&post("/api/chat", &auth, &[])),
            br#"{"model":"qwen3"}"#,
        );
        let mut req = Request::default();
        assert_eq!(req.on_headers(&host, &mut w, false), Verdict::Pause);
        assert_eq!(req.on_body(&host, &mut w, 17, false), Verdict::Pause);
        assert_eq!(req.on_trailers(&host, &mut w), Verdict::Responded);
        assert_eq!(host.take_reply().unwrap().status, 403);
        // Admin routes are not granted by default.
        let (_, r) = run(
            &host,
            &mut w,
            &refs(&post("/api/pull", &auth, &[])),
            br#"{"model":"llama3"}"#,
        );
        assert_eq!(r.unwrap().status, 403);
    }

    #[test]
    fn rate_limit_is_shared_by_the_workers_of_one_envoy() {
        let (key, mut rec) = api_key(10);
        rec.policy.rate = Some(Rate::new(RateSpec::parse("5/s").unwrap(), None));
        let (host, mut w1) = setup(vec![rec]);
        let host2 = host.sibling();
        let mut w2 = Worker::configure(&host2, Some(config_json("").as_bytes())).unwrap();
        let auth = format!("Bearer {}", key.expose_secret());
        let h = get("/api/tags", Some(&auth));
        let mut allowed = 0;
        let mut retry = None;
        for i in 0..10 {
            let (host, w) = if i % 2 == 0 {
                (&host, &mut w1)
            } else {
                (&host2, &mut w2)
            };
            match run(host, w, &refs(&h), b"") {
                (Verdict::Continue, _) => allowed += 1,
                (_, Some(r)) => {
                    assert_eq!(r.status, 429);
                    retry = r.header("retry-after").map(str::to_owned);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(allowed, 5);
        assert_eq!(retry.as_deref(), Some("1"));
    }

    #[test]
    fn repeated_failures_from_one_address_are_locked_out() {
        let (key, rec) = api_key(11);
        let host = MockHost::default();
        let mut w = worker_with(
            &host,
            r#","failure_backoff":{"free":3,"max":"60s","window":"600s"}"#,
            &snapshot(1, vec![rec]),
        );
        let set_addr = |a: &str| {
            host.properties
                .borrow_mut()
                .insert("source.address".into(), a.as_bytes().to_vec());
        };
        let bad = get("/api/tags", Some("Bearer kg_nope"));
        for _ in 0..4 {
            host.request(&refs(&bad), b"");
            set_addr("10.0.0.1:5555");
            Request::default().on_headers(&host, &mut w, true);
            assert_eq!(host.take_reply().unwrap().status, 401);
        }
        // Requests without any credential guess nothing and are not counted.
        let anon = get("/api/tags", None);
        for _ in 0..20 {
            host.request(&refs(&anon), b"");
            set_addr("10.0.0.3:1");
            Request::default().on_headers(&host, &mut w, true);
            assert_eq!(host.take_reply().unwrap().status, 401);
        }
        let good = get(
            "/api/tags",
            Some(&format!("Bearer {}", key.expose_secret())),
        );
        host.request(&refs(&good), b"");
        set_addr("10.0.0.3:2");
        assert_eq!(
            Request::default().on_headers(&host, &mut w, true),
            Verdict::Continue
        );
        // Locked out now: even a valid key from that address waits.
        let good = get(
            "/api/tags",
            Some(&format!("Bearer {}", key.expose_secret())),
        );
        host.request(&refs(&good), b"");
        set_addr("10.0.0.1:6666");
        Request::default().on_headers(&host, &mut w, true);
        let r = host.take_reply().unwrap();
        assert_eq!(
            (r.status, r.header("x-keygate-deny")),
            (429, Some("too_many_failures"))
        );
        // Another address is not affected.
        host.request(&refs(&good), b"");
        set_addr("10.0.0.2:1");
        assert_eq!(
            Request::default().on_headers(&host, &mut w, true),
            Verdict::Continue
        );
    }

    #[test]
    fn no_snapshot_and_stale_snapshot_answer_503() {
        let host = MockHost::default();
        host.set_now(NOW);
        let mut w = Worker::configure(&host, Some(config_json("").as_bytes())).unwrap();
        let (_, r) = run(&host, &mut w, &refs(&get("/api/tags", None)), b"");
        let r = r.unwrap();
        assert_eq!(
            (r.status, r.header("x-keygate-deny")),
            (503, Some("no_snapshot"))
        );
        assert_eq!(r.header("retry-after"), Some("1"));

        let (key, rec) = api_key(12);
        let host = MockHost::default();
        let mut w = worker_with(&host, r#","max_staleness":"60s""#, &snapshot(1, vec![rec]));
        let auth = format!("Bearer {}", key.expose_secret());
        host.set_now(NOW + 59);
        assert_eq!(
            run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"").0,
            Verdict::Continue
        );
        host.set_now(NOW + 61);
        let (_, r) = run(&host, &mut w, &refs(&get("/api/tags", Some(&auth))), b"");
        assert_eq!(r.unwrap().header("x-keygate-deny"), Some("snapshot_stale"));
    }

    #[test]
    fn client_buckets() {
        assert_eq!(client_bucket("10.1.2.3:443").as_deref(), Some("10.1.2.3"));
        assert_eq!(
            client_bucket("[2001:db8:1:2:3:4:5:6]:443").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            client_bucket("2001:db8::1").as_deref(),
            Some("2001:db8:0:0::/64")
        );
        assert_eq!(client_bucket("garbage"), None);
    }
}
