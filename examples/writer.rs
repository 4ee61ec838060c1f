//! Appending sealed events from Rust with `ledgertail::producer::Writer`.
//!
//!     cargo run --example writer -- ledger.jsonl [producer.key]
//!
//! Appends three events (signed when a key file from `ledgertail keygen`
//! is given) and prints each seq and hash.

use ledgertail::producer::{KeyFile, Writer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let ledger = args.next().unwrap_or_else(|| "ledger.jsonl".to_owned());
    let mut writer = Writer::new(&ledger);
    if let Some(key) = args.next() {
        writer = writer.with_key(KeyFile::load(key.as_ref())?);
    }
    // One event at a time: lock, find the head from the end, write, fsync.
    let first = writer.append("order.created", r#"{"order": 1, "total": "9.90"}"#)?;
    println!("seq {} hash {}", first.seq, first.hash);
    // Several under one lock and one fsync (still one write per line).
    for a in writer.append_batch("order.paid", &[r#"{"order": 1}"#, r#"{"order": 2}"#])? {
        println!("seq {} hash {}", a.seq, a.hash);
    }
    Ok(())
}
