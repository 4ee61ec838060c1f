//! Re-judging after a change of trusted keys or signature policy (contract
//! §2.1): the read position moves back to the first line after the head's
//! that was quarantined as `unknown_key` or `unsigned`; the next catch-up
//! judges from there and resolves the rows of lines that now mirror.

use super::{ShipError, Shipper};
use crate::ledger::{Hash, KeyRing, SignaturePolicy, Verdict};
use crate::tail;

impl Shipper {
    /// At start-up: when the mirror's quarantine was judged with other
    /// keys or another policy, judges those lines again (§2.1: "or a
    /// restart"). A mirror that never recorded them is left alone.
    pub fn rejudge_if_changed(&mut self) -> Result<bool, ShipError> {
        let recorded = self.mirror.meta(&self.judged_with_key())?;
        match recorded {
            Some(r) if r != self.judged_with() => self.rejudge(),
            _ => Ok(false),
        }
    }

    /// Records the keys and policy the quarantine is now judged with.
    pub fn record_judged_with(&self) -> Result<(), ShipError> {
        let key = self.judged_with_key();
        let now = self.judged_with();
        if self.mirror.meta(&key)?.as_deref() != Some(now.as_str()) {
            self.mirror.set_meta(&key, &now)?;
        }
        Ok(())
    }

    fn judged_with_key(&self) -> String {
        format!("judged_with:{}", self.ledger.name)
    }

    /// A digest of the signature policy and the trusted keys.
    fn judged_with(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.ledger.signatures.as_str());
        let keys = &self.ledger.keys;
        for id in keys.ids() {
            h.update([0u8]);
            h.update(id.as_bytes());
            if let Some(key) = keys.get(id) {
                h.update(key.as_bytes());
            }
        }
        let digest: [u8; 32] = h.finalize().into();
        format!(
            "{}:{}",
            self.ledger.signatures.as_str(),
            Hash(digest).to_hex()
        )
    }

    /// Takes new trusted keys and signature policy, and moves the read
    /// position back to the first line to judge again (§2.1). Returns
    /// whether anything will be judged again. Keys and policy as they were
    /// change nothing: a reload that changes neither judges nothing again.
    pub fn reconfigure(
        &mut self,
        keys: KeyRing,
        policy: SignaturePolicy,
    ) -> Result<bool, ShipError> {
        if keys == self.ledger.keys && policy == self.ledger.signatures {
            return Ok(false);
        }
        self.ledger.keys = keys;
        self.ledger.signatures = policy;
        self.tailer = None;
        self.rejudge()
    }

    /// Moves the read position back to the first line quarantined as
    /// `unknown_key` or `unsigned` after the head's, and lifts the halt in
    /// memory: the next catch-up judges from there. A `rewritten` halt is
    /// never lifted: no key or policy explains bytes that changed, and
    /// judging again from an earlier line would read past the rewrite and
    /// erase its record.
    fn rejudge(&mut self) -> Result<bool, ShipError> {
        if let Some(halt) = self
            .state
            .halt
            .as_ref()
            .filter(|h| h.verdict == Verdict::Rewritten)
        {
            tracing::warn!(
                ledger = %self.ledger.name,
                halt = %halt,
                "keys or signature policy changed, but the ledger is halted as rewritten: nothing is judged again until the mirror is rebuilt (see the runbook)"
            );
            return Ok(false);
        }
        let candidates = self.mirror.rejudge_candidates(&self.ledger.name)?;
        if candidates.is_empty() {
            return Ok(false);
        }
        let files = self.tail_config()?.discover().map_err(|e| self.io_err(e))?;
        let order = |file: &tail::FileId, offset: u64| {
            files
                .iter()
                .position(|f| file.identifies(&f.id))
                .map(|i| (i, offset))
        };
        // Lines at or before the head's line (and so before the anchor)
        // are not judged again.
        let after = match self.state.head {
            Some(head) => match self.mirror.event_location(&self.ledger.name, head.seq)? {
                Some((file, offset)) => order(&file, offset),
                None => None,
            },
            None => None,
        };
        let first = candidates
            .iter()
            .filter_map(|(file, offset)| Some((order(file, *offset)?, *file, *offset)))
            .filter(|(at, _, _)| after.is_none_or(|h| *at > h))
            .min();
        let Some((_, file, offset)) = first else {
            return Ok(false);
        };
        let Some(position) = tail::position_in(&files, file, offset).map_err(|e| self.io_err(e))?
        else {
            return Ok(false);
        };
        // Never move forward: only lines already read are judged again.
        if let Some(current) = &self.state.position {
            if current.file.may_be(&position.file) && current.offset < position.offset {
                return Ok(false);
            }
        }
        tracing::info!(
            ledger = %self.ledger.name,
            file = %position.path.display(),
            offset = position.offset,
            "keys or signature policy changed: judging quarantined lines again from here"
        );
        self.state.position = Some(position);
        if let Some(h) = self.state.halt.take() {
            self.lift_how = Some(format!(
                "judged again after the trusted keys or the signature policy changed ({} at {})",
                h.verdict,
                h.file.as_deref().unwrap_or("?")
            ));
        }
        self.resolving = true;
        Ok(true)
    }
}
