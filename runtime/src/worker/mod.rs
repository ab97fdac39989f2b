//! `pg_flo worker <sink>`: NATS JetStream -> decode -> order -> (rules -> routing) -> sink.
//!
//! Contract (when a message may be acked):
//! - At most one worker applies a group: the worker takes the group's lease in NATS before it
//!   consumes, and stops applying the moment it cannot renew it ([`state`]).
//! - Messages are applied to the sink in [`Position`] order, decided by [`ordering::Order`],
//!   which lives as long as the process: a message whose `prev` has not been applied yet is
//!   held, unacked, until its predecessor arrives; a message at or below the last applied
//!   position is a duplicate and is skipped. The held messages are bounded by count and bytes:
//!   beyond that the newest are let go unacked and delivery restarts once the predecessor is
//!   applied. A predecessor that does not come restarts delivery once and, after
//!   `--gap-timeout`, stops the worker with an error naming both positions.
//! - The sink commits only at a source-transaction boundary, after `batch_size` changes or
//!   `flush_interval`, whichever comes first; a message is acked only after the commit that
//!   covers it returned Ok. A crash before that leaves it in the stream for redelivery.
//! - The applied position survives restarts for every sink: the postgres and file sinks store
//!   it at their destination with the data; for stdout and webhook the worker stores it in the
//!   group's NATS state after each commit, before acking.
//! - A transient failure (NATS or sink connection) rolls the sink back and restarts delivery
//!   from the first unacked message after a backoff. A permanent one (undecodable message,
//!   change rejected by the target) stops the worker with a report; nothing is acked or skipped,
//!   unless `--dead-letter` isolates the rejected message (see `dead_letter.rs`).

pub mod chunks;
mod dead_letter;
pub mod ordering;
pub mod routing;
pub mod rules;
mod session;
mod state;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{self, WorkerConfig};
use crate::message::{ChangeBatch, DecodeError, Position};
use crate::metrics;
use crate::nats::{self as nats_setup, NatsError};
use crate::retry::{Backoff, Retry};
use crate::sink::{AnySink, Sink, SinkError};
use ordering::Order;

/// Most bytes the consumer fetches ahead (the server cuts off clients that fall far behind);
/// at least two of the largest messages the server accepts.
const MAX_BYTES_AHEAD: usize = 16 * 1024 * 1024;

/// Most messages delivered and not yet acked: the worker acks a transaction only once it has
/// all of it, so this bounds nothing but memory for ack handles (a few hundred bytes each).
const MAX_ACK_PENDING: i64 = 1_000_000;

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("jetstream consumer failed: {0}")]
    Consume(String),
    #[error("message at stream sequence {stream_seq} cannot be decoded; it stays in the stream (nothing was acked); check that replicator and worker versions match")]
    Decode {
        stream_seq: u64,
        #[source]
        source: DecodeError,
    },
    #[error("message at stream sequence {stream_seq} is a part of a change that cannot be used: {problem}; it stays in the stream (nothing was acked); check that replicator and worker versions match")]
    Part { stream_seq: u64, problem: String },
    #[error("{}", sink_failure(sink, source))]
    Sink {
        sink: &'static str,
        #[source]
        source: SinkError,
    },
    #[error("the sink rejected a change; re-applying one message at a time to find it")]
    Isolate,
    #[error("a rejected message was moved to the dead-letter subject; resuming")]
    DeadLettered,
    #[error("could not dead-letter message {position}: {message}")]
    DeadLetter { position: String, message: String },
    #[error(
        "messages arrived out of order: transaction {expected} is incomplete but {got} followed it"
    )]
    OutOfOrder { expected: String, got: String },
    #[error("restarting delivery from the oldest unacked message ({0})")]
    Redeliver(&'static str),
    #[error(
        "message {position} has waited {waited:?} for its predecessor {waiting_for}, which is not \
         in the stream. If the replicator is down, start it: it re-publishes what NATS did not \
         acknowledge, and the worker goes on after a restart. If the replicator runs, the \
         predecessor was lost (the stream was purged, or NATS lost an acknowledged message) and \
         the changes between {waiting_for} and {position} are missing: re-copy the group \
         (replicator --copy-and-stream with a new slot)"
    )]
    MissingPredecessor {
        position: Position,
        waiting_for: Position,
        waited: Duration,
    },
    #[error(
        "the transaction at {position} spans more than {pending} messages, the consumer's \
         max ack pending ({MAX_ACK_PENDING}): the worker acknowledges a transaction only once it \
         has all of it, so the rest of it would never be delivered. It cannot be applied by this \
         worker: re-copy the tables (replicator --copy-and-stream), and raise the replicator's \
         --max-batch-changes and --max-batch-bytes so that such transactions take fewer messages"
    )]
    TransactionTooLarge { position: Position, pending: usize },
    #[error("the worker lease was lost (another worker took the group, or NATS was unreachable too long); stopped applying")]
    LeaseLost,
}

impl WorkerError {
    fn is_transient(&self) -> bool {
        match self {
            WorkerError::Nats(_)
            | WorkerError::Consume(_)
            | WorkerError::Redeliver(_)
            | WorkerError::Isolate
            | WorkerError::DeadLettered
            | WorkerError::DeadLetter { .. }
            | WorkerError::LeaseLost => true,
            WorkerError::Sink { source, .. } => source.retry() == Retry::Transient,
            WorkerError::Decode { .. }
            | WorkerError::Part { .. }
            | WorkerError::TransactionTooLarge { .. }
            | WorkerError::OutOfOrder { .. }
            | WorkerError::MissingPredecessor { .. } => false,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            WorkerError::Nats(_) => "nats",
            WorkerError::Consume(_) => "consume",
            WorkerError::Decode { .. } | WorkerError::Part { .. } => "decode",
            WorkerError::Sink { source, .. } => source.category(),
            WorkerError::OutOfOrder { .. } => "out_of_order",
            WorkerError::Redeliver(_) => "redeliver",
            WorkerError::MissingPredecessor { .. } => "gap",
            WorkerError::Isolate | WorkerError::DeadLettered => "dead_letter",
            WorkerError::DeadLetter { .. } => "dead_letter_publish",
            WorkerError::LeaseLost => "lease",
            WorkerError::TransactionTooLarge { .. } => "transaction_too_large",
        }
    }
}

fn sink_failure(sink: &str, source: &SinkError) -> String {
    if !source.dead_letterable() {
        return format!(
            "the {sink} sink refused a message; the worker stops: nothing was acked or skipped"
        );
    }
    match source.retry() {
        Retry::Transient => format!("the {sink} sink failed"),
        // No change was refused: the target is unreachable with these settings (password,
        // database, TLS), so --dead-letter would not help.
        Retry::Permanent if matches!(source, SinkError::Connect { .. }) => format!(
            "the {sink} sink cannot connect to its target with these settings; the worker \
             stops: nothing was acked or skipped. Fix the cause (see below) and restart the worker"
        ),
        Retry::Permanent => format!(
            "the {sink} sink rejected a change permanently; the worker stops: nothing was acked or \
             skipped, the change and everything after it stay in the stream. Fix the cause (see \
             below) and restart the worker, or restart it with --dead-letter to move such changes \
             to the dead-letter subject and go on"
        ),
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every 5 s, the consumer's pending and ack-pending counts into the metrics (a failed read
/// leaves the last values).
async fn read_consumer(stream: jetstream::stream::Stream, consumer: String) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let read = tokio::time::timeout(Duration::from_secs(5), stream.consumer_info(&consumer));
        if let Ok(Ok(info)) = read.await {
            let m = metrics::get();
            m.worker_consumer_pending
                .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
            m.worker_consumer_ack_pending
                .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
        }
    }
}

/// A missing predecessor being waited for, across sessions.
struct GapWatch {
    waiting_for: Position,
    since: Instant,
    redeliveries: u32,
}

/// What lives as long as the worker process, across consuming sessions.
struct Run<'a> {
    cfg: &'a WorkerConfig,
    /// Most bytes one fetch may deliver.
    bytes_ahead: usize,
    transform: &'a Arc<Transform>,
    stream: &'a jetstream::stream::Stream,
    state: &'a jetstream::stream::Stream,
    js: &'a jetstream::Context,
    subject: &'a str,
    health: &'a crate::http::Health,
    dead_letters: Option<dead_letter::Target>,
    /// Checked before every write to the sink.
    lease: state::LeaseView,
    order: Order,
    gap: Option<GapWatch>,
    /// While set, the worker applies and commits one transaction at a time up to this
    /// position, to find the message the sink rejects (dead-letter mode only).
    isolate: Option<Option<Position>>,
}

/// Runs the worker until `shutdown` turns true or a permanent error occurs.
pub async fn run(
    cfg: WorkerConfig,
    transform: Arc<Transform>,
    mut sink: AnySink,
    mut shutdown: watch::Receiver<bool>,
    health: crate::http::Health,
) -> Result<(), WorkerError> {
    let client = nats_setup::connect(&cfg.nats, "pg_flo_worker").await?;
    let max_payload = client.server_info().max_payload;
    let bytes_ahead = MAX_BYTES_AHEAD.max(max_payload.saturating_mul(2));
    let js = jetstream::new(client);
    let subject = config::subject(&cfg.group);
    let replicas = cfg.nats.stream_replicas;
    let stream = nats_setup::ensure_stream(
        &js,
        &config::stream_name(&cfg.group),
        &subject,
        None,
        replicas,
    )
    .await?;
    let state_stream = nats_setup::ensure_state_stream(&js, &cfg.group, replicas).await?;
    let _consumer_gauges = AbortOnDrop(tokio::spawn(read_consumer(
        stream.clone(),
        config::consumer_name(&cfg.group),
    )));
    let Some(mut lease) =
        state::Lease::acquire(&js, &state_stream, &cfg.group, &mut shutdown).await?
    else {
        return Ok(());
    };
    let mut order = Order::default();
    let dead_letters = if cfg.dead_letter {
        let target = dead_letter::Target::open(&js, &cfg.group, max_payload, replicas).await?;
        // Messages moved there by an earlier run: their successors must not wait for them.
        for (pos, letter) in target.recent().await {
            order.dead_lettered(pos, letter);
        }
        Some(target)
    } else {
        None
    };
    let mut p = Run {
        bytes_ahead,
        cfg: &cfg,
        transform: &transform,
        stream: &stream,
        state: &state_stream,
        js: &js,
        subject: &subject,
        health: &health,
        dead_letters,
        lease: lease.view(),
        order,
        gap: None,
        isolate: None,
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let outcome = loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = Box::pin(session::run(&mut p, &mut sink, &mut shutdown)) => r,
            _ = lease.lost() => Err(WorkerError::LeaseLost),
        };
        health.set_ready(false);
        if !matches!(result, Ok(())) {
            let _ = sink.rollback().await;
            p.order.rolled_back();
        }
        match result {
            Ok(()) => break Ok(()),
            Err(WorkerError::Isolate | WorkerError::DeadLettered) => {
                // Redeliver right away.
                continue;
            }
            Err(e @ WorkerError::Redeliver(_)) => {
                metrics::error(e.category());
                tracing::warn!(reason = %e, "restarting delivery");
                continue;
            }
            Err(WorkerError::LeaseLost) => {
                metrics::error("lease");
                tracing::error!(
                    "stopped applying: the worker lease was lost; waiting to take it again"
                );
                drop(lease);
                match state::Lease::acquire(&js, &state_stream, &cfg.group, &mut shutdown).await? {
                    Some(l) => {
                        p.lease = l.view();
                        lease = l;
                    }
                    None => return Ok(()),
                }
                // Another worker may have applied meanwhile: the next session raises the
                // order to the stored position.
                continue;
            }
            Err(e) => {
                metrics::error(e.category());
                if !e.is_transient() {
                    break Err(e);
                }
                // A session that ran a while made progress: start the backoff over.
                if started.elapsed() > Duration::from_secs(60) {
                    backoff.reset();
                }
                // A failed final commit after a shutdown request (the session has seen the
                // signal, so `changed()` below would not fire again): stop, leaving the
                // uncommitted messages unacked in the stream.
                if *shutdown.borrow() {
                    tracing::warn!(error = %crate::redact::error_chain(&e), "stopping with uncommitted changes; they stay in the stream for the next worker");
                    break Ok(());
                }
                let wait = backoff.next_wait();
                tracing::warn!(error = %crate::redact::error_chain(&e), retry_in = ?wait, "worker interrupted; redelivering from the first unacked message");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => break Ok(()),
                }
            }
        }
    };
    lease.release().await;
    outcome
}

/// Rules (`--rules-config`) then routing (`--routing-config`), in pg_flo's order: rules see
/// source table and column names, routing renames afterwards.
#[derive(Default)]
pub struct Transform {
    pub rules: Option<rules::Rules>,
    pub routes: Option<routing::Routes>,
}

impl Transform {
    /// Loads the configured files; returns the warnings to log.
    pub fn load(cfg: &WorkerConfig) -> Result<(Transform, Vec<String>), String> {
        let mut warnings = Vec::new();
        let rules = match &cfg.rules_config {
            Some(path) => {
                let (rules, w) =
                    rules::Rules::from_file(path).map_err(|e| crate::redact::error_chain(&e))?;
                warnings.extend(w);
                Some(rules)
            }
            None => None,
        };
        let routes = match &cfg.routing_config {
            Some(path) => {
                let (routes, w) =
                    routing::Routes::from_file(path).map_err(|e| crate::redact::error_chain(&e))?;
                warnings.extend(w);
                Some(routes)
            }
            None => None,
        };
        Ok((Transform { rules, routes }, warnings))
    }

    fn apply(&self, batch: &mut ChangeBatch) {
        if let Some(rules) = &self.rules {
            rules.apply(batch);
        }
        if let Some(routes) = &self.routes {
            routes.apply(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SslMode;
    use crate::postgres::connection::ConnectError;
    use crate::postgres::tls::TlsError;

    /// A target the worker cannot log in to (settings changed under a running worker) is no
    /// rejected change: the message says so and does not suggest --dead-letter.
    #[test]
    fn a_permanent_connect_failure_is_not_called_a_rejected_change() {
        let connect = SinkError::Connect {
            target: "u@h:5432/db".into(),
            source: Box::new(ConnectError::TlsConfig {
                endpoint: "h:5432/db".into(),
                sslmode: SslMode::VerifyFull,
                source: TlsError::MissingRootCert {
                    mode: SslMode::VerifyFull,
                },
            }),
        };
        let text = sink_failure("postgres", &connect);
        assert!(
            text.contains("cannot connect to its target with these settings"),
            "{text}"
        );
        assert!(!text.contains("--dead-letter"), "{text}");
        let rejected = SinkError::Invalid("bad".into());
        assert!(sink_failure("postgres", &rejected).contains("--dead-letter"));
    }
}
