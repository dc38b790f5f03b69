//! Bearer tokens: header/claims parsing and signature checks against a fixed key set.
#![no_main]
use keygate_core::token::{self, TokenSigner, VerifyOptions};
use std::sync::OnceLock;

static KEYS: OnceLock<Vec<(String, ed25519_dalek::VerifyingKey)>> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|text: &str| {
    let keys = KEYS.get_or_init(|| {
        vec![(
            "k1".into(),
            TokenSigner::from_seed("k1", [0x11; 32]).verifying_key(),
        )]
    });
    let _ = token::verify(text, keys, &VerifyOptions::new(1_735_689_600));
});
