//! The source side: what reads PostgreSQL and publishes to NATS (the replicator, the initial
//! copy, DDL capture). Nothing of the worker side imports it.

pub mod batching;
pub mod confirm;
pub mod encoded;
pub mod publish;
pub mod relations;
