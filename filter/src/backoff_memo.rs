//! A worker's short-lived copy of the per-address failure-backoff entries it has read.
//!
//! Reading `kg:fb:<addr>` is a shared-data hostcall, which costs microseconds in V8; doing
//! it on every request would make the allow path pay for a check that almost never
//! blocks. So each worker remembers the state it last read (or wrote) for an address for
//! [`MEMO_US`]: failures this worker records block at once, failures recorded by another
//! worker block here within [`MEMO_US`]. Keys are 256-bit secrets, so the lockout is a
//! brake on guessing, not the thing that makes guessing hopeless; a second of lag does
//! not weaken it.

use std::collections::HashMap;

/// How long a read of an address's backoff entry is trusted by this worker.
pub const MEMO_US: u64 = 1_000_000;
/// Bound on remembered addresses (the memo is dropped whole when full).
pub const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Default)]
pub struct BackoffMemo {
    entries: HashMap<String, (u64, Option<Vec<u8>>)>,
}

impl BackoffMemo {
    /// The remembered state of `bucket`, if read or written less than [`MEMO_US`] ago.
    /// The outer `None` means "not remembered: read shared data".
    pub fn get(&self, bucket: &str, now_us: u64) -> Option<Option<&[u8]>> {
        self.entries
            .get(bucket)
            .filter(|(at, _)| now_us.saturating_sub(*at) < MEMO_US && *at <= now_us)
            .map(|(_, state)| state.as_deref())
    }

    /// Remembers the state of `bucket` as of `now_us`.
    pub fn put(&mut self, bucket: &str, state: Option<Vec<u8>>, now_us: u64) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(bucket) {
            self.entries.clear();
        }
        self.entries.insert(bucket.to_owned(), (now_us, state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_memo_is_bounded() {
        let mut m = BackoffMemo::default();
        assert_eq!(m.get("a", 10), None);
        m.put("a", Some(vec![1]), 10);
        assert_eq!(m.get("a", 10 + MEMO_US - 1), Some(Some(&[1u8][..])));
        assert_eq!(m.get("a", 10 + MEMO_US), None);
        assert_eq!(m.get("a", 9), None, "a clock going back re-reads");
        for i in 0..MAX_ENTRIES {
            m.put(&i.to_string(), None, 10);
        }
        assert!(m.entries.len() <= MAX_ENTRIES);
    }
}
