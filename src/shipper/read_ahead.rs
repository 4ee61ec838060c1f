//! Reading ahead of the placing: complete lines cut into chunks for the
//! verifier pool, rotations followed on the way, up to a bounded depth.

use std::sync::Arc;
use std::time::Instant;

use super::{Reading, ShipError, Shipper, CHUNK_BYTES, CHUNK_LINES};
use crate::ledger::frame::Frame;
use crate::tail::{Refreshed, TailConfig, Tailer};
use crate::verifier::Rules;

impl Shipper {
    /// Keeps the verifier pool busy: reads complete lines into chunks and
    /// sends them, until enough are in flight or the data on disk is read
    /// (following rotations on the way).
    pub(super) fn read_ahead(
        &mut self,
        tailer: &mut Tailer,
        tail_config: &TailConfig,
        rules: &Arc<Rules>,
        head_seq: Option<u64>,
        reading: &mut Reading,
    ) -> Result<(), ShipError> {
        let depth = 2 * self.verifiers.threads() + 1;
        while !reading.done && self.verifiers.in_flight() < depth {
            let mut chunk = self.verifiers.chunk();
            while chunk.len() < CHUNK_LINES && chunk.byte_len() < CHUNK_BYTES {
                let next = tailer.next_frame().map_err(|e| self.io_err(e))?;
                match next {
                    Some((file, Frame::Line { offset, bytes })) => {
                        chunk.push(file, offset, bytes.len() as u64, bytes)
                    }
                    Some((
                        file,
                        Frame::TooLong {
                            offset,
                            length,
                            prefix,
                        },
                    )) => chunk.push(file, offset, length, prefix),
                    None => {
                        if tailer.paused() {
                            break;
                        }
                        // The end of the newest file known: has it rotated?
                        // (Bounded, in case the folder changes without end.)
                        reading.refreshes += 1;
                        if reading.refreshes <= 64 {
                            match tailer
                                .refresh(tail_config, head_seq)
                                .map_err(|e| self.io_err(e))?
                            {
                                Refreshed::MoreFiles => continue,
                                Refreshed::Unchanged => {}
                                Refreshed::CurrentGone => reading.keep = false,
                            }
                        }
                        reading.done = true;
                        break;
                    }
                }
                chunk.stamp_last(tailer.read_at().unwrap_or_else(Instant::now));
            }
            if chunk.is_empty() {
                self.verifiers.recycle(chunk);
                break;
            }
            self.verifiers
                .send(chunk, rules, reading.done)
                .map_err(|e| self.pool_err(e))?;
        }
        Ok(())
    }
}
