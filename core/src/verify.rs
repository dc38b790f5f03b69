//! The decision engine: credential + request + key set + `now` → allow or deny.
//!
//! Split in phases so a proxy can decide on headers alone and buffer a body only when the
//! route names a model: [`extract_credential`], [`authenticate`], [`authorize_route`], and
//! (model-scoped routes only) [`authorize_body`]. [`decide`] runs them all for callers
//! that have everything at once (keyd's `/v1/verify`, tests).
//!
//! Per request: one header scan, one map lookup, one SHA-256 of a short secret (or one
//! signature check, which callers cache). Nothing here grows with the number of keys.

use crate::apikey::{looks_like_api_key, ParsedKey};
use crate::error::{KeyReject, TokenReject};
use crate::model::{self, ModelCheck};
use crate::ollama_sig::{self, SigOptions, SigReject};
use crate::policy::Policy;
use crate::routes::{ModelSource, Route, RouteClass};
use crate::snapshot::{KeyKind, KeyRecord, KeyStatus, KeyStore};
use crate::token::{self, looks_like_token, VerifyOptions};
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use std::borrow::Cow;
use subtle::ConstantTimeEq;

/// A credential as found in the request, before any check.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    /// From `Authorization: Bearer`, `x-api-key`, or Basic auth's password.
    Secret(Cow<'a, str>),
    /// An Ollama `OLLAMA_AUTH` signature (`Authorization: <pub>:<sig>`).
    Signed(&'a str),
    /// Present but in no form keygate accepts.
    Unparseable,
}

impl core::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::None => "Credential::None",
            Self::Secret(_) => "Credential::Secret(<redacted>)",
            Self::Signed(_) => "Credential::Signed(..)",
            Self::Unparseable => "Credential::Unparseable",
        })
    }
}

/// Finds the credential in `Authorization` (Bearer, Basic, or an Ollama signature) or
/// `x-api-key`. `Authorization` wins when both are present.
pub fn extract_credential<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Credential<'a> {
    if let Some(auth) = authorization.map(str::trim).filter(|s| !s.is_empty()) {
        if ollama_sig::looks_like_signed(auth) {
            return Credential::Signed(auth);
        }
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            if ollama_sig::looks_like_signed(rest) {
                // Reported as its own reason by `authenticate`.
                return Credential::Signed(auth);
            }
            return Credential::Secret(Cow::Borrowed(rest));
        }
        if scheme.eq_ignore_ascii_case("basic") && !rest.is_empty() {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return Credential::Unparseable;
            };
            let Ok(text) = String::from_utf8(decoded) else {
                return Credential::Unparseable;
            };
            let (user, pass) = text.split_once(':').unwrap_or((text.as_str(), ""));
            // The key goes in the password; a key typed as the user name is accepted too.
            let secret = if pass.is_empty() { user } else { pass };
            if secret.is_empty() {
                return Credential::Unparseable;
            }
            return Credential::Secret(Cow::Owned(secret.to_owned()));
        }
        return Credential::Unparseable;
    }
    match x_api_key.map(str::trim).filter(|s| !s.is_empty()) {
        Some(k) => Credential::Secret(Cow::Borrowed(k)),
        None => Credential::None,
    }
}

/// Why a request was denied. `status()` is the HTTP status the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    NoCredential,
    Unparseable,
    Key(KeyReject),
    UnknownKey,
    WrongSecret,
    KeyRevoked,
    KeyExpired,
    Token(TokenReject),
    TokenRevoked,
    Signed(SigReject),
    UnregisteredPublicKey,
    UnknownRoute,
    RouteNotGranted(RouteClass),
    ModelNotAllowed,
    CloudModel,
    ModelUnverifiable,
    ModelMissing,
    BadModelName,
    BadBody,
    BodyTooLarge,
    EncodingNotAllowed,
    RateLimited { retry_after_secs: u64 },
    TooManyFailures { retry_after_secs: u64 },
    NoSnapshot,
    StaleSnapshot,
}

impl DenyReason {
    pub fn status(self) -> u16 {
        use DenyReason as D;
        match self {
            D::NoCredential
            | D::Unparseable
            | D::Key(_)
            | D::UnknownKey
            | D::WrongSecret
            | D::KeyRevoked
            | D::KeyExpired
            | D::Token(_)
            | D::TokenRevoked
            | D::Signed(_)
            | D::UnregisteredPublicKey => 401,
            D::UnknownRoute
            | D::RouteNotGranted(_)
            | D::ModelNotAllowed
            | D::CloudModel
            | D::ModelUnverifiable => 403,
            D::ModelMissing | D::BadModelName | D::BadBody => 400,
            D::BodyTooLarge => 413,
            D::EncodingNotAllowed => 415,
            D::RateLimited { .. } | D::TooManyFailures { .. } => 429,
            D::NoSnapshot | D::StaleSnapshot => 503,
        }
    }

    /// Stable reason code for stats, metrics and logs (never contains request bytes).
    pub fn code(self) -> &'static str {
        use DenyReason as D;
        match self {
            D::NoCredential => "no_credential",
            D::Unparseable => "credential_unparseable",
            D::Key(k) => k.code(),
            D::UnknownKey => "key_unknown",
            D::WrongSecret => "key_wrong_secret",
            D::KeyRevoked => "key_revoked",
            D::KeyExpired => "key_expired",
            D::Token(t) => t.code(),
            D::TokenRevoked => "token_revoked",
            D::Signed(s) => s.code(),
            D::UnregisteredPublicKey => "sig_unregistered_key",
            D::UnknownRoute => "route_unknown",
            D::RouteNotGranted(_) => "route_not_granted",
            D::ModelNotAllowed => "model_not_allowed",
            D::CloudModel => "model_cloud",
            D::ModelUnverifiable => "model_unverifiable",
            D::ModelMissing => "model_missing",
            D::BadModelName => "model_invalid",
            D::BadBody => "body_invalid",
            D::BodyTooLarge => "body_too_large",
            D::EncodingNotAllowed => "content_encoding_not_allowed",
            D::RateLimited { .. } => "rate_limited",
            D::TooManyFailures { .. } => "too_many_failures",
            D::NoSnapshot => "no_snapshot",
            D::StaleSnapshot => "snapshot_stale",
        }
    }

    /// A message that tells the client what to do. Never contains request bytes.
    pub fn message(self) -> &'static str {
        use DenyReason as D;
        match self {
            D::NoCredential => "missing API key: send it as 'Authorization: Bearer <key>'",
            D::Unparseable => {
                "unsupported Authorization header: send 'Authorization: Bearer <key>'"
            }
            D::Key(_) | D::UnknownKey | D::WrongSecret => "invalid API key",
            D::KeyRevoked => "this API key has been revoked",
            D::KeyExpired => "this API key has expired",
            D::Token(TokenReject::Expired) => "this token has expired: request a new one",
            D::Token(_) => "invalid token",
            D::TokenRevoked => "this token has been revoked",
            D::Signed(SigReject::Stale) => {
                "signed request is outside the accepted time window: check the client's clock"
            }
            D::Signed(_) => "invalid signed request",
            D::UnregisteredPublicKey => {
                "this public key is not registered: ask the operator to run 'keyctl register'"
            }
            D::UnknownRoute => "this endpoint is not available through the gateway",
            D::RouteNotGranted(RouteClass::Admin) => {
                "this API key may not use admin endpoints (pull, push, create, copy, delete, blobs)"
            }
            D::RouteNotGranted(_) => "this API key may not use this endpoint",
            D::ModelNotAllowed => "this API key may not use this model",
            D::CloudModel => "cloud models are not allowed for this API key",
            D::ModelUnverifiable => {
                "this API key is limited to some models and this request's model cannot be checked"
            }
            D::ModelMissing => "model is required",
            D::BadModelName => "invalid model name",
            D::BadBody => "request body must be a JSON object",
            D::BodyTooLarge => "request body is too large",
            D::EncodingNotAllowed => {
                "compressed request bodies are not accepted on this endpoint: send it uncompressed"
            }
            D::RateLimited { .. } => "rate limit exceeded for this API key: retry later",
            D::TooManyFailures { .. } => "too many failed authentication attempts: retry later",
            D::NoSnapshot => "the gateway has not loaded its keys yet: retry shortly",
            D::StaleSnapshot => "the gateway cannot reach its key service: retry shortly",
        }
    }

    /// True for denials that count toward per-address failure backoff.
    pub fn is_auth_failure(self) -> bool {
        self.status() == 401
    }

    pub fn retry_after(self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } | Self::TooManyFailures { retry_after_secs } => {
                Some(retry_after_secs)
            }
            Self::NoSnapshot | Self::StaleSnapshot => Some(1),
            _ => None,
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    ApiKey,
    Token,
    Signed,
}

/// An authenticated caller: the key it acts as, and that key's current policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub policy: Policy,
    pub via: Via,
    /// For tokens: when the token expires (callers cache verified tokens until then).
    pub token_exp: Option<i64>,
    /// For tokens: the token id (a cached token is re-checked against revocations).
    pub jti: Option<String>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub token_max_lifetime: i64,
    pub token_leeway: i64,
    pub token_issuer: Option<String>,
    pub sig: SigOptions,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            token_max_lifetime: 24 * 3600,
            token_leeway: 30,
            token_issuer: None,
            sig: SigOptions::default(),
        }
    }
}

struct StoreKeys<'s, S: ?Sized>(&'s S);

impl<S: KeyStore + ?Sized> token::SigningKeys for StoreKeys<'_, S> {
    fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.0.signing_key(kid)
    }
}

/// Checks the credential against the key set. `method` and `path` are needed only for
/// Ollama signed requests (the signature covers them).
pub fn authenticate<S: KeyStore + ?Sized>(
    cred: &Credential<'_>,
    method: &str,
    path: &str,
    store: &S,
    now: i64,
    cfg: &EngineConfig,
) -> Result<Principal, DenyReason> {
    match cred {
        Credential::None => Err(DenyReason::NoCredential),
        Credential::Unparseable => Err(DenyReason::Unparseable),
        Credential::Secret(text) => {
            let text: &str = text;
            if looks_like_api_key(text) {
                authenticate_key(text, store, now)
            } else if looks_like_token(text) {
                authenticate_token(text, store, now, cfg)
            } else {
                Err(DenyReason::Key(KeyReject::WrongPrefix))
            }
        }
        Credential::Signed(header) => {
            let v = ollama_sig::verify(header, method, path, now, &cfg.sig)
                .map_err(DenyReason::Signed)?;
            let id = ollama_sig::key_id_for(&v.public_key);
            let rec = store.key(&id).ok_or(DenyReason::UnregisteredPublicKey)?;
            if rec.kind != KeyKind::OllamaKey || !bool::from(rec.digest.ct_eq(&v.public_key)) {
                return Err(DenyReason::UnregisteredPublicKey);
            }
            check_status(&rec, now)?;
            Ok(principal(&rec, Via::Signed, None, None))
        }
    }
}

fn principal(rec: &KeyRecord, via: Via, token_exp: Option<i64>, jti: Option<String>) -> Principal {
    Principal {
        key_id: rec.id.clone(),
        name: rec.name.clone(),
        policy: rec.policy.clone(),
        via,
        token_exp,
        jti,
    }
}

fn check_status(rec: &KeyRecord, now: i64) -> Result<(), DenyReason> {
    if rec.status == KeyStatus::Revoked {
        return Err(DenyReason::KeyRevoked);
    }
    if rec.expires_at.is_some_and(|t| t <= now) {
        return Err(DenyReason::KeyExpired);
    }
    Ok(())
}

fn authenticate_key<S: KeyStore + ?Sized>(
    text: &str,
    store: &S,
    now: i64,
) -> Result<Principal, DenyReason> {
    let parsed = ParsedKey::parse(text).map_err(DenyReason::Key)?;
    let rec = store.key(parsed.id()).ok_or(DenyReason::UnknownKey)?;
    check_api_key(&parsed, &rec, now)?;
    Ok(api_key_principal(&rec))
}

/// Checks a parsed API key against its record: an API-key record, the secret's digest
/// (the current one, or the previous one during a rotation's grace period, both compared
/// in constant time), and the key's status and expiry at `now`.
///
/// Split from [`authenticate`] for callers that keep records and principals between
/// requests (the Envoy filter): the check is the same, only the lookup differs.
pub fn check_api_key(parsed: &ParsedKey<'_>, rec: &KeyRecord, now: i64) -> Result<(), DenyReason> {
    if rec.kind != KeyKind::ApiKey {
        return Err(DenyReason::UnknownKey);
    }
    let digest = parsed.digest().0;
    let current: bool = digest.ct_eq(&rec.digest).into();
    let previous: bool = rec
        .previous
        .as_ref()
        .is_some_and(|p| now < p.valid_until && bool::from(digest.ct_eq(&p.digest)));
    if !(current || previous) {
        return Err(DenyReason::WrongSecret);
    }
    check_status(rec, now)
}

/// The principal an API key's record authenticates as.
pub fn api_key_principal(rec: &KeyRecord) -> Principal {
    principal(rec, Via::ApiKey, None, None)
}

fn authenticate_token<S: KeyStore + ?Sized>(
    text: &str,
    store: &S,
    now: i64,
    cfg: &EngineConfig,
) -> Result<Principal, DenyReason> {
    let opts = VerifyOptions {
        now,
        max_lifetime: cfg.token_max_lifetime,
        leeway: cfg.token_leeway,
        issuer: cfg.token_issuer.as_deref(),
    };
    let claims = token::verify(text, &StoreKeys(store), &opts).map_err(DenyReason::Token)?;
    principal_for_token(&claims.sub, &claims.jti, claims.exp, store, now, cfg)
}

/// Re-checks a token whose signature was verified earlier (a cache hit): expiry, token
/// revocation, and the parent key's status. Cheap: no crypto.
pub fn principal_for_token<S: KeyStore + ?Sized>(
    sub: &str,
    jti: &str,
    exp: i64,
    store: &S,
    now: i64,
    cfg: &EngineConfig,
) -> Result<Principal, DenyReason> {
    if exp.saturating_add(cfg.token_leeway) <= now {
        return Err(DenyReason::Token(TokenReject::Expired));
    }
    if store.token_revoked(jti) {
        return Err(DenyReason::TokenRevoked);
    }
    let rec = store.key(sub).ok_or(DenyReason::TokenRevoked)?;
    if rec.status == KeyStatus::Revoked {
        return Err(DenyReason::TokenRevoked);
    }
    check_status(&rec, now)?;
    Ok(principal(&rec, Via::Token, Some(exp), Some(jti.to_owned())))
}

/// What the proxy does after the header phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOutcome {
    /// Decided: forward.
    Allow,
    /// The body must be read and passed to [`authorize_body`] before forwarding.
    NeedBody,
}

fn check_model(policy: &Policy, name: &str) -> Result<(), DenyReason> {
    match model::check(&policy.models, name) {
        ModelCheck::Allowed => Ok(()),
        ModelCheck::Invalid => Err(DenyReason::BadModelName),
        ModelCheck::NotAllowed => Err(DenyReason::ModelNotAllowed),
        ModelCheck::Cloud => Err(DenyReason::CloudModel),
    }
}

/// Route class and header-visible model checks.
pub fn authorize_route(
    principal: &Principal,
    route: &Route<'_>,
    content_encoding: Option<&str>,
) -> Result<RouteOutcome, DenyReason> {
    if route.class == RouteClass::Unknown {
        return Err(DenyReason::UnknownRoute);
    }
    if !principal.policy.routes.contains(route.class) {
        return Err(DenyReason::RouteNotGranted(route.class));
    }
    match route.model {
        ModelSource::None => Ok(RouteOutcome::Allow),
        ModelSource::Path(m) => check_model(&principal.policy, m).map(|()| RouteOutcome::Allow),
        ModelSource::Multipart => {
            if principal.policy.models.is_empty() {
                Ok(RouteOutcome::Allow)
            } else {
                Err(DenyReason::ModelUnverifiable)
            }
        }
        ModelSource::JsonBody => {
            let identity = content_encoding
                .map(str::trim)
                .is_none_or(|e| e.is_empty() || e.eq_ignore_ascii_case("identity"));
            if identity {
                Ok(RouteOutcome::NeedBody)
            } else {
                Err(DenyReason::EncodingNotAllowed)
            }
        }
    }
}

/// The JSON fields that name a model on some Ollama route. Go's `encoding/json` matches
/// field names case-insensitively, so `{"Model": …}` names the model too: fields are
/// matched the way Go folds them (see [`go_fold_eq`]), and every match is checked.
const MODEL_FIELDS: &[&str] = &["model", "name", "source", "destination", "from"];

/// Field-name equality as Go's `encoding/json` decides it: Unicode simple case folding,
/// not just ASCII. Among the letters of [`MODEL_FIELDS`] only `k` and `s` have non-ASCII
/// fold partners (U+212A KELVIN SIGN, U+017F LATIN SMALL LETTER LONG S), so `"ſource"`
/// sets Ollama's `Source` field and must be checked like `"source"`.
fn go_fold_eq(key: &str, field: &str) -> bool {
    let fold = |c: char| match c {
        '\u{212a}' => 'k',
        '\u{17f}' => 's',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

struct ModelNames(Vec<String>);

impl<'de> serde::Deserialize<'de> for ModelNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ModelNames;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ModelNames, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if MODEL_FIELDS.iter().any(|f| go_fold_eq(&key, f)) {
                        // A non-string here is refused: Ollama would reject it too, and we
                        // must never forward a model we could not read.
                        let v: Cow<'de, str> = map.next_value()?;
                        out.push(v.into_owned());
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ModelNames(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads the model name(s) from a JSON body and checks them. `/api/create`'s `from` and
/// `/api/copy`'s `source`/`destination` are checked like `model`.
pub fn authorize_body(principal: &Principal, body: &[u8]) -> Result<(), DenyReason> {
    let names: ModelNames = serde_json::from_slice(body).map_err(|_| DenyReason::BadBody)?;
    if names.0.is_empty() {
        return Err(DenyReason::ModelMissing);
    }
    for n in &names.0 {
        check_model(&principal.policy, n)?;
    }
    Ok(())
}

/// The path a route is classified on: without the signed-request `ts` parameter and
/// without the mount prefix the gateway is served under ([`SigOptions::mount_prefix`]),
/// so `/ollama/api/chat?ts=…` behind a gateway mounted at `/ollama` is `/api/chat` for
/// every credential type. A path outside the prefix is classified as it is.
pub fn route_path<'a>(path: &'a str, mount_prefix: &str) -> &'a str {
    let p = ollama_sig::strip_ts(path);
    let prefix = mount_prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return p;
    }
    match p.strip_prefix(prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') || rest.starts_with('?') => rest,
        _ => p,
    }
}

/// A request as seen by a proxy, for [`decide`].
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// The body, when the caller has it (needed on model-scoped routes).
    pub body: Option<&'a [u8]>,
}

/// Outcome of [`decide`]: the principal on allow.
pub type Decision = Result<Principal, DenyReason>;

/// All phases at once. Without a body on a model-scoped route the request is denied
/// ([`DenyReason::ModelUnverifiable`]): nothing model-scoped passes unchecked.
pub fn decide<S: KeyStore + ?Sized>(
    req: &RequestView<'_>,
    store: &S,
    now: i64,
    cfg: &EngineConfig,
) -> Decision {
    let cred = extract_credential(req.authorization, req.x_api_key);
    let principal = authenticate(&cred, req.method, req.path, store, now, cfg)?;
    let route = crate::routes::classify(req.method, route_path(req.path, &cfg.sig.mount_prefix));
    match authorize_route(&principal, &route, req.content_encoding)? {
        RouteOutcome::Allow => Ok(principal),
        RouteOutcome::NeedBody => match req.body {
            Some(b) => authorize_body(&principal, b).map(|()| principal),
            None => Err(DenyReason::ModelUnverifiable),
        },
    }
}
