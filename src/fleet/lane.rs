//! One ledger's shipping: where it stands against the central head, when
//! its next batch goes, and what each outcome of a shipping transaction
//! means for it.

use std::time::{Duration, Instant};

use crate::config::PostgresSettings;
use crate::mirror::StoredEvent;
use crate::mirror::{Mirror, MirrorError};
use crate::postgres::{CentralHead, ErrorKind, PgError, Shipment};
use crate::telemetry::{FleetMetrics, StatusBoard};

/// Where a lane stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pos {
    /// The central head must be read (at start, after any error).
    Unknown,
    /// Ship from `next`, following the central head `expected`.
    Ready {
        next: u64,
        expected: Option<(u64, String)>,
        anchor: (u64, String),
    },
    /// The central head is past the mirror's: wait for the mirror.
    WaitLocal { central: u64 },
    /// Nothing mirrored and nothing central yet: look again only once the
    /// mirror may have rows (a ring), not every round (a thousand empty
    /// ledgers would cost a query a second).
    NothingYet,
    /// Another sidecar holds the lease; look again at `until`.
    Fenced { until: Instant },
    /// The central chain conflicts with the local one: nothing more is
    /// shipped for this ledger until an operator acts (the README's
    /// runbook) and the sidecar restarts.
    Halted(String),
    /// The central head is past everything the files held when last
    /// looked: halted as [`Pos::Halted`], but looked at again whenever
    /// the mirror grows, because the ledger's own next events then show
    /// what it is: a fork (halted for good), or the same chain (shipping
    /// resumes).
    Ahead(String),
}

/// What a lane needs to plan and to learn from an outcome.
pub(super) struct Io<'a> {
    pub mirror: &'a Mirror,
    pub cfg: &'a PostgresSettings,
    pub shipper: &'a str,
    pub board: Option<&'a StatusBoard>,
    /// The mirror holds all the files will give it (`replay`, once it has
    /// read them): a central head past it will never be reached.
    pub local_complete: bool,
}

/// After an outcome: whether the lane has more to ship at once.
pub(super) enum Step {
    Busy,
    Idle,
}

/// What a lane would ship in this round.
pub(super) enum Plan {
    Idle(Duration),
    Ship(Batch),
}

/// One lane's rows for a shipping transaction (none: a lease renewal).
pub(super) struct Batch {
    pub rows: Vec<StoredEvent>,
    pub expected: Option<(u64, String)>,
    pub anchor: (u64, String),
    /// More rows wait behind these: plan again at once.
    pub more: bool,
}

/// The mirror's side of a ledger, as [`Lane::locate`] read it.
struct Local {
    /// The anchor (seq, hash hex).
    anchor: (u64, String),
    /// The head's seq, if any row is mirrored.
    head: Option<u64>,
    /// The files were read to the end before the head was read.
    complete: bool,
}

impl Local {
    /// Ready to ship from the anchor, following `expected`.
    fn ready_from_anchor(self, expected: Option<(u64, String)>) -> Pos {
        Pos::Ready {
            next: self.anchor.0,
            expected,
            anchor: self.anchor,
        }
    }
}

pub(super) struct Lane {
    pub name: String,
    pub pos: Pos,
    metrics: Option<FleetMetrics>,
    /// New rows may have been committed since the last look.
    pub dirty: bool,
    /// Shipped a batch in the current round (the backoff starts afresh
    /// after progress).
    pub progressed: bool,
    /// The mirror's head as last read.
    local_head: Option<u64>,
    /// When the first row of a batch still short of full was seen.
    pending_since: Option<Instant>,
    /// When the lease must be renewed (an idle lane keeps its claim).
    renew_at: Option<Instant>,
    /// The last fence or wait said (said again only when it changes).
    pub said: Option<String>,
    /// The central head of the [`Pos::Ahead`] halt in force, if any.
    ahead: Option<u64>,
}

impl Lane {
    pub fn new(name: &str, metrics: Option<FleetMetrics>) -> Lane {
        Lane {
            name: name.to_owned(),
            pos: Pos::Unknown,
            metrics,
            dirty: true,
            progressed: false,
            local_head: None,
            pending_since: None,
            renew_at: None,
            said: None,
            ahead: None,
        }
    }

    /// Forget the position: read the central head again (a halt stays).
    pub fn relocate(&mut self) {
        if !matches!(self.pos, Pos::Halted(_)) {
            self.pos = Pos::Unknown;
        }
        self.dirty = true;
    }

    pub fn set_up(&self, up: bool) {
        if let Some(m) = &self.metrics {
            m.up.set(i64::from(up));
        }
    }

    pub fn count_error(&self) {
        if let Some(m) = &self.metrics {
            m.errors.inc();
        }
    }

    /// The central head seq as last known.
    pub fn central_seq(&self) -> Option<u64> {
        match &self.pos {
            Pos::Ready { expected, .. } => expected.as_ref().map(|e| e.0),
            Pos::WaitLocal { central } => Some(*central),
            _ => None,
        }
    }

    /// Whether the central head must be read before this lane can plan.
    pub fn needs_locate(&self, now: Instant) -> bool {
        match &self.pos {
            Pos::Unknown => true,
            Pos::Fenced { until } => *until <= now,
            Pos::WaitLocal { .. } | Pos::NothingYet | Pos::Ahead(_) => self.dirty,
            Pos::Ready { .. } | Pos::Halted(_) => false,
        }
    }

    /// What this lane ships now, if anything (its rows are read from the
    /// mirror here; nothing is sent).
    pub fn plan(&mut self, io: &Io<'_>, now: Instant) -> Plan {
        match &self.pos {
            Pos::Halted(_) | Pos::Ahead(_) => return Plan::Idle(Duration::MAX),
            Pos::Fenced { until } => return Plan::Idle(until.saturating_duration_since(now)),
            _ => {}
        }
        let Pos::Ready {
            next,
            expected,
            anchor,
        } = self.pos.clone()
        else {
            return Plan::Idle(super::IDLE_LOOK);
        };
        if self.dirty {
            self.dirty = false;
            match io.mirror.state(&self.name) {
                Ok(state) => self.local_head = state.and_then(|s| s.head).map(|h| h.seq),
                Err(e) => return Plan::Idle(self.mirror_trouble(e)),
            }
        }
        self.note_central(expected.as_ref().map(|e| e.0));
        let Some(local_head) = self.local_head.filter(|h| *h >= next) else {
            self.pending_since = None;
            return self.renewal(now, Duration::ZERO, expected, anchor);
        };
        let pending = local_head - next + 1;
        let wait = io.cfg.batch_max_wait;
        if pending < io.cfg.batch_max_events as u64 && !wait.is_zero() {
            let since = *self.pending_since.get_or_insert(now);
            if now < since + wait {
                return Plan::Idle(since + wait - now);
            }
        }
        let rows = match io
            .mirror
            .events_from(&self.name, next, io.cfg.batch_max_events)
        {
            Ok(rows) => rows,
            Err(e) => return Plan::Idle(self.mirror_trouble(e)),
        };
        // Rows are read in seq order from `next`; a hole in the mirror
        // (which the mirror's own checks forbid) would show here.
        let Some(last) = rows.last() else {
            self.local_head = None;
            return Plan::Idle(super::IDLE_LOOK);
        };
        if rows.first().map(|r| r.seq) != Some(next) || last.seq != next + rows.len() as u64 - 1 {
            self.halt(io, format!("the local mirror has a gap after seq {}: rows must ship in seq order without one", next.saturating_sub(1)));
            return Plan::Idle(Duration::MAX);
        }
        let more = rows.len() == io.cfg.batch_max_events || last.seq < local_head;
        Plan::Ship(Batch {
            rows,
            expected,
            anchor,
            more,
        })
    }

    /// A lane with nothing to ship renews its lease every third of it, so
    /// that a second sidecar with the same source stays fenced out while
    /// this one lives; `early`: renew now if it falls due within this long
    /// (so that the renewals of many lanes go in one statement).
    fn renewal(
        &self,
        now: Instant,
        early: Duration,
        expected: Option<(u64, String)>,
        anchor: (u64, String),
    ) -> Plan {
        let Some(at) = self.renew_at else {
            return Plan::Idle(super::IDLE_LOOK);
        };
        if expected.is_none() {
            return Plan::Idle(super::IDLE_LOOK);
        }
        if at > now + early {
            return Plan::Idle(at - now);
        }
        Plan::Ship(Batch {
            rows: Vec::new(),
            expected,
            anchor,
            more: false,
        })
    }

    /// This lane's rows waiting for their batch to fill, for a round that
    /// sends a transaction anyway (they ride along rather than wait).
    pub fn ride_along(&mut self, io: &Io<'_>) -> Option<Batch> {
        let Pos::Ready { next, .. } = &self.pos else {
            return None;
        };
        if self.pending_since.is_none() || self.local_head.is_none_or(|h| h < *next) {
            return None;
        }
        let now = self.pending_since? + io.cfg.batch_max_wait;
        match self.plan(io, now) {
            Plan::Ship(b) if !b.rows.is_empty() => Some(b),
            _ => None,
        }
    }

    /// A renewal of this lane's lease if it falls due within `early`, for a
    /// round that renews leases anyway.
    pub fn renew_early(&self, now: Instant, early: Duration) -> Option<Batch> {
        let Pos::Ready {
            next,
            expected,
            anchor,
        } = &self.pos
        else {
            return None;
        };
        if self.local_head.is_some_and(|h| h >= *next) {
            return None;
        }
        match self.renewal(now, early, expected.clone(), anchor.clone()) {
            Plan::Ship(b) => Some(b),
            Plan::Idle(_) => None,
        }
    }

    /// This lane's part of a shipping transaction.
    pub fn part<'a>(&'a self, b: &'a Batch) -> Shipment<'a> {
        Shipment {
            ledger: &self.name,
            expected: b.expected.as_ref().map(|(s, h)| (*s, h.as_str())),
            anchor: (b.anchor.0, b.anchor.1.as_str()),
            rows: &b.rows,
        }
    }

    /// `b` committed (`took`: the transaction's time).
    pub fn shipped(&mut self, io: &Io<'_>, b: Batch, took: Duration) -> Step {
        let lease = io.cfg.lease / 3;
        self.renew_at = Some(Instant::now() + lease);
        let Some(last) = b.rows.last() else {
            return Step::Idle;
        };
        if let Some(m) = &self.metrics {
            m.ship_duration.observe(took.as_secs_f64());
        }
        let seq = last.seq;
        self.pos = Pos::Ready {
            next: seq + 1,
            expected: Some((seq, last.hash.clone())),
            anchor: b.anchor,
        };
        self.pending_since = None;
        self.progressed = true;
        self.said = None;
        self.note_central(Some(seq));
        if b.more {
            Step::Busy
        } else {
            Step::Idle
        }
    }

    /// A shipping transaction of this lane alone failed: what it means for
    /// it. `Err`: the connection failed (the caller drops it).
    pub fn refused(&mut self, io: &Io<'_>, e: PgError, b: &Batch) -> Result<Step, PgError> {
        let after = b.expected.as_ref().map_or(b.anchor.0, |e| e.0 + 1);
        let (first, last) = match (b.rows.first(), b.rows.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => (after, after.saturating_sub(1)),
        };
        self.count_error();
        match e.kind {
            ErrorKind::Fenced => {
                self.fenced(io, e.to_string(), e.hint.as_deref());
                Ok(Step::Idle)
            }
            ErrorKind::HeadMoved => {
                tracing::info!(ledger = %self.name, error = %e, "fleet: the central head moved; reading it again");
                self.relocate();
                Ok(Step::Busy)
            }
            ErrorKind::Chain => {
                self.halt(
                    io,
                    format!("PostgreSQL refused seqs {first} to {last}: {e}"),
                );
                Ok(Step::Idle)
            }
            ErrorKind::Unknown => {
                tracing::warn!(ledger = %self.name, first, last, error = %e,
                    "fleet: the connection dropped while the batch was sent; the central head will tell whether it committed");
                Err(e)
            }
            _ => Err(e),
        }
    }

    /// Learns the position from `central` (this ledger's central head, read
    /// with the other lanes') and the local rows.
    pub fn locate(&mut self, io: &Io<'_>, central: Option<CentralHead>) {
        // Asked before the mirror's head is read: the files were read to
        // the end, so the head read next holds at least all they had.
        let complete = self.files_read(io);
        let state = match io.mirror.state(&self.name) {
            Ok(s) => s,
            Err(e) => {
                self.mirror_trouble(e);
                return;
            }
        };
        // A lane found ready claims its lease at once (with every other
        // lane's, in one statement), so that a restarted sidecar fences out
        // a second one with the same source even while its ledgers idle.
        self.renew_at = Some(Instant::now());
        let anchor = state.as_ref().and_then(|s| s.anchor);
        let local_head = state.as_ref().and_then(|s| s.head).map(|h| h.seq);
        // The step that follows uses this head rather than reading it again.
        self.local_head = local_head;
        self.dirty = false;
        let Some(anchor) = anchor else {
            self.locate_unmirrored(io, central, complete);
            return;
        };
        let local = Local {
            anchor: (anchor.seq, anchor.hash.to_hex()),
            head: local_head,
            complete,
        };
        let Some(central) = central else {
            self.pos = local.ready_from_anchor(None);
            return;
        };
        if let Some(m) = &self.metrics {
            m.set_head(central.head.as_ref().map_or(-1, |h| h.0 as i64));
        }
        // Another live shipper comes first: until its lease runs out this
        // lane ships nothing, whatever its chain (a fork is judged once the
        // ledger is this shipper's to ship).
        if central.leased && central.shipper.as_deref() != Some(io.shipper) {
            let text = format!(
                "ledger {} of source {} is being shipped by {}",
                self.name,
                io.cfg.source,
                central.shipper.as_deref().unwrap_or("another sidecar")
            );
            self.fenced(io, text, None);
            return;
        }
        match central.head.clone() {
            None => self.locate_registered(io, &central, local),
            Some((seq, hash)) => self.locate_head(io, seq, hash, local),
        }
    }

    /// Nothing mirrored yet: wait for the mirror, unless the central chain
    /// has rows the files will never give.
    fn locate_unmirrored(&mut self, io: &Io<'_>, central: Option<CentralHead>, complete: bool) {
        self.pos = match central.and_then(|c| c.head) {
            Some((seq, _)) if complete => {
                self.halt_ahead(io, seq, None);
                return;
            }
            Some((seq, _)) => Pos::WaitLocal { central: seq },
            None => Pos::NothingYet,
        };
    }

    /// The ledger is registered centrally with no row yet: its anchor must
    /// be the mirror's.
    fn locate_registered(&mut self, io: &Io<'_>, central: &CentralHead, local: Local) {
        if (central.anchor_seq, central.anchor_hash.as_str())
            == (local.anchor.0, local.anchor.1.as_str())
        {
            self.pos = local.ready_from_anchor(None);
        } else {
            self.halt(io, format!(
                "the central ledger was registered with anchor seq {} ({}), this mirror's anchor is seq {} ({})",
                central.anchor_seq, central.anchor_hash, local.anchor.0, local.anchor.1
            ));
        }
    }

    /// The central head is (`seq`, `hash`): where it stands against the
    /// mirror's rows.
    fn locate_head(&mut self, io: &Io<'_>, seq: u64, hash: String, local: Local) {
        let anchor = local.anchor.0;
        if seq + 1 == anchor {
            self.locate_before_anchor(io, seq, hash, local);
            return;
        }
        if seq < anchor {
            self.halt(io, format!(
                "the central head is seq {seq}, but this mirror starts at seq {anchor} (its anchor): seqs {} to {} are in neither; replay the ledger into a mirror from an earlier anchor, or see the README's runbook",
                seq + 1, anchor - 1
            ));
            return;
        }
        let behind = local.head.is_none_or(|h| h < seq);
        match io.mirror.hash_at(&self.name, seq) {
            Ok(Some(mine)) if mine.to_hex() == hash => {
                self.pos = Pos::Ready {
                    next: seq + 1,
                    expected: Some((seq, hash)),
                    anchor: local.anchor,
                };
                self.said = None;
                self.no_longer_behind(io, seq);
            }
            Ok(Some(mine)) => self.halt(io, format!(
                "a fork: the central row at seq {seq} has hash {hash}, this mirror's has {}",
                mine.to_hex()
            )),
            Ok(None) if behind && local.complete => self.halt_ahead(io, seq, local.head),
            Ok(None) if behind => self.wait_for_mirror(seq, local.head),
            Ok(None) => self.halt(io, format!("this mirror has no row at seq {seq}, the central head, though its head is past it")),
            Err(e) => {
                self.mirror_trouble(e);
            }
        }
    }

    /// The mirror starts right after the central head: its first row must
    /// link to it.
    fn locate_before_anchor(&mut self, io: &Io<'_>, seq: u64, hash: String, local: Local) {
        let first = io
            .mirror
            .events_from(&self.name, local.anchor.0, 1)
            .ok()
            .and_then(|rows| rows.into_iter().next());
        match first {
            Some(row) if row.prev_hash.as_deref() == Some(hash.as_str()) => {
                self.pos = local.ready_from_anchor(Some((seq, hash)));
            }
            _ => self.halt(io, format!("the central head (seq {seq}, {hash}) is not the event before this mirror's anchor (seq {}): a fork", local.anchor.0)),
        }
    }

    /// The central head is past the mirror's, and the files are still
    /// being read: wait, saying so once.
    fn wait_for_mirror(&mut self, seq: u64, local_head: Option<u64>) {
        let text = format!("the central head (seq {seq}) is past this mirror's head ({}); waiting for the mirror to catch up", local_head.map_or("none".into(), |h| h.to_string()));
        if self.said.as_deref() != Some(text.as_str()) {
            tracing::info!(ledger = %self.name, "fleet: {text}");
            self.said = Some(text);
        }
        self.pos = Pos::WaitLocal { central: seq };
        self.dirty = false;
    }

    /// Whether the mirror holds every line the ledger's files have now, so
    /// that a central head past the mirror's cannot be waited for.
    fn files_read(&self, io: &Io<'_>) -> bool {
        io.local_complete
            || io
                .board
                .and_then(|b| b.read(&self.name, |s| s.files_read))
                .unwrap_or(false)
    }

    /// Another shipper holds the lease: nothing is shipped, and the lane
    /// looks again after a third of a lease.
    fn fenced(&mut self, io: &Io<'_>, text: String, hint: Option<&str>) {
        if self.said.as_deref() != Some(text.as_str()) {
            tracing::warn!(ledger = %self.name, source = %io.cfg.source, error = %text,
                hint = hint.unwrap_or("two sidecars ship the same (source, ledger): give each its own source under [postgres]"),
                "fleet: refused by the fence; nothing shipped for this ledger while the other shipper's lease runs");
            self.said = Some(text);
        }
        self.renew_at = None;
        self.pos = Pos::Fenced {
            until: Instant::now() + io.cfg.lease / 3,
        };
    }

    fn halt(&mut self, io: &Io<'_>, why: String) {
        tracing::error!(
            ledger = %self.name,
            source = %io.cfg.source,
            why = %why,
            hint = "the runbook (docs/runbook.md, central shipping halted): compare `ledgertail verify --postgres` with the local mirror, then fix the side that is wrong and restart",
            "fleet: shipping of this ledger halted (the other ledgers go on)"
        );
        if let Some(m) = &self.metrics {
            m.halted.set(1);
        }
        if let Some(board) = io.board {
            board.update(&self.name, |s| s.central_halted = Some(why.clone()));
        }
        self.pos = Pos::Halted(why);
    }

    /// Halts as [`Pos::Ahead`]: said once per central head, however many
    /// times the mirror grows short of it.
    fn halt_ahead(&mut self, io: &Io<'_>, central: u64, local: Option<u64>) {
        let why = ahead(central, local);
        if self.ahead == Some(central) {
            if let Some(board) = io.board {
                board.update(&self.name, |s| s.central_halted = Some(why.clone()));
            }
        } else {
            self.halt(io, why.clone());
            self.ahead = Some(central);
        }
        self.pos = Pos::Ahead(why);
        self.dirty = false;
    }

    /// The mirror reached the central head of an [`Pos::Ahead`] halt with
    /// the same hash: the chains agree, and the halt is lifted.
    fn no_longer_behind(&mut self, io: &Io<'_>, seq: u64) {
        if self.ahead.take().is_none() {
            return;
        }
        tracing::info!(ledger = %self.name, source = %io.cfg.source, seq,
            "fleet: the mirror reached the central head with the same hash; shipping resumed");
        if let Some(m) = &self.metrics {
            m.halted.set(0);
        }
        if let Some(board) = io.board {
            board.update(&self.name, |s| s.central_halted = None);
        }
    }

    /// The mirror could not be read: try again after a look's wait.
    fn mirror_trouble(&mut self, e: MirrorError) -> Duration {
        tracing::warn!(ledger = %self.name, error = %e, "fleet: cannot read the mirror; trying again");
        self.dirty = true;
        super::IDLE_LOOK
    }

    /// The central head as now known, for its gauge (the lag is computed
    /// from it and the mirror's head at each scrape).
    fn note_central(&self, central: Option<u64>) {
        if let (Some(m), Some(c)) = (&self.metrics, central) {
            m.set_head(i64::try_from(c).unwrap_or(i64::MAX));
        }
    }
}

/// Why a lane halts when the central chain is ahead of everything the
/// files hold: rows this host never had were written centrally (by a hand
/// with this source's role, or another sidecar shipping under this source
/// from other files).
fn ahead(central: u64, local: Option<u64>) -> String {
    format!(
        "the central head is seq {central}, past everything this ledger's files hold ({}): the fleet store has rows this host never had; compare `ledgertail verify --postgres` with the files (the README's fleet runbook)",
        local.map_or("no event".to_owned(), |h| format!("seq {h}"))
    )
}
