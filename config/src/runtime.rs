//! The settings of the `pg_flo` processes, declared once: each field below is a config-file
//! key (pg_flo's flat kebab-case YAML), a command-line flag (`--<key>`, with the `clap`
//! feature; the field's doc is the flag's help) and a `PG_FLO_<KEY>` environment variable
//! ([`env_var`]).
//!
//! - The runtime parses its flags into these structs (clap), and the environment and the
//!   config file through [`Settings::from_entries`], then merges them with precedence
//!   flag > env > file > default (the defaults are the `DEFAULT_*` constants, stated in each
//!   field's help) and validates the result.
//! - The operator renders the config files of its pods from [`Settings`] (`serde_yaml`):
//!   absent settings are left out, and secrets (passwords, webhook headers) are never written
//!   (they come from `PG_FLO_*` variables bound to Secrets).
//!
//! Every field is optional: which are required depends on the command, and is checked by the
//! runtime. Keys no field has are kept in [`Settings::extra`], for the runtime to report as
//! warnings (pg_flo users' files carry extra keys).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::lenient::untag;
use crate::value::serde_as;
#[cfg(feature = "clap")]
use crate::value::{
    parse_bool, parse_bytes, parse_count, parse_duration, parse_int, parse_port, parse_positive,
    parse_secret, parse_socket_addr,
};
use crate::SslMode;

/// The environment variable for a config key: `PG_FLO_` + upper case, `-` -> `_`.
pub fn env_var(key: &str) -> String {
    format!("PG_FLO_{}", key.to_ascii_uppercase().replace('-', "_"))
}

pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_SCHEMA: &str = "public";
pub const DEFAULT_MAX_COPY_WORKERS_PER_TABLE: u32 = 4;
pub const DEFAULT_RETRY_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_RETRY_INITIAL_WAIT: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_MAX_WAIT: Duration = Duration::from_secs(8);
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

/// Every setting: what a config file holds, and what the runtime merges its three layers
/// into. Serializes to pg_flo's flat YAML, unset settings and secrets left out.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub log: LogSettings,
    #[serde(flatten)]
    pub group: GroupSettings,
    #[serde(flatten)]
    pub source: ConnectionSettings,
    #[serde(flatten)]
    pub replicator: ReplicatorSettings,
    #[serde(flatten)]
    pub worker: WorkerSettings,
    #[serde(flatten)]
    pub file: FileSinkSettings,
    #[serde(flatten)]
    pub webhook: WebhookSettings,
    #[serde(flatten)]
    pub postgres: PostgresSinkSettings,
    /// Keys no setting has (reported as warnings by the runtime, never written by the
    /// operator).
    #[serde(flatten, skip_serializing)]
    pub extra: BTreeMap<String, serde_yaml::Value>,
}

/// A setting whose value was unusable: its key and why (the message never repeats a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSetting {
    pub key: String,
    pub message: String,
}

impl Settings {
    /// Reads `entries` (key -> YAML value; keys as written, e.g. lower case) key by key, so
    /// that every unusable value is reported, in the order of `entries`, and the usable ones
    /// are kept. Keys no setting has land in [`Settings::extra`].
    pub fn from_entries(entries: &serde_yaml::Mapping) -> (Settings, Vec<InvalidSetting>) {
        // A tagged value (`port: !env 5432`) is read as what it holds.
        let entries: serde_yaml::Mapping = entries
            .iter()
            .map(|(k, v)| (k.clone(), untag(v.clone())))
            .collect();
        let whole = serde_yaml::Value::Mapping(entries.clone());
        if let Ok(settings) = serde_yaml::from_value(whole) {
            return (settings, Vec::new());
        }
        let mut usable = serde_yaml::Mapping::new();
        let mut invalid = Vec::new();
        for (key, value) in &entries {
            let mut one = serde_yaml::Mapping::new();
            one.insert(key.clone(), value.clone());
            match serde_yaml::from_value::<Settings>(serde_yaml::Value::Mapping(one)) {
                Ok(_) => {
                    usable.insert(key.clone(), value.clone());
                }
                Err(e) => invalid.push(InvalidSetting {
                    key: key.as_str().unwrap_or_default().to_owned(),
                    message: e.to_string(),
                }),
            }
        }
        match serde_yaml::from_value(serde_yaml::Value::Mapping(usable)) {
            Ok(settings) => (settings, invalid),
            Err(e) => {
                invalid.push(InvalidSetting {
                    key: String::new(),
                    message: e.to_string(),
                });
                (Settings::default(), invalid)
            }
        }
    }

    /// Whether `key` names a setting.
    pub fn is_known(key: &str) -> bool {
        let mut one = serde_yaml::Mapping::new();
        one.insert(key.into(), serde_yaml::Value::Null);
        Settings::from_entries(&one).0.extra.is_empty()
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [LogFormat::Text, LogFormat::Json]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown log format {s:?}: use text or json"))
    }
}

/// Logging, for every command.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct LogSettings {
    /// Log format on stderr [env: PG_FLO_LOG_FORMAT] [default: text]
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            global = true,
            value_enum,
            ignore_case = true,
            value_name = "FORMAT"
        )
    )]
    #[serde(with = "serde_as::log_format", skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log level or tracing filter directive, e.g. info, debug, pg_flo=trace
    /// [env: PG_FLO_LOG_LEVEL] [default: info]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "LEVEL"))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// The group and its NATS server: shared by the replicator and the worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct GroupSettings {
    /// Replication group name: part of the slot, publication, stream and subject names
    /// [env: PG_FLO_GROUP] (required)
    #[cfg_attr(feature = "clap", arg(long, global = true))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// NATS server URL(s), comma-separated [env: PG_FLO_NATS_URL] (required)
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "URL"))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// PEM CA file to verify the NATS server's certificate [env: PG_FLO_NATS_CA_FILE]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub nats_ca_file: Option<PathBuf>,
    /// NATS credentials file (JWT + NKey seed) [env: PG_FLO_NATS_CREDS_FILE]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub nats_creds_file: Option<PathBuf>,
    /// NATS user name, with --nats-password [env: PG_FLO_NATS_USER]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "USER"))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub nats_user: Option<String>,
    /// NATS password of --nats-user; prefer the env variable [env: PG_FLO_NATS_PASSWORD]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_secret, value_name = "PASSWORD"))]
    #[serde(deserialize_with = "serde_as::secret", skip_serializing)]
    pub nats_password: Option<SecretString>,
    /// NATS authentication token; prefer the env variable [env: PG_FLO_NATS_TOKEN]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_secret, value_name = "TOKEN"))]
    #[serde(deserialize_with = "serde_as::secret", skip_serializing)]
    pub nats_token: Option<SecretString>,
    /// PEM client certificate for NATS (mutual TLS), with --nats-tls-key-file
    /// [env: PG_FLO_NATS_TLS_CERT_FILE]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub nats_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --nats-tls-cert-file [env: PG_FLO_NATS_TLS_KEY_FILE]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub nats_tls_key_file: Option<PathBuf>,
    /// Copies of each of the group's JetStream streams (1 to 5, at most the servers of the
    /// NATS cluster); existing streams are changed to it; unset, new streams get the server's
    /// default (1) and existing ones are left as they are [env: PG_FLO_NATS_STREAM_REPLICAS]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_positive, value_name = "N"))]
    #[serde(with = "serde_as::positive", skip_serializing_if = "Option::is_none")]
    pub nats_stream_replicas: Option<u64>,
    /// Address of the admin server (/metrics, /healthz, /readyz), e.g. 0.0.0.0:9100
    /// [env: PG_FLO_METRICS_ADDR] [default: no admin server]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_socket_addr, value_name = "ADDR"))]
    #[serde(with = "serde_as::addr", skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// How long to keep retrying the first NATS connection [env: PG_FLO_NATS_CONNECT_TIMEOUT]
    /// [default: 30s]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub nats_connect_timeout: Option<Duration>,
}

/// One PostgreSQL connection: the replicator's source database (these keys), or the postgres
/// sink's target and schema source (`target-*` / `source-*` keys, see
/// [`PostgresSinkSettings::target`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct ConnectionSettings {
    /// PostgreSQL host [env: PG_FLO_HOST] (required)
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// PostgreSQL port [env: PG_FLO_PORT] [default: 5432]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_port))]
    #[serde(with = "serde_as::port", skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// PostgreSQL database name [env: PG_FLO_DBNAME] (required)
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    /// PostgreSQL user (needs the REPLICATION attribute) [env: PG_FLO_USER] (required)
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// PostgreSQL password; prefer the env variable [env: PG_FLO_PASSWORD] (required)
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_secret, allow_hyphen_values = true))]
    #[serde(deserialize_with = "serde_as::secret", skip_serializing)]
    pub password: Option<SecretString>,
    /// TLS towards PostgreSQL, as libpq's sslmode [env: PG_FLO_SSLMODE] [default: prefer]
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, ignore_case = true, value_name = "MODE")
    )]
    #[serde(with = "serde_as::sslmode", skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// PEM CA file for --sslmode verify-ca / verify-full [env: PG_FLO_SSLROOTCERT]
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<PathBuf>,
}

/// What and how the replicator replicates.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct ReplicatorSettings {
    /// PostgreSQL schema to replicate [env: PG_FLO_SCHEMA] [default: public]
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Tables to replicate (comma- or space-separated, repeatable); empty means every table
    /// of --schema [env: PG_FLO_TABLES]
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(with = "serde_as::list", skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// JetStream stream size limit in bytes (e.g. 10GiB); the replicator waits while it is
    /// full [env: PG_FLO_NATS_STREAM_MAX_BYTES] [default: unlimited]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_bytes, value_name = "BYTES"))]
    #[serde(with = "serde_as::bytes", skip_serializing_if = "Option::is_none")]
    pub nats_stream_max_bytes: Option<u64>,
    /// Stream changes only (the default mode) [env: PG_FLO_STREAM]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Copy the existing rows only [env: PG_FLO_COPY]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub copy: Option<bool>,
    /// Copy the existing rows, then stream changes [env: PG_FLO_COPY_AND_STREAM]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub copy_and_stream: Option<bool>,
    /// Parallel copy workers per table; a value <= 0 means 4
    /// [env: PG_FLO_MAX_COPY_WORKERS_PER_TABLE] [default: 4]
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true, value_parser = parse_int, value_name = "N"))]
    #[serde(with = "serde_as::int", skip_serializing_if = "Option::is_none")]
    pub max_copy_workers_per_table: Option<i64>,
    /// Replicate DDL changes [env: PG_FLO_TRACK_DDL]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub track_ddl: Option<bool>,
    /// Stream mode: when the group's slot is gone (dropped, lost in a failover) after the
    /// group has published, create a new one and go on, accepting that the changes made while
    /// it was missing are not replicated (without it the replicator stops; re-copy with
    /// --copy-and-stream instead) [env: PG_FLO_ACCEPT_LOST_SLOT]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub accept_lost_slot: Option<bool>,
    /// Remove the group's replication slot, publication, DDL capture objects and NATS streams,
    /// then exit (the group's unconsumed changes are lost) [env: PG_FLO_CLEANUP]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<bool>,
    /// Attempts for retried operations; 0 selects the defaults (3, 1s, 8s)
    /// [env: PG_FLO_RETRY_MAX_ATTEMPTS] [default: 3]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_count, value_name = "N"))]
    #[serde(with = "serde_as::count", skip_serializing_if = "Option::is_none")]
    pub retry_max_attempts: Option<u32>,
    /// First wait between retries [env: PG_FLO_RETRY_INITIAL_WAIT] [default: 1s]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub retry_initial_wait: Option<Duration>,
    /// Longest wait between retries [env: PG_FLO_RETRY_MAX_WAIT] [default: 8s]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub retry_max_wait: Option<Duration>,
    /// Most changes in one NATS message [env: PG_FLO_MAX_BATCH_CHANGES] [default: 1000]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_positive, value_name = "N"))]
    #[serde(with = "serde_as::positive", skip_serializing_if = "Option::is_none")]
    pub max_batch_changes: Option<u64>,
    /// Most payload bytes in one NATS message [env: PG_FLO_MAX_BATCH_BYTES] [default: 1MiB]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_bytes, value_name = "BYTES"))]
    #[serde(with = "serde_as::bytes", skip_serializing_if = "Option::is_none")]
    pub max_batch_bytes: Option<u64>,
    /// Most NATS publishes awaiting their acknowledgement [env: PG_FLO_MAX_IN_FLIGHT]
    /// [default: 256]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_positive, value_name = "N"))]
    #[serde(with = "serde_as::positive", skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// Above this much source WAL retained by the slot, warn once per crossing and set
    /// `pg_flo_replicator_slot_retained_bytes_over_limit` to 1; replication goes on
    /// [env: PG_FLO_MAX_SLOT_RETAINED_BYTES] [default: unlimited]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_bytes, value_name = "BYTES"))]
    #[serde(with = "serde_as::bytes", skip_serializing_if = "Option::is_none")]
    pub max_slot_retained_bytes: Option<u64>,
    /// How often the confirmed position is reported to PostgreSQL [env: PG_FLO_STATUS_INTERVAL]
    /// [default: 1s]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub status_interval: Option<Duration>,
}

/// The worker, whatever its sink (accepted before or after the sink name).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct WorkerSettings {
    /// Rules YAML file (transform / filter / exclude) [env: PG_FLO_RULES_CONFIG]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub rules_config: Option<PathBuf>,
    /// Routing YAML file (table and column renames) [env: PG_FLO_ROUTING_CONFIG]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<PathBuf>,
    /// Most changes written to the sink per commit [env: PG_FLO_BATCH_SIZE] [default: 1000]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_positive, value_name = "N"))]
    #[serde(with = "serde_as::positive", skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
    /// Longest a change waits for more to batch with while more keeps arriving (with nothing
    /// more to read, the worker commits at once) [env: PG_FLO_FLUSH_INTERVAL] [default: 100ms]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<Duration>,
    /// Move a change the sink rejects permanently to the dead-letter subject
    /// pgflo.<group>.dlq (stream pgflo_<group>_dlq) and go on, instead of stopping
    /// [env: PG_FLO_DEAD_LETTER] [default: false]
    #[cfg_attr(feature = "clap", arg(long, global = true, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<bool>,
    /// Longest a message waits for a missing predecessor (re-published by the replicator after
    /// a NATS failure) before the worker stops with an error naming both positions
    /// [env: PG_FLO_GAP_TIMEOUT] [default: 5m]
    #[cfg_attr(feature = "clap", arg(long, global = true, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub gap_timeout: Option<Duration>,
}

/// `pg_flo worker file`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct FileSinkSettings {
    /// Directory for the output files [env: PG_FLO_FILE_OUTPUT_DIR] (required)
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub file_output_dir: Option<PathBuf>,
}

/// `pg_flo worker webhook`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct WebhookSettings {
    /// URL to POST the changes to (http:// or https://) [env: PG_FLO_WEBHOOK_URL] (required)
    #[cfg_attr(feature = "clap", arg(long, value_name = "URL"))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Extra request header, e.g. "Authorization: Bearer TOKEN" (repeatable); prefer the env
    /// variable for secrets, one header per line [env: PG_FLO_WEBHOOK_HEADER]
    // Checked by the runtime (clap would echo an invalid value, which may be a token); a
    // config file may hold a list or one text with a header per line.
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_secret, allow_hyphen_values = true,
        value_name = "NAME: VALUE"))]
    #[serde(deserialize_with = "serde_as::lines", skip_serializing)]
    pub webhook_header: Vec<SecretString>,
    /// Most changes per request: 1 POSTs one JSON object per change (as pg_flo), more POSTs
    /// a JSON array of up to N changes [env: PG_FLO_WEBHOOK_BATCH_SIZE] [default: 1]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_positive, value_name = "N"))]
    #[serde(with = "serde_as::positive", skip_serializing_if = "Option::is_none")]
    pub webhook_batch_size: Option<u64>,
    /// Longest one request may take, answer included [env: PG_FLO_WEBHOOK_TIMEOUT]
    /// [default: 10s]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub webhook_timeout: Option<Duration>,
    /// Attempts per request before the worker rolls back and redelivers
    /// [env: PG_FLO_WEBHOOK_MAX_ATTEMPTS] [default: 10]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_positive, value_name = "N"))]
    #[serde(with = "serde_as::positive", skip_serializing_if = "Option::is_none")]
    pub webhook_max_attempts: Option<u64>,
    /// First wait before retrying a request, doubled after each failure
    /// [env: PG_FLO_WEBHOOK_RETRY_INITIAL_WAIT] [default: 500ms]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub webhook_retry_initial_wait: Option<Duration>,
    /// Longest wait between retries of a request [env: PG_FLO_WEBHOOK_RETRY_MAX_WAIT]
    /// [default: 30s]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_duration, value_name = "DURATION"))]
    #[serde(with = "serde_as::duration", skip_serializing_if = "Option::is_none")]
    pub webhook_retry_max_wait: Option<Duration>,
}

/// `pg_flo worker postgres`: the target database, and the source database for
/// `--target-sync-schema`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, rename_all = "kebab-case")]
pub struct PostgresSinkSettings {
    /// Target PostgreSQL host [env: PG_FLO_TARGET_HOST] (required)
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// Target PostgreSQL port [env: PG_FLO_TARGET_PORT] [default: 5432]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_port))]
    #[serde(with = "serde_as::port", skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// Target database name [env: PG_FLO_TARGET_DBNAME] (required)
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub target_dbname: Option<String>,
    /// Target user [env: PG_FLO_TARGET_USER] (required)
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub target_user: Option<String>,
    /// Target password; prefer the env variable [env: PG_FLO_TARGET_PASSWORD] (required)
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_secret, allow_hyphen_values = true))]
    #[serde(deserialize_with = "serde_as::secret", skip_serializing)]
    pub target_password: Option<SecretString>,
    /// TLS towards the target, as libpq's sslmode [env: PG_FLO_TARGET_SSLMODE]
    /// [default: prefer]
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, ignore_case = true, value_name = "MODE")
    )]
    #[serde(with = "serde_as::sslmode", skip_serializing_if = "Option::is_none")]
    pub target_sslmode: Option<SslMode>,
    /// PEM CA file for --target-sslmode verify-ca / verify-full [env: PG_FLO_TARGET_SSLROOTCERT]
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub target_sslrootcert: Option<PathBuf>,
    /// Copy the source schema of the replicated tables to the target first (needs the
    /// --source-* settings) [env: PG_FLO_TARGET_SYNC_SCHEMA]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub target_sync_schema: Option<bool>,
    /// Disable foreign key checks while applying changes (already so by default: the sink
    /// applies with session_replication_role = replica; kept for pg_flo compatibility, and
    /// forces replica mode even with --target-fire-triggers)
    /// [env: PG_FLO_TARGET_DISABLE_FOREIGN_KEYS]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub target_disable_foreign_keys: Option<bool>,
    /// Let the target's triggers and foreign-key checks fire for replicated changes (default:
    /// off, the sink applies with session_replication_role = replica, like PostgreSQL's own
    /// apply worker; setting that needs a superuser or, on PostgreSQL 15+,
    /// GRANT SET ON PARAMETER session_replication_role) [env: PG_FLO_TARGET_FIRE_TRIGGERS]
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL"))]
    #[serde(with = "serde_as::flag", skip_serializing_if = "Option::is_none")]
    pub target_fire_triggers: Option<bool>,
    /// Source PostgreSQL host, for --target-sync-schema [env: PG_FLO_SOURCE_HOST]
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    /// Source PostgreSQL port [env: PG_FLO_SOURCE_PORT] [default: 5432]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_port))]
    #[serde(with = "serde_as::port", skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// Source database name, for --target-sync-schema [env: PG_FLO_SOURCE_DBNAME]
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub source_dbname: Option<String>,
    /// Source user, for --target-sync-schema [env: PG_FLO_SOURCE_USER]
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "serde_as::text", skip_serializing_if = "Option::is_none")]
    pub source_user: Option<String>,
    /// Source password, for --target-sync-schema [env: PG_FLO_SOURCE_PASSWORD]
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_secret, allow_hyphen_values = true))]
    #[serde(deserialize_with = "serde_as::secret", skip_serializing)]
    pub source_password: Option<SecretString>,
    /// TLS towards the source, as libpq's sslmode [env: PG_FLO_SOURCE_SSLMODE]
    /// [default: prefer]
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, ignore_case = true, value_name = "MODE")
    )]
    #[serde(with = "serde_as::sslmode", skip_serializing_if = "Option::is_none")]
    pub source_sslmode: Option<SslMode>,
    /// PEM CA file for --source-sslmode verify-ca / verify-full [env: PG_FLO_SOURCE_SSLROOTCERT]
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    #[serde(with = "serde_as::path", skip_serializing_if = "Option::is_none")]
    pub source_sslrootcert: Option<PathBuf>,
}

impl PostgresSinkSettings {
    /// The `target-*` settings.
    pub fn target(&self) -> ConnectionSettings {
        ConnectionSettings {
            host: self.target_host.clone(),
            port: self.target_port,
            dbname: self.target_dbname.clone(),
            user: self.target_user.clone(),
            password: self.target_password.clone(),
            sslmode: self.target_sslmode,
            sslrootcert: self.target_sslrootcert.clone(),
        }
    }

    /// The `source-*` settings (the database whose schema `target-sync-schema` copies).
    pub fn schema_source(&self) -> ConnectionSettings {
        ConnectionSettings {
            host: self.source_host.clone(),
            port: self.source_port,
            dbname: self.source_dbname.clone(),
            user: self.source_user.clone(),
            password: self.source_password.clone(),
            sslmode: self.source_sslmode,
            sslrootcert: self.source_sslrootcert.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(yaml: &str) -> serde_yaml::Mapping {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn reads_scalars_as_text_and_reports_every_bad_value() {
        let (s, invalid) = Settings::from_entries(&entries(
            "host: [a, b]\nport: '6000'\nmax-in-flight: 0\ntables: a, b\nsslmode: Verify-Full\n\
             gap-timeout: soon\nbogus: 1\nwebhook-header: \"A: 1\\nB: 2\\n\"\n",
        ));
        let keys: Vec<&str> = invalid.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["host", "max-in-flight", "gap-timeout"],
            "{invalid:?}"
        );
        assert_eq!(
            invalid[0].message,
            "expected a single value, not a list or map"
        );
        assert_eq!(invalid[1].message, "must be greater than 0");
        assert_eq!(s.source.port, Some(6000));
        assert_eq!(s.replicator.tables, ["a", "b"]);
        assert_eq!(s.source.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(s.webhook.webhook_header.len(), 2);
        assert_eq!(s.extra.keys().collect::<Vec<_>>(), ["bogus"]);
    }

    #[test]
    fn renders_only_what_is_set_and_never_secrets() {
        let s = Settings {
            group: GroupSettings {
                group: Some("g".into()),
                nats_connect_timeout: Some(Duration::from_secs(300)),
                metrics_addr: Some("0.0.0.0:9100".parse().unwrap()),
                ..GroupSettings::default()
            },
            source: ConnectionSettings {
                port: Some(5432),
                password: Some(SecretString::from("hunter2")),
                sslmode: Some(SslMode::VerifyCa),
                ..ConnectionSettings::default()
            },
            webhook: WebhookSettings {
                webhook_header: vec![SecretString::from("A: token")],
                ..WebhookSettings::default()
            },
            ..Settings::default()
        };
        let yaml = serde_yaml::to_string(&s).unwrap();
        assert_eq!(
            yaml,
            "group: g\nmetrics-addr: 0.0.0.0:9100\nnats-connect-timeout: 5m\nport: 5432\n\
             sslmode: verify-ca\n"
        );
        let (back, invalid) = Settings::from_entries(&entries(&yaml));
        assert!(invalid.is_empty() && back.extra.is_empty());
        assert_eq!(
            back.group.nats_connect_timeout,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn known_keys() {
        assert!(Settings::is_known("target-fire-triggers"));
        assert!(Settings::is_known("log-format"));
        assert!(!Settings::is_known("nats_url"));
        assert!(!Settings::is_known("extra"));
        assert_eq!(env_var("nats-url"), "PG_FLO_NATS_URL");
    }
}
