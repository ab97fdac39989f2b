//! pg_flo: PostgreSQL logical replication (pgoutput) -> NATS JetStream -> worker -> sinks.
//!
//! Data flow: `source::replication` reads the slot, `source::pgoutput` decodes it,
//! `source::replicator` batches changes into [`message::ChangeBatch`]es and publishes them to
//! the group's stream, confirming a source LSN only after every change up to it is acknowledged
//! by JetStream; `worker` pulls them, and a `sink` writes them, acking NATS only once durable.

pub mod cli;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod http;
pub mod lsn;
pub mod message;
pub mod metrics;
pub mod nats;
pub mod postgres;
pub mod redact;
pub mod retry;
pub mod sink;
pub mod source;
pub mod statement;
pub mod worker;
