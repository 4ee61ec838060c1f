//! The fleet store's series (contract §6), each with the `ledger` label:
//! registered with the other families, created per ledger only when
//! `[postgres]` is configured, written only by the fleet shipper.

use prometheus::{Histogram, IntCounter, IntGauge, IntGaugeVec, Registry};

use super::{counter, gauge, histogram};

pub(super) struct Families {
    head: IntGaugeVec,
    lag: IntGaugeVec,
    up: IntGaugeVec,
    errors: prometheus::IntCounterVec,
    ship_duration: prometheus::HistogramVec,
    halted: IntGaugeVec,
}

impl Families {
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
        }
    }
}

/// One ledger's fleet series.
#[derive(Clone)]
pub struct FleetMetrics {
    pub head: IntGauge,
    pub lag: IntGauge,
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
            lag: f.lag.with_label_values(&l),
            up: f.up.with_label_values(&l),
            errors: f.errors.with_label_values(&l),
            ship_duration: f.ship_duration.with_label_values(&l),
            halted: f.halted.with_label_values(&l),
        };
        m.head.set(-1);
        m
    }
}
