//! The ledgers the bench measures: payloads of a given size, chains
//! signed or not, written with the producer library.

use super::*;

/// One catch-up case.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) events: u64,
    pub(crate) payload_bytes: usize,
    pub(crate) signed: bool,
}

/// A payload of about `bytes` bytes of JSON (an order with a note).
pub(crate) fn payload(i: u64, bytes: usize) -> String {
    let head = format!(
        "{{\"order\":{i},\"customer\":\"c{:06}\",\"total\":{}.{:02},\"note\":\"",
        i % 50_000,
        i % 1000,
        i % 100
    );
    let pad = bytes.saturating_sub(head.len() + 2);
    let mut s = head;
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

pub(crate) fn generate(ledger: &Path, case: &Case, key: &KeyFile) {
    let _ = std::fs::remove_file(ledger);
    let started = Instant::now();
    let mut w = Writer::new(ledger).without_fsync();
    if case.signed {
        w = w.with_key(key.clone());
    }
    let mut i = 0;
    while i < case.events {
        let n = (case.events - i).min(1000);
        let payloads: Vec<String> = (i..i + n).map(|k| payload(k, case.payload_bytes)).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        w.append_batch("order.created", &refs).expect("generate");
        i += n;
    }
    eprintln!(
        "generated {} ({} events) in {:.1} s",
        ledger.display(),
        case.events,
        started.elapsed().as_secs_f64()
    );
}

/// A ledger of `n` unsigned events, each with an id (`order-<n>`, but one
/// in a thousand reuses the id of the event 500 before it).
pub(crate) fn generate_with_ids(ledger: &Path, n: u64) {
    use ledgertail::ledger::event::{seal_line, Draft};
    use std::io::Write as _;
    let started = Instant::now();
    let file = std::fs::File::create(ledger).expect("create ledger");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let ts = "2026-12-01T12:00:00.000000Z";
    let mut prev = None;
    for seq in 0..n {
        let text = payload(seq, 60);
        let value = ledgertail::ledger::json::parse(&text).expect("payload");
        let id = if seq % 1000 == 999 {
            format!("order-{}", seq - 500)
        } else {
            format!("order-{seq}")
        };
        let draft = Draft {
            seq,
            prev_hash: prev,
            ts,
            event_type: "order.created",
            id: Some(&id),
            payload: &value,
        };
        let (line, hash) = seal_line(&draft, None).expect("seal");
        out.write_all(line.as_bytes()).expect("write");
        out.write_all(b"\n").expect("write");
        prev = Some(hash);
    }
    out.flush().expect("flush");
    eprintln!(
        "generated {} ({n} events with ids) in {:.1} s",
        ledger.display(),
        started.elapsed().as_secs_f64()
    );
}
