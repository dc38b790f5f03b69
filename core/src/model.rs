//! Ollama model names, normalised the way Ollama resolves them, and allowlist globs.
//!
//! Ollama matches names case-insensitively and fills in defaults: `llama3` is
//! `registry.ollama.ai/library/llama3:latest`. An allowlist that compared raw strings could
//! be bypassed with `LLAMA3` or `llama3:latest`, so both names and patterns are normalised
//! to the full form first.

pub const DEFAULT_HOST: &str = "registry.ollama.ai";
pub const DEFAULT_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";
/// Longest model name or pattern accepted (Ollama's own limit is far below this).
pub const MAX_MODEL_LEN: usize = 250;

/// Normalises a model name to `host/namespace/model:tag`, lowercased. Returns `None` for
/// names that cannot be a model (empty parts, too many segments, odd characters).
pub fn normalize(name: &str) -> Option<String> {
    normalize_inner(name, false)
}

fn normalize_inner(name: &str, pattern: bool) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_MODEL_LEN {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let ok_char = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '.' | '-' | '_' | ':' | '/')
            || (pattern && matches!(c, '*' | '?'))
    };
    if !lower.chars().all(ok_char) {
        return None;
    }
    // Ollama also accepts a digest suffix (`model@sha256:…`); it names a specific blob of a
    // model we cannot resolve, so it is refused.
    let (path, tag) = match lower.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((m, t)) => (format!("{head}/{m}"), Some(t.to_owned())),
            None => (lower.clone(), None),
        },
        None => match lower.split_once(':') {
            Some((m, t)) => (m.to_owned(), Some(t.to_owned())),
            None => (lower.clone(), None),
        },
    };
    let segments: Vec<&str> = path.split('/').collect();
    // Like Ollama's own name parts: each starts with a letter, digit or `_` (so `..` and
    // `-x` are not names), and only a host (the first of three segments) has a `:port`.
    let starts_ok = |s: &str| {
        s.bytes().next().is_some_and(|b| {
            b.is_ascii_alphanumeric() || b == b'_' || (pattern && matches!(b, b'*' | b'?'))
        })
    };
    let host_segments = usize::from(segments.len() == 3);
    if segments
        .iter()
        .enumerate()
        .any(|(i, s)| !starts_ok(s) || (i >= host_segments && s.contains(':')))
    {
        return None;
    }
    if tag.as_deref().is_some_and(|t| !starts_ok(t)) {
        return None;
    }
    let full = match segments.as_slice() {
        [m] => format!("{DEFAULT_HOST}/{DEFAULT_NAMESPACE}/{m}"),
        [ns, m] => format!("{DEFAULT_HOST}/{ns}/{m}"),
        [host, ns, m] => format!("{host}/{ns}/{m}"),
        _ => return None,
    };
    let tag = match tag {
        Some(t) if t.is_empty() || t.contains(':') => return None,
        Some(t) => t,
        // A pattern ending in `*` already spans the tag (`llama3*` matches `llama3.2:1b`).
        None if pattern && full.ends_with('*') => return Some(full),
        None => DEFAULT_TAG.to_owned(),
    };
    Some(format!("{full}:{tag}"))
}

/// True for models Ollama forwards to ollama.com under the *server's* identity.
pub fn is_cloud(normalized: &str) -> bool {
    normalized.ends_with(":cloud") || normalized.ends_with("-cloud")
}

/// A validated allowlist entry: a normalised glob (`*` any run, `?` one character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelGlob {
    raw: String,
    normalized: String,
}

impl ModelGlob {
    pub fn try_new(pattern: &str) -> Result<Self, &'static str> {
        let normalized = if pattern.trim() == "*" {
            "*".to_owned()
        } else {
            normalize_inner(pattern, true)
                .ok_or("not a model name or glob (e.g. llama3*, qwen3:8b)")?
        };
        Ok(Self {
            raw: pattern.trim().to_owned(),
            normalized,
        })
    }

    /// The pattern as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn matches(&self, normalized_name: &str) -> bool {
        glob_match(self.normalized.as_bytes(), normalized_name.as_bytes())
    }

    /// A pattern "names" cloud models only when it itself ends in `cloud`: `*` alone never
    /// lets a key spend the server's ollama.com identity.
    pub fn names_cloud(&self) -> bool {
        self.normalized.ends_with("cloud") || self.normalized.ends_with("cloud*")
    }
}

/// Iterative glob match with single-star backtracking: linear in practice, no recursion.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pattern.len()
}

/// Outcome of checking one model name against a key's allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelCheck {
    Allowed,
    /// Not a valid model name.
    Invalid,
    /// Not on the key's allowlist.
    NotAllowed,
    /// A cloud model the allowlist does not name explicitly.
    Cloud,
}

/// Checks `name` against `allow` (empty = every local model, no cloud model).
pub fn check(allow: &[ModelGlob], name: &str) -> ModelCheck {
    let Some(n) = normalize(name) else {
        return ModelCheck::Invalid;
    };
    let cloud = is_cloud(&n);
    if allow.is_empty() {
        return if cloud {
            ModelCheck::Cloud
        } else {
            ModelCheck::Allowed
        };
    }
    let mut matched = false;
    for g in allow {
        if g.matches(&n) {
            if !cloud || g.names_cloud() {
                return ModelCheck::Allowed;
            }
            matched = true;
        }
    }
    if cloud || matched {
        ModelCheck::Cloud
    } else {
        ModelCheck::NotAllowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize("llama3").unwrap(),
            "registry.ollama.ai/library/llama3:latest"
        );
        assert_eq!(normalize("A:latest"), normalize("a"));
        assert_eq!(normalize("me/m:1b").unwrap(), "registry.ollama.ai/me/m:1b");
        assert_eq!(normalize("a//b"), None);
    }

    #[test]
    fn globs_and_cloud() {
        let allow = vec![ModelGlob::try_new("llama3*").unwrap()];
        assert_eq!(check(&allow, "LLAMA3.2:1b"), ModelCheck::Allowed);
        assert_eq!(check(&allow, "qwen3"), ModelCheck::NotAllowed);
        let star = vec![ModelGlob::try_new("*").unwrap()];
        assert_eq!(check(&star, "gpt-oss:120b-cloud"), ModelCheck::Cloud);
        let explicit = vec![ModelGlob::try_new("gpt-oss:120b-cloud").unwrap()];
        assert_eq!(check(&explicit, "GPT-OSS:120b-cloud"), ModelCheck::Allowed);
        assert_eq!(check(&[], "x:cloud"), ModelCheck::Cloud);
    }
}
