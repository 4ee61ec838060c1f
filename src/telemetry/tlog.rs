//! The verifiable log's series (contract §7), each with the `ledger`
//! label (the witness ones also with `witness`, the witness's key name):
//! registered with the other families, created per ledger only when
//! `[tlog]` is configured, written only by the checkpoint publisher.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::gauge;

pub(super) struct Families {
    size: IntGaugeVec,
    checkpoint_size: IntGaugeVec,
    checkpoint_timestamp: IntGaugeVec,
    witness_size: IntGaugeVec,
    witness_errors: IntCounterVec,
}

fn witness_gauge(reg: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &["ledger", "witness"])
        .expect("valid metric definition");
    reg.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Families {
    pub(super) fn new(reg: &Registry) -> Families {
        Families {
            size: gauge(
                reg,
                "ledgertail_tlog_size",
                "Leaves of the ledger's Merkle tree (head seq - anchor seq + 1).",
            ),
            checkpoint_size: gauge(
                reg,
                "ledgertail_tlog_checkpoint_size",
                "Tree size of the latest signed checkpoint (0: none yet).",
            ),
            checkpoint_timestamp: gauge(
                reg,
                "ledgertail_tlog_checkpoint_timestamp_seconds",
                "When the latest checkpoint was signed (Unix time; 0: none yet).",
            ),
            witness_size: witness_gauge(
                reg,
                "ledgertail_tlog_witness_cosigned_size",
                "Tree size of the latest checkpoint this witness cosigned (0: none yet).",
            ),
            witness_errors: super::counter(
                reg,
                "ledgertail_tlog_witness_errors_total",
                "Submissions to this witness that failed or were refused.",
                &["ledger", "witness"],
            ),
        }
    }
}

/// One ledger's log series.
#[derive(Clone)]
pub struct TlogMetrics {
    pub size: IntGauge,
    pub checkpoint_size: IntGauge,
    pub checkpoint_timestamp: IntGauge,
}

/// One ledger's series for one witness.
#[derive(Clone)]
pub struct WitnessMetrics {
    pub cosigned_size: IntGauge,
    pub errors: IntCounter,
}

impl super::Telemetry {
    pub fn tlog(&self, ledger: &str) -> TlogMetrics {
        let f = &self.tlog;
        let l = [ledger];
        TlogMetrics {
            size: f.size.with_label_values(&l),
            checkpoint_size: f.checkpoint_size.with_label_values(&l),
            checkpoint_timestamp: f.checkpoint_timestamp.with_label_values(&l),
        }
    }

    pub fn witness(&self, ledger: &str, witness: &str) -> WitnessMetrics {
        let f = &self.tlog;
        let l = [ledger, witness];
        WitnessMetrics {
            cosigned_size: f.witness_size.with_label_values(&l),
            errors: f.witness_errors.with_label_values(&l),
        }
    }
}
