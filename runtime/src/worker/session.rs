//! One consuming session of the worker: from (re)creating the consumer to the first error or
//! the shutdown. Each message is put back together from its parts, decoded, offered to the
//! ordering decision (`ordering::Order::offer`) and applied, held or skipped; the sink commits at
//! transaction boundaries and the messages are acked after it (the contract is in the module
//! docs of `worker`). What outlives a session (the order, the gap being waited for, dead-letter
//! isolation) is in [`Run`].

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, message::Acker};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config;
use crate::message::{
    self, ChangeBatch, Position, SourceId, CHUNK_HEADER, CHUNK_LAST_HEADER, CHUNK_SET_HEADER,
};
use crate::metrics;
use crate::nats as nats_setup;
use crate::retry::Retry;
use crate::sink::{AnySink, Sink};

use super::ordering::{gap_step, DeadLetter, GapStep, Verdict};
use super::{chunks, state, GapWatch, Run, WorkerError, MAX_ACK_PENDING};

/// Most messages the worker holds while waiting for a predecessor.
const MAX_HELD: usize = 10_000;
/// Most payload bytes the worker holds while waiting for a predecessor.
const MAX_HELD_BYTES: usize = 32 * 1024 * 1024;

/// The server delivers no more than [`MAX_ACK_PENDING`] unacked messages, and the worker acks
/// only at a transaction's end: an open transaction holding that many can never complete.
fn ack_window_exhausted(pending: usize, in_tx: bool) -> bool {
    in_tx && i64::try_from(pending).unwrap_or(i64::MAX) >= MAX_ACK_PENDING
}

/// The open batch, as the commit decision sees it.
#[derive(Debug, Clone, Copy)]
struct Batch {
    /// A source transaction is open (not all of its messages are applied yet).
    in_tx: bool,
    /// Changes applied since the last commit.
    changes: usize,
    /// How long since the first of them (`None`: nothing to commit).
    waited: Option<Duration>,
    /// Nothing more was ready to read.
    idle: bool,
    /// One transaction at a time (dead-letter isolation).
    isolating: bool,
}

/// Whether the sink commits now. Never inside a source transaction (a commit holds whole
/// transactions); otherwise when the batch is full (`--batch-size`), when its first change has
/// waited `--flush-interval`, while isolating, or as soon as nothing more is ready to read.
/// The interval bounds how long batching may delay a change under load; it adds no latency
/// when the stream has nothing more to give.
fn commit_due(b: Batch, batch_size: usize, flush_interval: Duration) -> bool {
    !b.in_tx
        && (b.changes >= batch_size
            || b.isolating
            || b.waited.is_some_and(|w| b.idle || w >= flush_interval))
}

/// The session's open batch; `idle`: nothing more was ready to read.
fn open_batch(p: &Run<'_>, st: &Session, idle: bool) -> Batch {
    Batch {
        in_tx: p.order.in_tx(),
        changes: st.changes,
        waited: st.first_pending_at.map(|t| t.elapsed()),
        idle,
        isolating: st.isolating,
    }
}

/// Whether the worker keeps the applied position in NATS (the sink has no store of its own).
fn position_in_nats(sink: &AnySink) -> bool {
    matches!(sink, AnySink::Stdout(_) | AnySink::Webhook(_))
}

/// A message waiting for its predecessor: only its payload is kept (decoded again when it is
/// released), so the held bytes are what [`MAX_HELD_BYTES`] counts.
struct Held {
    prev: Option<Position>,
    source: Option<SourceId>,
    copy: bool,
    acks: Vec<Acker>,
    raw: bytes::Bytes,
}

/// What one consuming session works with.
struct Session {
    /// Messages waiting for their predecessor, and their payload bytes.
    held: BTreeMap<Position, Held>,
    held_bytes: usize,
    /// Held messages were let go (over the bounds): restart delivery once they can be applied.
    evicted: bool,
    /// Acks owed once the next commit succeeds.
    pending: Vec<Acker>,
    /// A change arriving in parts.
    parts: chunks::Reassembly<Acker>,
    /// While isolating: the payloads of the messages applied since the last commit
    /// (dead-lettered together if the commit is rejected, e.g. by a deferred constraint).
    uncommitted: Vec<bytes::Bytes>,
    changes: usize,
    first_pending_at: Option<Instant>,
    /// Apply, send and commit one transaction at a time (finding a rejected message).
    isolating: bool,
    /// Highest position offered to the sink in this session (a rejected message is at or
    /// below it).
    seen: Option<Position>,
    /// Source commit time (µs since the Unix epoch) of the newest streamed transaction
    /// applied since the last commit: the end-to-end lag is measured from it.
    newest_commit_us: Option<i64>,
}

/// In dead-letter mode, a permanent sink rejection outside isolation starts isolation.
fn to_isolate(e: WorkerError, p: &mut Run<'_>, seen: Option<Position>) -> WorkerError {
    match &e {
        WorkerError::Sink { source, .. }
            if p.dead_letters.is_some()
                && source.retry() == Retry::Permanent
                && source.dead_letterable()
                && p.isolate.is_none() =>
        {
            tracing::warn!(error = %crate::redact::error_chain(&e), "the sink rejected a change");
            p.isolate = Some(seen);
            WorkerError::Isolate
        }
        _ => e,
    }
}

pub(super) async fn run(
    p: &mut Run<'_>,
    sink: &mut AnySink,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let cfg = p.cfg;
    let consumer = nats_setup::recreate_consumer(
        p.stream,
        &config::consumer_name(&cfg.group),
        p.subject,
        MAX_ACK_PENDING,
    )
    .await?;
    let (stored, stored_source) = if position_in_nats(sink) {
        (state::read_position(p.state, &cfg.group).await?, None)
    } else {
        let pos = sink
            .applied_position()
            .await
            .map_err(|source| WorkerError::Sink {
                sink: sink.name(),
                source,
            })?;
        (pos, sink.applied_source())
    };
    if let Some(pos) = stored {
        tracing::info!(position = %pos, source = ?stored_source.map(|s| s.to_string()), "the sink has applied changes up to this position");
    }
    p.order.durable_at_least(stored, stored_source);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.batch_size.clamp(1, 1_000))
        .max_bytes_per_batch(p.bytes_ahead)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| WorkerError::Consume(e.to_string()))?;
    p.health.set_ready(true);
    tracing::info!(group = cfg.group, sink = sink.name(), "worker consuming");
    let mut st = Session {
        held: BTreeMap::new(),
        held_bytes: 0,
        evicted: false,
        pending: Vec::new(),
        parts: chunks::Reassembly::default(),
        uncommitted: Vec::new(),
        changes: 0,
        first_pending_at: None,
        isolating: p.isolate.is_some(),
        seen: None,
        newest_commit_us: None,
    };
    metrics::get().worker_held_messages.set(0);
    if st.isolating {
        tracing::warn!(until = ?p.isolate.flatten().map(|p| p.to_string()), "dead-letter mode: applying one transaction at a time to find the rejected message");
    }
    let mut gap_at: Option<Instant> = None;
    loop {
        // A batch that an idle stream would commit only waits for what is already there.
        let committable = commit_due(open_batch(p, &st, true), cfg.batch_size, cfg.flush_interval);
        let flush_at = st.first_pending_at.map(|t| t + cfg.flush_interval);
        let wait = match flush_at.into_iter().chain(gap_at).min() {
            _ if committable => Duration::ZERO,
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        let mut idle = false;
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if !p.order.in_tx() {
                    commit(p, sink, &mut st).await?;
                }
                return Ok(());
            }
            // `timeout` polls the stream before its deadline: a zero wait still takes a
            // message that is ready. `next` is cancel-safe (the stream keeps what it fetched).
            next = tokio::time::timeout(wait, messages.next()) => match next {
                Err(_elapsed) => idle = true,
                Ok(None) => return Err(WorkerError::Consume("consumer stream ended".into())),
                Ok(Some(Err(e))) => return Err(WorkerError::Consume(e.to_string())),
                Ok(Some(Ok(msg))) => {
                    if let Err(e) = receive(p, sink, &mut st, msg).await {
                        let seen = st.seen;
                        return Err(to_isolate(e, p, seen));
                    }
                }
            }
        }
        let due = commit_due(open_batch(p, &st, idle), cfg.batch_size, cfg.flush_interval);
        if due {
            if let Err(e) = commit(p, sink, &mut st).await {
                let seen = st.seen;
                return Err(to_isolate(e, p, seen));
            }
            // Past the failure point: back to normal batching.
            if let (Some(until), Some(done)) = (p.isolate, p.order.committed()) {
                if until.is_none_or(|u| done >= u) {
                    p.isolate = None;
                    st.isolating = false;
                    tracing::info!("dead-letter mode: back to normal batching");
                }
            }
        }
        // Messages let go while holding can come back now that their predecessor is applied.
        if st.evicted && st.held.is_empty() && !p.order.in_tx() {
            commit(p, sink, &mut st).await?;
            return Err(WorkerError::Redeliver(
                "held messages over the memory bound were let go",
            ));
        }
        gap_at = match check_gap(p, &st)? {
            Some(GapStep::Wait(d)) => Some(Instant::now() + d),
            Some(GapStep::Redeliver) => {
                if !p.order.in_tx() {
                    commit(p, sink, &mut st).await?;
                }
                if let Some(g) = p.gap.as_mut() {
                    g.redeliveries += 1;
                }
                return Err(WorkerError::Redeliver(
                    "a message waits for a predecessor; a delivery may have been lost",
                ));
            }
            Some(GapStep::GiveUp) | None => None,
        };
    }
}

/// Follows the wait of the oldest held message; an error when it waited too long.
fn check_gap(p: &mut Run<'_>, st: &Session) -> Result<Option<GapStep>, WorkerError> {
    if p.gap
        .as_ref()
        .is_some_and(|g| p.order.reached(Some(g.waiting_for)))
    {
        p.gap = None;
    }
    let Some((&position, held)) = st.held.first_key_value() else {
        return Ok(None);
    };
    let Some(waiting_for) = held.prev else {
        return Ok(None);
    };
    let gap = match &mut p.gap {
        Some(g) if g.waiting_for == waiting_for => g,
        slot => {
            tracing::warn!(position = %position, waiting_for = %waiting_for, applied = ?p.order.last().map(|l| l.to_string()), "message arrived before its predecessor; holding it until the predecessor is re-published");
            slot.insert(GapWatch {
                waiting_for,
                since: Instant::now(),
                redeliveries: 0,
            })
        }
    };
    let step = gap_step(gap.since.elapsed(), gap.redeliveries, p.cfg.gap_timeout);
    if step == GapStep::GiveUp {
        return Err(WorkerError::MissingPredecessor {
            position,
            waiting_for,
            waited: gap.since.elapsed(),
        });
    }
    Ok(Some(step))
}

async fn receive(
    p: &mut Run<'_>,
    sink: &mut AnySink,
    st: &mut Session,
    msg: jetstream::Message,
) -> Result<(), WorkerError> {
    let stream_seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
    let (msg, acker) = msg.split();
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let (payload, acks) = match header(CHUNK_HEADER) {
        Some(index) => {
            let malformed = |e: String| WorkerError::Part {
                stream_seq,
                problem: e,
            };
            let (index, count) = chunks::parse_index(&index).map_err(malformed)?;
            let set = header(CHUNK_SET_HEADER)
                .ok_or_else(|| malformed(format!("no {CHUNK_SET_HEADER} header")))?;
            let fed = st
                .parts
                .part(chunks::Part {
                    set,
                    index,
                    count,
                    payload: msg.payload,
                    last: header(CHUNK_LAST_HEADER).map(|v| v == "true"),
                    ack: acker,
                })
                .map_err(malformed)?;
            drop_parts(fed.dropped).await;
            let Some((mut bytes, acks, last)) = fed.complete else {
                return Ok(());
            };
            // The final part's `last` stands for the message's own field: set it in the
            // payload, which may be held or dead-lettered and decoded again.
            if let Some(last) = last {
                message::patch_last(&mut bytes, last).map_err(|problem| WorkerError::Part {
                    stream_seq,
                    problem,
                })?;
            }
            (bytes::Bytes::from(bytes), acks)
        }
        None => {
            drop_parts(st.parts.whole()).await;
            (msg.payload, vec![acker])
        }
    };
    let batch = ChangeBatch::decode_shared(&payload)
        .map_err(|source| WorkerError::Decode { stream_seq, source })?;
    offer(p, sink, st, batch, acks, payload).await?;
    // Release held messages whose predecessor is now applied.
    while let Some((&pos, h)) = st.held.first_key_value() {
        if matches!(
            p.order.offer(pos, h.prev, h.source, h.copy),
            Verdict::Hold { .. }
        ) {
            break;
        }
        let Some((_, h)) = st.held.pop_first() else {
            break;
        };
        st.held_bytes -= h.raw.len();
        metrics::get()
            .worker_held_messages
            .set(st.held.len() as i64);
        let batch = ChangeBatch::decode_shared(&h.raw)
            .map_err(|source| WorkerError::Decode { stream_seq, source })?;
        offer(p, sink, st, batch, h.acks, h.raw).await?;
    }
    Ok(())
}

/// Acks the parts of a set that broke off: the replicator publishes it again whole.
async fn drop_parts(acks: Vec<Acker>) {
    if acks.is_empty() {
        return;
    }
    tracing::warn!(
        parts = acks.len(),
        "dropping the parts of a change whose set broke off (its replicator run failed; it is published again whole)"
    );
    metrics::get()
        .worker_messages
        .with_label_values(&["broken_part"])
        .inc_by(acks.len() as u64);
    for a in acks {
        let _ = a.ack().await;
    }
}

async fn offer(
    p: &mut Run<'_>,
    sink: &mut AnySink,
    st: &mut Session,
    batch: ChangeBatch,
    acks: Vec<Acker>,
    raw: bytes::Bytes,
) -> Result<(), WorkerError> {
    let pos = batch.position();
    let m = metrics::get();
    match p.order.offer(pos, batch.prev, batch.source, batch.copy) {
        Verdict::Duplicate { durable } => {
            m.worker_messages.with_label_values(&["duplicate"]).inc();
            if durable {
                for a in acks {
                    let _ = a.ack().await;
                }
            } else {
                st.pending.extend(acks);
            }
            return Ok(());
        }
        Verdict::DeadLettered => {
            // Already in the dead-letter stream; its ack had not reached the server yet.
            for a in acks {
                let _ = a.ack().await;
            }
            p.order.applied(pos, batch.last, batch.source);
            return Ok(());
        }
        Verdict::Hold { .. } => {
            m.worker_messages.with_label_values(&["held"]).inc();
            if st.held.len() >= MAX_HELD || st.held_bytes + raw.len() > MAX_HELD_BYTES {
                // Let it go unacked: it comes again when delivery restarts.
                st.evicted = true;
                return Ok(());
            }
            st.held_bytes += raw.len();
            st.held.insert(
                pos,
                Held {
                    prev: batch.prev,
                    source: batch.source,
                    copy: batch.copy,
                    acks,
                    raw,
                },
            );
            m.worker_held_messages.set(st.held.len() as i64);
            return Ok(());
        }
        Verdict::OutOfOrder { expected, got } => {
            return Err(WorkerError::OutOfOrder {
                expected: expected.to_string(),
                got: got.to_string(),
            });
        }
        Verdict::Apply => {}
    }
    if !p.lease.holds() {
        return Err(WorkerError::LeaseLost);
    }
    st.seen = st.seen.max(Some(pos));
    let (prev, last, source) = (batch.prev, batch.last, batch.source);
    let mut batch = batch;
    if batch.change_granular() {
        // Re-published with other cuts: its first changes may be applied already.
        if let Some(through) = p.order.applied_within(pos, source) {
            let skipped = batch.applied_through(through);
            if skipped > 0 {
                tracing::debug!(position = %pos, skipped, "skipped changes applied from an earlier message of the transaction");
            }
        }
    }
    p.transform.apply(&mut batch);
    let (copy, commit_time_us, changes) = (batch.copy, batch.commit_time_us, batch.changes.len());
    let mut result = sink.apply_owned(batch).await;
    if st.isolating && result.is_ok() {
        result = sink.flush().await;
    }
    if let Err(source) = result {
        if st.isolating && source.retry() == Retry::Permanent && source.dead_letterable() {
            if let Some(target) = &p.dead_letters {
                target.publish(&raw, &source).await?;
                p.order.dead_lettered(pos, DeadLetter { prev, last });
                // Confirmed ack: the consumer is recreated next, which must not redeliver it.
                for a in acks {
                    let _ = a.double_ack().await;
                }
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
    if !copy && commit_time_us > 0 {
        st.newest_commit_us = st.newest_commit_us.max(Some(commit_time_us));
    }
    st.changes += changes;
    p.order.applied(pos, last, source);
    st.pending.extend(acks);
    if ack_window_exhausted(st.pending.len(), p.order.in_tx()) {
        return Err(WorkerError::TransactionTooLarge {
            position: pos,
            pending: st.pending.len(),
        });
    }
    if st.isolating {
        st.uncommitted.push(raw);
    }
    st.first_pending_at.get_or_insert_with(Instant::now);
    Ok(())
}

async fn commit(p: &mut Run<'_>, sink: &mut AnySink, st: &mut Session) -> Result<(), WorkerError> {
    let Some(last) = p.order.last() else {
        return Ok(());
    };
    if st.pending.is_empty() && p.order.committed() == Some(last) {
        return Ok(());
    }
    if !p.lease.holds() {
        return Err(WorkerError::LeaseLost);
    }
    let timer = metrics::get().sink_commit_duration.start_timer();
    if let Err(source) = sink.commit(last).await {
        // While isolating, a rejection at COMMIT (a deferred constraint) belongs to the
        // transaction applied since the last commit: set it aside like any other.
        if st.isolating
            && source.retry() == Retry::Permanent
            && source.dead_letterable()
            && !st.uncommitted.is_empty()
        {
            if let Some(target) = &p.dead_letters {
                let _ = sink.rollback().await;
                for raw in &st.uncommitted {
                    let (pos, letter) = target.publish(raw, &source).await?;
                    p.order.dead_lettered(pos, letter);
                }
                for acker in st.pending.drain(..) {
                    let _ = acker.double_ack().await;
                }
                metrics::get()
                    .worker_messages
                    .with_label_values(&["dead_lettered"])
                    .inc_by(st.uncommitted.len() as u64);
                st.uncommitted.clear();
                return Err(WorkerError::DeadLettered);
            }
        }
        return Err(WorkerError::Sink {
            sink: sink.name(),
            source,
        });
    }
    timer.observe_duration();
    if position_in_nats(sink) {
        // Before the acks: a restarted worker must know what it applied.
        state::write_position(p.js, &p.cfg.group, last).await?;
    }
    let m = metrics::get();
    m.worker_commits.inc();
    m.worker_changes_applied.inc_by(st.changes as u64);
    m.worker_applied_lsn.set(last.commit_lsn as i64);
    if let Some(commit_us) = st.newest_commit_us.take() {
        m.worker_lag
            .observe(lag_seconds(commit_us, crate::message::unix_now_us()));
    }
    for acker in st.pending.drain(..) {
        if let Err(e) = acker.ack().await {
            // The change is durable; a redelivery is skipped or harmless.
            tracing::warn!(error = %e, "ack failed after commit");
        }
    }
    p.order.commit();
    st.uncommitted.clear();
    st.changes = 0;
    st.first_pending_at = None;
    Ok(())
}

/// Microseconds since the Unix epoch.
/// Seconds from a source commit to now; clocks that disagree make it 0, never negative.
fn lag_seconds(commit_us: i64, now_us: i64) -> f64 {
    (now_us.saturating_sub(commit_us)).max(0) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_committed_at_a_transaction_end_when_full_late_or_idle() {
        let (size, interval) = (1000, Duration::from_millis(100));
        let ms = |n| Some(Duration::from_millis(n));
        let b = |in_tx, changes, waited, idle, isolating| Batch {
            in_tx,
            changes,
            waited,
            idle,
            isolating,
        };
        for (batch, want) in [
            // Idle: one change is committed at once, not after the interval.
            (b(false, 1, ms(0), true, false), true),
            // More is ready: keep batching until full or late.
            (b(false, 1, ms(0), false, false), false),
            (b(false, 999, ms(99), false, false), false),
            (b(false, 1000, ms(0), false, false), true),
            (b(false, 1, ms(100), false, false), true),
            // Inside a source transaction: never, whatever else holds.
            (b(true, 5000, ms(500), true, true), false),
            // Nothing applied: idle alone commits nothing.
            (b(false, 0, None, true, false), false),
            // Isolating: every transaction alone.
            (b(false, 1, ms(0), false, true), true),
        ] {
            assert_eq!(commit_due(batch, size, interval), want, "{batch:?}");
        }
    }

    #[test]
    fn a_transaction_filling_the_ack_window_is_reported() {
        let limit = MAX_ACK_PENDING as usize;
        for (pending, in_tx, want) in [
            (limit - 1, true, false),
            (limit, true, true),
            (limit, false, false),
            (limit + 5, true, true),
        ] {
            assert_eq!(
                ack_window_exhausted(pending, in_tx),
                want,
                "{pending} {in_tx}"
            );
        }
    }

    #[test]
    fn lag_is_seconds_since_the_commit_and_never_negative() {
        for (commit_us, now_us, want) in [
            (1_000_000, 3_500_000, 2.5),
            (5, 5, 0.0),
            (9_000_000, 1_000_000, 0.0),
            (i64::MIN, 0, 9_223_372_036_854.775),
        ] {
            assert_eq!(lag_seconds(commit_us, now_us), want, "{commit_us} {now_us}");
        }
    }
}
