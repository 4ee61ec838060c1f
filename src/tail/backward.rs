//! Reading a ledger file back from its end: the last authentic event of a
//! file (the producer's head, the sidecar's estimate of the ledger's head)
//! without reading the whole file.
//!
//! LFs are looked for block by block from the end, keeping no bytes; a
//! complete line is read (once, with one positioned read) only when it is
//! short enough to be an event, so the cost is linear in the bytes looked
//! at and memory is bounded by `max_line_bytes`, whatever the file holds.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::ledger::{authenticate, Head, KeyRing, SignaturePolicy};

const BLOCK: usize = 64 * 1024;

/// The last line of `file` (its first `len` bytes) that is an authentic
/// event under `policy` and `keys`; lines longer than `max_line_bytes` and
/// bytes after the last LF (an unfinished line) are skipped.
pub fn last_authentic(
    file: &File,
    len: u64,
    policy: SignaturePolicy,
    keys: &KeyRing,
    max_line_bytes: u64,
) -> io::Result<Option<Head>> {
    let mut block = vec![0u8; BLOCK];
    let mut line = Vec::new();
    let mut scratch = Vec::new();
    // The LF that ends the line being delimited, once one was seen.
    let mut line_end: Option<u64> = None;
    let mut end = len;
    let mut check = |start: u64, lf: u64, line: &mut Vec<u8>| -> io::Result<Option<Head>> {
        let length = lf - start;
        if length == 0 || length > max_line_bytes {
            return Ok(None);
        }
        line.resize(length as usize, 0);
        file.read_exact_at(line, start)?;
        Ok(authenticate(line, policy, keys, &mut scratch)
            .ok()
            .map(|ev| Head {
                seq: ev.seq,
                hash: ev.hash,
            }))
    };
    while end > 0 {
        let start = end.saturating_sub(BLOCK as u64);
        let buf = &mut block[..(end - start) as usize];
        file.read_exact_at(buf, start)?;
        let mut upto = buf.len();
        while let Some(i) = memchr::memrchr(b'\n', &buf[..upto]) {
            let lf = start + i as u64;
            if let Some(e) = line_end {
                if let Some(head) = check(lf + 1, e, &mut line)? {
                    return Ok(Some(head));
                }
            }
            line_end = Some(lf);
            upto = i;
        }
        end = start;
    }
    match line_end {
        Some(e) => check(0, e, &mut line),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::{seal_line, Draft};
    use crate::ledger::{json, Hash};
    use std::io::Write;

    fn event(seq: u64) -> String {
        let payload = json::parse("1").unwrap();
        let (line, _) = seal_line(
            &Draft {
                seq,
                prev_hash: (seq > 0).then_some(Hash([7; 32])),
                ts: "2026-01-01T00:00:00Z",
                event_type: "t",
                id: None,
                payload: &payload,
            },
            None,
        )
        .unwrap();
        line
    }

    fn last(content: &[u8], max: u64) -> Option<u64> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        last_authentic(
            &f,
            content.len() as u64,
            SignaturePolicy::Off,
            &KeyRing::default(),
            max,
        )
        .unwrap()
        .map(|h| h.seq)
    }

    #[test]
    fn the_last_authentic_complete_line_wins() {
        let text = format!("{}\n{}\ngarbage\n\n{{\"half", event(0), event(1));
        assert_eq!(last(text.as_bytes(), 1 << 20), Some(1));
        assert_eq!(
            last(event(0).as_bytes(), 1 << 20),
            None,
            "no LF: unfinished"
        );
        assert_eq!(last(format!("{}\n", event(7)).as_bytes(), 1 << 20), Some(7));
        assert_eq!(last(b"", 1 << 20), None);
        assert_eq!(last(b"\n\n", 1 << 20), None);
    }

    #[test]
    fn long_lines_are_skipped_and_lines_across_blocks_are_read_whole() {
        let long = "x".repeat(3 * BLOCK);
        let text = format!("{}\n{long}\n", event(4));
        assert_eq!(last(text.as_bytes(), 1 << 20), Some(4));
        // An event that straddles block boundaries, padded to do so.
        let pad = " ".repeat(BLOCK - 10);
        let text = format!("{}\n{pad}{}\n{}", event(5), event(6), "y".repeat(BLOCK));
        assert_eq!(last(text.as_bytes(), 1 << 20), Some(6));
        // Over the limit: not an event, whatever it holds.
        let text = format!("{}\n{}\n", event(1), event(2));
        assert_eq!(last(text.as_bytes(), 10), None);
    }
}
