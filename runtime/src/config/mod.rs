//! Resolved configuration of the `pg_flo` processes: pg_flo's flags, `PG_FLO_*` environment
//! variables and flat YAML config file, merged with precedence flag > env > YAML > default.
//!
//! Each setting is declared once, in `pg_flo_config::runtime` (its config-file key, flag, help
//! and value grammar; the operator renders config files from the same types). Here:
//!
//! - [`load`] (`load.rs`): finds and reads the config file, then resolves;
//! - [`resolve`] (`resolve.rs`): merges the three layers key by key, parses the result with the
//!   shared model, applies the defaults and validates, reporting every problem at once (each
//!   naming the flag, variable or config key it came from);
//! - the types below: what the rest of the program reads.
//!
//! No IO but reading the config file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

mod load;
mod resolve;
#[cfg(test)]
mod tests;

pub use load::{load, load_with, ConfigError, ConfigFile};
pub use pg_flo_config::names::{
    consumer_name, publication_name, slot_name, stream_name, subject, validate_group,
};
pub use pg_flo_config::runtime::{
    env_var, LogFormat, DEFAULT_BATCH_SIZE, DEFAULT_FLUSH_INTERVAL, DEFAULT_GAP_TIMEOUT,
    DEFAULT_LOG_LEVEL, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_CHANGES,
    DEFAULT_MAX_COPY_WORKERS_PER_TABLE, DEFAULT_MAX_IN_FLIGHT, DEFAULT_NATS_CONNECT_TIMEOUT,
    DEFAULT_PORT, DEFAULT_SCHEMA, DEFAULT_STATUS_INTERVAL, DEFAULT_WEBHOOK_BATCH_SIZE,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS, DEFAULT_WEBHOOK_RETRY_INITIAL_WAIT,
    DEFAULT_WEBHOOK_RETRY_MAX_WAIT, DEFAULT_WEBHOOK_TIMEOUT,
};
pub use pg_flo_config::value::{
    parse_bool, parse_bytes, parse_duration, parse_int, parse_port, parse_positive, parse_secret,
    parse_socket_addr, split_list,
};
pub use pg_flo_config::SslMode;
pub use resolve::resolve;

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
#[derive(Clone)]
pub struct NatsConfig {
    /// One or more server URLs, comma-separated (`nats://`, `tls://`). They may carry
    /// credentials (`nats://user:password@host`), so `Debug` and messages show
    /// [`crate::redact::url_list`] instead.
    pub url: String,
    /// PEM CA file to verify the server's certificate (implies TLS).
    pub ca_file: Option<PathBuf>,
    /// NATS credentials file (JWT + NKey seed).
    pub creds_file: Option<PathBuf>,
    /// User and password (`--nats-user`, `--nats-password`).
    pub user: Option<(String, SecretString)>,
    /// Authentication token (`--nats-token`).
    pub token: Option<SecretString>,
    /// Client certificate and key files for mutual TLS (implies TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Replicas of the streams the process creates; `None`: the server's default, and
    /// existing streams are left as they are.
    pub stream_replicas: Option<usize>,
    /// How long to keep retrying the first connection before giving up.
    pub connect_timeout: Duration,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &crate::redact::url_list(&self.url))
            .field("ca_file", &self.ca_file)
            .field("creds_file", &self.creds_file)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_cert", &self.client_cert)
            .field("stream_replicas", &self.stream_replicas)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
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
            max_attempts: pg_flo_config::runtime::DEFAULT_RETRY_MAX_ATTEMPTS,
            initial_wait: pg_flo_config::runtime::DEFAULT_RETRY_INITIAL_WAIT,
            max_wait: pg_flo_config::runtime::DEFAULT_RETRY_MAX_WAIT,
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
    /// `--accept-lost-slot`: stream mode goes on from a new slot when the group's slot is gone.
    pub accept_lost_slot: bool,
    /// `--cleanup`: remove the group's objects and exit.
    pub cleanup: bool,
    pub retry: RetryConfig,
    /// Most changes in one NATS message.
    pub max_batch_changes: usize,
    /// Most payload bytes in one NATS message (kept under the server's max_payload).
    pub max_batch_bytes: usize,
    /// Most NATS publishes awaiting their PubAck.
    pub max_in_flight: usize,
    /// Retained WAL of the slot above which the replicator warns (`None`: no limit).
    pub max_slot_retained_bytes: Option<u64>,
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
    /// Dead-letter permanently rejected changes instead of stopping.
    pub dead_letter: bool,
    /// Longest a message waits for a missing predecessor before the worker stops.
    pub gap_timeout: Duration,
    pub sink: SinkConfig,
    pub metrics_addr: Option<SocketAddr>,
}

// Built once per process; boxing the postgres variant would only change its users' code.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum SinkConfig {
    Stdout,
    File { output_dir: PathBuf },
    Postgres(PostgresSinkConfig),
    Webhook(WebhookSinkConfig),
}

/// `pg_flo worker webhook`.
#[derive(Clone)]
pub struct WebhookSinkConfig {
    /// An `http://` or `https://` URL with a host. It may carry credentials (user info, query
    /// parameters), so messages show [`WebhookSinkConfig::describe_url`] instead.
    pub url: String,
    /// Extra request headers, in the order given; their values may be tokens and are never
    /// logged or shown in `Debug` output.
    pub headers: Vec<WebhookHeader>,
    /// Most changes per request: 1 sends one JSON object per request (pg_flo), more sends a
    /// JSON array of up to this many objects.
    pub batch_size: usize,
    /// Longest one request may take, connecting and reading the answer included.
    pub timeout: Duration,
    /// Attempts per request (the first one included) before the commit fails.
    pub max_attempts: u32,
    /// First wait before a retry; doubled after each failed attempt up to `retry_max_wait`.
    pub retry_initial_wait: Duration,
    pub retry_max_wait: Duration,
}

impl WebhookSinkConfig {
    /// The URL without user info, query or fragment: safe to log.
    pub fn describe_url(&self) -> String {
        describe_url(&self.url)
    }
}

impl fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSinkConfig")
            .field("url", &self.describe_url())
            .field("headers", &self.headers)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_initial_wait", &self.retry_initial_wait)
            .field("retry_max_wait", &self.retry_max_wait)
            .finish()
    }
}

/// One `--webhook-header "Name: value"`.
#[derive(Clone)]
pub struct WebhookHeader {
    pub name: String,
    /// Often a token (`Authorization: Bearer ...`): kept secret.
    pub value: SecretString,
}

impl fmt::Debug for WebhookHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: [REDACTED]", self.name)
    }
}

#[derive(Clone, Debug)]
pub struct PostgresSinkConfig {
    pub target: PgConnConfig,
    /// Needed for `--target-sync-schema` only.
    pub source: Option<PgConnConfig>,
    pub sync_schema: bool,
    /// `--target-disable-foreign-keys` (pg_flo's flag): forces replica mode.
    pub disable_foreign_keys: bool,
    /// `--target-fire-triggers`: apply with the session's default replication role, so the
    /// target's triggers and foreign-key checks fire (unless `disable_foreign_keys`).
    pub fire_triggers: bool,
    /// The group name, under which the applied position is stored in the target.
    pub group: String,
}

/// A webhook URL: `http://` or `https://` with a host. The error never repeats the URL (it may
/// carry credentials).
pub fn check_webhook_url(s: &str) -> Result<(), String> {
    match reqwest::Url::parse(s.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err("the webhook URL must start with http:// or https:// and name a host".into()),
        Err(e) => Err(format!(
            "invalid webhook URL ({e}): use e.g. https://example.com/hook"
        )),
    }
}

/// `scheme://host[:port]/path` of a URL: no user info, query or fragment, so safe to log.
pub fn describe_url(s: &str) -> String {
    match reqwest::Url::parse(s.trim()) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default();
            match url.port() {
                Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
                None => format!("{}://{host}{}", url.scheme(), url.path()),
            }
        }
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// `Name: value` (one extra webhook request header). The name must be an HTTP header name, the
/// value printable (no line breaks); surrounding spaces are trimmed. The error never repeats
/// the value (it may be a token), nor the text before the first `:` when that is not a header
/// name (it may hold a token too: `Authorization Bearer user:password`).
pub fn parse_webhook_header(s: &str) -> Result<WebhookHeader, String> {
    let Some((name, value)) = s.split_once(':') else {
        return Err("expected a header as \"Name: value\"".to_owned());
    };
    let name = name.trim();
    if name.is_empty() || reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(
            "the text before the first ':' is not an HTTP header name (expected \"Name: value\")"
                .to_owned(),
        );
    }
    let value = value.trim();
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "the value of header {name:?} holds characters a header cannot carry (line breaks or \
             other control characters)"
        ));
    }
    Ok(WebhookHeader {
        name: name.to_owned(),
        value: SecretString::from(value),
    })
}

/// Logging settings (`--log-format`, `--log-level`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive (`info`, `pg_flo=debug,info`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: DEFAULT_LOG_LEVEL.to_owned(),
        }
    }
}

/// What the command line asks the process to run, fully resolved.
#[derive(Clone, Debug)]
pub enum Process {
    Replicator(Box<ReplicatorConfig>),
    Worker(Box<WorkerConfig>),
    Version,
}

/// The result of [`load`]: the process to run plus things the caller should log.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub process: Process,
    pub log: LogConfig,
    /// The config file that was read, if any (log "using config file").
    pub config_file: Option<PathBuf>,
    /// Non-fatal findings (unknown config keys, an unusable default config file); log them.
    pub warnings: Vec<String>,
}
