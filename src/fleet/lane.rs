//! One ledger's shipping: where it stands against the central head, when
//! its next batch goes, and what each outcome of a shipping transaction
//! means for it.

use std::time::{Duration, Instant};

use crate::config::PostgresSettings;
use crate::mirror::{Mirror, MirrorError};
use crate::postgres::ship::Group;
use crate::postgres::{self, ErrorKind, PgError, Shipment};
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
    /// Another sidecar holds the lease; look again at `until`.
    Fenced { until: Instant },
    /// The central chain conflicts with the local one: nothing more is
    /// shipped for this ledger until an operator acts (the README's
    /// runbook) and the sidecar restarts.
    Halted(String),
}

/// What a lane needs to do its step.
pub(super) struct Io<'a> {
    pub client: &'a postgres::Session,
    pub mirror: &'a Mirror,
    pub cfg: &'a PostgresSettings,
    pub shipper: &'a str,
    pub board: Option<&'a StatusBoard>,
    /// The mirror holds all the files will give it (`replay`, once it has
    /// read them): a central head past it will never be reached.
    pub local_complete: bool,
}

pub(super) enum Step {
    Busy,
    Idle(Duration),
}

pub(super) struct Lane {
    pub name: String,
    pub pos: Pos,
    metrics: Option<FleetMetrics>,
    /// New rows may have been committed since the last look.
    pub dirty: bool,
    /// Rung since the lag was last refreshed while disconnected.
    pub rung: bool,
    /// Shipped a batch in the current round (the backoff starts afresh
    /// after progress).
    pub progressed: bool,
    /// The mirror's head as last read.
    local_head: Option<u64>,
    /// When the first row of a batch still short of full was seen.
    pending_since: Option<Instant>,
    /// When the lease must be renewed (an idle lane keeps its claim).
    renew_at: Option<Instant>,
    /// The central head seq as last known (kept while disconnected, for
    /// the lag).
    last_central: Option<u64>,
    /// The last fence or wait said (said again only when it changes).
    pub said: Option<String>,
}

impl Lane {
    pub fn new(name: &str, metrics: Option<FleetMetrics>) -> Lane {
        Lane {
            name: name.to_owned(),
            pos: Pos::Unknown,
            metrics,
            dirty: true,
            rung: true,
            progressed: false,
            local_head: None,
            pending_since: None,
            renew_at: None,
            last_central: None,
            said: None,
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

    /// One step. `Err`: the connection failed (the caller drops it).
    pub fn step(&mut self, io: &mut Io<'_>, now: Instant) -> Result<Step, PgError> {
        match &self.pos {
            Pos::Halted(_) => return Ok(Step::Idle(Duration::MAX)),
            Pos::Fenced { until } if *until > now => return Ok(Step::Idle(*until - now)),
            Pos::Fenced { .. } | Pos::Unknown => self.locate(io)?,
            Pos::WaitLocal { .. } if self.dirty => self.locate(io)?,
            _ => {}
        }
        let Pos::Ready {
            next,
            expected,
            anchor,
        } = self.pos.clone()
        else {
            return Ok(Step::Idle(super::IDLE_LOOK));
        };
        if self.dirty {
            self.dirty = false;
            match io.mirror.state(&self.name) {
                Ok(state) => self.local_head = state.and_then(|s| s.head).map(|h| h.seq),
                Err(e) => return Ok(self.mirror_trouble(e)),
            }
        }
        self.record_lag(expected.as_ref().map(|e| e.0), anchor.0);
        let Some(local_head) = self.local_head.filter(|h| *h >= next) else {
            self.pending_since = None;
            return self.renew_if_due(io, now, expected, anchor);
        };
        let pending = local_head - next + 1;
        let wait = io.cfg.batch_max_wait;
        if pending < io.cfg.batch_max_events as u64 && !wait.is_zero() {
            let since = *self.pending_since.get_or_insert(now);
            if now < since + wait {
                return Ok(Step::Idle(since + wait - now));
            }
        }
        let rows = match io
            .mirror
            .events_from(&self.name, next, io.cfg.batch_max_events)
        {
            Ok(rows) => rows,
            Err(e) => return Ok(self.mirror_trouble(e)),
        };
        // Rows are read in seq order from `next`; a hole in the mirror
        // (which the mirror's own checks forbid) would show here.
        let Some(last) = rows.last() else {
            self.local_head = None;
            return Ok(Step::Idle(super::IDLE_LOOK));
        };
        if rows.first().map(|r| r.seq) != Some(next) || last.seq != next + rows.len() as u64 - 1 {
            self.halt(io, format!("the local mirror has a gap after seq {}: rows must ship in seq order without one", next.saturating_sub(1)));
            return Ok(Step::Idle(Duration::MAX));
        }
        let started = Instant::now();
        match self.send(
            io,
            expected.as_ref().map(|(s, h)| (*s, h.as_str())),
            &anchor,
            &rows,
        ) {
            Ok(()) => {
                if let Some(m) = &self.metrics {
                    m.ship_duration.observe(started.elapsed().as_secs_f64());
                }
                let (seq, hash) = (last.seq, last.hash.clone());
                let full = rows.len() == io.cfg.batch_max_events;
                self.shipped(io, seq, hash, anchor);
                if full || seq < local_head {
                    Ok(Step::Busy)
                } else {
                    Ok(Step::Idle(super::IDLE_LOOK))
                }
            }
            Err(e) => self.refused(io, e, next, last.seq),
        }
    }

    fn shipped(&mut self, io: &Io<'_>, seq: u64, hash: String, anchor: (u64, String)) {
        self.pos = Pos::Ready {
            next: seq + 1,
            expected: Some((seq, hash)),
            anchor,
        };
        self.pending_since = None;
        self.progressed = true;
        self.renew_at = Some(Instant::now() + io.cfg.lease / 3);
        self.said = None;
        self.record_lag(Some(seq), 0);
    }

    /// One shipping transaction of this lane: `rows` after `expected`
    /// (none: the lease is renewed and nothing else).
    fn send(
        &self,
        io: &mut Io<'_>,
        expected: Option<(u64, &str)>,
        anchor: &(u64, String),
        rows: &[crate::mirror::StoredEvent],
    ) -> Result<(), PgError> {
        let part = [Shipment {
            ledger: &self.name,
            expected,
            anchor: (anchor.0, anchor.1.as_str()),
            rows,
        }];
        let group = Group {
            schema: &io.cfg.schema,
            source: &io.cfg.source,
            shipper: io.shipper,
            lease: io.cfg.lease,
            statement_timeout: io.cfg.statement_timeout,
            parts: &part,
        };
        postgres::ship::ship(io.client, &group)
    }

    /// An idle lane renews its lease every third of it, so that a second
    /// sidecar with the same source stays fenced out while this one lives.
    fn renew_if_due(
        &mut self,
        io: &mut Io<'_>,
        now: Instant,
        expected: Option<(u64, String)>,
        anchor: (u64, String),
    ) -> Result<Step, PgError> {
        let Some(at) = self.renew_at else {
            return Ok(Step::Idle(super::IDLE_LOOK));
        };
        if at > now {
            return Ok(Step::Idle(at - now));
        }
        let Some((seq, hash)) = expected.clone() else {
            return Ok(Step::Idle(super::IDLE_LOOK));
        };
        match self.send(io, Some((seq, hash.as_str())), &anchor, &[]) {
            Ok(()) => {
                self.renew_at = Some(now + io.cfg.lease / 3);
                Ok(Step::Idle(io.cfg.lease / 3))
            }
            Err(e) => self.refused(io, e, seq + 1, seq),
        }
    }

    /// A shipping transaction failed: what it means for this lane.
    fn refused(
        &mut self,
        io: &mut Io<'_>,
        e: PgError,
        first: u64,
        last: u64,
    ) -> Result<Step, PgError> {
        self.count_error();
        match e.kind {
            ErrorKind::Fenced => {
                self.fenced(io, e.to_string(), e.hint.as_deref());
                Ok(Step::Idle(io.cfg.lease / 3))
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
                Ok(Step::Idle(Duration::MAX))
            }
            ErrorKind::Unknown => {
                tracing::warn!(ledger = %self.name, first, last, error = %e,
                    "fleet: the connection dropped while the batch was sent; the central head will tell whether it committed");
                Err(e)
            }
            _ => Err(e),
        }
    }

    /// Learns the position from the central head and the local rows.
    fn locate(&mut self, io: &mut Io<'_>) -> Result<(), PgError> {
        let central =
            postgres::ship::read_head(io.client, &io.cfg.schema, &io.cfg.source, &self.name)?;
        let state = match io.mirror.state(&self.name) {
            Ok(s) => s,
            Err(e) => {
                self.mirror_trouble(e);
                return Ok(());
            }
        };
        self.renew_at = None;
        let anchor = state.as_ref().and_then(|s| s.anchor);
        let local_head = state.as_ref().and_then(|s| s.head).map(|h| h.seq);
        // The step that follows uses this head rather than reading it again.
        self.local_head = local_head;
        self.dirty = false;
        let Some(anchor) = anchor else {
            // Nothing mirrored yet.
            self.pos = match central.and_then(|c| c.head) {
                Some((seq, _)) if self.files_read(io) => {
                    self.halt(io, ahead(seq, None));
                    return Ok(());
                }
                Some((seq, _)) => Pos::WaitLocal { central: seq },
                None => Pos::Unknown,
            };
            self.dirty = false;
            return Ok(());
        };
        let local_anchor = (anchor.seq, anchor.hash.to_hex());
        let Some(central) = central else {
            self.pos = Pos::Ready {
                next: anchor.seq,
                expected: None,
                anchor: local_anchor,
            };
            return Ok(());
        };
        if let Some(m) = &self.metrics {
            m.head.set(central.head.as_ref().map_or(-1, |h| h.0 as i64));
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
            return Ok(());
        }
        let Some((seq, hash)) = central.head.clone() else {
            if (central.anchor_seq, central.anchor_hash.as_str())
                == (local_anchor.0, local_anchor.1.as_str())
            {
                self.pos = Pos::Ready {
                    next: anchor.seq,
                    expected: None,
                    anchor: local_anchor,
                };
            } else {
                self.halt(io, format!(
                    "the central ledger was registered with anchor seq {} ({}), this mirror's anchor is seq {} ({})",
                    central.anchor_seq, central.anchor_hash, local_anchor.0, local_anchor.1
                ));
            }
            return Ok(());
        };
        if seq + 1 == anchor.seq {
            // The mirror starts right after the central head: its first
            // row must link to it.
            let first = io
                .mirror
                .events_from(&self.name, anchor.seq, 1)
                .ok()
                .and_then(|rows| rows.into_iter().next());
            match first {
                Some(row) if row.prev_hash.as_deref() == Some(hash.as_str()) => {
                    self.pos = Pos::Ready {
                        next: anchor.seq,
                        expected: Some((seq, hash)),
                        anchor: local_anchor,
                    };
                }
                _ => self.halt(io, format!("the central head (seq {seq}, {hash}) is not the event before this mirror's anchor (seq {}): a fork", anchor.seq)),
            }
            return Ok(());
        }
        if seq < anchor.seq {
            self.halt(io, format!(
                "the central head is seq {seq}, but this mirror starts at seq {} (its anchor): seqs {} to {} are in neither; replay the ledger into a mirror from an earlier anchor, or see the README's runbook",
                anchor.seq, seq + 1, anchor.seq - 1
            ));
            return Ok(());
        }
        match io.mirror.hash_at(&self.name, seq) {
            Ok(Some(local)) if local.to_hex() == hash => {
                self.pos = Pos::Ready {
                    next: seq + 1,
                    expected: Some((seq, hash)),
                    anchor: local_anchor,
                };
                self.said = None;
            }
            Ok(Some(local)) => self.halt(io, format!(
                "a fork: the central row at seq {seq} has hash {hash}, this mirror's has {}",
                local.to_hex()
            )),
            Ok(None) if local_head.is_none_or(|h| h < seq) && self.files_read(io) => {
                self.halt(io, ahead(seq, local_head));
            }
            Ok(None) if local_head.is_none_or(|h| h < seq) => {
                let text = format!("the central head (seq {seq}) is past this mirror's head ({}); waiting for the mirror to catch up", local_head.map_or("none".into(), |h| h.to_string()));
                if self.said.as_deref() != Some(text.as_str()) {
                    tracing::info!(ledger = %self.name, "fleet: {text}");
                    self.said = Some(text);
                }
                self.pos = Pos::WaitLocal { central: seq };
                self.dirty = false;
            }
            Ok(None) => self.halt(io, format!("this mirror has no row at seq {seq}, the central head, though its head is past it")),
            Err(e) => {
                self.mirror_trouble(e);
            }
        }
        Ok(())
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
            hint = "the README's fleet runbook: compare `ledgertail verify --postgres` with the local mirror, then fix the side that is wrong and restart",
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

    fn mirror_trouble(&mut self, e: MirrorError) -> Step {
        tracing::warn!(ledger = %self.name, error = %e, "fleet: cannot read the mirror; trying again");
        self.dirty = true;
        Step::Idle(super::IDLE_LOOK)
    }

    /// While PostgreSQL cannot be reached: the lag still follows the
    /// mirror's head, against the last central head known.
    pub fn refresh_lag(&mut self, mirror: &Mirror) {
        if !std::mem::take(&mut self.rung) {
            return;
        }
        if let Ok(state) = mirror.state(&self.name) {
            let state = state.as_ref();
            self.local_head = state.and_then(|s| s.head).map(|h| h.seq);
            let anchor = state.and_then(|s| s.anchor).map_or(0, |a| a.seq);
            self.record_lag(self.last_central, anchor);
        }
    }

    fn record_lag(&mut self, central: Option<u64>, anchor: u64) {
        if central.is_some() {
            self.last_central = central;
        }
        let lag = match (self.local_head, central) {
            (Some(l), Some(c)) => l.saturating_sub(c),
            (Some(l), None) => (l + 1).saturating_sub(anchor),
            (None, _) => 0,
        };
        if let Some(m) = &self.metrics {
            m.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
            if let Some(c) = central {
                m.head.set(i64::try_from(c).unwrap_or(i64::MAX));
            }
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
