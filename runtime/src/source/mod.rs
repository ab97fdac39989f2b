//! The source side: what reads PostgreSQL and publishes to NATS (the replicator, the initial
//! copy, DDL capture). Nothing of the worker side imports it.
//!
//! [`ReplicatorError`] is the side's one error (the replicator, the copy, the source identity
//! and publishing return it); [`replicator`] decides from it whether a session is retried.

pub mod batching;
pub mod catalog;
pub mod cleanup;
pub mod confirm;
pub mod copy;
pub mod copy_text;
pub mod ddl;
pub mod encoded;
pub mod identity;
pub mod pgoutput;
pub mod publication;
pub mod publish;
pub mod relations;
pub mod replication;
pub mod replicator;

use crate::lsn::Lsn;
use crate::message;
use crate::nats::NatsError;
use crate::postgres::connection::ConnectError;
use catalog::CatalogError;
use replication::ReplicationError;

/// Why the replicator stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    #[error("could not connect to the source database")]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("replication connection failed")]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("publishing to jetstream failed: {0}")]
    Publish(String),
    #[error("jetstream stream is full (max bytes reached); waiting for the worker to consume")]
    StreamFull,
    #[error("could not decode the replication stream")]
    Decode(#[from] pgoutput::DecodeError),
    #[error("could not encode a change message")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("replication stream refers to unknown relation {0}")]
    UnknownRelation(u32),
    #[error(
        "transaction {commit_lsn} is larger than the stream allows: its messages take {bytes} \
         bytes and the stream's max_bytes is {limit}; the worker applies a transaction only once \
         it has all of it, so it could never be consumed. Raise --nats-stream-max-bytes (or the \
         stream's max_bytes: nats stream edit) above the largest transaction, or remove the limit"
    )]
    TransactionTooLarge {
        commit_lsn: Lsn,
        bytes: u64,
        limit: u64,
    },
    #[error(
        "replication slot {slot} is gone, but this group published changes from it before \
         ({recorded}); the changes made since it was lost cannot be replicated any more. Either \
         re-copy the tables: run the replicator with --copy-and-stream; or accept the gap: start \
         it once with --accept-lost-slot (a new slot, changes from now on)"
    )]
    SlotLost {
        slot: String,
        recorded: message::SourceId,
    },
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ReplicatorError>,
    },
}

impl ReplicatorError {
    fn is_transient(&self) -> bool {
        match self {
            ReplicatorError::Replication(e) => e.is_transient(),
            ReplicatorError::Connect(e) => e.is_transient(),
            ReplicatorError::Publish(_) | ReplicatorError::StreamFull => true,
            ReplicatorError::Catalog(CatalogError::Query { source, .. }) => source.is_closed(),
            _ => false,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            ReplicatorError::Connect(_) => "source_connect",
            ReplicatorError::Catalog(_) => "catalog",
            ReplicatorError::Replication(_) => "replication",
            ReplicatorError::Nats(_) => "nats",
            ReplicatorError::Publish(_) => "publish",
            ReplicatorError::StreamFull => "stream_full",
            ReplicatorError::Decode(_) => "decode",
            ReplicatorError::Encode(_) => "encode",
            ReplicatorError::UnknownRelation(_) => "protocol",
            ReplicatorError::TransactionTooLarge { .. } => "transaction_too_large",
            ReplicatorError::SlotLost { .. } => "slot_lost",
            ReplicatorError::GaveUp { .. } => "gave_up",
        }
    }
}
