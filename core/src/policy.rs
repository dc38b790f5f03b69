//! What a key may do: route classes, a model allowlist, a rate.

use crate::model::ModelGlob;
use crate::ratelimit::Rate;
use crate::routes::RouteClass;

/// A set of route classes, as a bitset (copied on every request, so it stays `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteSet(u8);

impl RouteSet {
    pub const INFERENCE: u8 = 1;
    pub const READ: u8 = 2;
    pub const ADMIN: u8 = 4;

    /// What a new key gets: `inference` + `read`; `admin` is granted only explicitly.
    pub fn default_grant() -> Self {
        Self(Self::INFERENCE | Self::READ)
    }

    pub fn from_bits(bits: u8) -> Self {
        Self(bits & (Self::INFERENCE | Self::READ | Self::ADMIN))
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn contains(self, class: RouteClass) -> bool {
        let bit = match class {
            RouteClass::Inference => Self::INFERENCE,
            RouteClass::Read => Self::READ,
            RouteClass::Admin => Self::ADMIN,
            RouteClass::Unknown => return false,
        };
        self.0 & bit != 0
    }

    pub fn insert(&mut self, class: RouteClass) {
        self.0 |= match class {
            RouteClass::Inference => Self::INFERENCE,
            RouteClass::Read => Self::READ,
            RouteClass::Admin => Self::ADMIN,
            RouteClass::Unknown => 0,
        };
    }

    /// Parses `inference,read,admin` (any order, at least one).
    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Self, &'static str> {
        let mut set = Self(0);
        for item in items {
            let c = RouteClass::parse(item.as_ref().trim())
                .ok_or("route class must be inference, read or admin")?;
            set.insert(c);
        }
        if set.0 == 0 {
            return Err("at least one route class is required");
        }
        Ok(set)
    }

    pub fn names(self) -> Vec<&'static str> {
        [RouteClass::Inference, RouteClass::Read, RouteClass::Admin]
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(RouteClass::as_str)
            .collect()
    }
}

/// A key's policy. Constructed only through validating constructors, so an invalid glob or
/// rate cannot reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub routes: RouteSet,
    /// Empty = every local model (cloud models still need an explicit entry).
    pub models: Vec<ModelGlob>,
    pub rate: Option<Rate>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            routes: RouteSet::default_grant(),
            models: Vec::new(),
            rate: None,
        }
    }
}

/// Longest allowlist a key may carry.
pub const MAX_MODELS: usize = 64;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 128;

/// Validates a key name: 1..=128 printable characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("name must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name must be at most 128 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters");
    }
    Ok(())
}

/// Validates an allowlist.
pub fn parse_models<S: AsRef<str>>(items: &[S]) -> Result<Vec<ModelGlob>, &'static str> {
    if items.len() > MAX_MODELS {
        return Err("at most 64 model patterns per key");
    }
    items
        .iter()
        .map(|s| ModelGlob::try_new(s.as_ref()))
        .collect()
}
