//! The stdout sink: one JSON object per change per line (see [`super::json`]).
//!
//! Place in the pipeline: NATS message -> decode -> rules -> routing -> **stdout**.
//!
//! Delivery: at-least-once. [`Sink::apply`] renders into a buffer; [`Sink::commit`] writes the
//! buffer to stdout and flushes it, so the worker acks only what reached the stream;
//! [`Sink::rollback`] drops the buffered lines. A transaction bigger than [`SPILL_BYTES`] is
//! written out before its commit to bound memory, so after a failure in the middle of such a
//! transaction its first lines may be printed twice (pg_flo re-prints a whole retried batch).

use std::io::{Stdout, Write};
use std::sync::{Arc, Mutex};

use crate::message::{ChangeBatch, Position};
use crate::sink::lines::Lines;
use crate::sink::{Sink, SinkError};

#[cfg(doc)]
use crate::sink::lines::SPILL_BYTES;

/// Writes changes as JSON Lines to stdout (or, in tests, any writer).
pub struct StdoutSink<W = Stdout> {
    /// Written from a blocking task (a slow reader of the pipe must not stall the runtime).
    out: Arc<Mutex<W>>,
    lines: Lines,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self::with_writer(std::io::stdout())
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Write + Send + 'static> StdoutSink<W> {
    fn with_writer(out: W) -> Self {
        StdoutSink {
            out: Arc::new(Mutex::new(out)),
            lines: Lines::new(),
        }
    }

    /// Writes and flushes the buffer. Written or not, those lines are done afterwards: on
    /// failure the worker rolls back and redelivers.
    async fn write_out(&mut self) -> Result<(), SinkError> {
        let out = Arc::clone(&self.out);
        let buffer = self.lines.take();
        let result = tokio::task::spawn_blocking(move || {
            let result = match out.lock() {
                Ok(mut out) => out.write_all(&buffer).and_then(|()| out.flush()),
                Err(_) => Err(std::io::Error::other("stdout writer poisoned")),
            };
            (buffer, result)
        })
        .await;
        let result = match result {
            Ok((buffer, result)) => {
                self.lines.reuse(buffer);
                result
            }
            Err(join) => Err(std::io::Error::other(join)),
        };
        result.map_err(|source| SinkError::Io {
            what: "stdout".into(),
            source,
        })
    }
}

impl<W: Write + Send + 'static> Sink for StdoutSink<W> {
    fn name(&self) -> &'static str {
        "stdout"
    }

    async fn applied_position(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(None)
    }

    async fn apply(&mut self, batch: &ChangeBatch) -> Result<(), SinkError> {
        if self.lines.render(batch) {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn commit(&mut self, _through: Position) -> Result<(), SinkError> {
        self.write_out().await
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        self.lines.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::{int_insert_line as line, int_inserts as batch};

    #[tokio::test]
    async fn writes_on_commit_and_drops_on_rollback() {
        let mut sink = StdoutSink::with_writer(Vec::new());
        let b = batch(&["1", "2"]);
        sink.apply(&b).await.unwrap();
        assert!(
            sink.out.lock().unwrap().is_empty(),
            "nothing is written before the commit"
        );
        sink.commit(b.position()).await.unwrap();
        sink.apply(&batch(&["3"])).await.unwrap();
        sink.rollback().await.unwrap();
        sink.apply(&batch(&["4"])).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        assert_eq!(
            String::from_utf8(sink.out.lock().unwrap().clone()).unwrap(),
            line("1") + &line("2") + &line("4")
        );
        assert_eq!(StdoutSink::new().name(), "stdout");
    }

    #[tokio::test]
    async fn spills_a_large_transaction_before_its_commit() {
        let mut sink = StdoutSink::with_writer(Vec::new());
        sink.lines.spill_bytes = 1;
        sink.apply(&batch(&["1"])).await.unwrap();
        assert_eq!(
            String::from_utf8(sink.out.lock().unwrap().clone()).unwrap(),
            line("1")
        );
        assert_eq!(sink.applied_position().await.unwrap(), None);
    }
}
