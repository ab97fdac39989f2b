//! Publishing closed messages to the group's stream, with the LSN each lets the replicator
//! confirm once JetStream acknowledged it.
//!
//! Contract:
//! - A whole message is one NATS message with `Nats-Msg-Id = {slot}:{commit}:{first}-{seq}`
//!   (see [`message::message_id`]): the same WAL range gets the same id, so JetStream drops a
//!   copy re-published within its duplicate window.
//! - A change in parts is published as consecutive NATS messages with [`message::CHUNK_HEADER`]
//!   `i/n` and [`message::CHUNK_SET_HEADER`] `<run>:<commit>:<seq>`; their ids carry the run
//!   (this session), because a set re-published by another run must never be completed with
//!   parts of the first one (the parts' bytes differ: `prev`, `emitted_at`). The parts before
//!   the last go out as soon as the change is read; the final one, with
//!   [`message::CHUNK_LAST_HEADER`], once the transaction's end is known. Each part waits for
//!   the previous part's PubAck (an ack future holds one of the `--max-in-flight` permits, so
//!   a change of more parts than that would otherwise wait on itself).
//! - A transaction whose messages would together exceed the stream's `max_bytes` can never be
//!   consumed (the worker acks a transaction only once it has all of it): that is a permanent
//!   error naming the transaction, the sizes and the fix, not a stall on a full stream.

use std::future::Future;
use std::pin::Pin;

use async_nats::jetstream::{self, message::PublishMessage as Publish};

use crate::lsn::Lsn;
use crate::message::{self, CHUNK_HEADER, CHUNK_LAST_HEADER, CHUNK_SET_HEADER, FORMAT_HEADER};
use crate::source::batching::{Body, Closed};
use crate::source::ReplicatorError;

/// The PubAck of one published message (all its parts); which LSN that lets the replicator
/// confirm is the [`crate::source::confirm::ConfirmWindow`]'s business.
pub type AckFuture =
    Pin<Box<dyn Future<Output = Result<Option<PublishedStats>, ReplicatorError>> + Send>>;

#[derive(Debug, Clone, Copy)]
pub struct PublishedStats {
    pub changes: u64,
    /// Payload bytes of the message (all its parts).
    pub bytes: u64,
    /// From the publish to the last acknowledgement.
    pub ack_time: std::time::Duration,
}

impl PublishedStats {
    /// Counts an acknowledged message in the metrics.
    pub fn count(&self) {
        let m = crate::metrics::get();
        m.replicator_messages_published.inc();
        m.replicator_changes_published.inc_by(self.changes);
        m.replicator_bytes_published.inc_by(self.bytes);
        m.replicator_publish_duration
            .observe(self.ack_time.as_secs_f64());
    }
}

/// Publishes the messages of one session (or copy).
pub struct Publisher {
    js: jetstream::Context,
    subject: String,
    slot: String,
    /// Tells this session's parts from another's.
    run: String,
    /// The stream's `max_bytes` (`None`: unlimited).
    stream_max_bytes: Option<u64>,
    /// Payload bytes published of the open transaction.
    tx_bytes: u64,
}

impl Publisher {
    pub fn new(
        js: jetstream::Context,
        subject: &str,
        slot: &str,
        stream_max_bytes: Option<u64>,
    ) -> Publisher {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Publisher {
            js,
            subject: subject.to_owned(),
            slot: slot.to_owned(),
            run: format!("{:x}", nanos ^ u128::from(std::process::id()) << 64),
            stream_max_bytes,
            tx_bytes: 0,
        }
    }

    /// Publishes `closed`.
    pub async fn send(&mut self, closed: Closed) -> Result<AckFuture, ReplicatorError> {
        let bytes = closed.bytes() as u64;
        self.tx_bytes += bytes;
        if let Some(limit) = self.stream_max_bytes {
            if self.tx_bytes > limit {
                return Err(ReplicatorError::TransactionTooLarge {
                    commit_lsn: Lsn(closed.position.commit_lsn),
                    bytes: self.tx_bytes,
                    limit,
                });
            }
        }
        if closed.last {
            self.tx_bytes = 0;
        }
        let changes = closed.changes as u64;
        let started = std::time::Instant::now();
        let id = message::message_id(
            &self.slot,
            closed.position.commit_lsn,
            closed.first,
            closed.position.seq,
        );
        let mut acks = Vec::new();
        match closed.body {
            Body::Whole(payload) => {
                let publish = Publish::build()
                    .payload(payload)
                    .message_id(id)
                    .header(FORMAT_HEADER, message::FORMAT_VERSION.to_string());
                acks.push(self.publish(publish).await?);
            }
            Body::Parts {
                parts,
                first,
                count: n,
                last,
            } => {
                let set = format!(
                    "{}:{}:{}",
                    self.run,
                    Lsn(closed.position.commit_lsn),
                    closed.position.seq
                );
                for (k, part) in parts.into_iter().enumerate() {
                    let i = first + k as u32;
                    let mut publish = Publish::build()
                        .payload(part)
                        .message_id(format!("{id}:{}:{i}/{n}", self.run))
                        .header(FORMAT_HEADER, message::FORMAT_VERSION.to_string())
                        .header(CHUNK_HEADER, format!("{i}/{n}"))
                        .header(CHUNK_SET_HEADER, set.as_str());
                    if let (true, Some(last)) = (i == n, last) {
                        publish = publish.header(CHUNK_LAST_HEADER, last.to_string());
                    }
                    // A held ack future holds one of the context's `--max-in-flight`
                    // permits: wait for the previous part's before the next one, so a change
                    // of more parts than that cannot wait on itself.
                    if let Some(previous) = acks.pop() {
                        acked(previous).await?;
                    }
                    acks.push(self.publish(publish).await?);
                }
            }
        }
        Ok(Box::pin(async move {
            for ack in acks {
                acked(ack).await?;
            }
            Ok(Some(PublishedStats {
                changes,
                bytes,
                ack_time: started.elapsed(),
            }))
        }))
    }

    async fn publish(
        &self,
        publish: Publish,
    ) -> Result<jetstream::context::PublishAckFuture, ReplicatorError> {
        self.js
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| ReplicatorError::Publish(e.to_string()))
    }
}

/// The stream refused to store a message: its `max_bytes` / `max_msgs` limit is reached
/// (with `Discard::New`), or its storage failed (a full disk); both clear up as the worker
/// consumes or the operator frees space.
fn stream_full(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|err| err.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED)
}

/// Waits for one PubAck.
async fn acked(ack: jetstream::context::PublishAckFuture) -> Result<(), ReplicatorError> {
    ack.await.map(|_| ()).map_err(|e| {
        if stream_full(&e) {
            ReplicatorError::StreamFull
        } else {
            ReplicatorError::Publish(e.to_string())
        }
    })
}
