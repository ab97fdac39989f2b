//! Resolved configuration of the `pg_flo` processes: pg_flo's flags, `PG_FLO_*` environment
//! variables and flat YAML config file, merged with precedence flag > env > YAML > default.
//!
//! The types here are what the rest of the program reads; parsing lives in this module too.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::cli::{
    Cli, Command, PostgresArgs, ReplicatorArgs, SinkCommand, WebhookArgs, WorkerArgs,
};

/// How to use TLS towards PostgreSQL, as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
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
    /// How long to keep retrying the first connection before giving up.
    pub connect_timeout: Duration,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &crate::redact::url_list(&self.url))
            .field("ca_file", &self.ca_file)
            .field("creds_file", &self.creds_file)
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

// ---------------------------------------------------------------------------------------------
// Names derived from the group (the same strings as pg_flo, so an existing deployment's slot,
// publication, stream and consumer are picked up).
// ---------------------------------------------------------------------------------------------

/// The publication and the replication slot, `pg_flo_<group, '-' replaced by '_'>_publication`
/// (shared with the operator, which reports and drops them).
pub use pg_flo_source::names::{publication_name, slot_name, stream_name};

/// NATS subject the group's changes are published on: `pgflo.<group>`.
pub fn subject(group: &str) -> String {
    format!("pgflo.{group}")
}

/// Durable JetStream consumer of the workers: `pgflo_<group>_consumer`.
pub fn consumer_name(group: &str) -> String {
    format!("pgflo_{group}_consumer")
}

/// Checks that `group` can name NATS subjects and the replication slot (shared with the
/// operator's validation of a ReplicationGroup).
pub use pg_flo_source::names::validate_group;

// ---------------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------------

pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_SCHEMA: &str = "public";
pub const DEFAULT_MAX_COPY_WORKERS_PER_TABLE: u32 = 4;
pub const DEFAULT_MAX_BATCH_CHANGES: usize = 1000;
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BATCH_SIZE: usize = 1000;
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_GAP_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_WEBHOOK_BATCH_SIZE: usize = 1;
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_WEBHOOK_RETRY_INITIAL_WAIT: Duration = Duration::from_millis(500);
pub const DEFAULT_WEBHOOK_RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

/// Every key the YAML config file may carry (pg_flo's keys plus ours). Anything else is
/// reported as a warning.
pub const KNOWN_KEYS: &[&str] = &[
    // global
    "log-format",
    "log-level",
    // replicator
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "group",
    "schema",
    "tables",
    "nats-url",
    "nats-ca-file",
    "nats-creds-file",
    "nats-connect-timeout",
    "nats-stream-max-bytes",
    "stream",
    "copy-and-stream",
    "copy",
    "max-copy-workers-per-table",
    "track-ddl",
    "accept-lost-slot",
    "cleanup",
    "retry-max-attempts",
    "retry-initial-wait",
    "retry-max-wait",
    "max-batch-changes",
    "max-batch-bytes",
    "max-in-flight",
    "status-interval",
    "metrics-addr",
    // worker
    "rules-config",
    "routing-config",
    "batch-size",
    "flush-interval",
    "dead-letter",
    "gap-timeout",
    "file-output-dir",
    "webhook-url",
    "webhook-header",
    "webhook-batch-size",
    "webhook-timeout",
    "webhook-max-attempts",
    "webhook-retry-initial-wait",
    "webhook-retry-max-wait",
    "target-host",
    "target-port",
    "target-dbname",
    "target-user",
    "target-password",
    "target-sslmode",
    "target-sslrootcert",
    "target-sync-schema",
    "target-disable-foreign-keys",
    "target-fire-triggers",
    "source-host",
    "source-port",
    "source-dbname",
    "source-user",
    "source-password",
    "source-sslmode",
    "source-sslrootcert",
];

/// The environment variable for a config key: `PG_FLO_` + upper case, `-` -> `_`.
pub fn env_var(key: &str) -> String {
    format!("PG_FLO_{}", key.to_ascii_uppercase().replace('-', "_"))
}

/// `--key (env PG_FLO_KEY, config key key)`: every way to set `key`.
fn how_to_set(key: &str) -> String {
    format!("--{key} (env {}, config key {key})", env_var(key))
}

// ---------------------------------------------------------------------------------------------
// Value parsers, shared by the command line (clap `value_parser`), env and YAML.
// ---------------------------------------------------------------------------------------------

impl SslMode {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server certificate is checked against `sslrootcert`.
    pub fn verifies_certificate(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <SslMode as clap::ValueEnum>::from_str(s.trim(), true).map_err(|_| {
            format!("unknown sslmode {s:?}: use disable, prefer, require, verify-ca or verify-full")
        })
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <LogFormat as clap::ValueEnum>::from_str(s.trim(), true)
            .map_err(|_| format!("unknown log format {s:?}: use text or json"))
    }
}

/// Go's `strconv.ParseBool` spellings.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// A TCP port, 1..=65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=65535).contains(&n) => u16::try_from(n).map_err(|e| e.to_string()),
        Ok(n) => Err(format!("port must be between 1 and 65535, got {n}")),
        Err(_) => Err(format!(
            "port must be a number between 1 and 65535, got {s:?}"
        )),
    }
}

/// A humantime duration: `1s`, `500ms`, `2m 30s`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}): use e.g. 1s, 500ms or 2m"))
}

/// A whole number greater than 0.
pub fn parse_positive(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be greater than 0".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number greater than 0, got {s:?}")),
    }
}

/// Any integer (for pg_flo settings where a value <= 0 means "default").
pub fn parse_int(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| format!("expected a whole number, got {s:?}"))
}

/// A size in bytes greater than 0: `1048576`, `512KiB`, `1MiB`, `10GiB` (binary), `1MB`
/// (decimal); a trailing `B` and spaces before the unit are allowed.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let invalid = || format!("invalid size {s:?}: use bytes or a unit, e.g. 1048576, 512KiB, 1MiB");
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    match n.checked_mul(factor) {
        Some(0) => Err("must be greater than 0".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("size {s:?} is too large")),
    }
}

/// `host:port` with an IP address; `:9100` means every interface (`0.0.0.0:9100`).
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let t = if t.starts_with(':') {
        format!("0.0.0.0{t}")
    } else {
        t.to_owned()
    };
    t.parse::<SocketAddr>()
        .map_err(|_| format!("invalid address {s:?}: use ip:port, e.g. 0.0.0.0:9100 or :9100"))
}

/// A password; never fails and never echoes the value.
pub fn parse_secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s))
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
/// the value (it may be a token).
pub fn parse_webhook_header(s: &str) -> Result<WebhookHeader, String> {
    let Some((name, value)) = s.split_once(':') else {
        return Err("expected a header as \"Name: value\"".to_owned());
    };
    let name = name.trim();
    if name.is_empty() || reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "{name:?} is not an HTTP header name (expected \"Name: value\")"
        ));
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

/// Splits a table list on commas and/or whitespace, dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Loading: config file + env + flags -> resolved config
// ---------------------------------------------------------------------------------------------

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

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML in config file {}", path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config file {} must be a map of flat keys such as `host: db.example`", path.display())]
    NotAMap { path: PathBuf },
    /// Every problem found, each naming how to set the value.
    #[error("invalid configuration:{}", .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Metric label / log category.
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::ReadFile { .. } => "config_file_read",
            ConfigError::ParseFile { .. } | ConfigError::NotAMap { .. } => "config_file_parse",
            ConfigError::Invalid(_) => "config_invalid",
        }
    }

    /// Configuration errors never go away by retrying.
    pub fn retry(&self) -> crate::sink::Retry {
        crate::sink::Retry::Permanent
    }
}

/// A parsed flat YAML config file.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    values: BTreeMap<String, serde_yaml::Value>,
    /// Unknown or unusable keys.
    pub warnings: Vec<String>,
}

impl ConfigFile {
    /// Parses pg_flo's flat kebab-case YAML. Keys are case-insensitive (as viper's).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|source| ConfigError::ParseFile {
                path: path.to_owned(),
                source,
            })?;
        let mut file = ConfigFile {
            path: path.to_owned(),
            ..ConfigFile::default()
        };
        let map = match doc {
            serde_yaml::Value::Null => return Ok(file),
            serde_yaml::Value::Mapping(map) => map,
            _ => {
                return Err(ConfigError::NotAMap {
                    path: path.to_owned(),
                })
            }
        };
        for (key, value) in map {
            let serde_yaml::Value::String(key) = key else {
                file.warnings.push(format!(
                    "ignoring non-text key {key:?} in config file {}",
                    path.display()
                ));
                continue;
            };
            let key = key.to_ascii_lowercase();
            if KNOWN_KEYS.contains(&key.as_str()) {
                file.values.insert(key, value);
            } else {
                file.warnings.push(format!(
                    "unknown key {key:?} in config file {} (ignored)",
                    path.display()
                ));
            }
        }
        Ok(file)
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        ConfigFile::parse(path, &text)
    }
}

/// Resolves the command line against the process environment and the config file.
pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
    load_with(cli, &|name| std::env::var(name).ok())
}

/// [`load`] with an injected environment lookup.
///
/// The config file is `--config` (or `PG_FLO_CONFIG`), which must be readable valid YAML;
/// without it `$HOME/.pg_flo.yaml` is used when it exists (a broken one is a warning).
pub fn load_with(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    if matches!(cli.command, Command::Version) {
        return resolve(cli, env, None);
    }
    let mut warnings = Vec::new();
    let explicit = cli.config.clone().or_else(|| {
        env("PG_FLO_CONFIG")
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from)
    });
    let file = match explicit {
        Some(path) => Some(ConfigFile::read(&path)?),
        None => default_config_file(env, &mut warnings),
    };
    let mut loaded = match resolve(cli, env, file.as_ref()) {
        Ok(loaded) => loaded,
        Err(ConfigError::Invalid(mut problems)) => {
            problems.extend(warnings.into_iter().map(|w| format!("(warning) {w}")));
            return Err(ConfigError::Invalid(problems));
        }
        Err(e) => return Err(e),
    };
    warnings.append(&mut loaded.warnings);
    loaded.warnings = warnings;
    Ok(loaded)
}

/// `$HOME/.pg_flo.yaml`, if it exists and parses; problems with it become warnings.
fn default_config_file(
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<ConfigFile> {
    let home = env("HOME").filter(|h| !h.is_empty())?;
    let path = Path::new(&home).join(".pg_flo.yaml");
    match std::fs::read_to_string(&path) {
        Ok(text) => match ConfigFile::parse(&path, &text) {
            Ok(file) => Some(file),
            Err(e) => {
                warnings.push(format!(
                    "ignoring {}: {}",
                    path.display(),
                    crate::redact::error_chain(&e)
                ));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("ignoring {}: cannot read it: {e}", path.display()));
            None
        }
    }
}

/// Merges flags, env (`env`) and `file` with precedence flag > env > file > default and
/// validates the result, reporting every problem at once. No IO.
pub fn resolve(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
) -> Result<Loaded, ConfigError> {
    let mut r = Resolver {
        env,
        file,
        problems: Vec::new(),
        invalid: HashSet::new(),
    };
    let log = LogConfig {
        format: r
            .value("log-format", cli.log_format, LogFormat::from_str)
            .unwrap_or_default(),
        level: r
            .string("log-level", &cli.log_level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
    };
    let process = match &cli.command {
        Command::Version => Process::Version,
        Command::Replicator(args) => Process::Replicator(Box::new(r.replicator(args))),
        Command::Worker(args) => Process::Worker(Box::new(r.worker(args))),
    };
    let warnings = file.map(|f| f.warnings.clone()).unwrap_or_default();
    if !r.problems.is_empty() {
        let mut problems = r.problems;
        problems.extend(warnings.into_iter().map(|w| format!("(warning) {w}")));
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Loaded {
        process,
        log,
        config_file: file.map(|f| f.path.clone()),
        warnings,
    })
}

/// One merge: looks each key up in flag, env, file order and collects problems.
struct Resolver<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<&'a ConfigFile>,
    problems: Vec<String>,
    /// Keys whose value was present but invalid (not also reported as missing).
    invalid: HashSet<&'static str>,
}

/// The NATS flags as given on the command line.
struct NatsFlags<'a> {
    url: &'a Option<String>,
    ca_file: &'a Option<PathBuf>,
    creds_file: &'a Option<PathBuf>,
    connect_timeout: Option<Duration>,
}

/// One PostgreSQL endpoint's flags, `prefix` being "", "target-" or "source-".
struct PgFlags<'a> {
    prefix: &'static str,
    host: &'a Option<String>,
    port: Option<u16>,
    dbname: &'a Option<String>,
    user: &'a Option<String>,
    password: &'a Option<SecretString>,
    sslmode: Option<SslMode>,
    sslrootcert: &'a Option<PathBuf>,
}

/// A PostgreSQL endpoint's settings before the required check.
struct PgParts {
    host: Option<String>,
    port: u16,
    dbname: Option<String>,
    user: Option<String>,
    password: Option<SecretString>,
    sslmode: SslMode,
    sslrootcert: Option<PathBuf>,
}

impl PgParts {
    fn is_complete(&self) -> bool {
        self.host.is_some()
            && self.dbname.is_some()
            && self.user.is_some()
            && self.password.is_some()
    }
}

/// Keys built at runtime from a prefix must be `'static` for the invalid-key set.
fn static_key(key: &str) -> &'static str {
    KNOWN_KEYS
        .iter()
        .copied()
        .find(|k| *k == key)
        .unwrap_or("unknown")
}

fn yaml_scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Tagged(t) => yaml_scalar(&t.value),
        _ => None,
    }
}

impl Resolver<'_> {
    /// The value of `key`: `flag` if given, else the env variable, else the config file.
    /// An unparsable env or file value is a problem (and the key counts as set).
    fn value<T>(
        &mut self,
        key: &'static str,
        flag: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        if flag.is_some() {
            return flag;
        }
        let var = env_var(key);
        if let Some(raw) = (self.env)(&var).filter(|v| !v.trim().is_empty()) {
            return self.parsed(key, parse(&raw), || format!("env {var}"));
        }
        let file = self.file?;
        match file.values.get(key) {
            None | Some(serde_yaml::Value::Null) => None,
            Some(value) => match yaml_scalar(value) {
                Some(raw) if raw.trim().is_empty() => None,
                Some(raw) => self.parsed(key, parse(&raw), || {
                    format!("config key {key} in {}", file.path.display())
                }),
                None => {
                    self.invalid.insert(key);
                    self.problems.push(format!(
                        "config key {key} in {}: expected a single value, not a list or map",
                        file.path.display()
                    ));
                    None
                }
            },
        }
    }

    fn parsed<T>(
        &mut self,
        key: &'static str,
        result: Result<T, String>,
        source: impl FnOnce() -> String,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.invalid.insert(key);
                self.problems.push(format!("invalid {}: {e}", source()));
                None
            }
        }
    }

    /// A text setting; an empty value counts as not set.
    fn string(&mut self, key: &'static str, flag: &Option<String>) -> Option<String> {
        let flag = flag.clone().filter(|s| !s.trim().is_empty());
        self.value(key, flag, |s| Ok(s.to_owned()))
    }

    fn path(&mut self, key: &'static str, flag: &Option<PathBuf>) -> Option<PathBuf> {
        let flag = flag.clone().filter(|p| !p.as_os_str().is_empty());
        self.value(key, flag, |s| Ok(PathBuf::from(s)))
    }

    fn secret(&mut self, key: &'static str, flag: &Option<SecretString>) -> Option<SecretString> {
        use secrecy::ExposeSecret;
        let flag = flag.clone().filter(|s| !s.expose_secret().is_empty());
        self.value(key, flag, parse_secret)
    }

    fn flag_bool(&mut self, key: &'static str, flag: Option<bool>) -> bool {
        self.value(key, flag, parse_bool).unwrap_or(false)
    }

    /// A list: flag values, env or a YAML list/string; items split on commas and whitespace.
    fn list(&mut self, key: &'static str, flag: &[String]) -> Vec<String> {
        if !flag.is_empty() {
            return flag.iter().flat_map(|s| split_list(s)).collect();
        }
        if let Some(raw) = (self.env)(&env_var(key)) {
            let items = split_list(&raw);
            if !items.is_empty() {
                return items;
            }
        }
        let Some(file) = self.file else {
            return Vec::new();
        };
        match file.values.get(key) {
            None | Some(serde_yaml::Value::Null) => Vec::new(),
            Some(serde_yaml::Value::Sequence(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match yaml_scalar(item) {
                        Some(s) => out.extend(split_list(&s)),
                        None => {
                            self.invalid.insert(key);
                            self.problems.push(format!(
                                "config key {key} in {}: list items must be names, not lists or maps",
                                file.path.display()
                            ));
                        }
                    }
                }
                out
            }
            Some(value) => match yaml_scalar(value) {
                Some(s) => split_list(&s),
                None => {
                    self.invalid.insert(key);
                    self.problems.push(format!(
                        "config key {key} in {}: expected a list of names",
                        file.path.display()
                    ));
                    Vec::new()
                }
            },
        }
    }

    /// Webhook headers: the flags (already parsed), else env with one `Name: value` per line,
    /// else a YAML list of `Name: value` strings (or one string, one header per line).
    fn headers(&mut self, key: &'static str, flag: &[SecretString]) -> Vec<WebhookHeader> {
        use secrecy::ExposeSecret;
        if !flag.is_empty() {
            return flag
                .iter()
                .filter_map(|h| {
                    let parsed = parse_webhook_header(h.expose_secret());
                    self.parsed(key, parsed, || format!("--{key}"))
                })
                .collect();
        }
        let var = env_var(key);
        if let Some(raw) = (self.env)(&var).filter(|v| !v.trim().is_empty()) {
            return self.header_lines(key, &raw, &|| format!("env {var}"));
        }
        let Some(file) = self.file else {
            return Vec::new();
        };
        let source = || format!("config key {key} in {}", file.path.display());
        match file.values.get(key) {
            None | Some(serde_yaml::Value::Null) => Vec::new(),
            Some(serde_yaml::Value::Sequence(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match yaml_scalar(item) {
                        Some(s) => out.extend(self.header_lines(key, &s, &source)),
                        None => {
                            self.invalid.insert(key);
                            self.problems.push(format!(
                                "{}: list items must be \"Name: value\" strings",
                                source()
                            ));
                        }
                    }
                }
                out
            }
            Some(value) => match yaml_scalar(value) {
                Some(s) => self.header_lines(key, &s, &source),
                None => {
                    self.invalid.insert(key);
                    self.problems.push(format!(
                        "{}: expected a list of \"Name: value\" strings",
                        source()
                    ));
                    Vec::new()
                }
            },
        }
    }

    /// Parses one header per non-blank line of `raw`.
    fn header_lines(
        &mut self,
        key: &'static str,
        raw: &str,
        source: &dyn Fn() -> String,
    ) -> Vec<WebhookHeader> {
        raw.lines()
            .filter(|line| !line.trim().is_empty())
            .filter_map(|line| self.parsed(key, parse_webhook_header(line), source))
            .collect()
    }

    /// Reports `key` as missing unless it was present but invalid.
    fn require<T>(&mut self, key: &'static str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.invalid.contains(key) {
            self.problems
                .push(format!("missing required setting: {}", how_to_set(key)));
        }
        value
    }

    fn required_string(&mut self, key: &'static str, flag: &Option<String>) -> String {
        let value = self.string(key, flag);
        self.require(key, value).unwrap_or_default()
    }

    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems
            .push(format!("{message} (set with {})", how_to_set(key)));
    }

    fn nonzero(&mut self, key: &'static str, value: Duration) -> Duration {
        if value.is_zero() {
            self.problem(key, format!("{key} must be greater than 0"));
        }
        value
    }

    fn group(&mut self, flag: &Option<String>) -> String {
        let group = self.required_string("group", flag);
        if !group.is_empty() {
            if let Err(e) = validate_group(&group) {
                self.problem("group", e);
            }
        }
        group
    }

    fn nats(&mut self, flags: NatsFlags<'_>) -> NatsConfig {
        NatsConfig {
            url: self.required_string("nats-url", flags.url),
            ca_file: self.path("nats-ca-file", flags.ca_file),
            creds_file: self.path("nats-creds-file", flags.creds_file),
            connect_timeout: self
                .value(
                    "nats-connect-timeout",
                    flags.connect_timeout,
                    parse_duration,
                )
                .unwrap_or(DEFAULT_NATS_CONNECT_TIMEOUT),
        }
    }

    /// Looks up one endpoint's settings (none required yet).
    fn pg_parts(&mut self, f: PgFlags<'_>) -> PgParts {
        let p = f.prefix;
        let key = |name: &str| static_key(&format!("{p}{name}"));
        let parts = PgParts {
            host: self.string(key("host"), f.host),
            port: self
                .value(key("port"), f.port, parse_port)
                .unwrap_or(DEFAULT_PORT),
            dbname: self.string(key("dbname"), f.dbname),
            user: self.string(key("user"), f.user),
            password: self.secret(key("password"), f.password),
            sslmode: self
                .value(key("sslmode"), f.sslmode, SslMode::from_str)
                .unwrap_or_default(),
            sslrootcert: self.path(key("sslrootcert"), f.sslrootcert),
        };
        if parts.sslmode.verifies_certificate() && parts.sslrootcert.is_none() {
            let rootcert = key("sslrootcert");
            self.problem(
                rootcert,
                format!(
                    "--{p}sslmode {} needs the CA certificate file to verify the server",
                    parts.sslmode
                ),
            );
        }
        parts
    }

    /// Requires host, dbname, user and password of an endpoint.
    fn pg_required(&mut self, prefix: &'static str, parts: PgParts) -> PgConnConfig {
        let key = |name: &str| static_key(&format!("{prefix}{name}"));
        let host = self.require(key("host"), parts.host).unwrap_or_default();
        let dbname = self
            .require(key("dbname"), parts.dbname)
            .unwrap_or_default();
        let user = self.require(key("user"), parts.user).unwrap_or_default();
        let password = self
            .require(key("password"), parts.password)
            .unwrap_or_else(|| SecretString::from(""));
        PgConnConfig {
            host,
            port: parts.port,
            dbname,
            user,
            password,
            sslmode: parts.sslmode,
            sslrootcert: parts.sslrootcert,
        }
    }

    fn replicator(&mut self, a: &ReplicatorArgs) -> ReplicatorConfig {
        let parts = self.pg_parts(PgFlags {
            prefix: "",
            host: &a.host,
            port: a.port,
            dbname: &a.dbname,
            user: &a.user,
            password: &a.password,
            sslmode: a.sslmode,
            sslrootcert: &a.sslrootcert,
        });
        let source = self.pg_required("", parts);
        let group = self.group(&a.group);
        let schema = self
            .string("schema", &a.schema)
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        let tables = self.list("tables", &a.tables);
        let nats = self.nats(NatsFlags {
            url: &a.nats_url,
            ca_file: &a.nats_ca_file,
            creds_file: &a.nats_creds_file,
            connect_timeout: a.nats_connect_timeout,
        });

        let stream = self.flag_bool("stream", a.stream);
        let copy_and_stream = self.flag_bool("copy-and-stream", a.copy_and_stream);
        let copy = self.flag_bool("copy", a.copy);
        let mode = match (stream, copy_and_stream, copy) {
            (_, false, false) => ReplicationMode::Stream,
            (false, true, false) => ReplicationMode::CopyAndStream,
            (false, false, true) => ReplicationMode::Copy,
            _ => {
                self.problems.push(
                    "cannot specify multiple modes: use --stream, --copy-and-stream, or --copy"
                        .to_owned(),
                );
                ReplicationMode::Stream
            }
        };

        let max_copy_workers_per_table = match self.value(
            "max-copy-workers-per-table",
            a.max_copy_workers_per_table,
            parse_int,
        ) {
            Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
            _ => DEFAULT_MAX_COPY_WORKERS_PER_TABLE,
        };
        let track_ddl = self.flag_bool("track-ddl", a.track_ddl);
        let accept_lost_slot = self.flag_bool("accept-lost-slot", a.accept_lost_slot);
        let cleanup = self.flag_bool("cleanup", a.cleanup);

        let defaults = RetryConfig::default();
        let max_attempts = self.value("retry-max-attempts", a.retry_max_attempts, |s| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("expected a whole number >= 0, got {s:?}"))
        });
        let initial_wait = self.value("retry-initial-wait", a.retry_initial_wait, parse_duration);
        let max_wait = self.value("retry-max-wait", a.retry_max_wait, parse_duration);
        let retry = match max_attempts {
            // pg_flo: 0 selects the defaults of all three settings.
            Some(0) => defaults,
            _ => RetryConfig {
                max_attempts: max_attempts.unwrap_or(defaults.max_attempts),
                initial_wait: initial_wait.unwrap_or(defaults.initial_wait),
                max_wait: max_wait.unwrap_or(defaults.max_wait),
            },
        };
        if retry.initial_wait > retry.max_wait {
            self.problem(
                "retry-max-wait",
                format!(
                    "retry-initial-wait ({}) is longer than retry-max-wait ({})",
                    humantime::format_duration(retry.initial_wait),
                    humantime::format_duration(retry.max_wait)
                ),
            );
        }

        let max_batch_changes = self
            .value("max-batch-changes", a.max_batch_changes, parse_positive)
            .map_or(DEFAULT_MAX_BATCH_CHANGES, to_usize);
        let max_batch_bytes = self
            .value("max-batch-bytes", a.max_batch_bytes, parse_bytes)
            .map_or(DEFAULT_MAX_BATCH_BYTES, to_usize);
        let max_in_flight = self
            .value("max-in-flight", a.max_in_flight, parse_positive)
            .map_or(DEFAULT_MAX_IN_FLIGHT, to_usize);
        let stream_max_bytes = self
            .value(
                "nats-stream-max-bytes",
                a.nats_stream_max_bytes,
                parse_bytes,
            )
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let status_interval = self
            .value("status-interval", a.status_interval, parse_duration)
            .unwrap_or(DEFAULT_STATUS_INTERVAL);
        let status_interval = self.nonzero("status-interval", status_interval);
        let metrics_addr = self.value("metrics-addr", a.metrics_addr, parse_socket_addr);

        ReplicatorConfig {
            source,
            group,
            schema,
            tables,
            nats,
            mode,
            max_copy_workers_per_table,
            track_ddl,
            accept_lost_slot,
            cleanup,
            retry,
            max_batch_changes,
            max_batch_bytes,
            max_in_flight,
            stream_max_bytes,
            status_interval,
            metrics_addr,
        }
    }

    fn worker(&mut self, a: &WorkerArgs) -> WorkerConfig {
        let c = &a.common;
        let group = self.group(&c.group);
        let nats = self.nats(NatsFlags {
            url: &c.nats_url,
            ca_file: &c.nats_ca_file,
            creds_file: &c.nats_creds_file,
            connect_timeout: c.nats_connect_timeout,
        });
        let rules_config = self.path("rules-config", &c.rules_config);
        let routing_config = self.path("routing-config", &c.routing_config);
        let batch_size = self
            .value("batch-size", c.batch_size, parse_positive)
            .map_or(DEFAULT_BATCH_SIZE, to_usize);
        let flush_interval = self
            .value("flush-interval", c.flush_interval, parse_duration)
            .unwrap_or(DEFAULT_FLUSH_INTERVAL);
        let flush_interval = self.nonzero("flush-interval", flush_interval);
        let dead_letter = self.flag_bool("dead-letter", c.dead_letter);
        let gap_timeout = self
            .value("gap-timeout", c.gap_timeout, parse_duration)
            .unwrap_or(DEFAULT_GAP_TIMEOUT);
        let gap_timeout = self.nonzero("gap-timeout", gap_timeout);
        let metrics_addr = self.value("metrics-addr", c.metrics_addr, parse_socket_addr);

        let sink = match &a.sink {
            SinkCommand::Stdout => SinkConfig::Stdout,
            SinkCommand::File(f) => {
                let dir = self.path("file-output-dir", &f.file_output_dir);
                SinkConfig::File {
                    output_dir: self.require("file-output-dir", dir).unwrap_or_default(),
                }
            }
            SinkCommand::Webhook(w) => SinkConfig::Webhook(self.webhook_sink(w)),
            SinkCommand::Postgres(p) => SinkConfig::Postgres(self.postgres_sink(p, &group)),
        };

        WorkerConfig {
            group,
            nats,
            rules_config,
            routing_config,
            batch_size,
            flush_interval,
            dead_letter,
            gap_timeout,
            sink,
            metrics_addr,
        }
    }

    fn webhook_sink(&mut self, w: &WebhookArgs) -> WebhookSinkConfig {
        let url = self.required_string("webhook-url", &w.webhook_url);
        if !url.is_empty() {
            if let Err(e) = check_webhook_url(&url) {
                self.problem("webhook-url", e);
            }
        }
        let headers = self.headers("webhook-header", &w.webhook_header);
        let batch_size = self
            .value("webhook-batch-size", w.webhook_batch_size, parse_positive)
            .map_or(DEFAULT_WEBHOOK_BATCH_SIZE, to_usize);
        let timeout = self
            .value("webhook-timeout", w.webhook_timeout, parse_duration)
            .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
        let timeout = self.nonzero("webhook-timeout", timeout);
        let max_attempts = self
            .value(
                "webhook-max-attempts",
                w.webhook_max_attempts,
                parse_positive,
            )
            .map_or(DEFAULT_WEBHOOK_MAX_ATTEMPTS, |n| {
                u32::try_from(n).unwrap_or(u32::MAX)
            });
        let retry_initial_wait = self
            .value(
                "webhook-retry-initial-wait",
                w.webhook_retry_initial_wait,
                parse_duration,
            )
            .unwrap_or(DEFAULT_WEBHOOK_RETRY_INITIAL_WAIT);
        let retry_initial_wait = self.nonzero("webhook-retry-initial-wait", retry_initial_wait);
        let retry_max_wait = self
            .value(
                "webhook-retry-max-wait",
                w.webhook_retry_max_wait,
                parse_duration,
            )
            .unwrap_or(DEFAULT_WEBHOOK_RETRY_MAX_WAIT);
        if retry_initial_wait > retry_max_wait {
            self.problem(
                "webhook-retry-max-wait",
                format!(
                    "webhook-retry-initial-wait ({}) is longer than webhook-retry-max-wait ({})",
                    humantime::format_duration(retry_initial_wait),
                    humantime::format_duration(retry_max_wait)
                ),
            );
        }
        WebhookSinkConfig {
            url,
            headers,
            batch_size,
            timeout,
            max_attempts,
            retry_initial_wait,
            retry_max_wait,
        }
    }

    fn postgres_sink(&mut self, p: &PostgresArgs, group: &str) -> PostgresSinkConfig {
        let target = self.pg_parts(PgFlags {
            prefix: "target-",
            host: &p.target_host,
            port: p.target_port,
            dbname: &p.target_dbname,
            user: &p.target_user,
            password: &p.target_password,
            sslmode: p.target_sslmode,
            sslrootcert: &p.target_sslrootcert,
        });
        let target = self.pg_required("target-", target);
        let sync_schema = self.flag_bool("target-sync-schema", p.target_sync_schema);
        let disable_foreign_keys =
            self.flag_bool("target-disable-foreign-keys", p.target_disable_foreign_keys);
        let fire_triggers = self.flag_bool("target-fire-triggers", p.target_fire_triggers);
        let source = self.pg_parts(PgFlags {
            prefix: "source-",
            host: &p.source_host,
            port: p.source_port,
            dbname: &p.source_dbname,
            user: &p.source_user,
            password: &p.source_password,
            sslmode: p.source_sslmode,
            sslrootcert: &p.source_sslrootcert,
        });
        // The source is only needed to copy the schema (pg_flo required it always).
        let source = if sync_schema || source.is_complete() {
            Some(self.pg_required("source-", source))
        } else {
            None
        };
        PostgresSinkConfig {
            target,
            source,
            sync_schema,
            disable_foreign_keys,
            fire_triggers,
            group: group.to_owned(),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, Parser};
    use secrecy::ExposeSecret;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["pg_flo"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn yaml(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("/etc/pg_flo.yaml"), text).unwrap()
    }

    const REQUIRED_REPLICATOR: &[&str] = &[
        "replicator",
        "--host=h",
        "--dbname=d",
        "--user=u",
        "--password=p",
        "--group=g",
        "--nats-url=nats://n:4222",
    ];

    fn replicator(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> ReplicatorConfig {
        let file = file.map(yaml);
        match resolve(&cli(args), &env_of(env), file.as_ref())
            .unwrap()
            .process
        {
            Process::Replicator(r) => *r,
            other => panic!("not a replicator: {other:?}"),
        }
    }

    fn worker(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> WorkerConfig {
        let file = file.map(yaml);
        match resolve(&cli(args), &env_of(env), file.as_ref())
            .unwrap()
            .process
        {
            Process::Worker(w) => *w,
            other => panic!("not a worker: {other:?}"),
        }
    }

    fn problems(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Vec<String> {
        let file = file.map(yaml);
        match resolve(&cli(args), &env_of(env), file.as_ref()) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn clap_debug_assert() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_is_a_known_config_key() {
        fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long() {
                    out.push(long.to_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut longs = Vec::new();
        walk(&Cli::command(), &mut longs);
        for long in longs {
            if matches!(long.as_str(), "config" | "help" | "version") {
                continue;
            }
            assert!(
                KNOWN_KEYS.contains(&long.as_str()),
                "--{long} is not in KNOWN_KEYS"
            );
        }
    }

    #[test]
    fn defaults() {
        let r = replicator(REQUIRED_REPLICATOR, &[], None);
        assert_eq!(r.source.port, 5432);
        assert_eq!(r.source.sslmode, SslMode::Prefer);
        assert_eq!(r.schema, "public");
        assert!(r.tables.is_empty());
        assert_eq!(r.mode, ReplicationMode::Stream);
        assert_eq!(r.max_copy_workers_per_table, 4);
        assert!(!r.track_ddl);
        assert_eq!(r.retry, RetryConfig::default());
        assert_eq!(r.max_batch_changes, 1000);
        assert_eq!(r.max_batch_bytes, 1024 * 1024);
        assert_eq!(r.max_in_flight, 256);
        assert_eq!(r.stream_max_bytes, None);
        assert_eq!(r.status_interval, Duration::from_secs(1));
        assert_eq!(r.metrics_addr, None);
        assert_eq!(r.nats.connect_timeout, Duration::from_secs(30));
        assert_eq!(r.source.password.expose_secret(), "p");
    }

    #[test]
    fn precedence_flag_env_yaml_default() {
        let file = "schema: from_yaml\nport: 1111\nuser: yaml_user\ndbname: yaml_db\n";
        let env = [("PG_FLO_SCHEMA", "from_env"), ("PG_FLO_PORT", "2222")];
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.retain(|a| !a.starts_with("--user") && !a.starts_with("--dbname"));
        args.push("--schema=from_flag");
        let r = replicator(&args, &env, Some(file));
        assert_eq!(r.schema, "from_flag", "flag beats env and yaml");
        assert_eq!(r.source.port, 2222, "env beats yaml");
        assert_eq!(r.source.user, "yaml_user", "yaml beats default");
        assert_eq!(r.source.dbname, "yaml_db");
        assert_eq!(r.retry, RetryConfig::default(), "default when unset");
    }

    #[test]
    fn env_alone_satisfies_required_settings() {
        let env = [
            ("PG_FLO_HOST", "h"),
            ("PG_FLO_DBNAME", "d"),
            ("PG_FLO_USER", "u"),
            ("PG_FLO_PASSWORD", "secret"),
            ("PG_FLO_GROUP", "g"),
            ("PG_FLO_NATS_URL", "nats://n"),
            ("PG_FLO_COPY_AND_STREAM", "true"),
            ("PG_FLO_RETRY_INITIAL_WAIT", "500ms"),
            ("PG_FLO_MAX_BATCH_BYTES", "512KiB"),
            ("PG_FLO_METRICS_ADDR", "127.0.0.1:9100"),
        ];
        let r = replicator(&["replicator"], &env, None);
        assert_eq!(r.source.host, "h");
        assert_eq!(r.mode, ReplicationMode::CopyAndStream);
        assert_eq!(r.retry.initial_wait, Duration::from_millis(500));
        assert_eq!(r.max_batch_bytes, 512 * 1024);
        assert_eq!(r.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
    }

    #[test]
    fn yaml_tables_list_and_durations() {
        let file = "
host: h
dbname: d
user: u
password: p
group: g
nats-url: nats://n
tables:
  - users
  - other.orders
retry-max-wait: 20s
retry-max-attempts: 5
track-ddl: true
max-copy-workers-per-table: 0
";
        let r = replicator(&["replicator"], &[], Some(file));
        assert_eq!(r.tables, ["users", "other.orders"]);
        assert_eq!(r.retry.max_wait, Duration::from_secs(20));
        assert_eq!(r.retry.max_attempts, 5);
        assert!(r.track_ddl);
        assert_eq!(r.max_copy_workers_per_table, 4, "<= 0 means 4");
    }

    #[test]
    fn env_tables_split_on_commas_and_spaces() {
        let r = replicator(
            REQUIRED_REPLICATOR,
            &[("PG_FLO_TABLES", "a,b c ,  d\te")],
            None,
        );
        assert_eq!(r.tables, ["a", "b", "c", "d", "e"]);
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.push("--tables=x y,z");
        let r = replicator(&args, &[("PG_FLO_TABLES", "a")], None);
        assert_eq!(r.tables, ["x", "y", "z"], "the flag beats env");
    }

    #[test]
    fn retry_max_attempts_zero_selects_defaults() {
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.extend(["--retry-max-attempts=0", "--retry-initial-wait=5s"]);
        let r = replicator(&args, &[], None);
        assert_eq!(r.retry, RetryConfig::default());
    }

    #[test]
    fn unknown_yaml_key_is_a_warning() {
        let file = yaml("host: h\nnats_url: typo\nsome-extra: 1\n");
        assert_eq!(file.warnings.len(), 2, "{:?}", file.warnings);
        assert!(file.warnings.iter().any(|w| w.contains("\"nats_url\"")));
        assert!(file.warnings.iter().any(|w| w.contains("\"some-extra\"")));
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.retain(|a| !a.starts_with("--host"));
        let loaded = resolve(&cli(&args), &env_of(&[]), Some(&file)).unwrap();
        assert_eq!(loaded.warnings.len(), 2);
        assert_eq!(
            loaded.config_file.as_deref(),
            Some(Path::new("/etc/pg_flo.yaml"))
        );
        match loaded.process {
            Process::Replicator(r) => assert_eq!(r.source.host, "h"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_yaml_names_the_file() {
        let err = ConfigFile::parse(Path::new("/x/bad.yaml"), "host: [unclosed").unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }));
        assert!(err.to_string().contains("/x/bad.yaml"), "{err}");
        let err = ConfigFile::parse(Path::new("/x/list.yaml"), "- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("/x/list.yaml"), "{err}");
    }

    #[test]
    fn explicit_config_file_must_be_readable() {
        let c = cli(&["--config", "/nonexistent/pg_flo.yaml", "worker", "stdout"]);
        let err = load_with(&c, &env_of(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/pg_flo.yaml"),
            "{err}"
        );
    }

    #[test]
    fn default_config_file_is_optional_and_read_when_present() {
        let c = cli(&["worker", "--group=g", "--nats-url=nats://n", "stdout"]);
        let loaded = load_with(&c, &env_of(&[("HOME", "/nonexistent-home")])).unwrap();
        assert!(loaded.config_file.is_none());

        let dir = std::env::temp_dir().join(format!("pg_flo_cfg_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".pg_flo.yaml"), "batch-size: 7\nbogus: 1\n").unwrap();
        let home = dir.to_string_lossy().into_owned();
        let loaded = load_with(&c, &env_of(&[("HOME", home.as_str())])).unwrap();
        assert_eq!(loaded.config_file, Some(dir.join(".pg_flo.yaml")));
        assert_eq!(loaded.warnings.len(), 1);
        match loaded.process {
            Process::Worker(w) => assert_eq!(w.batch_size, 7),
            other => panic!("{other:?}"),
        }

        std::fs::write(dir.join(".pg_flo.yaml"), "batch-size: [").unwrap();
        let loaded = load_with(&c, &env_of(&[("HOME", home.as_str())])).unwrap();
        assert!(loaded.config_file.is_none());
        assert!(
            loaded.warnings[0].contains(".pg_flo.yaml"),
            "{:?}",
            loaded.warnings
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn multiple_modes_is_an_error() {
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.extend(["--copy", "--stream"]);
        let p = problems(&args, &[], None);
        assert_eq!(
            p,
            ["cannot specify multiple modes: use --stream, --copy-and-stream, or --copy"]
        );
        // A mode from YAML plus one from the command line counts too; `--copy=false` undoes it.
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.push("--copy-and-stream");
        assert_eq!(problems(&args, &[], Some("copy: true")).len(), 1);
        args.push("--copy=false");
        let r = replicator(&args, &[], Some("copy: true"));
        assert_eq!(r.mode, ReplicationMode::CopyAndStream);
    }

    #[test]
    fn all_missing_settings_are_listed() {
        let p = problems(&["replicator"], &[], None);
        let expected: Vec<String> = ["host", "dbname", "user", "password", "group", "nats-url"]
            .iter()
            .map(|k| format!("missing required setting: {}", how_to_set(k)))
            .collect();
        assert_eq!(p, expected);
        assert!(p.contains(
            &"missing required setting: --host (env PG_FLO_HOST, config key host)".to_owned()
        ));
        let err = ConfigError::Invalid(p).to_string();
        assert!(
            err.contains("--nats-url (env PG_FLO_NATS_URL, config key nats-url)"),
            "{err}"
        );
        assert!(!err.contains("port"), "port has a default: {err}");
    }

    #[test]
    fn worker_required_settings_per_sink() {
        let p = problems(&["worker", "stdout"], &[], None);
        assert_eq!(p.len(), 2, "{p:?}");
        let p = problems(&["worker", "file"], &[], None);
        assert!(p.iter().any(|p| p.contains("--file-output-dir")), "{p:?}");
        let p = problems(&["worker", "webhook"], &[], None);
        assert!(p.iter().any(|p| p.contains("--webhook-url")), "{p:?}");
        let p = problems(
            &["worker", "--group=g", "--nats-url=n", "postgres"],
            &[],
            None,
        );
        let keys: Vec<&str> = p
            .iter()
            .map(|p| p.split_whitespace().nth(3).unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "--target-host",
                "--target-dbname",
                "--target-user",
                "--target-password"
            ],
            "source-* not required without --target-sync-schema: {p:?}"
        );
        let p = problems(
            &[
                "worker",
                "--group=g",
                "--nats-url=n",
                "postgres",
                "--target-sync-schema",
            ],
            &[
                ("PG_FLO_TARGET_HOST", "t"),
                ("PG_FLO_TARGET_DBNAME", "t"),
                ("PG_FLO_TARGET_USER", "t"),
                ("PG_FLO_TARGET_PASSWORD", "t"),
            ],
            None,
        );
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().all(|p| p.contains("--source-")), "{p:?}");
    }

    #[test]
    fn gap_timeout_from_flag_env_file_and_default() {
        let base = ["worker", "stdout", "--group", "g", "--nats-url", "nats://n"];
        let with = |extra: &[&str], env: &[(&str, &str)], file: Option<&str>| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            worker(&args, env, file).gap_timeout
        };
        let env = [("PG_FLO_GAP_TIMEOUT", "90s")];
        let file = Some("gap-timeout: 2m\n");
        assert_eq!(with(&[], &[], None), DEFAULT_GAP_TIMEOUT);
        assert_eq!(with(&[], &[], file), Duration::from_secs(120));
        assert_eq!(with(&[], &env, file), Duration::from_secs(90));
        assert_eq!(
            with(&["--gap-timeout", "10s"], &env, file),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn postgres_sink_config() {
        let file = "
group: g
nats-url: nats://n
target-host: t
target-port: 6000
target-dbname: tdb
target-user: tu
target-password: tp
target-sslmode: verify-full
target-sslrootcert: /ca.pem
target-disable-foreign-keys: true
batch-size: 50
flush-interval: 250ms
";
        let w = worker(&["worker", "postgres"], &[], Some(file));
        assert_eq!(w.batch_size, 50);
        assert_eq!(w.flush_interval, Duration::from_millis(250));
        let SinkConfig::Postgres(pg) = w.sink else {
            panic!("not postgres")
        };
        assert_eq!(pg.target.describe(), "tu@t:6000/tdb");
        assert_eq!(pg.target.sslmode, SslMode::VerifyFull);
        assert_eq!(pg.target.sslrootcert.as_deref(), Some(Path::new("/ca.pem")));
        assert!(pg.disable_foreign_keys);
        assert!(!pg.fire_triggers);
        assert!(!pg.sync_schema);
        assert!(pg.source.is_none());
        assert_eq!(pg.group, "g");
    }

    #[test]
    fn target_fire_triggers_from_flag_env_and_yaml() {
        let base = "group: g\nnats-url: n\ntarget-host: t\ntarget-dbname: d\ntarget-user: u\n\
                    target-password: p\n";
        let fire = |args: &[&str], env: &[(&str, &str)], extra: &str| {
            let file = format!("{base}{extra}");
            match worker(args, env, Some(&file)).sink {
                SinkConfig::Postgres(pg) => pg.fire_triggers,
                _ => panic!("not postgres"),
            }
        };
        assert!(!fire(&["worker", "postgres"], &[], ""));
        assert!(fire(
            &["worker", "postgres", "--target-fire-triggers"],
            &[],
            ""
        ));
        assert!(fire(
            &["worker", "postgres"],
            &[("PG_FLO_TARGET_FIRE_TRIGGERS", "true")],
            ""
        ));
        assert!(fire(
            &["worker", "postgres"],
            &[],
            "target-fire-triggers: true\n"
        ));
        assert!(!fire(
            &["worker", "postgres", "--target-fire-triggers=false"],
            &[],
            "target-fire-triggers: true\n"
        ));
    }

    #[test]
    fn webhook_sink_config() {
        let base = ["worker", "--group=g", "--nats-url=n", "webhook"];
        let mut args = base.to_vec();
        args.push("--webhook-url=https://u:pw@hooks.example:8443/in?token=t0k");
        let w = worker(&args, &[], None);
        let SinkConfig::Webhook(h) = w.sink else {
            panic!("not webhook")
        };
        assert_eq!(h.batch_size, 1);
        assert_eq!(h.timeout, Duration::from_secs(10));
        assert_eq!(h.max_attempts, 10);
        assert_eq!(h.retry_initial_wait, Duration::from_millis(500));
        assert_eq!(h.retry_max_wait, Duration::from_secs(30));
        assert!(h.headers.is_empty());
        assert_eq!(h.describe_url(), "https://hooks.example:8443/in");
        let debug = format!("{h:?}");
        assert!(!debug.contains("pw") && !debug.contains("t0k"), "{debug}");

        // Flags, env (one header per line) and YAML (a list).
        let mut args = base.to_vec();
        args.extend([
            "--webhook-url=http://h/x",
            "--webhook-header",
            "Authorization: Bearer flag-secret",
            "--webhook-header=X-Two: 2",
            "--webhook-batch-size=50",
            "--webhook-timeout=2s",
        ]);
        let w = worker(
            &args,
            &[
                ("PG_FLO_WEBHOOK_HEADER", "X-Env: 1"),
                ("PG_FLO_WEBHOOK_MAX_ATTEMPTS", "3"),
            ],
            Some("webhook-retry-initial-wait: 1s\nwebhook-retry-max-wait: 5s\n"),
        );
        let SinkConfig::Webhook(h) = w.sink else {
            panic!("not webhook")
        };
        let names: Vec<&str> = h.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["Authorization", "X-Two"], "the flags beat env");
        assert_eq!(h.headers[0].value.expose_secret(), "Bearer flag-secret");
        assert!(!format!("{h:?}").contains("flag-secret"));
        assert_eq!(h.batch_size, 50);
        assert_eq!(h.timeout, Duration::from_secs(2));
        assert_eq!(h.max_attempts, 3);
        assert_eq!(h.retry_initial_wait, Duration::from_secs(1));
        assert_eq!(h.retry_max_wait, Duration::from_secs(5));

        let w = worker(
            &base,
            &[
                ("PG_FLO_WEBHOOK_URL", "http://h/x"),
                (
                    "PG_FLO_WEBHOOK_HEADER",
                    "Authorization: Bearer a;b\n\nX-Two: 2\n",
                ),
            ],
            None,
        );
        let SinkConfig::Webhook(h) = w.sink else {
            panic!("not webhook")
        };
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[0].value.expose_secret(), "Bearer a;b");
        let w = worker(
            &base,
            &[],
            Some("webhook-url: http://h/x\nwebhook-header:\n  - 'Authorization: Bearer y'\n  - 'X-Two: 2'\n"),
        );
        let SinkConfig::Webhook(h) = w.sink else {
            panic!("not webhook")
        };
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[1].name, "X-Two");
    }

    #[test]
    fn invalid_webhook_settings_are_reported_without_secrets() {
        let p = problems(
            &["worker", "--group=g", "--nats-url=n", "webhook"],
            &[
                ("PG_FLO_WEBHOOK_URL", "ftp://u:pw@h/x"),
                ("PG_FLO_WEBHOOK_HEADER", "Authorization Bearer s3cr3t"),
                ("PG_FLO_WEBHOOK_BATCH_SIZE", "0"),
                ("PG_FLO_WEBHOOK_TIMEOUT", "0s"),
            ],
            Some("webhook-retry-initial-wait: 1m\n"),
        );
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p.iter().any(|p| p.contains("http:// or https://")), "{p:?}");
        assert!(
            p.iter().any(|p| p.contains("env PG_FLO_WEBHOOK_HEADER")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("env PG_FLO_WEBHOOK_BATCH_SIZE")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("webhook-timeout must be greater")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("longer than webhook-retry-max-wait")),
            "{p:?}"
        );
        let all = p.join("\n");
        assert!(!all.contains("s3cr3t") && !all.contains("pw"), "{all}");
        let p = problems(
            &[
                "worker",
                "--group=g",
                "--nats-url=n",
                "webhook",
                "--webhook-url=not a url",
            ],
            &[],
            None,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("--webhook-url (env PG_FLO_WEBHOOK_URL"),
            "{p:?}"
        );
        let p = problems(
            &[
                "worker",
                "--group=g",
                "--nats-url=n",
                "webhook",
                "--webhook-url=http://h",
                "--webhook-header",
                "no-colon-s3cr3t",
            ],
            &[],
            None,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("invalid --webhook-header: "), "{p:?}");
        assert!(!p[0].contains("s3cr3t"), "{p:?}");
    }

    #[test]
    fn worker_defaults() {
        let w = worker(
            &["worker", "--group=g", "--nats-url=n", "stdout"],
            &[],
            None,
        );
        assert_eq!(w.batch_size, 1000);
        assert_eq!(w.flush_interval, Duration::from_millis(100));
        assert!(matches!(w.sink, SinkConfig::Stdout));
    }

    #[test]
    fn verify_modes_need_a_root_cert() {
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.push("--sslmode=verify-ca");
        let p = problems(&args, &[], None);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("--sslrootcert"), "{p:?}");
    }

    #[test]
    fn bad_group_names() {
        for (group, needle) in [
            ("My-Group", "use the group name \"my-group\""),
            ("a.b", "only letters, digits"),
            ("a b", "only letters, digits"),
            (&"x".repeat(45), "at most 44 characters"),
        ] {
            let mut args = REQUIRED_REPLICATOR.to_vec();
            args.retain(|a| !a.starts_with("--group"));
            let p = problems(&args, &[("PG_FLO_GROUP", group)], None);
            assert_eq!(p.len(), 1, "{group}: {p:?}");
            assert!(p[0].contains(needle), "{group}: {p:?}");
        }
        assert!(validate_group(&"x".repeat(44)).is_ok());
        assert!(validate_group("my-group_1").is_ok());
        assert!(validate_group("").is_err());
    }

    #[test]
    fn invalid_values_are_reported_with_their_source() {
        let mut args = REQUIRED_REPLICATOR.to_vec();
        args.retain(|a| !a.starts_with("--host"));
        let p = problems(
            &args,
            &[("PG_FLO_PORT", "70000"), ("PG_FLO_STATUS_INTERVAL", "soon")],
            Some("host: [a, b]\nmax-in-flight: 0\n"),
        );
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("config key host"), "{p:?}");
        assert!(
            p[1].contains("env PG_FLO_PORT") && p[1].contains("65535"),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("config key max-in-flight")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("env PG_FLO_STATUS_INTERVAL")),
            "{p:?}"
        );
    }

    #[test]
    fn names_derived_from_the_group() {
        assert_eq!(slot_name("my-group"), "pg_flo_my_group_publication");
        assert_eq!(publication_name("my-group"), "pg_flo_my_group_publication");
        assert_eq!(stream_name("my-group"), "pgflo_my-group_stream");
        assert_eq!(subject("my-group"), "pgflo.my-group");
        assert_eq!(consumer_name("my-group"), "pgflo_my-group_consumer");
    }

    #[test]
    fn passwords_are_not_in_debug_output() {
        let r = replicator(REQUIRED_REPLICATOR, &[("PG_FLO_PASSWORD", "hunter2")], None);
        assert!(!format!("{r:?}").contains("\"p\""));
        let r = replicator(
            &["replicator"],
            &[],
            Some("host: h\ndbname: d\nuser: u\npassword: hunter2\ngroup: g\nnats-url: n\n"),
        );
        assert_eq!(r.source.password.expose_secret(), "hunter2");
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn log_settings() {
        let loaded = resolve(
            &cli(&["--log-format", "json", "version"]),
            &env_of(&[("PG_FLO_LOG_LEVEL", "debug")]),
            None,
        )
        .unwrap();
        assert_eq!(loaded.log.format, LogFormat::Json);
        assert_eq!(loaded.log.level, "debug");
        assert!(matches!(loaded.process, Process::Version));
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("10 GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1XB").is_err());
        assert_eq!(parse_port("5432"), Ok(5432));
        assert!(parse_port("0").is_err());
        assert!(parse_port("-1").is_err());
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_bool("T"), Ok(true));
        assert!(parse_bool("yes").is_err());
        assert_eq!("VERIFY-FULL".parse::<SslMode>(), Ok(SslMode::VerifyFull));
        assert!("allow".parse::<SslMode>().is_err());
        assert_eq!(SslMode::VerifyCa.to_string(), "verify-ca");
    }
}
