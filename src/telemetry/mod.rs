//! Telemetry: the Prometheus metrics of contract §5 and the status board
//! behind `/readyz`.
//!
//! It owns its own [`Registry`] (not the global one, so tests and several
//! daemons in one process stay apart). [`LedgerMetrics`] holds each
//! ledger's series with the `ledger` label already applied, and is written
//! only from the shipper's [`BatchStats`] and the parity check's result,
//! so the core and the shipper never import prometheus. [`readiness`] is a
//! pure function of the board, tested on its own.

mod fleet;
mod process;
mod tlog;

pub use fleet::FleetMetrics;
pub use tlog::{TlogMetrics, WitnessMetrics};

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::ledger::Verdict;
use crate::parity::Parity;
use crate::shipper::BatchStats;

/// The registry and the metric families (one set for the process).
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    families: Arc<Families>,
    fleet: Arc<fleet::Families>,
    tlog: Arc<tlog::Families>,
    /// Held shared while a head gauge is set, exclusively while a scrape
    /// renders: a scrape sees every head as of one moment, so that its
    /// fleet lag is exactly its mirror head minus its central head.
    heads: Heads,
}

/// See [`Telemetry::heads`].
pub(crate) type Heads = Arc<std::sync::RwLock<()>>;

struct Families {
    read: IntCounterVec,
    mirrored: IntCounterVec,
    quarantined: IntCounterVec,
    ledger_head: IntGaugeVec,
    mirror_head: IntGaugeVec,
    anchor: IntGaugeVec,
    lag_bytes: IntGaugeVec,
    lag_events: IntGaugeVec,
    missing_in_sqlite: prometheus::GaugeVec,
    missing_in_jsonl: prometheus::GaugeVec,
    mismatched: prometheus::GaugeVec,
    parity_last: prometheus::GaugeVec,
    halted: IntGaugeVec,
    commit_duration: prometheus::HistogramVec,
    batch_events: prometheus::HistogramVec,
    end_to_end: prometheus::HistogramVec,
    worker_restarts: IntCounterVec,
    commit_failures: IntCounterVec,
    mirror_unavailable: IntGaugeVec,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &["ledger"]).expect("valid metric definition");
    reg.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

/// A gauge that can read NaN: "not known yet", as a parity figure is until
/// the first check (0 would claim a check found nothing).
fn float_gauge(reg: &Registry, name: &str, help: &str) -> prometheus::GaugeVec {
    let g = prometheus::GaugeVec::new(Opts::new(name, help), &["ledger"])
        .expect("valid metric definition");
    reg.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(reg: &Registry, name: &str, help: &str, buckets: &[f64]) -> prometheus::HistogramVec {
    let h = prometheus::HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["ledger"],
    )
    .expect("valid metric definition");
    reg.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    // The definitions below are constants: registering them cannot fail
    // except by a programming error, which the tests would show at once.
    pub fn new() -> Telemetry {
        let reg = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("ledgertail_build_info", "Always 1; the version is a label."),
            &["version"],
        )
        .expect("valid metric definition");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        reg.register(Box::new(build))
            .expect("metric registered once");
        reg.register(Box::new(process::ProcessMetrics::new()))
            .expect("metric registered once");

        let families = Families {
            read: counter(&reg, "ledgertail_events_read_total", "Complete non-blank lines judged.", &["ledger"]),
            mirrored: counter(&reg, "ledgertail_events_mirrored_total", "Events committed to SQLite.", &["ledger"]),
            quarantined: counter(
                &reg,
                "ledgertail_events_quarantined_total",
                "Lines refused, by verdict (a line judged again after a reload counts again).",
                &["ledger", "reason"],
            ),
            ledger_head: gauge(&reg, "ledgertail_ledger_head_seq", "Last seq seen in the ledger files (-1: none yet)."),
            mirror_head: gauge(&reg, "ledgertail_mirror_head_seq", "Last seq committed to SQLite (-1: none yet)."),
            anchor: gauge(&reg, "ledgertail_anchor_seq", "The seq the mirror started from (-1: none yet)."),
            lag_bytes: gauge(&reg, "ledgertail_lag_bytes", "Bytes of complete lines in the files not yet committed."),
            lag_events: gauge(&reg, "ledgertail_lag_events", "Ledger head seq minus mirror head seq."),
            missing_in_sqlite: float_gauge(&reg, "ledgertail_parity_missing_in_sqlite", "Events up to the mirror's head that SQLite lacks (last parity check)."),
            missing_in_jsonl: float_gauge(&reg, "ledgertail_parity_missing_in_jsonl", "Mirrored events no longer in the ledger files, archived ones excluded (last parity check)."),
            mismatched: float_gauge(&reg, "ledgertail_parity_mismatched", "Mirrored events whose line or row no longer matches (last parity check)."),
            parity_last: float_gauge(&reg, "ledgertail_parity_last_check_timestamp_seconds", "When the last full parity check ended (Unix time)."),
            halted: gauge(&reg, "ledgertail_halted", "1 while the ledger is halted (fork, seq_gap, chain_break, rewritten)."),
            commit_duration: histogram(
                &reg,
                "ledgertail_commit_duration_seconds",
                "Time of one SQLite transaction (rows, quarantine and checkpoint).",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            batch_events: histogram(
                &reg,
                "ledgertail_batch_events",
                "Lines per committed batch.",
                &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            ),
            end_to_end: histogram(
                &reg,
                "ledgertail_end_to_end_seconds",
                "From a line's LF seen on disk to its row committed.",
                &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            worker_restarts: counter(&reg, "ledgertail_worker_restarts_total", "Times the ledger's worker failed and started again from its checkpoint.", &["ledger"]),
            commit_failures: counter(&reg, "ledgertail_commit_failures_total", "Batches that could not be committed (database locked, disk full, ...).", &["ledger"]),
            mirror_unavailable: gauge(&reg, "ledgertail_mirror_unavailable", "1 while the worker is backing off after a database or file error."),
        };
        Telemetry {
            fleet: Arc::new(fleet::Families::new(&reg)),
            tlog: Arc::new(tlog::Families::new(&reg)),
            registry: reg,
            families: Arc::new(families),
            heads: Heads::default(),
        }
    }

    /// The series of one ledger, created at their zero values.
    pub fn ledger(&self, name: &str) -> LedgerMetrics {
        let f = &self.families;
        let l = [name];
        // Every refusing verdict is created at 0, so that a rate over it
        // works before the first refusal.
        let quarantined = Verdict::ALL
            .iter()
            .filter(|v| **v != Verdict::Mirrored)
            .map(|v| (*v, f.quarantined.with_label_values(&[name, v.as_str()])))
            .collect();
        let m = LedgerMetrics {
            read: f.read.with_label_values(&l),
            mirrored: f.mirrored.with_label_values(&l),
            quarantined,
            ledger_head: f.ledger_head.with_label_values(&l),
            mirror_head: f.mirror_head.with_label_values(&l),
            anchor: f.anchor.with_label_values(&l),
            lag_bytes: f.lag_bytes.with_label_values(&l),
            lag_events: f.lag_events.with_label_values(&l),
            missing_in_sqlite: f.missing_in_sqlite.with_label_values(&l),
            missing_in_jsonl: f.missing_in_jsonl.with_label_values(&l),
            mismatched: f.mismatched.with_label_values(&l),
            parity_last: f.parity_last.with_label_values(&l),
            halted: f.halted.with_label_values(&l),
            commit_duration: f.commit_duration.with_label_values(&l),
            batch_events: f.batch_events.with_label_values(&l),
            end_to_end: f.end_to_end.with_label_values(&l),
            worker_restarts: f.worker_restarts.with_label_values(&l),
            commit_failures: f.commit_failures.with_label_values(&l),
            mirror_unavailable: f.mirror_unavailable.with_label_values(&l),
            heads: self.heads.clone(),
        };
        m.ledger_head.set(-1);
        m.mirror_head.set(-1);
        m.anchor.set(-1);
        for g in [
            &m.missing_in_sqlite,
            &m.missing_in_jsonl,
            &m.mismatched,
            &m.parity_last,
        ] {
            g.set(f64::NAN);
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = {
            let _still = self
                .heads
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.fleet.refresh_lag();
            self.registry.gather()
        };
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One ledger's series, labelled.
#[derive(Clone)]
pub struct LedgerMetrics {
    read: IntCounter,
    mirrored: IntCounter,
    quarantined: Vec<(Verdict, IntCounter)>,
    ledger_head: IntGauge,
    mirror_head: IntGauge,
    anchor: IntGauge,
    lag_bytes: IntGauge,
    lag_events: IntGauge,
    missing_in_sqlite: Gauge,
    missing_in_jsonl: Gauge,
    mismatched: Gauge,
    parity_last: Gauge,
    halted: IntGauge,
    commit_duration: Histogram,
    batch_events: Histogram,
    end_to_end: Histogram,
    pub worker_restarts: IntCounter,
    pub commit_failures: IntCounter,
    pub mirror_unavailable: IntGauge,
    heads: Heads,
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn seq_gauge(seq: Option<u64>) -> i64 {
    seq.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX))
}

impl LedgerMetrics {
    /// Records one batch of the shipper.
    pub fn record_batch(&self, b: &BatchStats<'_>) {
        let lines = (b.mirrored_seen_at.len() + b.quarantined.len()) as u64;
        self.read.inc_by(lines);
        self.mirrored.inc_by(b.mirrored_seen_at.len() as u64);
        for v in b.quarantined {
            if let Some((_, c)) = self.quarantined.iter().find(|(r, _)| r == v) {
                c.inc();
            }
        }
        if let Some(d) = b.commit {
            self.commit_duration.observe(d.as_secs_f64());
            self.batch_events.observe(lines as f64);
            let now = Instant::now();
            for seen in b.mirrored_seen_at {
                self.end_to_end
                    .observe(now.saturating_duration_since(*seen).as_secs_f64());
            }
        }
        self.record_heads(
            b.head.map(|h| h.seq),
            b.anchor.map(|h| h.seq),
            b.last_seq_seen,
        );
        self.halted.set(i64::from(b.halt.is_some()));
        self.lag_bytes
            .set(i64::try_from(b.total_bytes.saturating_sub(b.done_bytes)).unwrap_or(i64::MAX));
    }

    /// Sets the head gauges (and the event lag they imply). The ledger's
    /// head only moves forward: a seq learnt from the end of the file at
    /// start-up stays until reading passes it.
    pub fn record_heads(&self, mirror: Option<u64>, anchor: Option<u64>, seen: Option<u64>) {
        let known = u64::try_from(self.ledger_head.get()).ok();
        let ledger = [known, seen, mirror].into_iter().flatten().max();
        {
            let _scrape_waits = self
                .heads
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.mirror_head.set(seq_gauge(mirror));
            self.anchor.set(seq_gauge(anchor));
        }
        self.ledger_head.set(seq_gauge(ledger));
        let lag = match (ledger, mirror) {
            (Some(l), Some(m)) => l.saturating_sub(m),
            (Some(l), None) => l + 1,
            _ => 0,
        };
        self.lag_events.set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// The ledger's head as the files show it now (read while nothing is
    /// mirrored: a stalled mirror); the event lag follows.
    pub fn record_seen(&self, seen: Option<u64>) {
        let mirror = u64::try_from(self.mirror_head.get()).ok();
        let anchor = u64::try_from(self.anchor.get()).ok();
        self.record_heads(mirror, anchor, seen);
    }

    pub fn set_lag_bytes(&self, bytes: u64) {
        self.lag_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn set_halted(&self, halted: bool) {
        self.halted.set(i64::from(halted));
    }

    pub fn lag_events(&self) -> u64 {
        u64::try_from(self.lag_events.get()).unwrap_or(0)
    }

    /// A parity check found nothing changed since the last full one: its
    /// figures stand, checked as of now.
    pub fn record_parity_unchanged(&self) {
        self.parity_last.set(unix_now());
    }

    /// Records the result of a full parity check.
    pub fn record_parity(&self, p: &Parity) {
        self.missing_in_sqlite.set(p.missing_in_sqlite as f64);
        self.missing_in_jsonl.set(p.missing_in_jsonl as f64);
        self.mismatched.set(p.mismatched as f64);
        self.parity_last.set(unix_now());
    }
}

/// What `/readyz` knows of one ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerStatus {
    pub name: String,
    /// `Some(reason)` while halted (file, offset, seq, detail).
    pub halted: Option<String>,
    /// The halting verdict alone, for clients that get no details.
    pub halt_verdict: Option<String>,
    /// `Some(path)` while neither the live file nor a rotated one exists.
    pub waiting_for: Option<String>,
    /// `Some(reason)` while the worker cannot commit or read.
    pub trouble: Option<String>,
    /// `Some(reason)` while a write to the mirror has not returned for
    /// long (a hung or frozen disk): set by the daemon's watch, not by
    /// the ledger's worker, which is the one stuck.
    pub stalled: Option<String>,
    pub lag_events: u64,
    /// (v1.2) `Some(reason)` while shipping to PostgreSQL is stopped (a
    /// central chain that conflicts with the local one).
    pub central_halted: Option<String>,
    /// The last step read every complete line of the ledger's files into
    /// the mirror: the mirror's head is all the files hold, for now.
    pub files_read: bool,
}

/// Shared between the workers (writers) and the HTTP server (reader).
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    ledgers: Arc<Mutex<Vec<LedgerStatus>>>,
}

impl StatusBoard {
    pub fn new(names: &[String]) -> StatusBoard {
        let ledgers = names
            .iter()
            .map(|n| LedgerStatus {
                name: n.clone(),
                ..LedgerStatus::default()
            })
            .collect();
        StatusBoard {
            ledgers: Arc::new(Mutex::new(ledgers)),
        }
    }

    /// Changes one ledger's status (a short critical section: never held
    /// across I/O).
    pub fn update(&self, name: &str, change: impl FnOnce(&mut LedgerStatus)) {
        let mut all = self.ledgers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = all.iter_mut().find(|s| s.name == name) {
            change(s);
        }
    }

    /// Reads one ledger's status (`None`: no such ledger).
    pub fn read<T>(&self, name: &str, look: impl FnOnce(&LedgerStatus) -> T) -> Option<T> {
        let all = self.ledgers.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter().find(|s| s.name == name).map(look)
    }

    pub fn snapshot(&self) -> Vec<LedgerStatus> {
        self.ledgers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How much `/readyz` tells a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Files, offsets, seqs and error texts: for clients on loopback.
    Full,
    /// Which ledger and what kind of trouble only: a listener on 0.0.0.0
    /// (a container) answers whoever reaches the port, and file paths and
    /// error texts are not theirs to read.
    Brief,
}

/// `Ok` when every ledger runs, none is halted and none lags by more than
/// `max_lag_events` (with notes, one per line, that do not make it unready:
/// a ledger waiting for its first file, since an application that has not
/// written yet is normal); otherwise the reasons, one per line.
pub fn readiness(
    ledgers: &[LedgerStatus],
    max_lag_events: u64,
    detail: Detail,
) -> Result<String, String> {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    for l in ledgers {
        if let Some(path) = &l.waiting_for {
            notes.push(match detail {
                Detail::Full => format!("ledger {}: waiting for {path} (no such file yet)", l.name),
                Detail::Brief => format!("ledger {}: waiting for its first file", l.name),
            });
        }
        if let Some(why) = &l.halted {
            reasons.push(match detail {
                Detail::Full => format!("ledger {} halted: {why}", l.name),
                Detail::Brief => format!(
                    "ledger {} halted ({})",
                    l.name,
                    l.halt_verdict.as_deref().unwrap_or("see the logs")
                ),
            });
        }
        if let Some(why) = &l.trouble {
            reasons.push(match detail {
                Detail::Full => format!("ledger {}: {why}", l.name),
                Detail::Brief => format!("ledger {}: cannot mirror (see the logs)", l.name),
            });
        }
        if let Some(why) = &l.stalled {
            reasons.push(match detail {
                Detail::Full => format!("ledger {}: {why}", l.name),
                Detail::Brief => format!("ledger {}: mirror writes stalled (see the logs)", l.name),
            });
        }
        if let Some(why) = &l.central_halted {
            reasons.push(match detail {
                Detail::Full => format!("ledger {}: shipping to PostgreSQL halted: {why}", l.name),
                Detail::Brief => format!(
                    "ledger {}: shipping to PostgreSQL halted (see the logs)",
                    l.name
                ),
            });
        }
        if l.lag_events > max_lag_events {
            reasons.push(format!(
                "ledger {} lags {} events (ready_max_lag_events = {max_lag_events})",
                l.name, l.lag_events
            ));
        }
    }
    if reasons.is_empty() {
        Ok(notes.join("\n"))
    } else {
        Err(reasons.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str) -> LedgerStatus {
        LedgerStatus {
            name: name.into(),
            ..LedgerStatus::default()
        }
    }

    #[test]
    fn ready_when_nothing_is_wrong() {
        assert_eq!(
            readiness(&[status("a"), status("b")], 100, Detail::Full),
            Ok(String::new())
        );
        assert_eq!(readiness(&[], 100, Detail::Brief), Ok(String::new()));
        let mut waiting = status("w");
        waiting.waiting_for = Some("/data/typo.jsonl".into());
        let notes = readiness(std::slice::from_ref(&waiting), 100, Detail::Full).unwrap();
        assert!(
            notes.contains("ledger w: waiting for /data/typo.jsonl"),
            "{notes}"
        );
        let notes = readiness(&[waiting], 100, Detail::Brief).unwrap();
        assert!(!notes.contains("/data"), "{notes}");
    }

    #[test]
    fn a_halt_a_trouble_or_a_lag_makes_it_unready_with_reasons() {
        let mut a = status("a");
        a.halted = Some("fork at /data/l.jsonl:120 (seq 3)".into());
        a.halt_verdict = Some("fork".into());
        let mut b = status("b");
        b.trouble = Some("cannot commit: /data/m.db is locked".into());
        let mut c = status("c");
        c.lag_events = 101;
        let mut d = status("d");
        d.lag_events = 100;
        let all = [a, b, c, d];
        let err = readiness(&all, 100, Detail::Full).unwrap_err();
        assert!(
            err.contains("ledger a halted: fork at /data/l.jsonl"),
            "{err}"
        );
        assert!(err.contains("ledger b: cannot commit"), "{err}");
        assert!(err.contains("ledger c lags 101 events"), "{err}");
        assert!(!err.contains("ledger d"), "{err}");
        let brief = readiness(&all, 100, Detail::Brief).unwrap_err();
        assert!(brief.contains("ledger a halted (fork)"), "{brief}");
        assert!(brief.contains("ledger b: cannot mirror"), "{brief}");
        assert!(brief.contains("ledger c lags 101 events"), "{brief}");
        assert!(
            !brief.contains("/data"),
            "no paths for remote clients: {brief}"
        );
    }

    #[test]
    fn every_family_of_the_contract_is_exposed_from_the_start() {
        let t = Telemetry::new();
        let _m = t.ledger("app");
        let text = t.render();
        for family in [
            "ledgertail_events_read_total",
            "ledgertail_events_mirrored_total",
            "ledgertail_events_quarantined_total",
            "ledgertail_ledger_head_seq",
            "ledgertail_mirror_head_seq",
            "ledgertail_lag_bytes",
            "ledgertail_lag_events",
            "ledgertail_parity_missing_in_sqlite",
            "ledgertail_parity_missing_in_jsonl",
            "ledgertail_parity_mismatched",
            "ledgertail_parity_last_check_timestamp_seconds",
            "ledgertail_halted",
            "ledgertail_commit_duration_seconds",
            "ledgertail_batch_events",
            "ledgertail_end_to_end_seconds",
            "ledgertail_build_info",
            "ledgertail_anchor_seq",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing"
            );
        }
        assert!(
            text.contains("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"fork\"} 0")
        );
        assert!(text.contains("ledgertail_mirror_head_seq{ledger=\"app\"} -1"));
        // Not checked yet: not known, rather than "nothing found".
        assert!(
            text.contains("ledgertail_parity_mismatched{ledger=\"app\"} NaN"),
            "{text}"
        );
        assert!(text.contains("ledgertail_parity_last_check_timestamp_seconds{ledger=\"app\"} NaN"));
    }

    #[test]
    fn event_lag_counts_from_the_mirror_head() {
        let t = Telemetry::new();
        let m = t.ledger("app");
        m.record_heads(Some(10), Some(0), Some(15));
        assert_eq!(m.lag_events(), 5);
        // The ledger head never goes back (15 was seen before).
        m.record_heads(Some(12), Some(0), Some(12));
        assert_eq!(m.lag_events(), 3);
        m.record_heads(Some(15), Some(0), Some(15));
        assert_eq!(m.lag_events(), 0);
        let fresh = t.ledger("other");
        fresh.record_heads(None, None, Some(4));
        assert_eq!(fresh.lag_events(), 5);
    }
}
