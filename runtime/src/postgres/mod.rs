//! PostgreSQL connections shared by both sides: ordinary connections (the source's catalog,
//! the postgres sink's target) with their TCP settings and TLS. The replication protocol and
//! the source's catalog queries live in `source`.

pub mod connection;
pub mod tls;
