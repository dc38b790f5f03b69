//! The payload parser behind the signature: random bytes are signed as a full snapshot or
//! a delta (what a compromised or buggy keyd could send), then decoded and applied.
//! libFuzzer cannot forge signatures, so without this the payload parser is unreachable.
#![no_main]
use ed25519_dalek::{Signer as _, SigningKey};
use keygate_core::snapshot::{self, MemStore};
use std::sync::OnceLock;

static KEY: OnceLock<SigningKey> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|input: (bool, &[u8])| {
    let (delta, payload) = input;
    let key = KEY.get_or_init(|| SigningKey::from_bytes(&[0x22; 32]));
    let mut env = b"KGSN\x01".to_vec();
    env.push(u8::from(delta));
    env.extend_from_slice(&snapshot::fingerprint(&key.verifying_key()));
    env.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    env.extend_from_slice(payload);
    let sig = key.sign(&env);
    env.extend_from_slice(&sig.to_bytes());
    if let Ok(p) = snapshot::decode(&env, &[key.verifying_key()], 1 << 20) {
        let _ = MemStore::new().apply(p);
    }
});
