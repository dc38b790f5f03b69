//! `keyctl audit`: the hash-chained audit log, streamed as a table or JSON lines, and
//! `--verify`, which asks keyd to check the whole chain and exits 7 when it is broken.

use super::{key_id, Context};
use crate::api::{AuditEntry, AuditPage, AuditVerify};
use crate::args::AuditArgs;
use crate::error::{Error, Result};
use crate::output::{header, row, Column, Mode};
use keygate_core::duration::Duration;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

/// The actions keyd writes (docs/api.md); anything else is a typo that would print nothing.
pub const ACTIONS: [&str; 9] = [
    "key.issue",
    "key.rotate",
    "key.revoke",
    "token.mint",
    "token.exchange",
    "publickey.register",
    "signing_key.rotate",
    "filter_credential.create",
    "admin.auth_failed",
];

const PAGE: usize = 1000;
const MAX_PAGES: usize = 1_000_000;

const COLUMNS: [Column; 6] = [
    Column {
        title: "SEQ",
        width: 7,
    },
    Column {
        title: "AT",
        width: 20,
    },
    Column {
        title: "ACTION",
        width: 24,
    },
    Column {
        title: "KEY",
        width: 12,
    },
    Column {
        title: "ACTOR",
        width: 9,
    },
    Column {
        title: "DETAIL",
        width: 0,
    },
];

#[derive(Debug)]
pub enum Audit {
    Print { query: Vec<(&'static str, String)> },
    Verify,
}

impl Audit {
    pub fn parse(a: AuditArgs) -> Result<Self> {
        if a.verify {
            return Ok(Self::Verify);
        }
        let now = OffsetDateTime::now_utc();
        let mut query = Vec::new();
        if let Some(s) = &a.since {
            query.push(("since", parse_time("--since", s, now)?));
        }
        if let Some(s) = &a.until {
            query.push(("until", parse_time("--until", s, now)?));
        }
        if let Some(k) = &a.key {
            query.push(("key", key_id("--key", k)?.to_string()));
        }
        if let Some(action) = &a.action {
            if !ACTIONS.contains(&action.as_str()) {
                return Err(Error::invalid(
                    "--action",
                    format!("unknown action; use one of {}", ACTIONS.join(", ")),
                ));
            }
            query.push(("action", action.clone()));
        }
        Ok(Self::Print { query })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        match self {
            Self::Verify => verify(ctx),
            Self::Print { query } => print(ctx, query),
        }
    }
}

fn print(ctx: &mut Context, query: Vec<(&'static str, String)>) -> Result<()> {
    let keyd = ctx.keyd()?;
    let fetch = |after: Option<u64>| -> Result<AuditPage> {
        let mut q = query.clone();
        q.push(("limit", PAGE.to_string()));
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        keyd.get("/v1/audit", &q)
    };
    // Fetched before the header is printed: a failure leaves stdout empty.
    let mut page = fetch(None)?;
    let out = &mut ctx.out;
    if out.mode == Mode::Human {
        out.line(&header(&COLUMNS))?;
    }
    let mut after: Option<u64> = None;
    for _ in 0..MAX_PAGES {
        for e in &page.entries {
            match out.mode {
                Mode::Json => out.json_line(e)?,
                Mode::Quiet => out.line(&e.seq.to_string())?,
                Mode::Human => out.line(&table_row(e))?,
            }
        }
        out.flush()?;
        match page.next {
            Some(n) if page.entries.is_empty() || after.is_some_and(|a| n <= a) => {
                return Err(Error::Keyd(
                    "keyd returned an audit cursor that does not advance; is keyd up to date?"
                        .to_owned(),
                ))
            }
            Some(n) => {
                page = fetch(Some(n))?;
                after = Some(n);
            }
            None => return Ok(()),
        }
    }
    Err(Error::Keyd(
        "keyd kept sending audit pages; giving up".to_owned(),
    ))
}

fn table_row(e: &AuditEntry) -> String {
    let detail = match &e.detail {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        d => d.to_string(),
    };
    row(
        &COLUMNS,
        &[
            &e.seq.to_string(),
            &e.at,
            &e.action,
            e.key_id.as_deref().unwrap_or("-"),
            &e.actor,
            &detail,
        ],
    )
}

fn verify(ctx: &mut Context) -> Result<()> {
    let v: AuditVerify = ctx.keyd()?.get("/v1/audit/verify", &[])?;
    let out = &mut ctx.out;
    match out.mode {
        Mode::Json => out.json(&v)?,
        Mode::Quiet => {}
        Mode::Human if v.ok => out.line(&format!(
            "Audit log intact: {} entries, every hash links to the one before.",
            v.entries
        ))?,
        Mode::Human => {}
    }
    out.flush()?;
    if v.ok {
        return Ok(());
    }
    let (seq, reason) = v
        .first_broken
        .map(|b| (b.seq, b.reason))
        .unwrap_or((0, "unknown".to_owned()));
    Err(Error::ChainBroken {
        seq,
        explanation: explain(&reason),
        reason: reason
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect(),
    })
}

fn explain(reason: &str) -> &'static str {
    match reason {
        "hash_mismatch" => "the entry's contents do not match its hash, so it was edited",
        "missing_entry" => "an entry before it is missing, so entries were deleted",
        "prev_mismatch" => {
            "it does not link to the entry before it, so entries were replaced or reordered"
        }
        _ => "keyd found the chain inconsistent",
    }
}

/// `24h` (that long ago), `2026-01-31` (midnight UTC) or RFC 3339 → RFC 3339 UTC.
fn parse_time(flag: &str, s: &str, now: OffsetDateTime) -> Result<String> {
    let s = s.trim();
    const HELP: &str = "use a duration ago (24h, 7d), a date (2026-01-31) or an RFC 3339 time \
                        (2026-01-31T09:00:00Z)";
    let t = if let Ok(d) = Duration::parse(s) {
        now - time::Duration::seconds(d.secs_i64())
    } else if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        t
    } else if let Ok(date) =
        Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
    {
        date.midnight().assume_utc()
    } else {
        return Err(Error::invalid(flag, HELP));
    };
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(|_| Error::invalid(flag, HELP))?;
    t.format(&Rfc3339).map_err(|_| Error::invalid(flag, HELP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_rfc3339_utc() {
        let now = OffsetDateTime::parse("2026-03-10T12:00:00.5Z", &Rfc3339).unwrap();
        assert_eq!(
            parse_time("--since", "1h", now).unwrap(),
            "2026-03-10T11:00:00Z"
        );
        assert_eq!(
            parse_time("--since", "2d", now).unwrap(),
            "2026-03-08T12:00:00Z"
        );
        assert_eq!(
            parse_time("--since", "2026-01-31", now).unwrap(),
            "2026-01-31T00:00:00Z"
        );
        assert_eq!(
            parse_time("--since", "2026-01-31T10:00:00+02:00", now).unwrap(),
            "2026-01-31T08:00:00Z"
        );
        for bad in ["yesterday", "2026-13-01", "1y", ""] {
            assert_eq!(
                parse_time("--since", bad, now).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_action_is_invalid() {
        let a = AuditArgs {
            since: None,
            until: None,
            key: None,
            action: Some("key.issued".into()),
            verify: false,
        };
        assert_eq!(Audit::parse(a).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn broken_reasons_are_explained() {
        assert!(explain("missing_entry").contains("deleted"));
        assert!(explain("hash_mismatch").contains("edited"));
    }
}
