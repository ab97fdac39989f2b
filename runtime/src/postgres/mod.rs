//! PostgreSQL access: ordinary connections (catalog, target writes) and the replication
//! protocol (slot, pgoutput stream).

pub mod catalog;
pub mod connection;
pub mod copy_text;
pub mod pgoutput;
pub mod replication;
pub mod tls;
