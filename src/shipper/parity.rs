//! The periodic parity check for `replay`: when a `run` (or an earlier
//! `replay`) left where its check stands in the mirror, a replay builds on
//! it, so that a replay run from a timer catches an edit of mirrored
//! lines as `run` would (the files edited in place, the new rows, and the
//! rolling pass's next slice), and halts on it. A replay of a mirror that
//! held rows before it and kept no check makes a full one, once.

use super::{Report, ShipError, Shipper};
use crate::mirror::Durability;
use crate::parity::{self, Checked};

impl Shipper {
    /// Checks the mirror against the files from where the kept check
    /// stands, unpaced, and keeps where it stands now; a changed mirrored
    /// line halts the ledger as `rewritten`. With no check kept, the check
    /// is full when the mirror held rows before this replay (`had_rows`),
    /// and skipped for a mirror this replay built from nothing (its rows
    /// were judged as they were read). Nothing while the ledger is halted.
    pub fn check_from_kept_parity(
        &mut self,
        had_rows: bool,
        report: &mut Report,
    ) -> Result<(), ShipError> {
        let key = parity::state_key(&self.ledger.name);
        let kept = self.mirror.meta(&key)?;
        let previous = kept.as_deref().and_then(Checked::from_text);
        if self.state.halt.is_some() || (previous.is_none() && !had_rows) {
            return Ok(());
        }
        let mut unpaced = |_| true;
        let checked =
            parity::recheck_since(&self.ledger, &self.mirror, previous.as_ref(), &mut unpaced)
                .map_err(|e| self.recheck_err(e))?;
        let Some((found, next)) = checked else {
            return Ok(());
        };
        let text = next.as_ref().map(Checked::to_text).unwrap_or_default();
        self.mirror.set_meta(&key, &text)?;
        if let Some(rewrite) = &found.rewrite {
            // `replay`'s own connection: never in a group.
            self.halt_on(rewrite, report, Durability::Alone)?;
        }
        Ok(())
    }
}
