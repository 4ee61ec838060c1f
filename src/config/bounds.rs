//! Every number the configuration holds, with its default and the bounds
//! outside which it is refused when the configuration loads (an absurd
//! value is never found out later: a grace period of 2^64 seconds once
//! made SIGTERM overflow). One table: resolving reads it, the sample
//! configuration's test checks each default against it, and the table in
//! docs/configuration.md is checked against [`markdown`].

use super::ConfigError;

/// One number of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// As written in the file (`postgres.lease_secs` under `[postgres]`).
    pub field: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    /// Why the bounds are where they are, when it is not obvious.
    pub why: Option<&'static str>,
}

const fn bound(field: &'static str, default: u64, min: u64, max: u64) -> Bound {
    Bound {
        field,
        default,
        min,
        max,
        why: None,
    }
}

const WEEK: u64 = 7 * 24 * 3600;
const DAY: u64 = 24 * 3600;

pub const PARITY_INTERVAL_SECS: Bound = bound("parity_interval_secs", 60, 1, WEEK);
pub const BATCH_MAX_EVENTS: Bound = bound("batch_max_events", 1000, 1, 1_000_000);
pub const BATCH_MAX_BYTES: Bound = bound("batch_max_bytes", 16 << 20, 64 << 10, 1 << 30);
pub const BATCH_MAX_MILLIS: Bound = bound("batch_max_millis", 100, 1, 60_000);
pub const POLL_INTERVAL_MILLIS: Bound = bound("poll_interval_millis", 500, 10, 60_000);
pub const COMMIT_INTERVAL_MILLIS: Bound = bound("commit_interval_millis", 5, 0, 1000);
pub const READY_MAX_LAG_EVENTS: Bound = bound("ready_max_lag_events", 10_000, 0, u64::MAX);
pub const SHUTDOWN_GRACE_SECS: Bound = bound("shutdown_grace_secs", 20, 1, 3600);
pub const PARITY_MAX_BYTES_PER_SEC: Bound =
    bound("parity_max_bytes_per_sec", 32 << 20, 4096, 1 << 40);
pub const MAX_LINE_BYTES: Bound = Bound {
    why: Some("a longer line would let one line take a large share of memory"),
    ..bound(
        "max_line_bytes",
        crate::ledger::frame::DEFAULT_MAX_LINE_BYTES,
        1,
        256 << 20,
    )
};
pub const POSTGRES_BATCH_MAX_EVENTS: Bound = Bound {
    why: Some("a batch is one SQL message in memory on both ends"),
    ..bound("postgres.batch_max_events", 5000, 1, 100_000)
};
pub const POSTGRES_BATCH_MAX_MILLIS: Bound = bound("postgres.batch_max_millis", 0, 0, 60_000);
pub const POSTGRES_CONNECT_TIMEOUT_SECS: Bound =
    bound("postgres.connect_timeout_secs", 10, 1, WEEK);
pub const POSTGRES_STATEMENT_TIMEOUT_SECS: Bound =
    bound("postgres.statement_timeout_secs", 30, 1, WEEK);
pub const POSTGRES_LEASE_SECS: Bound = Bound {
    why: Some("the lease is renewed every third of it, and the fleet store refuses one past a day"),
    ..bound("postgres.lease_secs", 60, 3, DAY)
};
pub const TLOG_CHECKPOINT_INTERVAL_SECS: Bound = bound("tlog.checkpoint_interval_secs", 10, 1, DAY);
pub const TLOG_WITNESS_TIMEOUT_SECS: Bound = bound("tlog.witness_timeout_secs", 10, 1, DAY);

/// Every bound, in the order the documentation lists them.
pub const ALL: &[Bound] = &[
    PARITY_INTERVAL_SECS,
    BATCH_MAX_EVENTS,
    BATCH_MAX_BYTES,
    BATCH_MAX_MILLIS,
    POLL_INTERVAL_MILLIS,
    COMMIT_INTERVAL_MILLIS,
    READY_MAX_LAG_EVENTS,
    SHUTDOWN_GRACE_SECS,
    PARITY_MAX_BYTES_PER_SEC,
    MAX_LINE_BYTES,
    POSTGRES_BATCH_MAX_EVENTS,
    POSTGRES_BATCH_MAX_MILLIS,
    POSTGRES_CONNECT_TIMEOUT_SECS,
    POSTGRES_STATEMENT_TIMEOUT_SECS,
    POSTGRES_LEASE_SECS,
    TLOG_CHECKPOINT_INTERVAL_SECS,
    TLOG_WITNESS_TIMEOUT_SECS,
];

impl Bound {
    /// `value`, or the default when unset; refused outside the bounds.
    pub fn check(&self, value: Option<u64>) -> Result<u64, ConfigError> {
        let v = value.unwrap_or(self.default);
        if (self.min..=self.max).contains(&v) {
            return Ok(v);
        }
        let mut reason = format!("must be between {} and {}", self.min, self.max);
        if let Some(why) = self.why {
            reason = format!("{reason} ({why})");
        }
        Err(ConfigError::invalid(self.field, v, &reason))
    }

    /// [`Bound::check`] of a count.
    pub fn check_usize(&self, value: Option<usize>) -> Result<usize, ConfigError> {
        let v = self.check(value.map(|n| n as u64))?;
        Ok(usize::try_from(v).unwrap_or(usize::MAX))
    }
}

/// The bounds as the Markdown table of docs/configuration.md.
pub fn markdown() -> String {
    let mut out = String::from("| setting | default | least | most |\n|---|---|---|---|\n");
    for b in ALL {
        let max = match b.max {
            u64::MAX => "no limit".to_owned(),
            n => n.to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {max} |\n",
            b.field, b.default, b.min
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_outside_its_bounds_is_refused_with_the_field_and_the_bounds() {
        assert_eq!(SHUTDOWN_GRACE_SECS.check(None).unwrap(), 20);
        assert_eq!(SHUTDOWN_GRACE_SECS.check(Some(3600)).unwrap(), 3600);
        let e = SHUTDOWN_GRACE_SECS.check(Some(3601)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shutdown_grace_secs: must be between 1 and 3600 (got 3601)"
        );
        let e = POSTGRES_LEASE_SECS.check(Some(2)).unwrap_err().to_string();
        assert!(e.contains("renewed every third"), "{e}");
    }

    #[test]
    fn every_default_is_within_its_own_bounds() {
        for b in ALL {
            assert!(b.check(None).is_ok(), "{}", b.field);
        }
    }
}
