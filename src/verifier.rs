//! The verifier pool: examines lines (parse, canonicalize, hash, strict
//! signature check: [`examine`]) on worker threads, so that verification
//! runs beside the SQLite writer instead of before it, and signatures use
//! every core.
//!
//! One [`Pool`] of threads serves every ledger of a `run` (threads bounded
//! by the cores, not by the ledgers). Each ledger's [`Verifiers`] numbers
//! the [`Chunk`]s it sends and takes the answers back in that order, so
//! lines come back in file order. The number of chunks in flight is
//! bounded by the caller, so memory is too. Placing the
//! examined lines against the head stays with the shipper: it is
//! sequential by nature and cheap.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::ledger::{adopt, examine_each, Examined, KeyRing, SignaturePolicy};
use crate::tail::FileId;

/// How lines are examined (one snapshot per chunk, so a reload never
/// splits a chunk between two key sets).
#[derive(Debug, Clone)]
pub struct Rules {
    pub policy: SignaturePolicy,
    pub keys: KeyRing,
    pub max_line_bytes: u64,
    /// A plain ledger's lines are adopted ([`crate::ledger::examine_plain`]), not
    /// authenticated.
    pub plain: Option<adopt::Fields>,
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
    /// The wall clock when the first line was pushed, with the monotonic
    /// clock then: a line's read time as a date (an adopted line's `ts`
    /// when it names none) without a clock read per line.
    wall: Option<(Instant, i64)>,
}

impl Chunk {
    /// Adds a line; its read time is set by [`Chunk::stamp_last`].
    pub fn push(&mut self, file: FileId, offset: u64, length: u64, bytes: &[u8]) {
        let read_at = Instant::now();
        self.wall
            .get_or_insert_with(|| (read_at, epoch_millis_now()));
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
        self.wall = None;
    }

    /// When line `i` was read, in milliseconds since 1970.
    fn read_at_millis(&self, i: usize) -> i64 {
        let Some((origin, millis)) = self.wall else {
            return epoch_millis_now();
        };
        let at = self.lines[i].read_at;
        let after = at.saturating_duration_since(origin).as_millis() as i64;
        let before = origin.saturating_duration_since(at).as_millis() as i64;
        millis + after - before
    }

    fn examine_all(&mut self, rules: &Rules, scratch: &mut Vec<u8>) {
        self.results.clear();
        if let Some(fields) = &rules.plain {
            for i in 0..self.lines.len() {
                let examined = crate::ledger::examine_plain(
                    self.line(i),
                    self.lines[i].length,
                    rules.max_line_bytes,
                    fields,
                    self.read_at_millis(i),
                    scratch,
                );
                self.results.push(examined);
            }
            return;
        }
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

/// The wall clock in milliseconds since 1970 (0 for a clock before it).
fn epoch_millis_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A chunk on its way to a verifier thread, with where to answer.
struct Job {
    number: u64,
    chunk: Chunk,
    rules: Arc<Rules>,
    reply: Sender<(u64, Chunk)>,
}

struct PoolInner {
    /// `None` once the pool is shutting down.
    jobs: Mutex<Option<Sender<Job>>>,
    threads: usize,
    /// Buffers of chunks given back, shared by every client.
    spare: Mutex<Vec<Chunk>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Closing the queue ends every thread's loop.
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let handles =
            std::mem::take(&mut *self.handles.lock().unwrap_or_else(PoisonError::into_inner));
        for h in handles {
            let _ = h.join();
        }
    }
}

/// Verifier threads shared by any number of ledgers: one queue, answered
/// to each ledger on its own channel. Cloning shares the threads; they end
/// when the last clone (and every [`Verifiers`] on it) is dropped.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    /// A pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut handles = Vec::new();
        for n in 0..threads {
            let queue = queue.clone();
            let handle = std::thread::Builder::new()
                .name(format!("verify-{n}"))
                .spawn(move || {
                    let mut scratch = Vec::with_capacity(4096);
                    loop {
                        // One thread waits on the queue, the others on the
                        // lock: the classic shared-receiver pool.
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(mut job) = job else { return };
                        job.chunk.examine_all(&job.rules, &mut scratch);
                        // A client that went away no longer wants its answer.
                        let _ = job.reply.send((job.number, job.chunk));
                    }
                })?;
            handles.push(handle);
        }
        Ok(Pool {
            inner: Arc::new(PoolInner {
                jobs: Mutex::new(Some(jobs)),
                threads,
                spare: Mutex::new(Vec::new()),
                handles: Mutex::new(handles),
            }),
        })
    }

    /// One thread per core.
    pub fn per_core() -> std::io::Result<Pool> {
        Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// The buffers of chunks given back, shared by every client.
    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<Chunk>> {
        self.inner
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(&self, job: Job) -> Result<(), PoolBroken> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        jobs.as_ref()
            .ok_or(PoolBroken)?
            .send(job)
            .map_err(|_| PoolBroken)
    }
}

/// Lines at most this many, when nothing else is in flight and no more
/// are to be read, are examined on the caller's thread: a live ledger's
/// one or two new lines cost no hand-over to another thread.
const EXAMINE_HERE_LINES: usize = 16;

/// One ledger's use of a [`Pool`]: its chunks answered in the order sent.
pub struct Verifiers {
    pool: Pool,
    reply_to: Sender<(u64, Chunk)>,
    replies: Receiver<(u64, Chunk)>,
    next_send: u64,
    next_recv: u64,
    /// Answers that came back before an older one.
    early: BTreeMap<u64, Chunk>,
    scratch: Vec<u8>,
}

/// A verifier thread died (a bug: examining never panics on input).
#[derive(Debug, thiserror::Error)]
#[error("a verifier thread stopped unexpectedly")]
pub struct PoolBroken;

impl Verifiers {
    /// A pool of its own with `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Verifiers> {
        Ok(Verifiers::on(&Pool::new(threads)?))
    }

    /// A pool of its own, one thread per core.
    pub fn per_core() -> std::io::Result<Verifiers> {
        Ok(Verifiers::on(&Pool::per_core()?))
    }

    /// A client of a shared pool.
    pub fn on(pool: &Pool) -> Verifiers {
        let (reply_to, replies) = mpsc::channel();
        Verifiers {
            pool: pool.clone(),
            reply_to,
            replies,
            next_send: 0,
            next_recv: 0,
            early: BTreeMap::new(),
            scratch: Vec::new(),
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// An empty chunk (reusing the buffers of chunks given back).
    pub fn chunk(&mut self) -> Chunk {
        self.pool.spares().pop().unwrap_or_default()
    }

    /// Gives a consumed chunk back for reuse.
    pub fn recycle(&mut self, mut chunk: Chunk) {
        chunk.clear();
        // A chunk that held one huge line keeps no huge buffer, and the
        // spares stay few however many ledgers share the pool.
        if chunk.bytes.capacity() <= 4 << 20 {
            let mut spare = self.pool.spares();
            if spare.len() < 2 * self.pool.threads() + 2 {
                spare.push(chunk);
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        (self.next_send - self.next_recv) as usize
    }

    /// Sends a chunk to be examined. With `last` (nothing more to read
    /// now), a small chunk with nothing ahead of it is examined here.
    pub fn send(
        &mut self,
        mut chunk: Chunk,
        rules: &Arc<Rules>,
        last: bool,
    ) -> Result<(), PoolBroken> {
        let number = self.next_send;
        if last && self.in_flight() == 0 && chunk.len() <= EXAMINE_HERE_LINES {
            chunk.examine_all(rules, &mut self.scratch);
            self.early.insert(number, chunk);
        } else {
            self.pool.submit(Job {
                number,
                chunk,
                rules: rules.clone(),
                reply: self.reply_to.clone(),
            })?;
        }
        self.next_send += 1;
        Ok(())
    }

    /// The oldest chunk in flight, examined; `None` when none is in flight.
    pub fn recv(&mut self) -> Result<Option<Chunk>, PoolBroken> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        let wanted = self.next_recv;
        let chunk = loop {
            if let Some(c) = self.early.remove(&wanted) {
                break c;
            }
            // Our own sender is alive, so only a dead pool can leave this
            // waiting forever: a thread that died drops its job's reply.
            match self.replies.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok((n, c)) => {
                    self.early.insert(n, c);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // The threads only end when the pool is dropped, and
                    // this client holds it: one that ended has panicked.
                    let handles = self.pool.inner.handles.lock();
                    let handles = handles.unwrap_or_else(PoisonError::into_inner);
                    if handles.iter().any(JoinHandle::is_finished) {
                        return Err(PoolBroken);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(PoolBroken),
            }
        };
        self.next_recv += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Arc<Rules> {
        Arc::new(Rules {
            policy: SignaturePolicy::VerifyIfPresent,
            keys: KeyRing::default(),
            max_line_bytes: 100,
            plain: None,
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
            pool.send(c, &rules(), false).unwrap();
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

    #[test]
    fn clients_sharing_a_pool_each_get_their_own_chunks_in_order() {
        let pool = Pool::new(2).unwrap();
        let mut a = Verifiers::on(&pool);
        let mut b = Verifiers::on(&pool);
        let id = FileId {
            dev: 1,
            ino: 2,
            fingerprint: None,
        };
        for n in 0..20u64 {
            for (client, base) in [(&mut a, 0u64), (&mut b, 1_000_000)] {
                let mut c = client.chunk();
                for i in 0..(n % 5 + 1) * 40 {
                    c.push(id, base + n * 1000 + i, 3, b"   ");
                }
                client.send(c, &rules(), false).unwrap();
            }
        }
        for n in 0..20u64 {
            for (client, base) in [(&mut b, 1_000_000u64), (&mut a, 0)] {
                let c = client.recv().unwrap().unwrap();
                assert_eq!(c.lines[0].offset, base + n * 1000);
                assert_eq!(c.results.len(), c.len());
                client.recycle(c);
            }
        }
        assert!(a.recv().unwrap().is_none() && b.recv().unwrap().is_none());
    }

    #[test]
    fn a_last_small_chunk_is_examined_here_and_still_comes_back_in_order() {
        let mut v = Verifiers::new(1).unwrap();
        let id = FileId {
            dev: 1,
            ino: 2,
            fingerprint: None,
        };
        let mut big = v.chunk();
        for i in 0..100 {
            big.push(id, i, 3, b"   ");
        }
        v.send(big, &rules(), false).unwrap();
        let mut small = v.chunk();
        small.push(id, 500, 5, b"{\"x\":");
        // Something is in flight: it goes to the pool, behind the first.
        v.send(small, &rules(), true).unwrap();
        assert_eq!(v.recv().unwrap().unwrap().lines[0].offset, 0);
        assert_eq!(v.recv().unwrap().unwrap().lines[0].offset, 500);
        let mut alone = v.chunk();
        alone.push(id, 900, 3, b"   ");
        v.send(alone, &rules(), true).unwrap();
        let c = v.recv().unwrap().unwrap();
        assert_eq!((c.lines[0].offset, c.results.len()), (900, 1));
    }
}
