//! `keyctl list`: every key, streamed page by page as keyd sends them, so 10,000 keys
//! start printing at once and never sit in memory together.

use super::Context;
use crate::api::{Key, KeyPage};
use crate::args::ListArgs;
use crate::error::{Error, Result};
use crate::output::{header, list_or, row, short_time, Column, Mode, Out};

/// keyd's page size (its documented default).
const PAGE: usize = 1000;
/// A keyd that keeps answering the same cursor would loop forever; no real list is this long.
const MAX_PAGES: usize = 100_000;

pub const COLUMNS: [Column; 9] = [
    Column { title: "ID", width: 12 },
    Column { title: "NAME", width: 20 },
    Column { title: "STATUS", width: 7 },
    Column { title: "ROUTES", width: 20 },
    Column { title: "MODELS", width: 20 },
    Column { title: "RATE", width: 12 },
    Column { title: "EXPIRES", width: 16 },
    Column { title: "CREATED", width: 16 },
    Column { title: "ROTATED", width: 0 },
];

#[derive(Debug)]
pub struct List {
    all: bool,
}

impl List {
    pub fn parse(a: ListArgs) -> Self {
        Self { all: a.all }
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let keyd = ctx.keyd()?;
        let fetch = |after: Option<&str>| -> Result<KeyPage> {
            let mut query = vec![("all", self.all.to_string()), ("limit", PAGE.to_string())];
            if let Some(a) = after {
                query.push(("after", a.to_owned()));
            }
            keyd.get("/v1/keys", &query)
        };
        // The first page is fetched before anything is printed, so a failure (keyd down,
        // wrong token) leaves stdout empty instead of a lone table header.
        let mut page = fetch(None)?;
        let mut printer = Printer::new(&mut ctx.out)?;
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            for k in &page.keys {
                printer.key(k)?;
            }
            printer.flush()?;
            match page.next {
                Some(next) if page.keys.is_empty() || after.as_ref() == Some(&next) => {
                    return Err(Error::Keyd(
                        "keyd returned a page cursor that does not advance; is keyd up to date?"
                            .to_owned(),
                    ))
                }
                Some(next) => {
                    page = fetch(Some(&next))?;
                    after = Some(next);
                }
                None => return printer.finish(),
            }
        }
        Err(Error::Keyd("keyd kept sending pages; giving up".to_owned()))
    }
}

/// Writes keys in the current mode as they arrive (a JSON array is opened at once and
/// closed at the end).
struct Printer<'a> {
    out: &'a mut Out,
    first: bool,
}

impl<'a> Printer<'a> {
    fn new(out: &'a mut Out) -> Result<Self> {
        match out.mode {
            Mode::Json => out.raw("[")?,
            Mode::Human => out.line(&header(&COLUMNS))?,
            Mode::Quiet => {}
        }
        Ok(Self { out, first: true })
    }

    fn key(&mut self, k: &Key) -> Result<()> {
        match self.out.mode {
            Mode::Json => {
                self.out.raw(if self.first { "\n  " } else { ",\n  " })?;
                let json = serde_json::to_string(k).map_err(std::io::Error::from)?;
                self.out.raw(&json)?;
            }
            Mode::Quiet => self.out.line(&k.id)?,
            Mode::Human => self.out.line(&table_row(k))?,
        }
        self.first = false;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()
    }

    fn finish(self) -> Result<()> {
        if self.out.mode == Mode::Json {
            self.out.raw(if self.first { "]\n" } else { "\n]\n" })?;
        }
        self.out.flush()
    }
}

pub fn table_row(k: &Key) -> String {
    let rate = match (&k.rate, k.burst) {
        (Some(r), Some(b)) => format!("{r} b{b}"),
        (Some(r), None) => r.clone(),
        (None, _) => "-".to_owned(),
    };
    row(
        &COLUMNS,
        &[
            &k.id,
            &k.name,
            &k.status,
            &list_or(&k.routes, "-"),
            &list_or(&k.models, "*"),
            &rate,
            &short_time(k.expires_at.as_deref(), "never"),
            &short_time(k.created_at.as_deref(), "-"),
            &short_time(k.rotated_at.as_deref(), "-"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_layout() {
        let k: Key = serde_json::from_value(serde_json::json!({
            "id": "abcdefghijkl", "name": "a very long key name indeed", "status": "active",
            "routes": ["inference", "read"], "models": [], "rate": "10/s", "burst": 20,
            "expires_at": null, "created_at": "2026-01-02T03:04:05Z", "rotated_at": null
        }))
        .unwrap();
        let r = table_row(&k);
        assert_eq!(
            r,
            "abcdefghijkl  a very long key nam…  active   inference,read        *                     10/s b20      never             2026-01-02 03:04  -"
        );
        // Every row's columns line up with the header's.
        let h = header(&COLUMNS);
        let col = |s: &str, needle: &str| s.find(needle).map(|i| s[..i].chars().count());
        assert_eq!(col(&h, "NAME"), col(&r, "a very"));
        assert_eq!(col(&h, "ROTATED"), Some(r.chars().count() - 1));
    }
}
