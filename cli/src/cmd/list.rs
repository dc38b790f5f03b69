//! `keyctl list`: every key, streamed page by page as keyd sends them.
//!
//! The id space is split in two ranges fetched by two threads, each prefetching a few
//! pages ahead: keyd serves both at once on its worker threads while keyctl prints, and
//! the first range streams to stdout as it arrives. Output stays in id order; at most
//! [`AHEAD`] pages per range are held in memory.

use super::Context;
use crate::api::{Key, KeyPage};
use crate::args::ListArgs;
use crate::client::Keyd;
use crate::error::{Error, Result};
use crate::output::{header, list_or, row, short_time, Column, Mode, Out};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// keyd's page size (its documented default and maximum).
const PAGE: usize = 1000;
/// Pages a range fetches ahead of the printer.
const AHEAD: usize = 8;
/// A keyd that keeps answering the same cursor would loop forever; no real list is this long.
const MAX_PAGES: usize = 100_000;
/// The last id of the first range: ids are 12 characters of `2-7a-z` in ASCII order, so
/// this splits random ids in half. Any id sorts into exactly one range, whatever its shape.
const SPLIT_AFTER: &str = "lzzzzzzzzzzz";

pub const COLUMNS: [Column; 9] = [
    Column {
        title: "ID",
        width: 12,
    },
    Column {
        title: "NAME",
        width: 20,
    },
    Column {
        title: "STATUS",
        width: 7,
    },
    Column {
        title: "ROUTES",
        width: 20,
    },
    Column {
        title: "MODELS",
        width: 20,
    },
    Column {
        title: "RATE",
        width: 12,
    },
    Column {
        title: "EXPIRES",
        width: 16,
    },
    Column {
        title: "CREATED",
        width: 16,
    },
    Column {
        title: "ROTATED",
        width: 0,
    },
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
        let out = &mut ctx.out;
        let all = self.all;
        std::thread::scope(|s| {
            let ranges = [(None, Some(SPLIT_AFTER)), (Some(SPLIT_AFTER), None)];
            let receivers: Vec<Receiver<Result<Vec<Key>>>> = ranges
                .into_iter()
                .map(|(after, upto)| {
                    let (tx, rx) = sync_channel(AHEAD);
                    let keyd = &keyd;
                    s.spawn(move || fetch_range(keyd, all, after, upto, &tx));
                    rx
                })
                .collect();
            print_ranges(out, receivers)
        })
    }
}

/// Sends the keys with `after < id <= upto`, a page at a time, until done, an error, or the
/// printer hangs up.
fn fetch_range(
    keyd: &Keyd,
    all: bool,
    after: Option<&str>,
    upto: Option<&str>,
    tx: &SyncSender<Result<Vec<Key>>>,
) {
    let mut cursor = after.map(str::to_owned);
    for _ in 0..MAX_PAGES {
        let mut query = vec![("all", all.to_string()), ("limit", PAGE.to_string())];
        if let Some(a) = &cursor {
            query.push(("after", a.clone()));
        }
        let page = match keyd.get::<KeyPage>("/v1/keys", &query) {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let mut keys = page.keys;
        let past_end = upto.is_some_and(|u| keys.last().is_some_and(|k| k.id.as_str() > u));
        if let Some(u) = upto {
            keys.retain(|k| k.id.as_str() <= u);
        }
        let last = keys.last().map(|k| k.id.clone());
        if tx.send(Ok(keys)).is_err() {
            return; // the printer stopped (closed pipe or an error in another range)
        }
        match page.next {
            None => return,
            Some(_) if past_end => return,
            Some(next) if last.is_none() || cursor.as_ref() == Some(&next) => {
                let _ = tx.send(Err(Error::Keyd(
                    "keyd returned a page cursor that does not advance; is keyd up to date?"
                        .to_owned(),
                )));
                return;
            }
            Some(next) => cursor = Some(next),
        }
    }
    let _ = tx.send(Err(Error::Keyd(
        "keyd kept sending pages; giving up".to_owned(),
    )));
}

/// Prints the ranges in order. The first page is awaited before anything is printed, so a
/// failure (keyd down, wrong token) leaves stdout empty instead of a lone table header.
fn print_ranges(out: &mut Out, receivers: Vec<Receiver<Result<Vec<Key>>>>) -> Result<()> {
    let mut pages = receivers.iter().flat_map(|rx| rx.iter());
    let first = pages.next().transpose()?.unwrap_or_default();
    let mut printer = Printer::new(out)?;
    for k in &first {
        printer.key(k)?;
    }
    printer.flush()?;
    for page in pages {
        for k in &page? {
            printer.key(k)?;
        }
        printer.flush()?;
    }
    printer.finish()
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
