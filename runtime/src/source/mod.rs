//! The source side: what reads PostgreSQL and publishes to NATS (the replicator, the initial
//! copy, DDL capture). Nothing of the worker side imports it.

pub mod batching;
pub mod catalog;
pub mod confirm;
pub mod copy;
pub mod copy_text;
pub mod ddl;
pub mod identity;
pub mod pgoutput;
pub mod publish;
pub mod relations;
pub mod replication;
pub mod replicator;
