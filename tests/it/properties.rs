//! Property tests over open-ended input: the parser and the judge never
//! panic, whatever the bytes; the parser is never laxer than serde_json;
//! and our canonical form agrees with an independent RFC 8785 crate.

use ledgertail::ledger::event::{seal_line, Draft};
use ledgertail::ledger::{jcs, json, judge_line, ChainRules, Hash, Head, KeyRing, SignaturePolicy};
use proptest::prelude::*;

fn keys() -> KeyRing {
    KeyRing::from_base64([("k1", "fOXe2311QGB9YYiojk7Du5uExN+PN9aa1XW3bmiMFTE=")]).unwrap()
}

fn judge_any(bytes: &[u8], head: Option<Head>, policy: SignaturePolicy) {
    let _ = judge_line(
        bytes,
        bytes.len() as u64,
        1 << 20,
        head.as_ref(),
        policy,
        &keys(),
        ChainRules::default(),
        |_| Some(Hash([1; 32])),
        &mut Vec::new(),
    );
}

fn valid_line(seq: u64) -> String {
    let payload = json::parse(r#"{"a":[1,2.5,"x\u00e9"],"b":{"c":null,"d":true}}"#).unwrap();
    let prev = (seq > 0).then_some(Hash([7; 32]));
    seal_line(
        &Draft {
            seq,
            prev_hash: prev,
            ts: "2026-11-21T10:00:00.5Z",
            event_type: "t",
            id: Some("id-1"),
            payload: &payload,
        },
        None,
    )
    .unwrap()
    .0
}

/// Arbitrary JSON values with safe numbers (what I-JSON allows).
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_judge_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400), seq in 0u64..10) {
        for policy in [SignaturePolicy::Off, SignaturePolicy::VerifyIfPresent, SignaturePolicy::Required] {
            judge_any(&bytes, None, policy);
            judge_any(&bytes, Some(Head { seq, hash: Hash([1; 32]) }), policy);
        }
    }

    #[test]
    fn the_judge_never_panics_on_mutated_events(
        seq in 0u64..5,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = valid_line(seq).into_bytes();
        for (at, byte, kind) in edits {
            let len = bytes.len();
            let i = at.index(len.max(1));
            match kind {
                0 if len > 0 => bytes[i.min(len - 1)] = byte,
                1 => bytes.insert(i.min(len), byte),
                _ if len > 0 => { bytes.remove(i.min(len - 1)); }
                _ => {}
            }
        }
        judge_any(&bytes, Some(Head { seq: seq.saturating_sub(1), hash: Hash([7; 32]) }), SignaturePolicy::VerifyIfPresent);
    }

    #[test]
    fn never_laxer_than_serde_json(text in "[\\[\\]{}:,\"0-9a-z.eE+\\- \\\\]{0,40}") {
        if json::parse(&text).is_ok() {
            prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "we accepted {text:?}");
        }
    }

    #[test]
    fn canonical_form_agrees_with_an_independent_crate(value in arb_json(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { serde_json::to_string(&value).unwrap() };
        let ours = jcs::canonicalize(&text).expect("serde_json's output is I-JSON here");
        let theirs = serde_json_canonicalizer::to_string(&value).unwrap();
        prop_assert_eq!(ours, theirs);
    }
}
