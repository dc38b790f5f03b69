//! Ollama's HTTP surface, classified. Every route belongs to a class; anything not in the
//! table is [`RouteClass::Unknown`] and denied, so a new Ollama endpoint is closed until
//! someone classifies it here.
//!
//! Paths are matched exactly, after the query string is cut. Paths with `..`, `//`, `\`,
//! `%` or `;` are `Unknown`: a proxy and Ollama could disagree on what they mean.

/// A route class, granted per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Running models: generate, chat, embeddings, the OpenAI and Anthropic compatible APIs.
    Inference,
    /// Listing and describing models, version, health.
    Read,
    /// Changing what is on the server: pull, push, create, copy, delete, blobs, and the
    /// server's own ollama.com account. Off unless granted: Ollama's CVE history lives here.
    Admin,
    Unknown,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inference => "inference",
            Self::Read => "read",
            Self::Admin => "admin",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inference" => Some(Self::Inference),
            "read" => Some(Self::Read),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Which error body a client on this route parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFlavor {
    /// `{"error": "…"}`
    Ollama,
    /// `{"error": {"message", "type", "code"}}`
    OpenAi,
}

/// Where a route names its model, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource<'a> {
    /// No model is named: decided on headers alone.
    None,
    /// The JSON body's `model` / `name` (and `source` / `destination` for copy).
    JsonBody,
    /// A multipart form (audio transcription): the model cannot be read cheaply, so keys
    /// with a model allowlist are refused here.
    Multipart,
    /// The model is the path's last segments (`/v1/models/{model}`).
    Path(&'a str),
}

/// A classified request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub class: RouteClass,
    pub model: ModelSource<'a>,
    pub flavor: ApiFlavor,
}

impl Route<'_> {
    /// True when the decision needs the request body.
    pub fn needs_body(&self) -> bool {
        matches!(self.model, ModelSource::JsonBody)
    }
}

/// Classifies `method` + `path` (the HTTP `:path`, query string allowed).
pub fn classify<'a>(method: &str, path: &'a str) -> Route<'a> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let flavor = if path.starts_with("/v1/") || path == "/v1" {
        ApiFlavor::OpenAi
    } else {
        ApiFlavor::Ollama
    };
    let unknown = Route {
        class: RouteClass::Unknown,
        model: ModelSource::None,
        flavor,
    };
    if !path.starts_with('/')
        || path.contains("..")
        || path.contains("//")
        || path.contains('\\')
        || path.contains('%')
        || path.contains(';')
    {
        return unknown;
    }
    let is_get = method == "GET" || method == "HEAD";
    let is_post = method == "POST";
    let route = |class, model| Route {
        class,
        model,
        flavor,
    };
    use ModelSource as M;
    use RouteClass as C;
    match path {
        "/" | "/api/version" if is_get => route(C::Read, M::None),
        "/api/tags" | "/api/ps" | "/v1/models" if is_get => route(C::Read, M::None),
        "/api/show" if is_post => route(C::Read, M::JsonBody),
        "/api/generate" | "/api/chat" | "/api/embed" | "/api/embeddings" if is_post => {
            route(C::Inference, M::JsonBody)
        }
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/v1/responses"
        | "/v1/messages"
        | "/v1/images/generations"
            if is_post =>
        {
            route(C::Inference, M::JsonBody)
        }
        "/v1/audio/transcriptions" | "/v1/audio/translations" if is_post => {
            route(C::Inference, M::Multipart)
        }
        "/api/pull" | "/api/push" | "/api/create" | "/api/copy" if is_post => {
            route(C::Admin, M::JsonBody)
        }
        "/api/delete" if method == "DELETE" => route(C::Admin, M::JsonBody),
        "/api/me" | "/api/signout" if is_post || is_get => route(C::Admin, M::None),
        _ => {
            if let Some(model) = path.strip_prefix("/v1/models/") {
                if is_get && !model.is_empty() {
                    return route(C::Read, M::Path(model));
                }
                return unknown;
            }
            if let Some(digest) = path.strip_prefix("/api/blobs/") {
                if (is_get || is_post) && !digest.is_empty() && !digest.contains('/') {
                    return route(C::Admin, M::None);
                }
                return unknown;
            }
            if path.starts_with("/api/user/keys") || path.starts_with("/api/experimental/") {
                return route(C::Admin, M::None);
            }
            unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_ignored_and_traversal_is_unknown() {
        assert_eq!(classify("GET", "/api/tags?x=1").class, RouteClass::Read);
        assert_eq!(
            classify("POST", "/api/chat/../pull").class,
            RouteClass::Unknown
        );
        assert_eq!(classify("POST", "/api//pull").class, RouteClass::Unknown);
        assert_eq!(classify("POST", "/api/%70ull").class, RouteClass::Unknown);
        assert_eq!(classify("GET", "/api/chat").class, RouteClass::Unknown);
    }
}
