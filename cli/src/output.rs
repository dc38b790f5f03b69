//! Writing to stdout: JSON or human text, fixed-width tables that can be streamed (column
//! widths never depend on rows not yet received), and a closed pipe treated as success.

use crate::error::Result;
use serde::Serialize;
use std::io::{self, BufWriter, StdoutLock, Write};

/// How the user asked for output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
    /// Only the value a script needs, one per line.
    Quiet,
}

/// Buffered stdout. Callers `flush` after each page so output streams.
#[derive(Debug)]
pub struct Out<W: Write = BufWriter<StdoutLock<'static>>> {
    w: W,
    pub mode: Mode,
}

impl Out {
    pub fn stdout(mode: Mode) -> Self {
        Self {
            w: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
            mode,
        }
    }
}

impl<W: Write> Out<W> {
    #[cfg(test)]
    pub fn new(w: W, mode: Mode) -> Self {
        Self { w, mode }
    }

    pub fn line(&mut self, s: &str) -> Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    pub fn raw(&mut self, s: &str) -> Result<()> {
        self.w.write_all(s.as_bytes())?;
        Ok(())
    }

    /// One value as indented JSON.
    pub fn json<T: Serialize>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer_pretty(&mut self.w, v).map_err(io::Error::from)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    /// One value as a single JSON line (JSON lines output).
    pub fn json_line<T: Serialize>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut self.w, v).map_err(io::Error::from)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.w.flush()?;
        Ok(())
    }
}

/// A column of a streamed table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub width: usize,
}

/// Renders one row: each cell cut to its column width (with `…`), padded, two spaces
/// between columns; the last column is not padded or cut, so long details stay whole.
pub fn row(columns: &[Column], cells: &[&str]) -> String {
    const SPACES: &str = "                                                                ";
    let mut line = String::with_capacity(160);
    let last = columns.len().saturating_sub(1);
    for (i, (col, cell)) in columns.iter().zip(cells).enumerate() {
        // Fast path for the common case (plain ASCII that fits): this runs for every row of
        // a 10,000-key list.
        let plain = cell.bytes().all(|b| (0x20..0x7f).contains(&b));
        let cell: std::borrow::Cow<'_, str> = if plain {
            (*cell).into()
        } else {
            clean(cell).into()
        };
        if i == last {
            line.push_str(&cell);
            continue;
        }
        let shown = if plain && cell.len() <= col.width {
            cell
        } else {
            fit(&cell, col.width).into()
        };
        line.push_str(&shown);
        let pad = col.width.saturating_sub(shown.chars().count()) + 2;
        match SPACES.get(..pad) {
            Some(spaces) => line.push_str(spaces),
            None => line.extend(std::iter::repeat_n(' ', pad)),
        }
    }
    line.truncate(line.trim_end().len());
    line
}

pub fn header(columns: &[Column]) -> String {
    let titles: Vec<&str> = columns.iter().map(|c| c.title).collect();
    row(columns, &titles)
}

/// Names and reasons come from users: never let them move the cursor or break a row.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `2026-11-23T09:00:00Z` → `2026-11-23 09:00` (UTC, to the minute) for tables.
pub fn short_time(t: Option<&str>, none: &'static str) -> String {
    let Some(t) = t else {
        return none.to_owned();
    };
    match (t.get(..10), t.get(11..16), t.get(10..11)) {
        (Some(date), Some(hm), Some("T")) => format!("{date} {hm}"),
        _ => t.to_owned(),
    }
}

/// A comma list, or `fallback` when empty.
pub fn list_or(items: &[String], fallback: &'static str) -> String {
    if items.is_empty() {
        fallback.to_owned()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: [Column; 3] = [
        Column {
            title: "ID",
            width: 4,
        },
        Column {
            title: "NAME",
            width: 6,
        },
        Column {
            title: "DETAIL",
            width: 0,
        },
    ];

    #[test]
    fn rows_are_fixed_width_and_cut() {
        assert_eq!(header(&COLS), "ID    NAME    DETAIL");
        assert_eq!(
            row(&COLS, &["ab", "abcdefgh", "x y z"]),
            "ab    abcde…  x y z"
        );
        assert_eq!(row(&COLS, &["ab", "n\u{1b}[2J", ""]), "ab    n [2J");
    }

    #[test]
    fn times_shorten() {
        assert_eq!(
            short_time(Some("2026-11-23T09:00:00Z"), "-"),
            "2026-11-23 09:00"
        );
        assert_eq!(short_time(None, "never"), "never");
        assert_eq!(short_time(Some("odd"), "-"), "odd");
    }

    #[test]
    fn broken_pipe_surfaces_as_output_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Out::new(Closed, Mode::Human);
        let e = out.line("x").unwrap_err();
        assert!(e.is_broken_pipe());
    }
}
