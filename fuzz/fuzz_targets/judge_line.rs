//! Fuzzes the line judge: any bytes, against no head and against a head,
//! under every signature policy. It must never panic; and whatever
//! authenticates must re-canonicalize to the hash it claims.
#![no_main]

use ledgertail::ledger::{
    authenticate, judge_line, ChainRules, Hash, Head, KeyRing, SignaturePolicy,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys =
        KeyRing::from_base64([("k1", "fOXe2311QGB9YYiojk7Du5uExN+PN9aa1XW3bmiMFTE=")]).unwrap();
    let head = Head {
        seq: 3,
        hash: Hash([1; 32]),
    };
    let mut scratch = Vec::new();
    for policy in [
        SignaturePolicy::Off,
        SignaturePolicy::VerifyIfPresent,
        SignaturePolicy::Required,
    ] {
        for h in [None, Some(&head)] {
            let _ = judge_line(
                data,
                data.len() as u64,
                1 << 20,
                h,
                policy,
                &keys,
                ChainRules::default(),
                |_| Some(Hash([2; 32])),
                &mut scratch,
            );
        }
    }
    if let Ok(event) = authenticate(data, SignaturePolicy::Off, &keys, &mut scratch) {
        assert_eq!(ledgertail::ledger::seal::event_hash(&scratch), event.hash);
    }
});
