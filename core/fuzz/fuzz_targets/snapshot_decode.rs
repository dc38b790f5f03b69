//! Snapshot envelopes from the network, checked against a pinned key; also the per-key
//! record encoding the filter keeps in shared data.
#![no_main]
use ed25519_dalek::VerifyingKey;
use keygate_core::snapshot::{self, KeyRecord, SnapshotSigner};
use std::sync::OnceLock;

static PINNED: OnceLock<[VerifyingKey; 1]> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let pinned = PINNED.get_or_init(|| [SnapshotSigner::from_seed([0x22; 32]).verifying_key()]);
    let _ = snapshot::decode(bytes, pinned, 1 << 20);
    let _ = KeyRecord::from_bytes(bytes);
});
