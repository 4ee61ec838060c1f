//! The fleet uploader: the SQLite mirror is the outbox, and this thread
//! ships each ledger's rows past its central head, in seq order, in
//! batches, into PostgreSQL. It reads the mirror through a connection of
//! its own and speaks PostgreSQL only through [`crate::postgres`]; local
//! mirroring never waits for it.
//!
//! Each ledger is a [`Lane`]. Its position is learnt from the central
//! head alone ([`Lane::locate`]; the heads of all lanes that need it are
//! read in one query), at every start, after every error and after a
//! commit whose outcome the connection did not tell: the central head is
//! matched against the local row at the same seq (equal: ship what
//! follows; different: a fork, and the lane halts; beyond the local head:
//! wait for the mirror, or halt once the files are read to the end). A
//! lane ships when it has a full batch or when its first unshipped row
//! has waited `batch_max_millis`; each round, the batches of every lane
//! with rows ready go in one transaction ([`ship_round`]), and the leases
//! of idle lanes are renewed together. A lost connection is tried again
//! with a backoff that doubles up to [`MAX_BACKOFF`].

mod lane;
#[cfg(test)]
mod memory;
mod store;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::PostgresSettings;
use crate::mirror::{Access, Mirror, MirrorError};
use crate::postgres::{ErrorKind, PgError};
use crate::telemetry::{StatusBoard, Telemetry};
use lane::{Lane, Pos};
pub use store::{CentralSession, CentralStore, PostgresStore};

/// The longest wait between two attempts to reach PostgreSQL.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle shipper looks at the mirror without being rung.
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// The meta key under which a mirror keeps its shipper's name.
const SHIPPER_KEY: &str = "fleet_shipper";

/// Rung by the runner after each step of a ledger: there may be new rows.
#[derive(Default)]
pub struct Doorbell {
    rung: Mutex<Vec<bool>>,
    bell: Condvar,
}

impl Doorbell {
    pub fn new(ledgers: usize) -> Doorbell {
        Doorbell {
            rung: Mutex::new(vec![false; ledgers]),
            bell: Condvar::new(),
        }
    }

    pub fn ring(&self, ledger: usize) {
        let mut rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = rung.get_mut(ledger) {
            *r = true;
        }
        self.bell.notify_one();
    }

    fn ring_all(&self) {
        let mut rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        rung.iter_mut().for_each(|r| *r = true);
        self.bell.notify_one();
    }

    /// Waits up to `timeout` for a ring; takes the rung ledgers.
    fn wait(&self, timeout: Duration) -> Vec<bool> {
        let rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut rung, _) = self
            .bell
            .wait_timeout_while(rung, timeout, |r| !r.iter().any(|x| *x))
            .unwrap_or_else(PoisonError::into_inner);
        let taken = rung.clone();
        rung.iter_mut().for_each(|r| *r = false);
        taken
    }
}

/// What one round over the lanes left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// A lane has more to ship now.
    Busy,
    /// Nothing before this long (or a ring).
    Idle(Duration),
}

/// The uploader of one sidecar (not [`crate::shipper::Shipper`], which
/// mirrors the files into SQLite): its lanes, one session to the central
/// store and one read connection to the mirror.
pub struct Uploader {
    pub(crate) cfg: PostgresSettings,
    store: Box<dyn CentralStore>,
    db: PathBuf,
    lanes: Vec<Lane>,
    client: Option<Box<dyn CentralSession>>,
    mirror: Option<Mirror>,
    shipper: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
    /// The last connection error said (said again only when it changes).
    said: Option<String>,
    /// The last connection error, for `replay`.
    pub last_error: Option<PgError>,
    board: Option<StatusBoard>,
    /// The mirror will not grow (set by `replay` once it read the files).
    local_complete: bool,
}

impl Uploader {
    /// An uploader for the ledgers `names` of the mirror `db`, shipping
    /// to the PostgreSQL store `cfg` names.
    pub fn new(
        cfg: &PostgresSettings,
        names: &[String],
        db: PathBuf,
        telemetry: Option<&Telemetry>,
        board: Option<StatusBoard>,
    ) -> Result<Uploader, PgError> {
        let store = PostgresStore::new(cfg)?;
        Ok(Uploader::with_store(
            Box::new(store),
            cfg,
            names,
            db,
            telemetry,
            board,
        ))
    }

    /// An uploader shipping to `store`, with the batching, lease and
    /// source of `cfg`.
    pub fn with_store(
        store: Box<dyn CentralStore>,
        cfg: &PostgresSettings,
        names: &[String],
        db: PathBuf,
        telemetry: Option<&Telemetry>,
        board: Option<StatusBoard>,
    ) -> Uploader {
        Uploader {
            lanes: names
                .iter()
                .map(|n| Lane::new(n, telemetry.map(|t| t.fleet(n))))
                .collect(),
            cfg: cfg.clone(),
            store,
            db,
            client: None,
            mirror: None,
            shipper: None,
            failures: 0,
            retry_at: None,
            said: None,
            last_error: None,
            board,
            local_complete: false,
        }
    }

    /// Says that the mirror holds everything it will (`replay`, after
    /// reading the files): a central head past it ends the wait with a
    /// halt instead of waiting for ever.
    pub fn mirror_is_complete(&mut self) {
        self.local_complete = true;
    }

    /// Where it ships, for logs.
    pub fn shown(&self) -> &str {
        self.store.shown()
    }

    /// One pass over the lanes; `rung`: the lanes that may have new rows.
    pub fn round(&mut self, rung: &[bool]) -> Round {
        let now = Instant::now();
        for (lane, r) in self.lanes.iter_mut().zip(rung) {
            lane.dirty |= *r;
        }
        if let Some(at) = self.retry_at {
            if at > now {
                return Round::Idle(at - now);
            }
            self.retry_at = None;
        }
        if let Err(e) = self.open_mirror() {
            // No mirror yet (the runner creates it with its first commit).
            tracing::debug!(error = %e, "fleet: no mirror to read yet");
            return Round::Idle(IDLE_LOOK);
        }
        if self.client.is_none() {
            if let Err(e) = self.connect() {
                return self.failed(e);
            }
        }
        let (Some(client), Some(mirror), Some(shipper)) = (
            self.client.as_deref(),
            self.mirror.as_ref(),
            self.shipper.as_deref(),
        ) else {
            return Round::Idle(IDLE_LOOK);
        };
        self.lanes.iter_mut().for_each(|l| l.progressed = false);
        let io = lane::Io {
            mirror,
            cfg: &self.cfg,
            shipper,
            board: self.board.as_ref(),
            local_complete: self.local_complete,
        };
        let (busy, next) = match ship_round(&mut self.lanes, client, &io, now) {
            Ok(done) => done,
            Err(e) => return self.failed(e),
        };
        if self.failures > 0 {
            tracing::info!(
                target = self.store.shown(),
                "fleet: PostgreSQL reachable again; shipping resumed"
            );
        }
        self.failures = 0;
        self.said = None;
        self.last_error = None;
        for lane in &self.lanes {
            lane.set_up(true);
        }
        if busy {
            Round::Busy
        } else {
            Round::Idle(next)
        }
    }

    fn open_mirror(&mut self) -> Result<(), MirrorError> {
        if let Some(m) = &self.mirror {
            if m.check_in_place().is_ok() {
                return Ok(());
            }
            // The mirror file was replaced: every lane learns its place
            // again, against the new file.
            tracing::warn!(db = %self.db.display(), "fleet: the mirror file was replaced; shipping resumes from the central heads");
            self.mirror = None;
            self.shipper = None;
            self.lanes.iter_mut().for_each(|l| l.relocate());
        }
        let mirror = Mirror::open(&self.db, Access::ReadOnly)?;
        let shipper = match mirror.meta(SHIPPER_KEY)? {
            Some(s) => s,
            None => {
                // Named once per mirror: a restart keeps the name (and the
                // lease), another mirror of the same source does not.
                let writer = Mirror::open(&self.db, Access::ReadWrite)?;
                let mut random = [0u8; 6];
                if getrandom::fill(&mut random).is_err() {
                    // Unique enough without the OS's randomness: the name
                    // only tells two mirrors apart.
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    let mixed = nanos ^ (u64::from(std::process::id()) << 40);
                    random.copy_from_slice(&mixed.to_le_bytes()[..6]);
                }
                let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
                let name = format!("{}/{hex}", self.cfg.source);
                writer.set_meta(SHIPPER_KEY, &name)?;
                writer.meta(SHIPPER_KEY)?.unwrap_or(name)
            }
        };
        self.shipper = Some(shipper);
        self.mirror = Some(mirror);
        Ok(())
    }

    fn connect(&mut self) -> Result<(), PgError> {
        let client = self.store.open()?;
        // Every lane reads its central head again on a new connection.
        self.lanes.iter_mut().for_each(|l| l.relocate());
        self.client = Some(client);
        Ok(())
    }

    /// After a failure to reach PostgreSQL or to ship: the connection is
    /// dropped, each lane reads its central head again, and the next try
    /// waits for the backoff.
    fn failed(&mut self, e: PgError) -> Round {
        self.client = None;
        if self.lanes.iter().any(|l| l.progressed) {
            self.failures = 0;
        }
        self.failures += 1;
        for lane in &mut self.lanes {
            lane.set_up(false);
            lane.count_error();
            lane.relocate();
        }
        let wait = backoff(self.failures);
        let text = e.to_string();
        if self.said.as_deref() != Some(text.as_str()) {
            tracing::error!(
                target = self.store.shown(),
                error = %text,
                hint = e.hint.as_deref().unwrap_or(""),
                retry_in_ms = wait.as_millis() as u64,
                "fleet: cannot ship to PostgreSQL; local mirroring goes on, and the backlog ships when it is back"
            );
            self.said = Some(text);
        }
        self.last_error = Some(e);
        self.retry_at = Some(Instant::now() + wait);
        Round::Idle(wait)
    }

    /// Whether every lane has shipped up to the mirror's head (or halted).
    /// Reads the mirror's heads afresh.
    pub fn settled(&mut self) -> Result<Settled, MirrorError> {
        let Some(mirror) = self.mirror.as_ref() else {
            return Ok(Settled::Pending);
        };
        let mut halted = Vec::new();
        for lane in &mut self.lanes {
            match &lane.pos {
                Pos::Halted(why) | Pos::Ahead(why) => halted.push((lane.name.clone(), why.clone())),
                Pos::Fenced { .. } => {
                    return Ok(Settled::Fenced(
                        lane.name.clone(),
                        lane.said.clone().unwrap_or_default(),
                    ))
                }
                _ => {
                    let head = mirror
                        .state(&lane.name)?
                        .and_then(|s| s.head)
                        .map(|h| h.seq);
                    if head.is_some() && lane.central_seq() != head {
                        return Ok(Settled::Pending);
                    }
                }
            }
        }
        Ok(if halted.is_empty() {
            Settled::CaughtUp
        } else {
            Settled::Halted(halted)
        })
    }

    /// A clean stop: gives up the leases this shipper holds, so that a
    /// successor (a rebuilt mirror, a rescheduled pod) need not wait for
    /// them to run out. Best effort: a lease not given up just runs out.
    pub fn release(&mut self) {
        let (Some(client), Some(shipper)) = (self.client.as_deref(), self.shipper.as_deref())
        else {
            return;
        };
        let held: Vec<&str> = self
            .lanes
            .iter()
            .filter(|l| l.central_seq().is_some())
            .map(|l| l.name.as_str())
            .collect();
        if held.is_empty() {
            return;
        }
        if let Err(e) = client.release(&held, shipper) {
            tracing::debug!(error = %e, "fleet: the leases were not given up (they run out by themselves)");
        }
    }

    /// Each lane: (name, central head seq), as last known.
    pub fn heads(&self) -> Vec<(String, Option<u64>)> {
        self.lanes
            .iter()
            .map(|l| (l.name.clone(), l.central_seq()))
            .collect()
    }
}

/// The most ledgers in one shipping transaction.
const MAX_GROUP_LEDGERS: usize = 1000;

/// One round over the lanes: every central head that must be read, in one
/// query; every lane's batch (or lease renewal) planned; the batches
/// shipped in as few transactions as the group limits allow. `Ok`: (a
/// lane has more now, the longest the next round may wait); `Err`: the
/// connection failed.
fn ship_round(
    lanes: &mut [Lane],
    client: &dyn CentralSession,
    io: &lane::Io<'_>,
    now: Instant,
) -> Result<(bool, Duration), PgError> {
    locate_all(lanes, client, io, now)?;
    let mut next = IDLE_LOOK;
    let mut batches = Vec::new();
    for (i, lane) in lanes.iter_mut().enumerate() {
        match lane.plan(io, now) {
            lane::Plan::Idle(d) => next = next.min(d),
            lane::Plan::Ship(b) => batches.push((i, b)),
        }
    }
    if batches.iter().any(|(_, b)| !b.rows.is_empty()) {
        // A transaction goes anyway: the rows of lanes still waiting for
        // their batch to fill ride along (at many ledgers, one
        // transaction per round, not one per lane as its wait runs out).
        let planned = planned(lanes.len(), &batches);
        for (i, lane) in lanes.iter_mut().enumerate() {
            if !planned[i] {
                if let Some(b) = lane.ride_along(io) {
                    batches.push((i, b));
                }
            }
        }
    }
    if batches.iter().any(|(_, b)| b.rows.is_empty()) {
        // A lease falls due: every lease due within a sixth of one is
        // renewed with it, so that the renewals of many lanes fall due
        // together and go in one statement.
        let planned = planned(lanes.len(), &batches);
        for (i, lane) in lanes.iter().enumerate() {
            if !planned[i] {
                if let Some(b) = lane.renew_early(now, io.cfg.lease / 6) {
                    batches.push((i, b));
                }
            }
        }
    }
    let mut busy = false;
    let mut rest = batches.into_iter().peekable();
    while rest.peek().is_some() {
        let mut group = Vec::new();
        let mut rows = 0;
        while let Some((_, b)) = rest.peek() {
            let fits =
                rows + b.rows.len() <= io.cfg.batch_max_events && group.len() < MAX_GROUP_LEDGERS;
            if !group.is_empty() && !fits {
                break;
            }
            rows += b.rows.len();
            group.extend(rest.next());
        }
        busy |= ship_group(lanes, client, io, group)?;
    }
    Ok((busy, next))
}

/// Which lanes have a batch already.
fn planned(lanes: usize, batches: &[(usize, lane::Batch)]) -> Vec<bool> {
    let mut planned = vec![false; lanes];
    batches.iter().for_each(|(i, _)| planned[*i] = true);
    planned
}

/// Reads the central heads of the lanes that must learn their place, in
/// one query, and places them.
fn locate_all(
    lanes: &mut [Lane],
    client: &dyn CentralSession,
    io: &lane::Io<'_>,
    now: Instant,
) -> Result<(), PgError> {
    let need: Vec<usize> = (0..lanes.len())
        .filter(|i| lanes[*i].needs_locate(now))
        .collect();
    if need.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = need.iter().map(|i| lanes[*i].name.as_str()).collect();
    let mut heads = client.read_heads(&names)?;
    for i in need {
        let central = heads.remove(&lanes[i].name);
        lanes[i].locate(io, central);
    }
    Ok(())
}

/// Ships one group in one transaction. A group refused for one ledger's
/// sake (a fork, a fence, a head that moved) is shipped again ledger by
/// ledger, so that only that ledger bears it. `Ok(true)`: a lane has more.
fn ship_group(
    lanes: &mut [Lane],
    client: &dyn CentralSession,
    io: &lane::Io<'_>,
    group: Vec<(usize, lane::Batch)>,
) -> Result<bool, PgError> {
    let started = Instant::now();
    let result = send(lanes, client, io, &group);
    let took = started.elapsed();
    match result {
        Ok(()) => {
            let mut busy = false;
            for (i, b) in group {
                busy |= matches!(lanes[i].shipped(io, b, took), lane::Step::Busy);
            }
            Ok(busy)
        }
        Err(e) if group.len() == 1 => {
            let (i, b) = group.into_iter().next().expect("one part");
            Ok(matches!(lanes[i].refused(io, e, &b)?, lane::Step::Busy))
        }
        Err(e)
            if matches!(
                e.kind,
                ErrorKind::Chain | ErrorKind::Fenced | ErrorKind::HeadMoved
            ) =>
        {
            tracing::debug!(error = %e, ledgers = group.len(), "fleet: a group was refused; shipping its ledgers one by one");
            let mut busy = false;
            for part in group {
                busy |= ship_group(lanes, client, io, vec![part])?;
            }
            Ok(busy)
        }
        Err(e) => {
            if e.kind == ErrorKind::Unknown {
                tracing::warn!(ledgers = group.len(), error = %e,
                    "fleet: the connection dropped while a group was sent; the central heads will tell whether it committed");
            }
            lanes.iter().for_each(Lane::count_error);
            Err(e)
        }
    }
}

fn send(
    lanes: &[Lane],
    client: &dyn CentralSession,
    io: &lane::Io<'_>,
    group: &[(usize, lane::Batch)],
) -> Result<(), PgError> {
    let parts: Vec<crate::postgres::Shipment<'_>> =
        group.iter().map(|(i, b)| lanes[*i].part(b)).collect();
    client.ship(io.shipper, io.cfg.lease, &parts)
}

/// Where shipping stands, for `replay`.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    Pending,
    CaughtUp,
    /// A lane is fenced out by another shipper: (ledger, what it said).
    Fenced(String, String),
    /// Lanes halted by a central conflict: (ledger, why).
    Halted(Vec<(String, String)>),
}

/// 250 ms, doubling per failure, up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << failures.saturating_sub(1).min(10));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

/// The running uploader thread of `run`.
pub struct Running {
    stop: Arc<AtomicBool>,
    pub doorbell: Arc<Doorbell>,
    handle: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts the uploader thread for `names` of the mirror `db`.
    pub fn start(
        cfg: &PostgresSettings,
        names: Vec<String>,
        db: PathBuf,
        telemetry: Telemetry,
        board: StatusBoard,
    ) -> Result<Running, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let doorbell = Arc::new(Doorbell::new(names.len()));
        let cfg = cfg.clone();
        let (stop2, bell) = (stop.clone(), doorbell.clone());
        let handle = std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || {
                // The configuration checked the connection string when it
                // loaded, so this fails only on a programming error.
                let mut uploader = match Uploader::new(&cfg, &names, db, Some(&telemetry), Some(board)) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "fleet: not shipping: [postgres] url");
                        return;
                    }
                };
                tracing::info!(target = uploader.shown(), source = %cfg.source, schema = %cfg.schema, "fleet: shipping to PostgreSQL");
                let mut rung = vec![true; names.len()];
                while !stop2.load(Ordering::Relaxed) {
                    match uploader.round(&rung) {
                        Round::Busy => rung = bell.wait(Duration::ZERO),
                        Round::Idle(d) => rung = bell.wait(d),
                    }
                }
                uploader.release();
            })
            .map_err(|e| format!("cannot start the fleet thread: {e}"))?;
        Ok(Running {
            stop,
            doorbell,
            handle: Some(handle),
        })
    }

    /// Asks the thread to stop after its transaction in flight; waits
    /// until `deadline`. False if it was still busy then.
    pub fn stop(mut self, deadline: Instant) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        self.doorbell.ring_all();
        while Instant::now() < deadline && self.handle.as_ref().is_some_and(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.handle.take() {
            Some(h) if h.is_finished() => {
                let _ = h.join();
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}
