//! Resolved configuration of the `pg_flo` processes: pg_flo's flags, `PG_FLO_*` environment
//! variables and flat YAML config file, merged with precedence flag > env > YAML > default.
//!
//! The types here are what the rest of the program reads; parsing lives in this module too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// How to use TLS towards PostgreSQL, as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it, without certificate checks (libpq's default).
    #[default]
    Prefer,
    /// TLS, without certificate checks.
    Require,
    /// TLS, server certificate signed by the CA (`sslrootcert`), any host name.
    VerifyCa,
    /// TLS, server certificate signed by the CA and valid for the host name.
    VerifyFull,
}

/// One PostgreSQL endpoint.
#[derive(Clone, Debug)]
pub struct PgConnConfig {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: SecretString,
    pub sslmode: SslMode,
    /// PEM file with the CA certificate(s) for `verify-ca` / `verify-full`.
    pub sslrootcert: Option<PathBuf>,
}

impl PgConnConfig {
    /// `user@host:port/dbname`, safe to log (no password).
    pub fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

/// NATS endpoint.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// One or more server URLs, comma-separated (`nats://`, `tls://`).
    pub url: String,
    /// PEM CA file to verify the server's certificate (implies TLS).
    pub ca_file: Option<PathBuf>,
    /// NATS credentials file (JWT + NKey seed).
    pub creds_file: Option<PathBuf>,
    /// How long to keep retrying the first connection before giving up.
    pub connect_timeout: Duration,
}

/// pg_flo's `--retry-*` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_wait: Duration,
    pub max_wait: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            initial_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(8),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    #[default]
    Stream,
    Copy,
    CopyAndStream,
}

/// `pg_flo replicator`.
#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    pub source: PgConnConfig,
    pub group: String,
    pub schema: String,
    /// Bare names (in `schema`) or `schema.table`; empty means every table of `schema`.
    pub tables: Vec<String>,
    pub nats: NatsConfig,
    pub mode: ReplicationMode,
    pub max_copy_workers_per_table: u32,
    pub track_ddl: bool,
    pub retry: RetryConfig,
    /// Most changes in one NATS message.
    pub max_batch_changes: usize,
    /// Most payload bytes in one NATS message (kept under the server's max_payload).
    pub max_batch_bytes: usize,
    /// Most NATS publishes awaiting their PubAck.
    pub max_in_flight: usize,
    /// Stream size limit in bytes (`None`: unlimited); when full the replicator waits.
    pub stream_max_bytes: Option<i64>,
    /// How often standby status is sent to the source.
    pub status_interval: Duration,
    pub metrics_addr: Option<SocketAddr>,
}

/// `pg_flo worker <sink>`.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub group: String,
    pub nats: NatsConfig,
    pub rules_config: Option<PathBuf>,
    pub routing_config: Option<PathBuf>,
    /// Most changes written to the sink per commit.
    pub batch_size: usize,
    /// Longest a change waits before the worker commits what it has.
    pub flush_interval: Duration,
    pub sink: SinkConfig,
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Clone, Debug)]
pub enum SinkConfig {
    Stdout,
    File { output_dir: PathBuf },
    Postgres(PostgresSinkConfig),
    Webhook { url: String },
}

#[derive(Clone, Debug)]
pub struct PostgresSinkConfig {
    pub target: PgConnConfig,
    /// Needed for `--target-sync-schema` only.
    pub source: Option<PgConnConfig>,
    pub sync_schema: bool,
    pub disable_foreign_keys: bool,
    /// The group name, under which the applied position is stored in the target.
    pub group: String,
}

/// Slot name, as pg_flo names it (the same string as the publication).
pub fn slot_name(group: &str) -> String {
    format!("pg_flo_{}_publication", group.replace('-', "_"))
}
pub fn publication_name(group: &str) -> String {
    slot_name(group)
}
pub fn stream_name(group: &str) -> String {
    format!("pgflo_{group}_stream")
}
pub fn subject(group: &str) -> String {
    format!("pgflo.{group}")
}
pub fn consumer_name(group: &str) -> String {
    format!("pgflo_{group}_consumer")
}
