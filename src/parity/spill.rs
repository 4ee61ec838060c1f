//! The scan's two stores that grow with the ledger, kept in bounded memory
//! by spilling to unnamed temporary files (gone when the process ends,
//! however it ends):
//!
//! - [`HashColumn`]: the hash of every event of the files' chain, by seq,
//!   for the judge's duplicate/fork decisions and for the merge against
//!   the mirror. The last 64Ki hashes stay in memory (a ledger smaller
//!   than that never touches the disk); older ones are 32 bytes each in a
//!   temporary file, read back a block at a time.
//! - [`IdReuseFinder`]: every `(id, seq)`, sorted in runs of bounded size
//!   spilled to a temporary file, then merged: each id's first seq and
//!   every later use of it, exactly, in memory bounded by the run size and
//!   one read buffer per run.
//!
//! The files land in `$TMPDIR` (default `/tmp`): about 32 bytes per event
//! plus each id's length and 10 bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use crate::ledger::Hash;

/// Hashes kept in memory before they are written out (2 MiB).
const TAIL_HASHES: usize = 64 * 1024;
/// Hashes read back from the file at a time (128 KiB).
const READ_BLOCK: u64 = 4096;

/// The chain's hashes, seq by seq from the anchor.
#[derive(Debug, Default)]
pub struct HashColumn {
    anchor: Option<u64>,
    /// Hashes written to `file` (those of seqs anchor..anchor+spilled).
    spilled: u64,
    file: Option<File>,
    /// Hashes after the spilled ones.
    tail: Vec<Hash>,
    /// The last block read back: its first index and its hashes.
    block: Option<(u64, Vec<Hash>)>,
}

impl HashColumn {
    /// The seq of the first hash pushed.
    pub fn anchor(&self) -> Option<u64> {
        self.anchor
    }

    pub fn len(&self) -> u64 {
        self.spilled + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the hash of the next seq (the first push sets the anchor).
    pub fn push(&mut self, seq: u64, hash: Hash) -> std::io::Result<()> {
        let anchor = *self.anchor.get_or_insert(seq);
        debug_assert_eq!(seq, anchor + self.len());
        if self.tail.len() == TAIL_HASHES {
            self.spill()?;
        }
        self.tail.push(hash);
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(tempfile::tempfile()?),
        };
        let bytes: Vec<u8> = self.tail.iter().flat_map(|h| h.0).collect();
        file.write_all_at(&bytes, self.spilled * 32)?;
        self.spilled += self.tail.len() as u64;
        self.tail.clear();
        Ok(())
    }

    /// The hash at `seq`, if the chain holds it.
    pub fn get(&mut self, seq: u64) -> std::io::Result<Option<Hash>> {
        let Some(i) = self.anchor.and_then(|a| seq.checked_sub(a)) else {
            return Ok(None);
        };
        if i >= self.len() {
            return Ok(None);
        }
        if i >= self.spilled {
            return Ok(Some(self.tail[(i - self.spilled) as usize]));
        }
        let start = i - i % READ_BLOCK;
        if self.block.as_ref().map(|(s, _)| *s) != Some(start) {
            let count = READ_BLOCK.min(self.spilled - start) as usize;
            let mut bytes = vec![0u8; count * 32];
            let file = self.file.as_ref().expect("spilled hashes have a file");
            file.read_exact_at(&mut bytes, start * 32)?;
            let hashes = bytes
                .chunks_exact(32)
                .map(|c| Hash(c.try_into().expect("32-byte chunk")))
                .collect();
            self.block = Some((start, hashes));
        }
        let (start, hashes) = self.block.as_ref().expect("block just read");
        Ok(Some(hashes[(i - start) as usize]))
    }
}

/// The bytes of ids sorted in memory before a run is written (8 MiB), and
/// at most this many entries per run.
const RUN_BYTES: usize = 8 << 20;
const RUN_ENTRIES: usize = 256 * 1024;
/// Read buffer per run while merging.
const MERGE_BUFFER: usize = 16 * 1024;

/// One later use of an id: `seq` reuses the id first used at `first_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reuse {
    pub id: String,
    pub seq: u64,
    pub first_seq: u64,
}

/// What [`IdReuseFinder::finish`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reuses {
    /// Every later use of an id.
    pub total: u64,
    /// The earliest of them by seq, at most the limit asked for.
    pub first: Vec<Reuse>,
}

#[derive(Debug, Default)]
pub struct IdReuseFinder {
    arena: Vec<u8>,
    /// (start in arena, length, seq) of each id of the current run.
    entries: Vec<(u32, u16, u64)>,
    file: Option<BufWriter<File>>,
    /// (offset, records) of each run written.
    runs: Vec<(u64, u64)>,
    written: u64,
}

impl IdReuseFinder {
    /// Records that `seq` carries `id` (seqs arrive in increasing order).
    pub fn push(&mut self, id: &str, seq: u64) -> std::io::Result<()> {
        if self.arena.len() + id.len() > RUN_BYTES || self.entries.len() == RUN_ENTRIES {
            self.write_run()?;
        }
        // Ids are at most 256 bytes (contract §1.3); longer ones are
        // refused before they get here.
        let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        let start = u32::try_from(self.arena.len()).expect("run below 4 GiB");
        self.arena
            .extend_from_slice(&id.as_bytes()[..usize::from(len)]);
        self.entries.push((start, len, seq));
        Ok(())
    }

    fn id_of<'a>(arena: &'a [u8], entry: &(u32, u16, u64)) -> &'a [u8] {
        &arena[entry.0 as usize..entry.0 as usize + usize::from(entry.1)]
    }

    fn sort_run(&mut self) {
        let arena = &self.arena;
        // Stable: equal ids keep their (increasing) seq order.
        self.entries
            .sort_by(|a, b| Self::id_of(arena, a).cmp(Self::id_of(arena, b)));
    }

    fn write_run(&mut self) -> std::io::Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.sort_run();
        if self.file.is_none() {
            self.file = Some(BufWriter::with_capacity(
                MERGE_BUFFER * 4,
                tempfile::tempfile()?,
            ));
        }
        let out = self.file.as_mut().expect("run file just made");
        let start = self.written;
        for e in &self.entries {
            out.write_all(&e.1.to_le_bytes())?;
            out.write_all(Self::id_of(&self.arena, e))?;
            out.write_all(&e.2.to_le_bytes())?;
            self.written += 2 + u64::from(e.1) + 8;
        }
        self.runs.push((start, self.entries.len() as u64));
        self.arena.clear();
        self.entries.clear();
        Ok(())
    }

    /// Every reuse, counted, with the earliest `keep` by seq.
    pub fn finish(mut self, keep: usize) -> std::io::Result<Reuses> {
        let mut found = Collector::new(keep);
        if self.runs.is_empty() {
            // Everything fits in one run: no file.
            self.sort_run();
            let mut last: Option<(&[u8], u64)> = None;
            for e in &self.entries {
                let id = Self::id_of(&self.arena, e);
                match last {
                    Some((prev, first_seq)) if prev == id => found.add(id, e.2, first_seq),
                    _ => last = Some((id, e.2)),
                }
            }
            return Ok(found.done());
        }
        self.write_run()?;
        let file = self
            .file
            .take()
            .expect("runs were written")
            .into_inner()
            .map_err(|e| e.into_error())?;
        let file = std::sync::Arc::new(file);
        let mut readers = Vec::with_capacity(self.runs.len());
        for &(offset, records) in &self.runs {
            // Each run reads at its own offset (clones of a File would
            // share one).
            let at = ReadAt {
                file: file.clone(),
                offset,
            };
            readers.push(Run {
                reader: BufReader::with_capacity(MERGE_BUFFER, at),
                left: records,
            });
        }
        // A min-heap of each run's next record; across runs, equal ids
        // come out in seq order too (a later run holds later seqs).
        let mut heap = BinaryHeap::new();
        for (i, run) in readers.iter_mut().enumerate() {
            if let Some((id, seq)) = run.next()? {
                heap.push(Reverse((id, seq, i)));
            }
        }
        let mut last: Option<(Vec<u8>, u64)> = None;
        while let Some(Reverse((id, seq, i))) = heap.pop() {
            match &last {
                Some((prev, first_seq)) if *prev == id => found.add(&id, seq, *first_seq),
                _ => last = Some((id, seq)),
            }
            if let Some((id, seq)) = readers[i].next()? {
                heap.push(Reverse((id, seq, i)));
            }
        }
        Ok(found.done())
    }
}

/// A reader of a shared file from its own offset.
struct ReadAt {
    file: std::sync::Arc<File>,
    offset: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

struct Run {
    reader: BufReader<ReadAt>,
    left: u64,
}

impl Run {
    fn next(&mut self) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut len = [0u8; 2];
        self.reader.read_exact(&mut len)?;
        let mut id = vec![0u8; usize::from(u16::from_le_bytes(len))];
        self.reader.read_exact(&mut id)?;
        let mut seq = [0u8; 8];
        self.reader.read_exact(&mut seq)?;
        Ok(Some((id, u64::from_le_bytes(seq))))
    }
}

/// Counts reuses and keeps the `keep` earliest by seq (a max-heap on seq).
struct Collector {
    keep: usize,
    total: u64,
    heap: BinaryHeap<(u64, u64, Vec<u8>)>,
}

impl Collector {
    fn new(keep: usize) -> Collector {
        Collector {
            keep,
            total: 0,
            heap: BinaryHeap::new(),
        }
    }

    fn add(&mut self, id: &[u8], seq: u64, first_seq: u64) {
        self.total += 1;
        if self.keep == 0 {
            return;
        }
        if self.heap.len() < self.keep {
            self.heap.push((seq, first_seq, id.to_vec()));
        } else if self.heap.peek().is_some_and(|top| seq < top.0) {
            self.heap.pop();
            self.heap.push((seq, first_seq, id.to_vec()));
        }
    }

    fn done(self) -> Reuses {
        let mut first: Vec<Reuse> = self
            .heap
            .into_iter()
            .map(|(seq, first_seq, id)| Reuse {
                id: String::from_utf8_lossy(&id).into_owned(),
                seq,
                first_seq,
            })
            .collect();
        first.sort_by_key(|r| r.seq);
        Reuses {
            total: self.total,
            first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hash(n: u64) -> Hash {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&n.to_le_bytes());
        h[31] = 0xAB;
        Hash(h)
    }

    #[test]
    fn hash_column_answers_every_seq_across_spills() {
        let mut col = HashColumn::default();
        let anchor = 1_000;
        let n = TAIL_HASHES as u64 * 3 + 777;
        for i in 0..n {
            col.push(anchor + i, hash(i)).unwrap();
        }
        assert!(col.file.is_some(), "a long chain spills");
        assert_eq!(col.len(), n);
        assert_eq!(col.get(anchor - 1).unwrap(), None);
        assert_eq!(col.get(anchor + n).unwrap(), None);
        // In order (the merge), then scattered (duplicates far back).
        for i in 0..n {
            assert_eq!(col.get(anchor + i).unwrap(), Some(hash(i)), "seq {i}");
        }
        for i in [n - 1, 0, 5 * READ_BLOCK + 3, 17, n - TAIL_HASHES as u64 - 1] {
            assert_eq!(col.get(anchor + i).unwrap(), Some(hash(i)));
        }
    }

    #[test]
    fn a_short_chain_never_touches_the_disk() {
        let mut col = HashColumn::default();
        for i in 0..1000 {
            col.push(i, hash(i)).unwrap();
        }
        assert!(col.file.is_none());
        assert_eq!(col.get(999).unwrap(), Some(hash(999)));
    }

    /// The model: a map of first uses.
    fn model(ids: &[(String, u64)], keep: usize) -> Reuses {
        let mut first: HashMap<&str, u64> = HashMap::new();
        let mut all = Vec::new();
        for (id, seq) in ids {
            match first.get(id.as_str()) {
                Some(&f) => all.push(Reuse {
                    id: id.clone(),
                    seq: *seq,
                    first_seq: f,
                }),
                None => {
                    first.insert(id, *seq);
                }
            }
        }
        let total = all.len() as u64;
        all.truncate(keep);
        Reuses { total, first: all }
    }

    fn find(ids: &[(String, u64)], keep: usize) -> Reuses {
        let mut finder = IdReuseFinder::default();
        for (id, seq) in ids {
            finder.push(id, *seq).unwrap();
        }
        finder.finish(keep).unwrap()
    }

    #[test]
    fn reuses_found_exactly_in_memory_and_across_spilled_runs() {
        // Ids reused within a run, across runs, many times, and never.
        let n = RUN_ENTRIES as u64 * 2 + 999;
        let ids: Vec<(String, u64)> = (0..n)
            .map(|seq| {
                let id = match seq % 7 {
                    0 => format!("dup-{}", seq % 1000),
                    1 => "hot".to_owned(),
                    _ => format!("unique-{seq}"),
                };
                (id, seq)
            })
            .collect();
        let got = find(&ids, 100);
        assert_eq!(got, model(&ids, 100));
        assert!(got.total > 100_000);
        let small: Vec<_> = ids[..5000].to_vec();
        assert_eq!(find(&small, 10), model(&small, 10));
        assert_eq!(find(&[], 10), Reuses::default());
    }
}
