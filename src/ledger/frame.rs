//! Framing: bytes → complete lines with their offsets (contract §1, §2).
//!
//! A line is complete once its LF is in the buffer; bytes after the last LF
//! are an unfinished write and are never returned, however long they wait,
//! and [`Framer::position`] (the resume point a checkpoint may record) never
//! passes them. A line longer than the limit is not buffered: once the
//! unfinished part exceeds the limit the framer keeps only its first
//! [`QUARANTINE_PREFIX`] bytes and counts the rest, and reports it as
//! [`Frame::TooLong`] when its LF arrives. Memory stays bounded by the limit
//! plus one read, whatever the input.
//!
//! The framer does no I/O: the caller reads into [`Framer::spare`] and
//! reports how much it read with [`Framer::filled`] (or copies with
//! [`Framer::push`]).

use memchr::memchr;

/// How many bytes of a refused line the quarantine keeps (contract §2.1).
pub const QUARANTINE_PREFIX: usize = 4096;

/// The longest line a ledger holds unless configured otherwise (1 MiB):
/// the producer refuses to write a longer one, the reader quarantines it
/// as `too_long`.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1024 * 1024;

/// One complete line (without its LF).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Line {
        offset: u64,
        bytes: &'a [u8],
    },
    /// Longer than the limit: its length and first bytes only.
    TooLong {
        offset: u64,
        length: u64,
        prefix: &'a [u8],
    },
}

impl Frame<'_> {
    pub fn offset(&self) -> u64 {
        match self {
            Frame::Line { offset, .. } | Frame::TooLong { offset, .. } => *offset,
        }
    }

    /// Bytes before the LF.
    pub fn length(&self) -> u64 {
        match self {
            Frame::Line { bytes, .. } => bytes.len() as u64,
            Frame::TooLong { length, .. } => *length,
        }
    }

    /// Offset just past this line's LF.
    pub fn end(&self) -> u64 {
        self.offset() + self.length() + 1
    }
}

/// A too-long line whose LF has not arrived yet.
#[derive(Debug)]
struct Discard {
    offset: u64,
    length: u64,
    prefix: Vec<u8>,
}

/// Incremental line framer over a byte stream that starts at a known offset.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// First byte not yet returned as part of a line.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
    /// Where the LF search resumes (bytes before it hold no LF).
    scan_from: usize,
    /// File offset of `buf[0]`.
    base: u64,
    max_line: u64,
    discard: Option<Discard>,
    /// Where `ready` found the next LF, for `next_frame` to use.
    found_lf: Option<usize>,
    /// Prefix of the last completed too-long line, lent out by `next_frame`.
    finished_prefix: Vec<u8>,
}

impl Framer {
    /// A framer whose first byte is at `offset` in the file.
    pub fn new(offset: u64, max_line_bytes: u64) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scan_from: 0,
            base: offset,
            max_line: max_line_bytes,
            discard: None,
            found_lf: None,
            finished_prefix: Vec::new(),
        }
    }

    /// Offset just after the last complete line returned: where reading
    /// would resume after a restart. Never inside an unfinished line.
    pub fn position(&self) -> u64 {
        match &self.discard {
            Some(d) => d.offset,
            None => self.base + self.start as u64,
        }
    }

    /// Offset just after the last byte given to the framer.
    pub fn read_offset(&self) -> u64 {
        self.base + self.end as u64
    }

    /// Bytes read but not yet part of a complete line.
    pub fn unfinished_len(&self) -> u64 {
        self.read_offset() - self.position()
    }

    /// Gives back a buffer larger than `keep` bytes, keeping the bytes not
    /// yet returned as lines (an unfinished line, normally none).
    pub fn trim(&mut self, keep: usize) {
        let held = self.end - self.start;
        if self.buf.len() <= keep || held > keep {
            return;
        }
        let mut smaller = Vec::with_capacity(keep);
        smaller.extend_from_slice(&self.buf[self.start..self.end]);
        self.base += self.start as u64;
        self.end = held;
        self.scan_from = self.scan_from.saturating_sub(self.start);
        if let Some(lf) = &mut self.found_lf {
            *lf = lf.saturating_sub(self.start);
        }
        self.start = 0;
        self.buf = smaller;
    }

    /// A writable region of at least `want` bytes for the next read.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.start >= self.buf.len() / 2) {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.scan_from -= self.start;
            if let Some(lf) = &mut self.found_lf {
                *lf -= self.start;
            }
            self.start = 0;
        }
        if self.buf.len() < self.end + want {
            self.buf.resize(self.end + want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into the region `spare` returned.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends bytes (a copy; readers use `spare`/`filled` instead).
    pub fn push(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled(bytes.len());
    }

    /// True when [`Framer::next_frame`] will return a line. When it will
    /// not, the unfinished bytes are examined once (and, past the limit,
    /// dropped but for their prefix), so calling this repeatedly is cheap.
    pub fn ready(&mut self) -> bool {
        if self.found_lf.is_some() {
            return true;
        }
        let from = self.scan_from.max(self.start);
        if let Some(i) = memchr(b'\n', &self.buf[from..self.end]) {
            self.found_lf = Some(from + i);
            return true;
        }
        self.scan_from = self.end;
        if self.discard.is_none() && (self.end - self.start) as u64 > self.max_line {
            self.discard = Some(Discard {
                offset: self.base + self.start as u64,
                length: 0,
                prefix: Vec::with_capacity(QUARANTINE_PREFIX),
            });
        }
        if let Some(d) = &mut self.discard {
            // Stop buffering: keep the prefix, count the rest.
            d.take(&self.buf[self.start..self.end]);
            self.start = self.end;
        }
        false
    }

    /// The next complete line, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if !self.ready() {
            return None;
        }
        let lf = self.found_lf.take()?;
        let line_start = self.start;
        self.start = lf + 1;
        self.scan_from = self.start;
        if let Some(mut d) = self.discard.take() {
            d.take(&self.buf[line_start..lf]);
            self.finished_prefix = d.prefix;
            return Some(Frame::TooLong {
                offset: d.offset,
                length: d.length,
                prefix: &self.finished_prefix,
            });
        }
        let offset = self.base + line_start as u64;
        let bytes = &self.buf[line_start..lf];
        if bytes.len() as u64 > self.max_line {
            Some(Frame::TooLong {
                offset,
                length: bytes.len() as u64,
                prefix: &bytes[..bytes.len().min(QUARANTINE_PREFIX)],
            })
        } else {
            Some(Frame::Line { offset, bytes })
        }
    }
}

impl Discard {
    /// Counts more bytes of the too-long line, keeping the prefix.
    fn take(&mut self, bytes: &[u8]) {
        let room = QUARANTINE_PREFIX
            .saturating_sub(self.prefix.len())
            .min(bytes.len());
        self.prefix.extend_from_slice(&bytes[..room]);
        self.length += bytes.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the framer returned, owned, for comparisons.
    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Owned {
        Line(u64, Vec<u8>),
        TooLong(u64, u64, Vec<u8>),
    }

    fn drain(f: &mut Framer, out: &mut Vec<Owned>) {
        while let Some(frame) = f.next_frame() {
            out.push(match frame {
                Frame::Line { offset, bytes } => Owned::Line(offset, bytes.to_vec()),
                Frame::TooLong {
                    offset,
                    length,
                    prefix,
                } => Owned::TooLong(offset, length, prefix.to_vec()),
            });
        }
    }

    fn frame_in_chunks(data: &[u8], cuts: &[usize], max: u64) -> (Vec<Owned>, u64) {
        let mut f = Framer::new(0, max);
        let mut out = Vec::new();
        let mut prev = 0;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            let cut = cut.clamp(prev, data.len());
            f.push(&data[prev..cut]);
            drain(&mut f, &mut out);
            prev = cut;
        }
        (out, f.position())
    }

    /// The model: split at every LF of the whole input.
    fn model(data: &[u8], max: u64) -> (Vec<Owned>, u64) {
        let mut out = Vec::new();
        let mut offset = 0u64;
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..i];
            out.push(if line.len() as u64 > max {
                Owned::TooLong(offset, i as u64, line[..i.min(QUARANTINE_PREFIX)].to_vec())
            } else {
                Owned::Line(offset, line.to_vec())
            });
            offset += i as u64 + 1;
            rest = &rest[i + 1..];
        }
        (out, offset)
    }

    #[test]
    fn complete_lines_only() {
        let (lines, pos) = frame_in_chunks(b"a\nbb\r\n\ncc", &[], 100);
        assert_eq!(
            lines,
            [
                Owned::Line(0, b"a".to_vec()),
                Owned::Line(2, b"bb\r".to_vec()),
                Owned::Line(6, b"".to_vec())
            ]
        );
        assert_eq!(pos, 7, "the unfinished `cc` is never passed");
    }

    #[test]
    fn too_long_line_is_reported_once_complete_without_buffering_it() {
        let mut f = Framer::new(100, 10);
        let mut out = Vec::new();
        f.push(b"ok\n");
        for _ in 0..1000 {
            f.push(&[b'x'; 1000]);
            drain(&mut f, &mut out);
            assert!(f.buf.len() < 4 * 1024, "buffer grew to {}", f.buf.len());
        }
        assert_eq!(
            f.position(),
            103,
            "resume point stays at the long line's start"
        );
        f.push(b"\nnext\n");
        drain(&mut f, &mut out);
        assert_eq!(out[0], Owned::Line(100, b"ok".to_vec()));
        match &out[1] {
            Owned::TooLong(offset, length, prefix) => {
                assert_eq!(
                    (*offset, *length, prefix.len()),
                    (103, 1_000_000, QUARANTINE_PREFIX)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[2], Owned::Line(1_000_104, b"next".to_vec()));
    }

    #[test]
    fn trimming_keeps_the_unfinished_line_and_the_offsets() {
        let mut f = Framer::new(50, 1000);
        let mut out = Vec::new();
        let mut big = vec![b'a'; 300];
        big.push(b'\n');
        for _ in 0..100 {
            f.push(&big);
        }
        f.push(b"unfin");
        drain(&mut f, &mut out);
        assert_eq!(out.len(), 100);
        assert!(f.buf.len() >= 30_000);
        f.trim(64);
        assert!(f.buf.capacity() <= 64, "the big buffer is gone");
        assert_eq!(f.position(), 50 + 100 * 301);
        f.push(b"ished\nnext\n");
        drain(&mut f, &mut out);
        assert_eq!(
            out[100],
            Owned::Line(50 + 100 * 301, b"unfinished".to_vec())
        );
        assert_eq!(out[101], Owned::Line(50 + 100 * 301 + 11, b"next".to_vec()));
        // Nothing is dropped when more than `keep` is still unfinished.
        f.push(&[b'z'; 100]);
        f.trim(64);
        f.push(b"\n");
        drain(&mut f, &mut out);
        assert_eq!(out[102], Owned::Line(50 + 100 * 301 + 16, vec![b'z'; 100]));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_a_line() {
        let (lines, _) = frame_in_chunks(b"12345\n123456\n", &[2, 4], 5);
        assert_eq!(lines[0], Owned::Line(0, b"12345".to_vec()));
        assert!(matches!(lines[1], Owned::TooLong(6, 6, _)));
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines_and_offsets(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r'), any::<u8>()], 0..600),
            mut cuts in proptest::collection::vec(0usize..600, 0..20),
            max in 0u64..40,
        ) {
            cuts.sort_unstable();
            let got = frame_in_chunks(&data, &cuts, max);
            let want = model(&data, max);
            prop_assert_eq!(&got.0, &want.0);
            prop_assert_eq!(got.1, want.1);
            // Each line's offset + length + 1 is the next line's offset.
            for pair in got.0.windows(2) {
                let end = match &pair[0] { Owned::Line(o, b) => o + b.len() as u64 + 1, Owned::TooLong(o, l, _) => o + l + 1 };
                let next = match &pair[1] { Owned::Line(o, _) | Owned::TooLong(o, _, _) => *o };
                prop_assert_eq!(end, next);
            }
        }
    }
}
