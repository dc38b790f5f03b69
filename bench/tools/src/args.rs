//! `--name value` pairs: all the helper needs, without a CLI framework.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug)]
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(argv: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| Error::Usage(format!("expected --name value, got {flag:?}")))?;
            let value = it
                .next()
                .ok_or_else(|| Error::Usage(format!("--{name} needs a value")))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Self(map))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn dir(&self) -> Result<PathBuf> {
        self.str("dir")
            .map(PathBuf::from)
            .ok_or_else(|| Error::Usage("--dir DIR is required".into()))
    }

    pub fn num(&self, name: &str, default: u64) -> Result<u64> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Error::Usage(format!("--{name} must be a whole number, got {v:?}"))),
        }
    }
}
