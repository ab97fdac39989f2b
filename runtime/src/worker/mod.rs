//! `pg_flo worker <sink>`: NATS JetStream -> decode -> (rules -> routing) -> sink.
//!
//! Contract (when a message may be acked):
//! - Messages are applied to the sink in [`Position`] order. A message whose `prev` has not
//!   been applied yet (it was re-published after a newer one while NATS restarted) is held,
//!   unacked, until its predecessor arrives; a message at or below the last applied position
//!   is a duplicate and is skipped. A held message that waits longer than [`GAP_TIMEOUT`]
//!   restarts delivery from the oldest unacked message (a delivery lost in a reconnect would
//!   otherwise come back only after the ack wait).
//! - The sink commits only at a source-transaction boundary, after `batch_size` changes or
//!   `flush_interval`, whichever comes first; a message is acked only after the commit that
//!   covers it returned Ok. A crash before that leaves it in the stream for redelivery.
//! - The postgres sink reports its durably applied position at start, so redelivered
//!   messages it already has are skipped (effectively-once).
//! - A transient failure (NATS or sink connection) rolls the sink back and restarts delivery
//!   from the first unacked message after a backoff. A permanent one (undecodable message,
//!   change rejected by the target) stops the worker with a report; nothing is acked or skipped.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, message::Acker};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{self, WorkerConfig};
use crate::message::{ChangeBatch, DecodeError, Position};
use crate::metrics;
use crate::nats::{self as nats_setup, NatsError};
use crate::sink::{AnySink, Retry, Sink, SinkError};

/// Most messages the worker holds while waiting for a predecessor.
const MAX_HELD: usize = 10_000;

/// How long a held message may wait for its predecessor before the worker restarts delivery
/// from the oldest unacked message. A predecessor can be missing because the replicator will
/// re-publish it (NATS restarted mid-window), or because the delivery to this worker was lost
/// in a reconnect (JetStream would redeliver it only after the ack wait, behind newer ones).
const GAP_TIMEOUT: Duration = Duration::from_secs(15);

/// Most bytes the consumer fetches ahead (the server cuts off clients that fall far behind).
const MAX_BYTES_AHEAD: usize = 16 * 1024 * 1024;

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
    #[error("the {sink} sink failed")]
    Sink {
        sink: &'static str,
        #[source]
        source: SinkError,
    },
    #[error(
        "messages arrived out of order: transaction {expected} is incomplete but {got} followed it"
    )]
    OutOfOrder { expected: String, got: String },
    #[error("{0} messages waited {GAP_TIMEOUT:?} for a predecessor; restarting delivery from the oldest unacked message")]
    GapNotFilled(usize),
}

impl WorkerError {
    fn is_transient(&self) -> bool {
        match self {
            WorkerError::Nats(_) | WorkerError::Consume(_) | WorkerError::GapNotFilled(_) => true,
            WorkerError::Sink { source, .. } => source.retry() == Retry::Transient,
            _ => false,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            WorkerError::Nats(_) => "nats",
            WorkerError::Consume(_) => "consume",
            WorkerError::Decode { .. } => "decode",
            WorkerError::Sink { source, .. } => source.category(),
            WorkerError::OutOfOrder { .. } => "out_of_order",
            WorkerError::GapNotFilled(_) => "gap",
        }
    }
}

/// Runs the worker until `shutdown` turns true or a permanent error occurs.
pub async fn run(
    cfg: WorkerConfig,
    mut sink: AnySink,
    mut shutdown: watch::Receiver<bool>,
    health: crate::http::Health,
) -> Result<(), WorkerError> {
    let client = nats_setup::connect(&cfg.nats, "pg_flo_worker").await?;
    let js = jetstream::new(client);
    let subject = config::subject(&cfg.group);
    let stream =
        nats_setup::ensure_stream(&js, &config::stream_name(&cfg.group), &subject, None).await?;
    let mut wait = Duration::from_millis(500);
    loop {
        let result = session(&cfg, &stream, &subject, &mut sink, &mut shutdown, &health).await;
        health.set_ready(false);
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = sink.rollback().await;
                metrics::error(e.category());
                if !e.is_transient() {
                    return Err(e);
                }
                // A failed final commit after a shutdown request (the session has seen the
                // signal, so `changed()` below would not fire again): stop, leaving the
                // uncommitted messages unacked in the stream.
                if *shutdown.borrow() {
                    tracing::warn!(error = %crate::replicator::error_chain(&e), "stopping with uncommitted changes; they stay in the stream for the next worker");
                    return Ok(());
                }
                tracing::warn!(error = %crate::replicator::error_chain(&e), retry_in = ?wait, "worker interrupted; redelivering from the first unacked message");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

struct State {
    /// Position of the last message applied to the sink (committed or not).
    last: Option<Position>,
    /// Position of the last message made durable.
    committed: Option<Position>,
    /// Messages waiting for their predecessor.
    held: BTreeMap<Position, (ChangeBatch, Acker)>,
    /// Acks owed once the next commit succeeds.
    pending: Vec<Acker>,
    changes: usize,
    /// The last applied message did not end its transaction.
    in_tx: bool,
    first_pending_at: Option<Instant>,
    /// When the oldest held message started waiting.
    held_since: Option<Instant>,
}

async fn session(
    cfg: &WorkerConfig,
    stream: &jetstream::stream::Stream,
    subject: &str,
    sink: &mut AnySink,
    shutdown: &mut watch::Receiver<bool>,
    health: &crate::http::Health,
) -> Result<(), WorkerError> {
    let consumer =
        nats_setup::recreate_consumer(stream, &config::consumer_name(&cfg.group), subject, 100_000)
            .await?;
    let applied = sink
        .applied_position()
        .await
        .map_err(|source| WorkerError::Sink {
            sink: sink.name(),
            source,
        })?;
    if let Some(p) = applied {
        tracing::info!(position = %p, "sink has applied changes up to this position");
    }
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.batch_size.clamp(1, 1_000))
        .max_bytes_per_batch(MAX_BYTES_AHEAD)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| WorkerError::Consume(e.to_string()))?;
    health.set_ready(true);
    tracing::info!(group = cfg.group, sink = sink.name(), "worker consuming");
    let mut st = State {
        last: applied,
        committed: applied,
        held: BTreeMap::new(),
        pending: Vec::new(),
        changes: 0,
        in_tx: false,
        first_pending_at: None,
        held_since: None,
    };
    loop {
        let flush_at = st.first_pending_at.map(|t| t + cfg.flush_interval);
        let gap_at = st.held_since.map(|t| t + GAP_TIMEOUT);
        let wait = match flush_at.into_iter().chain(gap_at).min() {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if !st.in_tx {
                    commit(sink, &mut st).await?;
                }
                return Ok(());
            }
            next = tokio::time::timeout(wait, messages.next()) => match next {
                Err(_idle) => {}
                Ok(None) => return Err(WorkerError::Consume("consumer stream ended".into())),
                Ok(Some(Err(e))) => return Err(WorkerError::Consume(e.to_string())),
                Ok(Some(Ok(msg))) => receive(sink, &mut st, msg).await?,
            }
        }
        let due = st
            .first_pending_at
            .is_some_and(|t| t.elapsed() >= cfg.flush_interval);
        if !st.in_tx && (st.changes >= cfg.batch_size || due) {
            commit(sink, &mut st).await?;
        }
        if st.held_since.is_some_and(|t| t.elapsed() >= GAP_TIMEOUT) {
            if !st.in_tx {
                commit(sink, &mut st).await?;
            }
            return Err(WorkerError::GapNotFilled(st.held.len()));
        }
    }
}

async fn receive(
    sink: &mut AnySink,
    st: &mut State,
    msg: jetstream::Message,
) -> Result<(), WorkerError> {
    let stream_seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
    let (msg, acker) = msg.split();
    let batch = ChangeBatch::decode(&msg.payload)
        .map_err(|source| WorkerError::Decode { stream_seq, source })?;
    offer(sink, st, batch, acker).await?;
    // Release held messages whose predecessor is now applied.
    while let Some(entry) = st.held.first_entry() {
        let (batch, _) = entry.get();
        let ready = match (batch.prev, st.last) {
            (Some(prev), Some(last)) => prev <= last,
            _ => true,
        };
        if !ready {
            break;
        }
        let (batch, acker) = entry.remove();
        offer(sink, st, batch, acker).await?;
    }
    if st.held.is_empty() {
        st.held_since = None;
    } else {
        st.held_since.get_or_insert_with(Instant::now);
    }
    if st.held.len() > MAX_HELD {
        return Err(WorkerError::GapNotFilled(st.held.len()));
    }
    Ok(())
}

async fn offer(
    sink: &mut AnySink,
    st: &mut State,
    batch: ChangeBatch,
    acker: Acker,
) -> Result<(), WorkerError> {
    let pos = batch.position();
    let m = metrics::get();
    if st.last.is_some_and(|last| pos <= last) {
        m.worker_messages.with_label_values(&["duplicate"]).inc();
        if st.committed.is_some_and(|c| pos <= c) {
            let _ = acker.ack().await;
        } else {
            st.pending.push(acker);
        }
        return Ok(());
    }
    if let (Some(prev), Some(last)) = (batch.prev, st.last) {
        if prev > last {
            m.worker_messages.with_label_values(&["held"]).inc();
            if st.held.is_empty() {
                tracing::warn!(position = %pos, waiting_for = %prev, applied = %last, "message arrived before its predecessor; holding it until the predecessor is re-published");
            }
            st.held.insert(pos, (batch, acker));
            return Ok(());
        }
    }
    if st.in_tx {
        if let Some(last) = st.last {
            if last.commit_lsn != pos.commit_lsn {
                return Err(WorkerError::OutOfOrder {
                    expected: last.to_string(),
                    got: pos.to_string(),
                });
            }
        }
    }
    sink.apply(&batch)
        .await
        .map_err(|source| WorkerError::Sink {
            sink: sink.name(),
            source,
        })?;
    m.worker_messages.with_label_values(&["applied"]).inc();
    st.changes += batch.changes.len();
    st.last = Some(pos);
    st.in_tx = !batch.last;
    st.pending.push(acker);
    st.first_pending_at.get_or_insert_with(Instant::now);
    Ok(())
}

async fn commit(sink: &mut AnySink, st: &mut State) -> Result<(), WorkerError> {
    let Some(last) = st.last else {
        return Ok(());
    };
    if st.pending.is_empty() && st.committed == st.last {
        return Ok(());
    }
    let timer = metrics::get().sink_commit_duration.start_timer();
    sink.commit(last)
        .await
        .map_err(|source| WorkerError::Sink {
            sink: sink.name(),
            source,
        })?;
    timer.observe_duration();
    let m = metrics::get();
    m.worker_commits.inc();
    m.worker_changes_applied.inc_by(st.changes as u64);
    m.worker_applied_lsn.set(last.commit_lsn as i64);
    for acker in st.pending.drain(..) {
        if let Err(e) = acker.ack().await {
            // The change is durable; a redelivery is skipped or harmless.
            tracing::warn!(error = %e, "ack failed after commit");
        }
    }
    st.committed = Some(last);
    st.changes = 0;
    st.first_pending_at = None;
    Ok(())
}
