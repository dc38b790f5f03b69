//! A worker's copy of the key records it has used, valid for one snapshot version.
//!
//! Every hostcall that returns bytes costs about a microsecond in V8 (the host calls back
//! into the VM to allocate them; see BENCHMARKS.md, "Hot path"), which is the whole budget
//! of a request over the empty-filter floor. So a worker reads a key record from shared
//! data once per snapshot version and serves later requests for that key from here.
//!
//! Invariants:
//! - every entry was read from shared data while the worker held `version`; the cache is
//!   emptied whenever the worker sees another version ([`KeyCache::sync`]), and the sync
//!   loop notifies every worker after a new version is written
//!   ([`crate::shared::notify_workers`]), so a revocation reaches every worker within
//!   microseconds, as it did when every request read shared data;
//! - an API key's [`Principal`] is built once per version and shared (`Rc`), so the
//!   allow path allocates nothing for it;
//! - absent keys are remembered too (so garbage ids cost one read per version), and the
//!   cache is bounded: when full it starts over, so memory never grows with the key set;
//! - nothing here holds a secret: records carry digests only.

use crate::host::Host;
use crate::shared::{jti_entry, SharedStore};
use keygate_core::ed25519_dalek::VerifyingKey;
use keygate_core::snapshot::{KeyRecord, KeyStore};
use keygate_core::verify::{api_key_principal, Principal};
use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

/// Entries a worker keeps before starting over (records are ~100 bytes).
pub const DEFAULT_CAPACITY: usize = 16_384;

/// A cached record and the principal an API key with this record authenticates as.
#[derive(Debug)]
pub struct Entry {
    pub record: KeyRecord,
    pub principal: Rc<Principal>,
}

/// Key records and token revocations read from shared data at one snapshot version.
#[derive(Debug)]
pub struct KeyCache {
    version: Option<u64>,
    records: HashMap<String, Option<Entry>>,
    revoked_jti: HashMap<String, bool>,
    cap: usize,
}

impl KeyCache {
    pub fn new(cap: usize) -> Self {
        Self {
            version: None,
            records: HashMap::new(),
            revoked_jti: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Drops everything when the worker's snapshot version is not the cached one.
    pub fn sync(&mut self, version: Option<u64>) {
        if self.version != version {
            self.version = version;
            self.records.clear();
            self.revoked_jti.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.records.len() + self.revoked_jti.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn make_room(&mut self) {
        if self.len() >= self.cap {
            self.records.clear();
            self.revoked_jti.clear();
        }
    }

    /// Makes sure key `id` is cached (one shared-data read on a miss).
    pub fn warm_key<H: Host + ?Sized>(&mut self, host: &H, id: &str) {
        self.key(host, id);
    }

    /// Key `id`'s record and API-key principal: from the cache, or read once per version.
    /// `None` when the snapshot has no such key.
    pub fn key<H: Host + ?Sized>(&mut self, host: &H, id: &str) -> Option<&Entry> {
        if !self.records.contains_key(id) {
            let entry = SharedStore { host, signing: &[] }.key(id).map(|rec| Entry {
                principal: Rc::new(api_key_principal(&rec)),
                record: rec.into_owned(),
            });
            self.make_room();
            self.records.insert(id.to_owned(), entry);
        }
        self.records.get(id).and_then(Option::as_ref)
    }

    /// Makes sure the revocation state of token id `jti` is cached.
    pub fn warm_jti<H: Host + ?Sized>(&mut self, host: &H, jti: &str) {
        if self.revoked_jti.contains_key(jti) {
            return;
        }
        let revoked = host.shared_get(&jti_entry(jti)).bytes().is_some();
        self.make_room();
        self.revoked_jti.insert(jti.to_owned(), revoked);
    }
}

/// [`KeyStore`] that answers from a worker's [`KeyCache`] and falls back to shared data
/// for anything not warmed (first-seen tokens, whose subject is known only after the
/// signature check).
pub struct LocalStore<'a, H: Host + ?Sized> {
    pub cache: &'a KeyCache,
    pub shared: SharedStore<'a, H>,
}

impl<'a, H: Host + ?Sized> LocalStore<'a, H> {
    pub fn new(host: &'a H, cache: &'a KeyCache, signing: &'a [(String, VerifyingKey)]) -> Self {
        Self {
            cache,
            shared: SharedStore { host, signing },
        }
    }
}

impl<H: Host + ?Sized> core::fmt::Debug for LocalStore<'_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalStore")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl<H: Host + ?Sized> KeyStore for LocalStore<'_, H> {
    fn key(&self, id: &str) -> Option<Cow<'_, KeyRecord>> {
        match self.cache.records.get(id) {
            Some(entry) => entry.as_ref().map(|e| Cow::Borrowed(&e.record)),
            None => self.shared.key(id),
        }
    }

    fn signing_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.shared.signing_key(kid)
    }

    fn token_revoked(&self, jti: &str) -> bool {
        match self.cache.revoked_jti.get(jti) {
            Some(revoked) => *revoked,
            None => self.shared.token_revoked(jti),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::*;
    use crate::shared::key_entry;

    #[test]
    fn records_are_read_once_per_version_and_absent_ones_too() {
        let host = MockHost::default();
        let (_, rec) = api_key(1);
        host.shared_set(&key_entry(&rec.id), &rec.to_bytes(), None)
            .unwrap();
        let mut c = KeyCache::new(8);
        c.sync(Some(1));
        c.warm_key(&host, &rec.id);
        c.warm_key(&host, "nosuchkey123");
        let reads = host.hostcalls.get();
        c.warm_key(&host, &rec.id);
        c.warm_key(&host, "nosuchkey123");
        assert_eq!(host.hostcalls.get(), reads, "warm twice reads once");
        let store = LocalStore::new(&host, &c, &[]);
        assert_eq!(store.key(&rec.id).map(Cow::into_owned), Some(rec.clone()));
        assert!(store.key("nosuchkey123").is_none());
        assert_eq!(host.hostcalls.get(), reads, "served from the cache");
        c.sync(Some(1));
        assert_eq!(c.len(), 2, "same version keeps entries");
        c.sync(Some(2));
        assert!(c.is_empty(), "a new version drops them");
    }

    #[test]
    fn the_cache_is_bounded() {
        let host = MockHost::default();
        let mut c = KeyCache::new(3);
        for i in 0..10 {
            c.warm_key(&host, &format!("id{i}"));
            assert!(c.len() <= 3);
        }
    }
}
