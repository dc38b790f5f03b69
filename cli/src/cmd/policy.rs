//! The policy fields `issue` and `register` share, validated with keygate-core's
//! constructors and sent in keyd's field names (docs/api.md).

use crate::args::PolicyArgs;
use crate::error::{Error, Result};
use keygate_core::duration::Duration;
use keygate_core::policy::{self, RouteSet};
use keygate_core::ratelimit::{Burst, RateSpec};
use serde::Serialize;

/// Only the fields the user gave are sent, so keyd's defaults apply to the rest.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct PolicyBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

impl PolicyBody {
    pub fn parse(a: PolicyArgs) -> Result<Self> {
        let routes = if a.routes.is_empty() {
            None
        } else {
            let set = RouteSet::parse_list(&a.routes).map_err(|r| Error::invalid("--routes", r))?;
            Some(set.names())
        };
        let models = if a.models.is_empty() {
            None
        } else {
            let globs =
                policy::parse_models(&a.models).map_err(|r| Error::invalid("--models", r))?;
            Some(globs.iter().map(|g| g.as_str().to_owned()).collect())
        };
        let rate = a
            .rate
            .as_deref()
            .map(RateSpec::parse)
            .transpose()
            .map_err(|r| Error::invalid("--rate", r))?;
        let burst = a
            .burst
            .map(Burst::try_new)
            .transpose()
            .map_err(|r| Error::invalid("--burst", r))?;
        if burst.is_some() && rate.is_none() {
            return Err(Error::invalid(
                "--burst",
                "a burst only means something with --rate (e.g. --rate 10/s --burst 20)",
            ));
        }
        let expires_in = a
            .expires_in
            .as_deref()
            .map(Duration::parse)
            .transpose()
            .map_err(|r| Error::invalid("--expires-in", r))?;
        Ok(Self {
            routes,
            models,
            rate: rate.map(|r| r.to_string()),
            burst: burst.map(Burst::get),
            expires_in: expires_in.map(|d| d.to_string()),
        })
    }
}

/// Validates a key name with keygate-core's rule.
pub fn name(s: &str) -> Result<String> {
    policy::validate_name(s).map_err(|r| Error::invalid("--name", r))?;
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        routes: &[&str],
        models: &[&str],
        rate: Option<&str>,
        burst: Option<u32>,
        exp: Option<&str>,
    ) -> PolicyArgs {
        PolicyArgs {
            routes: routes.iter().map(|s| (*s).to_owned()).collect(),
            models: models.iter().map(|s| (*s).to_owned()).collect(),
            rate: rate.map(str::to_owned),
            burst,
            expires_in: exp.map(str::to_owned),
        }
    }

    #[test]
    fn valid_policy_is_normalised_and_sent_in_keyd_fields() {
        let p = PolicyBody::parse(args(
            &["read", "inference"],
            &["llama3*"],
            Some("10/sec"),
            Some(20),
            Some("720h"),
        ))
        .unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"routes": ["inference", "read"], "models": ["llama3*"], "rate": "10/s", "burst": 20, "expires_in": "30d"})
        );
    }

    #[test]
    fn unset_fields_are_not_sent() {
        let p = PolicyBody::parse(args(&[], &[], None, None, None)).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn invalid_values_name_their_flag() {
        let cases = [
            (args(&["root"], &[], None, None, None), "--routes"),
            (args(&[""], &[], None, None, None), "--routes"),
            (args(&[], &["bad name!"], None, None, None), "--models"),
            (args(&[], &[], Some("10/d"), None, None), "--rate"),
            (args(&[], &[], Some("0/s"), None, None), "--rate"),
            (args(&[], &[], Some("1/s"), Some(0), None), "--burst"),
            (args(&[], &[], None, Some(5), None), "--burst"),
            (args(&[], &[], None, None, Some("1y")), "--expires-in"),
            (args(&[], &[], None, None, Some("0s")), "--expires-in"),
        ];
        for (a, flag) in cases {
            let e = PolicyBody::parse(a).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().starts_with(flag), "{e}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(name("ci runner").is_ok());
        assert!(name("").is_err());
        assert!(name("a\nb").is_err());
        assert!(name(&"x".repeat(200)).is_err());
    }
}
