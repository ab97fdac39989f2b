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

pub mod file;
pub mod json;
pub mod postgres;
pub mod stdout;
pub mod webhook;

use std::future::Future;

use crate::message::{ChangeBatch, Position};

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Transient,
    Permanent,
}

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
            SinkError::WebhookClient { .. } | SinkError::Invalid(_) => Retry::Permanent,
        }
    }

    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            SinkError::Io { .. } => "io",
            SinkError::Connect { .. } => "connect",
            SinkError::Postgres { .. } => "postgres",
            SinkError::Webhook { .. } | SinkError::WebhookClient { .. } => "webhook",
            SinkError::Invalid(_) => "invalid",
        }
    }
}

/// A destination for changes. See the module docs for the delivery contract.
pub trait Sink: Send {
    fn name(&self) -> &'static str;

    /// The position an earlier run durably stored at the destination, if the sink tracks one.
    fn applied_position(
        &mut self,
    ) -> impl Future<Output = Result<Option<Position>, SinkError>> + Send;

    /// Writes the changes of one NATS message after all earlier ones; not yet durable.
    fn apply(&mut self, batch: &ChangeBatch) -> impl Future<Output = Result<(), SinkError>> + Send;

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
    async fn apply(&mut self, batch: &ChangeBatch) -> Result<(), SinkError> {
        dispatch!(self, s => s.apply(batch).await)
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

/// Shared test data of the sinks.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::message::{
        Change, ChangeBatch, Column, KeyKind, Op, Relation, ReplicationKey, Value, FORMAT_VERSION,
    };

    /// One insert per id into `public.t (id int4 PRIMARY KEY)`.
    pub(crate) fn int_inserts(ids: &[&str]) -> ChangeBatch {
        ChangeBatch {
            version: FORMAT_VERSION,
            commit_lsn: 0x100,
            commit_time_us: 0,
            xid: 1,
            seq: 0,
            last: true,
            prev: None,
            emitted_at_us: 1_710_928_800_000_000,
            relations: vec![Relation {
                oid: 1,
                schema: "public".into(),
                table: "t".into(),
                columns: vec![Column {
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1,
                    identity: true,
                }],
                key: ReplicationKey {
                    kind: KeyKind::PrimaryKey,
                    columns: vec!["id".into()],
                },
            }],
            changes: ids
                .iter()
                .map(|id| Change {
                    op: Op::Insert,
                    lsn: 0x10,
                    relation: 0,
                    new: Some(vec![Value::Text(id.as_bytes().to_vec())]),
                    old: None,
                    truncate: None,
                })
                .collect(),
            source: None,
            copy: false,
        }
    }

    /// The JSON line the stdout and file sinks write for `int_inserts(&[id])`.
    pub(crate) fn int_insert_line(id: &str) -> String {
        format!(
            r#"{{"EmittedAt":"2024-03-20T10:00:00Z","LSN":"0/10","NewTuple":{{"id":{id}}},"ReplicationKey":{{"Columns":["id"],"Type":"PRIMARY KEY"}},"Schema":"public","Table":"t","Type":"INSERT"}}"#
        ) + "\n"
    }
}
