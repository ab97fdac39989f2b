//! Test support for pg_flo's integration and end-to-end tests.
//!
//! The tests exercise the real pipeline (PostgreSQL logical replication -> replicator ->
//! NATS JetStream -> worker -> sinks) against real servers, so this crate provides:
//!
//! - [`PgCluster`]: a throw-away PostgreSQL cluster (`initdb` + `pg_ctl`) in a temp dir on a
//!   free loopback port, `wal_level = logical`, optionally TLS-only; plus [`dump_table`] and
//!   [`count`] for exact source/target comparisons;
//! - [`NatsServer`]: a throw-away `nats-server -js` that can be restarted on the same port
//!   and store;
//! - [`Process`]: a child process (the `pg_flo` binary, see [`pg_flo_bin`]) with captured
//!   output;
//! - [`wait_for`] and friends: polling a condition with a deadline instead of sleeping;
//! - [`free_port`] and [`TempDir`].
//!
//! Missing server binaries fail loudly with the install command. When the tests run as
//! root, PostgreSQL runs as the `postgres` system user (created if missing) via `runuser`.

pub mod chaos;
pub mod file_sink;
mod http;
mod nats;
pub mod pipeline;
mod port;
mod postgres;
mod process;
mod proxy;
mod system;
mod tempdir;
mod tls;
pub mod types;
mod wait;
pub mod webhook;

pub use http::{http_get, metric_sample};
pub use nats::{read_info_line, NatsServer};
pub use pipeline::{Pipeline, ARRIVAL_TIMEOUT};
pub use port::free_port;
pub use postgres::{count, dump_table, quote_ident, PgCluster, PgOptions, WalLevel};
pub use process::{pg_flo_bin, Process};
pub use proxy::FaultProxy;
pub use system::INSTALL_HINT;
pub use tempdir::{TempDir, KEEP_TMP_ENV};
pub use tls::{generate_tls, TlsFiles};
pub use wait::{wait_for, wait_for_eq, wait_for_ok, POLL_INTERVAL};
