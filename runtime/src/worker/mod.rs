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
//! - The postgres sink reports its durably applied position (and its source) at start, so
//!   redelivered messages it already has are skipped (effectively-once). Positions are
//!   compared only within one source ([`position_verdict`]): a message of another source is
//!   never skipped as a duplicate, it goes to the sink, which refuses it or starts over.
//! - A transient failure (NATS or sink connection) rolls the sink back and restarts delivery
//!   from the first unacked message after a backoff. A permanent one (undecodable message,
//!   change rejected by the target) stops the worker with a report; nothing is acked or skipped.

pub mod routing;
pub mod rules;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::Acker};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{self, WorkerConfig};
use crate::message::{ChangeBatch, DecodeError, Position, SourceId};
use crate::metrics;
use crate::nats::{self as nats_setup, NatsError};
use crate::sink::{position_verdict, AnySink, Retry, Sink, SinkError, Verdict};

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
    #[error("{0} messages waited {GAP_TIMEOUT:?} for a predecessor; restarting delivery from the oldest unacked message")]
    GapNotFilled(usize),
}

impl WorkerError {
    fn is_transient(&self) -> bool {
        match self {
            WorkerError::Nats(_)
            | WorkerError::Consume(_)
            | WorkerError::GapNotFilled(_)
            | WorkerError::Isolate
            | WorkerError::DeadLettered
            | WorkerError::DeadLetter { .. } => true,
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
            WorkerError::Isolate | WorkerError::DeadLettered => "dead_letter",
            WorkerError::DeadLetter { .. } => "dead_letter_publish",
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
        Retry::Permanent => format!(
            "the {sink} sink rejected a change permanently; the worker stops: nothing was acked or \
             skipped, the change and everything after it stay in the stream. Fix the cause (see \
             below) and restart the worker, or restart it with --dead-letter to move such changes \
             to the dead-letter subject and go on"
        ),
    }
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
    let js = jetstream::new(client);
    let subject = config::subject(&cfg.group);
    let stream =
        nats_setup::ensure_stream(&js, &config::stream_name(&cfg.group), &subject, None).await?;
    // Positions of messages moved to the dead-letter stream: their successors must not wait
    // for them. Seeded with the last one on record, for a worker restarted right after one.
    let dead: DeadSet = Arc::default();
    if cfg.dead_letter {
        let dlq = nats_setup::ensure_dead_letter_stream(&js, &cfg.group).await?;
        if let Ok(last) = dlq
            .get_last_raw_message_by_subject(&nats_setup::dead_letter_subject(&cfg.group))
            .await
        {
            if let Ok(batch) = ChangeBatch::decode(&last.payload) {
                if let Ok(mut set) = dead.lock() {
                    set.insert(batch.position());
                }
            }
        }
    }
    let mut wait = Duration::from_millis(500);
    // While set, the worker applies and commits one message at a time up to this position, to
    // find the message the sink rejects (dead-letter mode only).
    let mut isolate: Option<Option<Position>> = None;
    loop {
        let started = Instant::now();
        let result = session(
            Session {
                cfg: &cfg,
                transform: &transform,
                stream: &stream,
                js: &js,
                subject: &subject,
                health: &health,
                dead: &dead,
            },
            &mut sink,
            &mut shutdown,
            &mut isolate,
        )
        .await;
        health.set_ready(false);
        match result {
            Ok(()) => return Ok(()),
            Err(WorkerError::Isolate) | Err(WorkerError::DeadLettered) => {
                // Redeliver right away, one message at a time.
                let _ = sink.rollback().await;
                continue;
            }
            Err(e) => {
                let _ = sink.rollback().await;
                metrics::error(e.category());
                if !e.is_transient() {
                    return Err(e);
                }
                // A session that ran a while made progress: start the backoff over.
                if started.elapsed() > Duration::from_secs(60) {
                    wait = Duration::from_millis(500);
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
    /// The source `last` belongs to, when known.
    source: Option<SourceId>,
    /// Position of the last message made durable.
    committed: Option<Position>,
    /// Messages waiting for their predecessor.
    held: BTreeMap<Position, (ChangeBatch, Acker, bytes::Bytes)>,
    /// Acks owed once the next commit succeeds.
    pending: Vec<Acker>,
    changes: usize,
    /// The last applied message did not end its transaction.
    in_tx: bool,
    first_pending_at: Option<Instant>,
    /// When the oldest held message started waiting.
    held_since: Option<Instant>,
    /// Rules and routing, applied to a message right before the sink.
    transform: Arc<Transform>,
    /// Apply, send and commit one message at a time (finding a rejected message).
    isolating: bool,
    /// Highest position offered to the sink in this session (a rejected message is at or
    /// below it).
    seen: Option<Position>,
    /// Where rejected messages go (`--dead-letter`).
    dead_letter: Option<DeadLetter>,
}

struct DeadLetter {
    js: jetstream::Context,
    subject: String,
    dead: DeadSet,
}

impl State {
    /// Whether `prev` was moved to the dead-letter stream (so it will not come).
    fn is_dead(&self, prev: Position) -> bool {
        self.dead_letter
            .as_ref()
            .and_then(|d| d.dead.lock().ok().map(|set| set.contains(&prev)))
            .unwrap_or(false)
    }
}

/// In dead-letter mode, a permanent sink rejection outside isolation starts isolation.
fn to_isolate(
    e: WorkerError,
    cfg: &WorkerConfig,
    isolate: &mut Option<Option<Position>>,
    last: Option<Position>,
) -> WorkerError {
    match &e {
        WorkerError::Sink { source, .. }
            if cfg.dead_letter
                && source.retry() == Retry::Permanent
                && source.dead_letterable()
                && isolate.is_none() =>
        {
            tracing::warn!(error = %crate::replicator::error_chain(&e), "the sink rejected a change");
            *isolate = Some(last);
            WorkerError::Isolate
        }
        _ => e,
    }
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
                let (rules, w) = rules::Rules::from_file(path)
                    .map_err(|e| crate::replicator::error_chain(&e))?;
                warnings.extend(w);
                Some(rules)
            }
            None => None,
        };
        let routes = match &cfg.routing_config {
            Some(path) => {
                let (routes, w) = routing::Routes::from_file(path)
                    .map_err(|e| crate::replicator::error_chain(&e))?;
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

/// What a consuming session works with.
struct Session<'a> {
    cfg: &'a WorkerConfig,
    transform: &'a Arc<Transform>,
    stream: &'a jetstream::stream::Stream,
    js: &'a jetstream::Context,
    subject: &'a str,
    health: &'a crate::http::Health,
    dead: &'a DeadSet,
}

/// Positions of dead-lettered messages.
type DeadSet = Arc<std::sync::Mutex<std::collections::BTreeSet<Position>>>;

async fn session(
    ctx: Session<'_>,
    sink: &mut AnySink,
    shutdown: &mut watch::Receiver<bool>,
    isolate: &mut Option<Option<Position>>,
) -> Result<(), WorkerError> {
    let Session {
        cfg,
        transform,
        stream,
        js,
        subject,
        health,
        dead,
    } = ctx;
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
    let applied_source = sink.applied_source();
    if let Some(p) = applied {
        tracing::info!(position = %p, source = ?applied_source.map(|s| s.to_string()), "sink has applied changes up to this position");
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
        source: applied_source,
        committed: applied,
        held: BTreeMap::new(),
        pending: Vec::new(),
        changes: 0,
        in_tx: false,
        first_pending_at: None,
        held_since: None,
        transform: transform.clone(),
        isolating: isolate.is_some(),
        seen: None,
        dead_letter: cfg.dead_letter.then(|| DeadLetter {
            js: js.clone(),
            subject: nats_setup::dead_letter_subject(&cfg.group),
            dead: dead.clone(),
        }),
    };
    if st.isolating {
        tracing::warn!(until = ?isolate.flatten().map(|p| p.to_string()), "dead-letter mode: applying one message at a time to find the rejected one");
    }
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
                Ok(Some(Ok(msg))) => {
                    if let Err(e) = receive(sink, &mut st, msg).await {
                        return Err(to_isolate(e, cfg, isolate, st.seen));
                    }
                }
            }
        }
        let due = st
            .first_pending_at
            .is_some_and(|t| t.elapsed() >= cfg.flush_interval);
        if !st.in_tx && (st.changes >= cfg.batch_size || due || st.isolating) {
            if let Err(e) = commit(sink, &mut st).await {
                return Err(to_isolate(e, cfg, isolate, st.seen));
            }
            // Past the failure point: back to normal batching.
            if let (Some(until), Some(done)) = (*isolate, st.committed) {
                if until.is_none_or(|u| done >= u) {
                    *isolate = None;
                    st.isolating = false;
                    tracing::info!("dead-letter mode: back to normal batching");
                }
            }
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
    offer(sink, st, batch, acker, msg.payload).await?;
    // Release held messages whose predecessor is now applied.
    while let Some(prev) = st.held.first_key_value().map(|(_, (b, _, _))| b.prev) {
        let ready = match (prev, st.last) {
            (Some(prev), Some(last)) => prev <= last || st.is_dead(prev),
            _ => true,
        };
        if !ready {
            break;
        }
        let Some((_, (batch, acker, raw))) = st.held.pop_first() else {
            break;
        };
        offer(sink, st, batch, acker, raw).await?;
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
    raw: bytes::Bytes,
) -> Result<(), WorkerError> {
    let pos = batch.position();
    let m = metrics::get();
    if st.is_dead(pos) {
        // Already in the dead-letter stream; its ack had not reached the server yet.
        let _ = acker.ack().await;
        return Ok(());
    }
    let verdict = position_verdict(
        st.last.map(|last| (last, st.source)),
        batch.source,
        batch.copy,
        pos,
    );
    if verdict == Verdict::Skip {
        m.worker_messages.with_label_values(&["duplicate"]).inc();
        if st.committed.is_some_and(|c| pos <= c) {
            let _ = acker.ack().await;
        } else {
            st.pending.push(acker);
        }
        return Ok(());
    }
    // Another source's message is not ordered against `last`: the sink decides.
    if let (Some(prev), Some(last), Verdict::Apply) = (batch.prev, st.last, verdict) {
        if prev > last && !st.is_dead(prev) {
            m.worker_messages.with_label_values(&["held"]).inc();
            if st.held.is_empty() {
                tracing::warn!(position = %pos, waiting_for = %prev, applied = %last, "message arrived before its predecessor; holding it until the predecessor is re-published");
            }
            st.held.insert(pos, (batch, acker, raw));
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
    st.seen = st.seen.max(Some(pos));
    let mut batch = batch;
    st.transform.apply(&mut batch);
    let mut result = sink.apply(&batch).await;
    if st.isolating && result.is_ok() {
        result = sink.flush().await;
    }
    if let Err(source) = result {
        if st.isolating && source.retry() == Retry::Permanent && source.dead_letterable() {
            if let Some(dl) = &st.dead_letter {
                dead_letter(dl, &batch, &raw, &source).await?;
                if let Ok(mut set) = dl.dead.lock() {
                    set.insert(pos);
                }
                // Confirmed ack: the consumer is recreated next, which must not redeliver it.
                let _ = acker.double_ack().await;
                m.worker_messages
                    .with_label_values(&["dead_lettered"])
                    .inc();
                return Err(WorkerError::DeadLettered);
            }
        }
        return Err(WorkerError::Sink {
            sink: sink.name(),
            source,
        });
    }
    m.worker_messages.with_label_values(&["applied"]).inc();
    st.changes += batch.changes.len();
    if verdict != Verdict::Apply {
        // Started over from another source: earlier commits say nothing about its positions.
        st.committed = None;
    }
    st.last = Some(pos);
    st.source = batch.source.or(st.source);
    st.in_tx = !batch.last;
    st.pending.push(acker);
    st.first_pending_at.get_or_insert_with(Instant::now);
    Ok(())
}

/// Publishes a rejected message, unchanged, with the error in headers, and waits for the
/// PubAck (only then may the original be acked).
async fn dead_letter(
    dl: &DeadLetter,
    batch: &ChangeBatch,
    raw: &bytes::Bytes,
    error: &SinkError,
) -> Result<(), WorkerError> {
    let pos = batch.position();
    let tables: Vec<String> = batch
        .relations
        .iter()
        .map(|r| format!("{}.{}", r.schema, r.table))
        .collect();
    let why = crate::replicator::error_chain(error);
    tracing::error!(position = %pos, tables = ?tables, error = %why, "moving a rejected message to the dead-letter subject");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Pg-Flo-Error", why.replace(['\r', '\n'], " ").as_str());
    headers.insert("Pg-Flo-Position", pos.to_string().as_str());
    headers.insert(
        crate::message::FORMAT_HEADER,
        crate::message::FORMAT_VERSION.to_string().as_str(),
    );
    let fail = |e: &dyn std::fmt::Display| WorkerError::DeadLetter {
        position: pos.to_string(),
        message: e.to_string(),
    };
    dl.js
        .publish_with_headers(dl.subject.clone(), headers, raw.clone())
        .await
        .map_err(|e| fail(&e))?
        .await
        .map_err(|e| fail(&e))?;
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
