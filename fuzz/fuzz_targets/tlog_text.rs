//! The verifiable log's text parsers (`verify-proof` reads them from
//! anyone): signed notes, verifier keys, checkpoints, tlog-proof files and
//! add-checkpoint bodies. Whatever the text, no panic; what parses
//! formats back to text that parses to the same value.
#![no_main]

use ledgertail::ledger::note::{Note, VerifierKey};
use ledgertail::ledger::tlog::{AddCheckpoint, Checkpoint, InclusionProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(note) = Note::parse(text) {
        assert_eq!(Note::parse(&note.to_text()).as_ref(), Ok(&note));
    }
    if let Ok(c) = Checkpoint::parse(text) {
        assert_eq!(Checkpoint::parse(&c.body()).as_ref(), Ok(&c));
    }
    if let Ok(p) = InclusionProof::parse(text) {
        assert_eq!(InclusionProof::parse(&p.to_text()).as_ref(), Ok(&p));
    }
    if let Ok(b) = AddCheckpoint::parse(text) {
        assert_eq!(AddCheckpoint::parse(&b.to_text()).as_ref(), Ok(&b));
    }
    if let Ok(k) = VerifierKey::parse(text) {
        assert_eq!(VerifierKey::parse(&k.to_string()).as_ref(), Ok(&k));
    }
});
