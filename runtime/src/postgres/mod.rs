//! PostgreSQL access: ordinary connections (catalog, target writes) and the replication
//! protocol (slot, pgoutput stream).

pub mod connection;
pub mod tls;
