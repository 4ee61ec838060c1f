//! The verifier pool: examines lines (parse, canonicalize, hash, strict
//! signature check: [`examine`]) on worker threads, so that verification
//! runs beside the SQLite writer instead of before it, and signatures use
//! every core.
//!
//! The shipper cuts lines into [`Chunk`]s and hands them out round-robin;
//! each worker answers its chunks in the order it got them, so taking the
//! answers round-robin gives the chunks back in file order. The number of
//! chunks in flight is bounded by the caller, so memory is too. Placing the
//! examined lines against the head stays with the shipper: it is
//! sequential by nature and cheap.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::ledger::{examine_each, Examined, KeyRing, SignaturePolicy};
use crate::tail::FileId;

/// How lines are examined (one snapshot per chunk, so a reload never
/// splits a chunk between two key sets).
#[derive(Debug, Clone)]
pub struct Rules {
    pub policy: SignaturePolicy,
    pub keys: KeyRing,
    pub max_line_bytes: u64,
}

/// One line of a chunk: where it is in the ledger, where its bytes are in
/// the chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLine {
    pub file: FileId,
    pub offset: u64,
    /// Bytes before the LF (a too-long line keeps only its first bytes).
    pub length: u64,
    start: usize,
    end: usize,
    /// When the bytes were read from disk.
    pub read_at: Instant,
}

impl ChunkLine {
    /// Offset just past the line's LF.
    pub fn end_offset(&self) -> u64 {
        self.offset + self.length + 1
    }
}

/// Lines on their way to be examined, and back with the results.
#[derive(Debug, Default)]
pub struct Chunk {
    bytes: Vec<u8>,
    pub lines: Vec<ChunkLine>,
    pub results: Vec<Examined>,
}

impl Chunk {
    /// Adds a line; its read time is set by [`Chunk::stamp_last`].
    pub fn push(&mut self, file: FileId, offset: u64, length: u64, bytes: &[u8]) {
        let read_at = Instant::now();
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.lines.push(ChunkLine {
            file,
            offset,
            length,
            start,
            end: self.bytes.len(),
            read_at,
        });
    }

    /// Sets when the last line's bytes were read from disk.
    pub fn stamp_last(&mut self, read_at: Instant) {
        if let Some(l) = self.lines.last_mut() {
            l.read_at = read_at;
        }
    }

    /// The bytes of line `i` (the first bytes only, for a too-long line).
    pub fn line(&self, i: usize) -> &[u8] {
        let l = &self.lines[i];
        &self.bytes[l.start..l.end]
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes held (for the caller's bound).
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.lines.clear();
        self.results.clear();
    }

    fn examine_all(&mut self, rules: &Rules, scratch: &mut Vec<u8>) {
        self.results.clear();
        let bytes = &self.bytes;
        examine_each(
            self.lines
                .iter()
                .map(|l| (&bytes[l.start..l.end], l.length)),
            rules.max_line_bytes,
            rules.policy,
            &rules.keys,
            scratch,
            &mut self.results,
        );
    }
}

struct Worker {
    to: Sender<(Chunk, Arc<Rules>)>,
    from: Receiver<Chunk>,
    handle: Option<JoinHandle<()>>,
}

/// A pool of threads examining chunks; answers come back in send order.
pub struct Verifiers {
    workers: Vec<Worker>,
    next_send: usize,
    next_recv: usize,
    in_flight: usize,
    spare: Vec<Chunk>,
}

/// A verifier thread died (a bug: examining never panics on input).
#[derive(Debug, thiserror::Error)]
#[error("a verifier thread stopped unexpectedly")]
pub struct PoolBroken;

impl Verifiers {
    /// A pool of `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Verifiers> {
        let mut workers = Vec::new();
        for n in 0..threads.max(1) {
            let (to, inbox) = mpsc::channel::<(Chunk, Arc<Rules>)>();
            let (outbox, from) = mpsc::channel::<Chunk>();
            let handle = std::thread::Builder::new()
                .name(format!("verify-{n}"))
                .spawn(move || {
                    let mut scratch = Vec::with_capacity(4096);
                    while let Ok((mut chunk, rules)) = inbox.recv() {
                        chunk.examine_all(&rules, &mut scratch);
                        if outbox.send(chunk).is_err() {
                            return;
                        }
                    }
                })?;
            workers.push(Worker {
                to,
                from,
                handle: Some(handle),
            });
        }
        Ok(Verifiers {
            workers,
            next_send: 0,
            next_recv: 0,
            in_flight: 0,
            spare: Vec::new(),
        })
    }

    /// One thread per core.
    pub fn per_core() -> std::io::Result<Verifiers> {
        Verifiers::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// An empty chunk (reusing the buffers of chunks given back).
    pub fn chunk(&mut self) -> Chunk {
        self.spare.pop().unwrap_or_default()
    }

    /// Gives a consumed chunk back for reuse.
    pub fn recycle(&mut self, mut chunk: Chunk) {
        chunk.clear();
        // A chunk that held one huge line keeps no huge buffer.
        if chunk.bytes.capacity() <= 4 << 20 && self.spare.len() < 2 * self.workers.len() + 2 {
            self.spare.push(chunk);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn send(&mut self, chunk: Chunk, rules: &Arc<Rules>) -> Result<(), PoolBroken> {
        let w = &self.workers[self.next_send];
        w.to.send((chunk, rules.clone())).map_err(|_| PoolBroken)?;
        self.next_send = (self.next_send + 1) % self.workers.len();
        self.in_flight += 1;
        Ok(())
    }

    /// The oldest chunk in flight, examined; `None` when none is in flight.
    pub fn recv(&mut self) -> Result<Option<Chunk>, PoolBroken> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let w = &self.workers[self.next_recv];
        let chunk = w.from.recv().map_err(|_| PoolBroken)?;
        self.next_recv = (self.next_recv + 1) % self.workers.len();
        self.in_flight -= 1;
        Ok(Some(chunk))
    }

    /// Drops every answer still in flight (after a halt or a stop).
    pub fn discard(&mut self) -> Result<(), PoolBroken> {
        while let Some(c) = self.recv()? {
            self.recycle(c);
        }
        Ok(())
    }
}

impl Drop for Verifiers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // Closing the inbox ends the thread's loop.
            let (dead, _) = mpsc::channel();
            drop(std::mem::replace(&mut w.to, dead));
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Arc<Rules> {
        Arc::new(Rules {
            policy: SignaturePolicy::VerifyIfPresent,
            keys: KeyRing::default(),
            max_line_bytes: 100,
        })
    }

    #[test]
    fn answers_come_back_in_send_order_with_one_result_per_line() {
        let mut pool = Verifiers::new(3).unwrap();
        let id = FileId {
            dev: 1,
            ino: 2,
            fingerprint: None,
        };
        let now = Instant::now();
        for n in 0..10u64 {
            let mut c = pool.chunk();
            for i in 0..=n {
                c.push(id, n * 1000 + i, 3, b"   ");
                c.stamp_last(now);
            }
            c.push(id, n * 1000 + 99, 500, b"{\"x\":");
            pool.send(c, &rules()).unwrap();
        }
        for n in 0..10u64 {
            let c = pool.recv().unwrap().unwrap();
            assert_eq!(c.lines[0].offset, n * 1000);
            assert_eq!(c.results.len(), c.len());
            assert_eq!(c.results.len() as u64, n + 2);
            assert!(matches!(c.results[0], Examined::Blank));
            assert!(
                matches!(c.results.last(), Some(Examined::Refused(r)) if r.verdict == crate::ledger::Verdict::TooLong)
            );
            pool.recycle(c);
        }
        assert!(pool.recv().unwrap().is_none());
    }
}
