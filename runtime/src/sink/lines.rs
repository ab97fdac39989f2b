//! The JSON Lines output the stdout and file sinks share: every change rendered as one line
//! (pg_flo's shape, [`super::json`]) into a buffer that the sink writes out at its commit, or
//! before it once the buffer holds [`SPILL_BYTES`] (a large transaction is written early to
//! bound memory); a rollback drops the lines not written yet.

use crate::message::ChangeBatch;
use crate::sink::json;

/// Buffered output is written out before the commit once it reaches this size.
pub const SPILL_BYTES: usize = 8 << 20;

/// Rendered lines not yet written.
pub(super) struct Lines {
    buffer: Vec<u8>,
    /// [`SPILL_BYTES`] (tests lower it).
    pub(super) spill_bytes: usize,
}

impl Lines {
    pub(super) fn new() -> Lines {
        Lines {
            buffer: Vec::new(),
            spill_bytes: SPILL_BYTES,
        }
    }

    /// Renders every change of `batch`; true once the lines are due to be written out before
    /// the commit.
    pub(super) fn render(&mut self, batch: &ChangeBatch) -> bool {
        for change in &batch.changes {
            self.buffer
                .extend_from_slice(&json::render_line(batch, change));
        }
        self.buffer.len() >= self.spill_bytes
    }

    /// The lines to write; the sink hands the buffer back with [`Lines::reuse`] once they are
    /// written or failed (either way they are done: on failure the worker rolls back and
    /// redelivers).
    pub(super) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }

    /// Keeps the allocation of a buffer [`Lines::take`] gave out, emptied.
    pub(super) fn reuse(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        self.buffer = buffer;
    }

    /// Drops the lines not written yet (a rollback).
    pub(super) fn clear(&mut self) {
        self.buffer.clear();
    }
}
