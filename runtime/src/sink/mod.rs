//! Sinks: where the worker writes changes (stdout, file, postgres, webhook).
//!
//! Place in the pipeline: NATS message -> decode -> rules -> routing -> **sink**.
//!
//! Delivery contract (the worker relies on it to ack NATS messages):
//! - The worker calls [`Sink::apply`] once per NATS message, in stream order. A call may end in
//!   the middle of a source transaction (a large transaction spans several messages).
//! - The worker calls [`Sink::commit`] only at a transaction boundary, with the position of the
//!   last applied message (whose `last` flag is set). `commit` returns `Ok` only when everything
//!   applied so far is durable at the destination; the worker acks the NATS messages after that.
//!   A sink that can (postgres) stores `through` in the same transaction as the data and reports
//!   it from [`Sink::applied_position`] on the next start, so redelivered messages are skipped
//!   (effectively-once). The others are at-least-once: a retry may repeat output.
//! - After an error the worker calls [`Sink::rollback`], waits, and re-delivers every change since
//!   the last successful commit.
//! - Positions are comparable only between messages of one source ([`SourceId`]): whether a
//!   message is already applied is decided by [`position_verdict`], by the worker against the
//!   last message it applied and by the postgres sink against its stored position and source
//!   ([`Sink::applied_source`]).

pub mod file;
pub mod json;
pub mod lines;
pub mod postgres;
pub mod stdout;
pub mod webhook;

use std::future::Future;

use crate::message::{ChangeBatch, Position, SourceId};

pub use crate::retry::Retry;

/// A sink failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("i/o error writing {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to the target database ({target})")]
    Connect {
        target: String,
        #[source]
        source: Box<crate::postgres::connection::ConnectError>,
    },
    #[error("target database error while {step}")]
    Postgres {
        step: String,
        retry: Retry,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A webhook request that failed: `target` is the URL without user info or query, `what`
    /// names the change(s) (operation, table, LSN; never row values).
    #[error("webhook POST to {target} for {what} failed after {attempts} attempt(s)")]
    Webhook {
        target: String,
        what: String,
        attempts: u32,
        retry: Retry,
        #[source]
        source: webhook::WebhookError,
    },
    #[error("cannot set up the HTTP client of the webhook sink")]
    WebhookClient {
        #[source]
        source: reqwest::Error,
    },
    /// A message of another source than the one whose position the target stores.
    #[error(
        "the target's applied position of group {group:?} belongs to another source ({stored}) \
         than this message ({got}); its position means nothing for this source, so the worker \
         stops rather than skip or apply changes by it. If the source was replaced on purpose, \
         copy it again with --copy-and-stream (the copy starts the position over), or make the \
         target forget the old position and apply this source's messages from the start of \
         the stream: DELETE FROM internal_pg_flo.applied_position WHERE group_name = {}; \
         then restart the worker. Otherwise point the replicator back at the source the target \
         follows",
        pg_flo_source::sql::quote_literal(group)
    )]
    SourceMismatch {
        group: String,
        stored: SourceId,
        got: SourceId,
    },
    #[error("{0}")]
    Invalid(String),
}

impl SinkError {
    pub fn retry(&self) -> Retry {
        match self {
            SinkError::Io { .. } => Retry::Transient,
            SinkError::Connect { source, .. } => source.retry(),
            SinkError::Postgres { retry, .. } => *retry,
            SinkError::Webhook { retry, .. } => *retry,
            SinkError::WebhookClient { .. }
            | SinkError::Invalid(_)
            | SinkError::SourceMismatch { .. } => Retry::Permanent,
        }
    }

    /// Whether moving the message to the dead-letter subject is a way on: not when the sink
    /// refuses every message of a source.
    pub fn dead_letterable(&self) -> bool {
        !matches!(self, SinkError::SourceMismatch { .. })
    }

    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            SinkError::Io { .. } => "io",
            SinkError::Connect { .. } => "connect",
            SinkError::Postgres { .. } => "postgres",
            SinkError::Webhook { .. } | SinkError::WebhookClient { .. } => "webhook",
            SinkError::Invalid(_) => "invalid",
            SinkError::SourceMismatch { .. } => "source_mismatch",
        }
    }
}

/// What to do with a message, given the position last applied and its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// After the applied position (or nothing is applied): apply it.
    Apply,
    /// At or below the applied position of the same source: already applied.
    Skip,
    /// A copy of another source (a new slot incarnation): apply it, and the position starts
    /// over from it (the applied position is replaced, not compared).
    Reset,
    /// A streamed message of another source: refuse it ([`SinkError::SourceMismatch`]).
    Mismatch { stored: SourceId, got: SourceId },
}

/// Decides whether a message at `pos` from `source` (`copy`: of an initial copy) is applied,
/// given `applied`: the last applied position and the source it belongs to.
///
/// - A message or a stored position without source (written by a version before sources) is
///   compared by position; the stored position adopts the source of the next applied message.
/// - A copy message whose source differs from the stored one (or the stored one is unknown)
///   starts over: a copy always comes from a newly created slot.
/// - A streamed message of another source is a mismatch.
pub fn position_verdict(
    applied: Option<(Position, Option<SourceId>)>,
    source: Option<SourceId>,
    copy: bool,
    pos: Position,
) -> Verdict {
    let Some((last, stored)) = applied else {
        return Verdict::Apply;
    };
    match (stored, source) {
        (stored, Some(got)) if stored != Some(got) && copy => Verdict::Reset,
        (Some(stored), Some(got)) if stored != got => Verdict::Mismatch { stored, got },
        _ if pos <= last => Verdict::Skip,
        _ => Verdict::Apply,
    }
}

/// A destination for changes. See the module docs for the delivery contract.
pub trait Sink: Send {
    fn name(&self) -> &'static str;

    /// The position an earlier run durably stored at the destination, if the sink tracks one.
    fn applied_position(
        &mut self,
    ) -> impl Future<Output = Result<Option<Position>, SinkError>> + Send;

    /// The source of the position the last [`Sink::applied_position`] call returned, if the
    /// sink stores one. Default: none.
    fn applied_source(&self) -> Option<SourceId> {
        None
    }

    /// Writes the changes of one NATS message after all earlier ones; not yet durable.
    fn apply(&mut self, batch: &ChangeBatch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// [`Sink::apply`], handing the message over: a sink that keeps it until the commit (the
    /// postgres sink) need not copy it. Default: `apply`.
    fn apply_owned(
        &mut self,
        batch: ChangeBatch,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async move { self.apply(&batch).await }
    }

    /// Makes everything applied so far durable; `through` ends a source transaction.
    fn commit(&mut self, through: Position) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Discards what was applied since the last commit, where the sink can.
    fn rollback(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Sends what `apply` buffered without committing, so that a rejection surfaces now and can
    /// be tied to the last applied message (used while dead-lettering). Default: nothing.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// The sinks, dispatched by enum (no trait objects on the hot path).
pub enum AnySink {
    Stdout(stdout::StdoutSink),
    File(file::FileSink),
    Postgres(Box<postgres::PostgresSink>),
    Webhook(Box<webhook::WebhookSink>),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnySink::Stdout($s) => $e,
            AnySink::File($s) => $e,
            AnySink::Postgres($s) => $e,
            AnySink::Webhook($s) => $e,
        }
    };
}

impl Sink for AnySink {
    fn name(&self) -> &'static str {
        dispatch!(self, s => s.name())
    }
    async fn applied_position(&mut self) -> Result<Option<Position>, SinkError> {
        dispatch!(self, s => s.applied_position().await)
    }
    fn applied_source(&self) -> Option<SourceId> {
        dispatch!(self, s => s.applied_source())
    }
    async fn apply(&mut self, batch: &ChangeBatch) -> Result<(), SinkError> {
        dispatch!(self, s => s.apply(batch).await)
    }
    async fn apply_owned(&mut self, batch: ChangeBatch) -> Result<(), SinkError> {
        dispatch!(self, s => s.apply_owned(batch).await)
    }
    async fn commit(&mut self, through: Position) -> Result<(), SinkError> {
        dispatch!(self, s => s.commit(through).await)
    }
    async fn rollback(&mut self) -> Result<(), SinkError> {
        dispatch!(self, s => s.rollback().await)
    }
    async fn flush(&mut self) -> Result<(), SinkError> {
        dispatch!(self, s => s.flush().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(commit_lsn: u64, seq: u64) -> Position {
        Position { commit_lsn, seq }
    }

    fn src(system_identifier: u64, slot_origin: u64) -> Option<SourceId> {
        Some(SourceId {
            system_identifier,
            slot_origin,
        })
    }

    #[test]
    fn position_verdict_table() {
        let a = src(1, 0x100);
        let a2 = src(1, 0x900); // the same cluster, a re-created slot
        let b = src(2, 0x100); // another cluster
        let mismatch = |stored: Option<SourceId>, got: Option<SourceId>| Verdict::Mismatch {
            stored: stored.unwrap(),
            got: got.unwrap(),
        };
        #[rustfmt::skip]
        let cases = [
            // (applied, message source, copy, message position, verdict)
            // Nothing applied yet.
            (None, a, false, pos(5, 0), Verdict::Apply),
            (None, None, false, pos(5, 0), Verdict::Apply),
            (None, a, true, pos(5, 0), Verdict::Apply),
            // The same source: by position.
            (Some((pos(5, 1), a)), a, false, pos(5, 1), Verdict::Skip),
            (Some((pos(5, 1), a)), a, false, pos(4, 9), Verdict::Skip),
            (Some((pos(5, 1), a)), a, false, pos(5, 2), Verdict::Apply),
            (Some((pos(5, 1), a)), a, true, pos(4, 0), Verdict::Skip),
            (Some((pos(5, 1), a)), a, true, pos(5, 2), Verdict::Apply),
            // Another source, streamed: refused, below or above the stored position.
            (Some((pos(5, 1), a)), b, false, pos(3, 0), mismatch(a, b)),
            (Some((pos(5, 1), a)), b, false, pos(9, 0), mismatch(a, b)),
            (Some((pos(5, 1), a)), a2, false, pos(9, 0), mismatch(a, a2)),
            // Another source, copied: starts over.
            (Some((pos(5, 1), a)), b, true, pos(3, 0), Verdict::Reset),
            (Some((pos(5, 1), a)), a2, true, pos(9, 0), Verdict::Reset),
            // A stored position of a version without sources: compared, then adopts.
            (Some((pos(5, 1), None)), a, false, pos(5, 1), Verdict::Skip),
            (Some((pos(5, 1), None)), a, false, pos(6, 0), Verdict::Apply),
            // ... except by a copy (always from a new slot).
            (Some((pos(5, 1), None)), a, true, pos(3, 0), Verdict::Reset),
            // A message of a version without sources: by position.
            (Some((pos(5, 1), a)), None, false, pos(5, 0), Verdict::Skip),
            (Some((pos(5, 1), a)), None, false, pos(6, 0), Verdict::Apply),
            (Some((pos(5, 1), a)), None, true, pos(3, 0), Verdict::Skip),
            (Some((pos(5, 1), None)), None, false, pos(6, 0), Verdict::Apply),
        ];
        for (applied, source, copy, p, want) in cases {
            assert_eq!(
                position_verdict(applied, source, copy, p),
                want,
                "{applied:?} {source:?} copy={copy} {p}"
            );
        }
    }
}
