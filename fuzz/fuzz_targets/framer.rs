//! The framer fed arbitrary chunkings of arbitrary bytes, through both of
//! its ways in (`push`, and `spare` + `filled` with short reads), asking
//! `ready` and `trim` at random: it must return exactly the complete lines of the
//! whole input, in order, at their offsets, with every line past the limit
//! reported as too long with its length and first bytes; it must never
//! return the unfinished tail, and its resume position must be just past
//! the last LF.
#![no_main]

use ledgertail::ledger::frame::{Frame, Framer, QUARANTINE_PREFIX};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Line(u64, Vec<u8>),
    TooLong(u64, u64, Vec<u8>),
}

fn owned(frame: Frame<'_>) -> Owned {
    match frame {
        Frame::Line { offset, bytes } => Owned::Line(offset, bytes.to_vec()),
        Frame::TooLong {
            offset,
            length,
            prefix,
        } => Owned::TooLong(offset, length, prefix.to_vec()),
    }
}

/// The model: split the whole input at every LF.
fn model(base: u64, data: &[u8], max: u64) -> (Vec<Owned>, u64) {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in data.iter().enumerate().filter(|(_, &b)| b == b'\n') {
        let line = &data[start..i];
        let offset = base + start as u64;
        out.push(if line.len() as u64 > max {
            Owned::TooLong(
                offset,
                line.len() as u64,
                line[..line.len().min(QUARANTINE_PREFIX)].to_vec(),
            )
        } else {
            Owned::Line(offset, line.to_vec())
        });
        start = i + 1;
    }
    (out, base + start as u64)
}

/// A small deterministic generator driven by the input's first bytes.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 10 {
        return;
    }
    let (head, data) = input.split_at(10);
    let max = u64::from(u16::from_le_bytes([head[0], head[1]])) % 5000;
    let base = u64::from(u32::from_le_bytes([head[2], head[3], head[4], head[5]]));
    let mut dice = Dice(u64::from(u32::from_le_bytes([head[6], head[7], head[8], head[9]])) | 1);

    let mut framer = Framer::new(base, max);
    let mut got = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let chunk = (1 + dice.next() % 64).min((data.len() - at) as u64) as usize;
        if dice.next() % 2 == 0 {
            framer.push(&data[at..at + chunk]);
            at += chunk;
        } else {
            // A read into spare room that fills less than it asked for.
            let want = chunk + (dice.next() % 32) as usize;
            let room = framer.spare(want);
            assert!(room.len() >= want);
            room[..chunk].copy_from_slice(&data[at..at + chunk]);
            framer.filled(chunk);
            at += chunk;
        }
        assert_eq!(framer.read_offset(), base + at as u64);
        if dice.next() % 3 == 0 {
            let _ = framer.ready();
        }
        // Giving the buffer back (as a caught-up tailer does) loses nothing.
        if dice.next() % 5 == 0 {
            framer.trim((dice.next() % 256) as usize);
        }
        while let Some(frame) = framer.next_frame() {
            got.push(owned(frame));
        }
        // The resume point never passes an unfinished line.
        let last_lf = data[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        assert_eq!(framer.position(), base + last_lf as u64);
    }
    let (want, position) = model(base, data, max);
    assert_eq!(got, want);
    assert_eq!(framer.position(), position);
});
