//! Property tests: invariants that must hold for every input, not just the vectors.
//!
//! * Deltas: a random chain of states, shipped as one signed full snapshot followed by
//!   signed deltas (`Snapshot::diff` → `sign_delta` → `decode` → `MemStore::apply`), leaves
//!   the store holding exactly the full snapshot of the last state.
//! * API keys: generate → parse roundtrips; any single-character change, insertion or
//!   deletion is rejected before lookup.
//! * Snapshot decoding never panics, on random bytes or on mutations of a valid envelope,
//!   and rejects every mutation of a signed envelope (in particular every single-byte flip).

use ed25519_dalek::SigningKey;
use keygate_core::apikey::{ApiKey, KeyId, ParsedKey, KEY_LEN, PREFIX};
use keygate_core::codec::BASE32_ALPHABET;
use keygate_core::policy::{self, Policy, RouteSet};
use keygate_core::ratelimit::{Burst, Rate, RateSpec};
use keygate_core::snapshot::{
    self, KeyKind, KeyRecord, KeyStatus, MemStore, Payload, Previous, RevokedToken, SigningPub,
    Snapshot, SnapshotSigner,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const SNAPSHOT_SEED: [u8; 32] = [0x22; 32];
const MAX_LEN: usize = 1 << 20;

/// Few ids, so successive states share keys and deltas carry updates, not only inserts.
const IDS: &[&str] = &[
    "aaaaaaaaaaaa",
    "bbbbbbbbbbbb",
    "cccccccccccc",
    "dddddddddddd",
    "eeeeeeeeeeee",
    "ffffffffffff",
    "gggggggggggg",
    "hhhhhhhhhhhh",
];
const JTIS: &[&str] = &["j1", "j2", "j3", "j4", "j5", "j6"];
const PATTERNS: &[&str] = &["llama3*", "qwen3:8b", "*", "gpt-oss:120b-cloud", "me/m:1b"];

fn signing_pubs() -> Vec<SigningPub> {
    (1u8..=3)
        .map(|i| SigningPub {
            kid: format!("k{i}"),
            key: SigningKey::from_bytes(&[i; 32]).verifying_key().to_bytes(),
        })
        .collect()
}

fn rate() -> impl Strategy<Value = Rate> {
    (
        1u32..=1000,
        prop::sample::select(vec![1_000u32, 60_000, 3_600_000]),
        proptest::option::of(1u32..=1000),
    )
        .prop_map(|(count, period, burst)| {
            Rate::new(
                RateSpec::try_new(count, period).unwrap(),
                burst.map(|b| Burst::try_new(b).unwrap()),
            )
        })
}

fn record() -> impl Strategy<Value = KeyRecord> {
    (
        prop::sample::select(IDS),
        "[a-zA-Z0-9 ._-]{1,24}",
        any::<bool>(),
        any::<[u8; 32]>(),
        proptest::option::of((any::<[u8; 32]>(), 0i64..4_000_000_000)),
        any::<bool>(),
        proptest::option::of(0i64..4_000_000_000),
        1u8..8,
        prop::sample::subsequence(PATTERNS, 0..=PATTERNS.len()),
        proptest::option::of(rate()),
    )
        .prop_map(
            |(id, name, ollama, digest, previous, revoked, expires_at, routes, models, rate)| {
                KeyRecord {
                    id: id.to_owned(),
                    name,
                    kind: if ollama {
                        KeyKind::OllamaKey
                    } else {
                        KeyKind::ApiKey
                    },
                    digest,
                    previous: previous.map(|(digest, valid_until)| Previous {
                        digest,
                        valid_until,
                    }),
                    status: if revoked {
                        KeyStatus::Revoked
                    } else {
                        KeyStatus::Active
                    },
                    expires_at,
                    policy: Policy {
                        routes: RouteSet::from_bits(routes),
                        models: policy::parse_models(&models).unwrap(),
                        rate,
                    },
                }
            },
        )
}

/// One state without its version (versions are assigned along the chain).
fn state() -> impl Strategy<Value = Snapshot> {
    (
        prop::collection::vec(record(), 0..10),
        prop::collection::vec((prop::sample::select(JTIS), 0i64..4_000_000_000), 0..6),
        prop::sample::subsequence(signing_pubs(), 0..=3),
        0i64..4_000_000_000,
    )
        .prop_map(|(records, revoked, signing_keys, issued_at)| {
            // Unique ids and jtis (last wins), as keyd's tables guarantee.
            let keys: BTreeMap<String, KeyRecord> =
                records.into_iter().map(|r| (r.id.clone(), r)).collect();
            let revoked: BTreeMap<&str, i64> = revoked.into_iter().collect();
            let mut s = Snapshot {
                version: 0,
                issued_at,
                signing_keys,
                keys: keys.into_values().collect(),
                revoked_tokens: revoked
                    .into_iter()
                    .map(|(jti, exp)| RevokedToken {
                        jti: jti.to_owned(),
                        exp,
                    })
                    .collect(),
            };
            s.canonicalize();
            s
        })
}

/// A chain of states with strictly increasing versions.
fn chain() -> impl Strategy<Value = Vec<Snapshot>> {
    prop::collection::vec((state(), 1u64..5), 1..6).prop_map(|steps| {
        let mut version = 0;
        steps
            .into_iter()
            .map(|(mut s, gap)| {
                version += gap;
                s.version = version;
                s
            })
            .collect()
    })
}

fn signer() -> SnapshotSigner {
    SnapshotSigner::from_seed(SNAPSHOT_SEED)
}

/// A byte-level change to an envelope.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { len: usize },
    Insert { at: usize, byte: u8 },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Positions are taken modulo the envelope length when applied.
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

fn mutate(env: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = env.to_vec();
    match m {
        Mutation::Flip { at, xor } => b[at % env.len()] ^= xor,
        Mutation::Truncate { len } => b.truncate(len % env.len()),
        Mutation::Insert { at, byte } => b.insert(at % (env.len() + 1), *byte),
        Mutation::Overwrite { at, bytes } => {
            let at = at % env.len();
            for (slot, v) in b[at..].iter_mut().zip(bytes) {
                *slot = *v;
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deltas_in_order_yield_the_full_snapshot(states in chain()) {
        let s = signer();
        let pinned = [s.verifying_key()];
        let mut store = MemStore::new();
        let first = snapshot::decode(&s.sign_full(&states[0]), &pinned, MAX_LEN).unwrap();
        store.apply(first).unwrap();
        for pair in states.windows(2) {
            let delta = pair[0].diff(&pair[1]);
            let decoded = snapshot::decode(&s.sign_delta(&delta), &pinned, MAX_LEN).unwrap();
            prop_assert_eq!(&decoded, &Payload::Delta(delta));
            store.apply(decoded).unwrap();
        }
        let last = states.last().unwrap();
        prop_assert_eq!(&store.to_snapshot(), last);
        // And byte for byte: what the store would publish is what keyd signed.
        prop_assert_eq!(s.sign_full(&store.to_snapshot()), s.sign_full(last));
        let full = snapshot::decode(&s.sign_full(last), &pinned, MAX_LEN).unwrap();
        prop_assert_eq!(full, Payload::Full(last.clone()));
    }

    #[test]
    fn key_generate_parse_roundtrip(id_bytes in any::<[u8; 8]>(), secret in any::<[u8; 32]>()) {
        let id = KeyId::from_random(id_bytes);
        let key = ApiKey::generate(&id, secret);
        prop_assert_eq!(key.expose_secret().len(), KEY_LEN);
        prop_assert!(key.expose_secret().starts_with(PREFIX));
        let parsed = ParsedKey::parse(key.expose_secret()).unwrap();
        prop_assert_eq!(parsed.id(), id.as_str());
        prop_assert!(parsed.digest().ct_eq(&key.digest()));
        prop_assert_eq!(KeyId::parse(parsed.id()).unwrap(), id);
        let debug = format!("{:?}", key);
        prop_assert!(!debug.contains(&key.expose_secret()[16..]));
    }

    #[test]
    fn any_single_change_to_a_key_is_rejected(
        id_bytes in any::<[u8; 8]>(),
        secret in any::<[u8; 32]>(),
        at in 0usize..KEY_LEN,
        replacement in prop_oneof![
            prop::sample::select(BASE32_ALPHABET.iter().map(|&b| b as char).collect::<Vec<_>>()),
            any::<char>(),
        ],
        op in 0u8..3,
    ) {
        let key = ApiKey::generate(&KeyId::from_random(id_bytes), secret);
        let text = key.expose_secret();
        let mut chars: Vec<char> = text.chars().collect();
        match op {
            0 => chars[at] = replacement,
            1 => chars.insert(at, replacement),
            _ => { chars.remove(at); }
        }
        let changed: String = chars.into_iter().collect();
        prop_assume!(changed != text);
        prop_assert!(ParsedKey::parse(&changed).is_err(), "accepted {:?} (op {})", changed, op);
    }

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let pinned = [signer().verifying_key()];
        prop_assert!(snapshot::decode(&bytes, &pinned, MAX_LEN).is_err());
        // Also past the magic and format checks, into the length and signature parsing.
        let mut framed = b"KGSN\x01".to_vec();
        framed.extend_from_slice(&bytes);
        prop_assert!(snapshot::decode(&framed, &pinned, MAX_LEN).is_err());
        let _ = KeyRecord::from_bytes(&bytes);
    }

    #[test]
    fn decode_rejects_every_mutation_of_a_signed_envelope(
        s in state(),
        delta_base in proptest::option::of(state()),
        m in mutation(),
    ) {
        let signer = signer();
        let pinned = [signer.verifying_key()];
        let mut s = s;
        s.version = 7;
        let env = match delta_base {
            Some(mut base) => {
                base.version = 3;
                signer.sign_delta(&base.diff(&s))
            }
            None => signer.sign_full(&s),
        };
        prop_assert!(snapshot::decode(&env, &pinned, MAX_LEN).is_ok());
        let bad = mutate(&env, &m);
        prop_assume!(bad != env);
        prop_assert!(snapshot::decode(&bad, &pinned, MAX_LEN).is_err(), "{:?} accepted", m);
    }
}

/// Exhaustive for one envelope: every byte flipped with every bit pattern is rejected.
#[test]
fn every_single_byte_flip_of_an_envelope_is_rejected() {
    let s = signer();
    let pinned = [s.verifying_key()];
    let mut snap = Snapshot {
        version: 9,
        issued_at: 1_735_689_600,
        signing_keys: signing_pubs(),
        keys: vec![KeyRecord {
            id: "aaaaaaaaaaaa".into(),
            name: "alice".into(),
            kind: KeyKind::ApiKey,
            digest: [7; 32],
            previous: Some(Previous {
                digest: [8; 32],
                valid_until: 1_735_693_200,
            }),
            status: KeyStatus::Active,
            expires_at: Some(1_767_225_600),
            policy: Policy {
                routes: RouteSet::default_grant(),
                models: policy::parse_models(&["llama3*"]).unwrap(),
                rate: Some(Rate::new(RateSpec::parse("10/s").unwrap(), None)),
            },
        }],
        revoked_tokens: vec![RevokedToken {
            jti: "j1".into(),
            exp: 1_735_690_000,
        }],
    };
    snap.canonicalize();
    let env = s.sign_full(&snap);
    for at in 0..env.len() {
        for xor in [0x01u8, 0x80, 0xff] {
            let mut bad = env.clone();
            bad[at] ^= xor;
            assert!(
                snapshot::decode(&bad, &pinned, MAX_LEN).is_err(),
                "flip {xor:#04x} at byte {at} accepted"
            );
        }
    }
}

/// Exhaustive for a few keys: every position, every base32 character.
#[test]
fn every_base32_substitution_in_a_key_is_rejected() {
    for seed in 0u8..8 {
        let key = ApiKey::generate(&KeyId::from_random([seed; 8]), [seed ^ 0x5a; 32]);
        let text = key.expose_secret();
        for at in 0..text.len() {
            for &c in BASE32_ALPHABET.iter().chain(b"_-ABZ019") {
                let mut bytes = text.as_bytes().to_vec();
                if bytes[at] == c {
                    continue;
                }
                bytes[at] = c;
                let changed = String::from_utf8(bytes).unwrap();
                assert!(
                    ParsedKey::parse(&changed).is_err(),
                    "seed {seed}: {:?} at {at} accepted",
                    c as char
                );
            }
        }
    }
}
