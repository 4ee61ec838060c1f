//! The fleet store's series, each with the `ledger` label: registered with
//! the other families, created per ledger only when `[postgres]` is
//! configured, written by the fleet uploader, except the lag, which every
//! scrape computes from the two heads as they stand
//! ([`Families::refresh_lag`]): a shipper busy elsewhere never leaves it
//! stale.

use prometheus::{Histogram, IntCounter, IntGauge, IntGaugeVec, Registry};

use super::{counter, gauge, histogram};

pub(super) struct Families {
    head: IntGaugeVec,
    lag: IntGaugeVec,
    up: IntGaugeVec,
    errors: prometheus::IntCounterVec,
    ship_duration: prometheus::HistogramVec,
    halted: IntGaugeVec,
    /// Per ledger: (central head, lag, mirror head, anchor), for the lag.
    heads: std::sync::Mutex<Vec<(String, [IntGauge; 4])>>,
}

impl Families {
    /// Sets each ledger's lag to its mirror head minus its central head
    /// (every mirrored row when nothing is known to be shipped).
    pub(super) fn refresh_lag(&self) {
        let heads = self
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, [central, lag, mirror, anchor]) in heads.iter() {
            lag.set(lag_events(mirror.get(), central.get(), anchor.get()));
        }
    }

    pub(super) fn new(reg: &Registry) -> Families {
        Families {
            head: gauge(reg, "ledgertail_postgres_head_seq", "The central head: last seq committed to PostgreSQL (-1: none yet or not known)."),
            lag: gauge(reg, "ledgertail_postgres_lag_events", "Mirror head seq minus central head seq: events mirrored but not yet shipped."),
            up: gauge(reg, "ledgertail_postgres_up", "1 while the last attempt to reach PostgreSQL for this ledger succeeded."),
            errors: counter(reg, "ledgertail_postgres_errors_total", "Failed connections and shipping transactions.", &["ledger"]),
            ship_duration: histogram(
                reg,
                "ledgertail_postgres_ship_duration_seconds",
                "Time of one shipping transaction (fence, rows, head, commit).",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            halted: gauge(reg, "ledgertail_postgres_halted", "1 while shipping this ledger is stopped: its central chain conflicts with the local one."),
            heads: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// One ledger's fleet series.
#[derive(Clone)]
pub struct FleetMetrics {
    head: IntGauge,
    heads: super::Heads,
    /// Set by each scrape alone ([`Families::refresh_lag`]).
    lag: IntGauge,
    pub up: IntGauge,
    pub errors: IntCounter,
    pub ship_duration: Histogram,
    pub halted: IntGauge,
}

impl super::Telemetry {
    /// The fleet series of one ledger, created at their starting values.
    pub fn fleet(&self, name: &str) -> FleetMetrics {
        let f = &self.fleet;
        let l = [name];
        let m = FleetMetrics {
            head: f.head.with_label_values(&l),
            heads: self.heads.clone(),
            lag: f.lag.with_label_values(&l),
            up: f.up.with_label_values(&l),
            errors: f.errors.with_label_values(&l),
            ship_duration: f.ship_duration.with_label_values(&l),
            halted: f.halted.with_label_values(&l),
        };
        m.head.set(-1);
        let mine = &self.families;
        let gauges = [
            m.head.clone(),
            m.lag.clone(),
            mine.mirror_head.with_label_values(&l),
            mine.anchor.with_label_values(&l),
        ];
        let mut heads = self
            .fleet
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        heads.retain(|(n, _)| n != name);
        heads.push((name.to_owned(), gauges));
        m
    }
}

impl FleetMetrics {
    /// Sets the central head (-1: none, or not known).
    pub fn set_head(&self, seq: i64) {
        let _scrape_waits = self
            .heads
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.head.set(seq);
    }
}

/// Events mirrored but not shipped, from the gauges' values (-1: none).
fn lag_events(mirror: i64, central: i64, anchor: i64) -> i64 {
    match (mirror, central) {
        (m, _) if m < 0 => 0,
        (m, c) if c >= 0 => (m - c).max(0),
        (m, _) => m + 1 - anchor.max(0),
    }
}

#[cfg(test)]
mod tests {
    use super::lag_events;

    #[test]
    fn the_lag_is_the_mirror_head_minus_the_central_head() {
        assert_eq!(lag_events(-1, -1, -1), 0);
        assert_eq!(lag_events(99, -1, 0), 100);
        assert_eq!(lag_events(99, -1, 40), 60);
        assert_eq!(lag_events(99, 90, 0), 9);
        assert_eq!(lag_events(90, 99, 0), 0);
    }
}
