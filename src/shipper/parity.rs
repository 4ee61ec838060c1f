//! The periodic parity check for `replay`: when a `run` (or an earlier
//! `replay`) left where its check stands in the mirror, a replay builds on
//! it, so that a replay run from a timer catches an edit of mirrored
//! lines as `run` would (the files edited in place, the new rows, and the
//! rolling pass's next slice), and halts on it.

use super::{Report, ShipError, Shipper};
use crate::parity::{self, Checked};

impl Shipper {
    /// Checks the mirror against the files from where the kept check
    /// stands, unpaced, and keeps where it stands now; a changed mirrored
    /// line halts the ledger as `rewritten`. Nothing when no check was
    /// kept (a mirror only `replay` built: its rows were judged as they
    /// were read) or the ledger is halted.
    pub fn check_from_kept_parity(&mut self, report: &mut Report) -> Result<(), ShipError> {
        let key = parity::state_key(&self.ledger.name);
        let kept = self.mirror.meta(&key)?;
        let Some(previous) = kept.as_deref().and_then(Checked::from_text) else {
            return Ok(());
        };
        if self.state.halt.is_some() {
            return Ok(());
        }
        let checked =
            parity::recheck_since(&self.ledger, &self.mirror, Some(&previous), &mut |_| true)
                .map_err(|e| self.recheck_err(e))?;
        let Some((found, next)) = checked else {
            return Ok(());
        };
        let text = next.as_ref().map(Checked::to_text).unwrap_or_default();
        self.mirror.set_meta(&key, &text)?;
        if let Some(rewrite) = &found.rewrite {
            self.halt_on(rewrite, report)?;
        }
        Ok(())
    }
}
