//! Command line of the `pg_flo` binary: pg_flo's commands and flags (clap derive).
//!
//! Every field is an `Option` (or an empty `Vec`) without a clap default, so that
//! [`crate::config::load`] can tell "not given on the command line" apart from a value and
//! apply the precedence flag > `PG_FLO_*` env > YAML config file > default itself. The env
//! lookup is done there (not through clap's `env` attribute) so it can be injected in tests;
//! each flag's help still names its variable and its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::config::{
    parse_bool, parse_bytes, parse_duration, parse_port, parse_positive, parse_secret,
    parse_socket_addr, LogFormat, SslMode,
};

/// `pg_flo <version> (commit: <commit>, built: <date>)`, as pg_flo's `version` command prints.
///
/// Commit and date come from the `PG_FLO_COMMIT` / `PG_FLO_BUILD_DATE` environment variables at
/// compile time (`none` / `unknown` when unset, as pg_flo's defaults).
pub fn version_line() -> String {
    format!(
        "pg_flo {} (commit: {}, built: {})",
        env!("CARGO_PKG_VERSION"),
        option_env!("PG_FLO_COMMIT").unwrap_or("none"),
        option_env!("PG_FLO_BUILD_DATE").unwrap_or("unknown"),
    )
}

/// PostgreSQL logical replication to NATS JetStream and on to sinks.
#[derive(Debug, Parser)]
#[command(name = "pg_flo", version, propagate_version = true)]
pub struct Cli {
    /// YAML config file with pg_flo's flat kebab-case keys [env: PG_FLO_CONFIG]
    /// [default: $HOME/.pg_flo.yaml when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr [env: PG_FLO_LOG_FORMAT] [default: text]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log level or tracing filter directive, e.g. info, debug, pg_flo=trace
    /// [env: PG_FLO_LOG_LEVEL] [default: info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture changes from PostgreSQL and publish them to NATS
    Replicator(Box<ReplicatorArgs>),
    /// Consume from NATS, apply rules and routing, write to the sink
    Worker(Box<WorkerArgs>),
    /// Print the version
    Version,
}

/// Flags of `pg_flo replicator`.
#[derive(Debug, Default, Args)]
pub struct ReplicatorArgs {
    /// PostgreSQL host [env: PG_FLO_HOST] (required)
    #[arg(long)]
    pub host: Option<String>,
    /// PostgreSQL port [env: PG_FLO_PORT] [default: 5432]
    #[arg(long, value_parser = parse_port)]
    pub port: Option<u16>,
    /// PostgreSQL database name [env: PG_FLO_DBNAME] (required)
    #[arg(long)]
    pub dbname: Option<String>,
    /// PostgreSQL user (needs the REPLICATION attribute) [env: PG_FLO_USER] (required)
    #[arg(long)]
    pub user: Option<String>,
    /// PostgreSQL password; prefer the env variable [env: PG_FLO_PASSWORD] (required)
    #[arg(long, value_parser = parse_secret)]
    pub password: Option<SecretString>,
    /// TLS towards PostgreSQL, as libpq's sslmode [env: PG_FLO_SSLMODE] [default: prefer]
    #[arg(long, value_enum, value_name = "MODE")]
    pub sslmode: Option<SslMode>,
    /// PEM CA file for --sslmode verify-ca / verify-full [env: PG_FLO_SSLROOTCERT]
    #[arg(long, value_name = "FILE")]
    pub sslrootcert: Option<PathBuf>,
    /// Replication group name: part of the slot, publication, stream and subject names
    /// [env: PG_FLO_GROUP] (required)
    #[arg(long)]
    pub group: Option<String>,
    /// PostgreSQL schema to replicate [env: PG_FLO_SCHEMA] [default: public]
    #[arg(long)]
    pub schema: Option<String>,
    /// Tables to replicate (comma- or space-separated, repeatable); empty means every table
    /// of --schema [env: PG_FLO_TABLES]
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// NATS server URL(s), comma-separated [env: PG_FLO_NATS_URL] (required)
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// PEM CA file to verify the NATS server's certificate [env: PG_FLO_NATS_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// NATS credentials file (JWT + NKey seed) [env: PG_FLO_NATS_CREDS_FILE]
    #[arg(long, value_name = "FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// How long to keep retrying the first NATS connection [env: PG_FLO_NATS_CONNECT_TIMEOUT]
    /// [default: 30s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub nats_connect_timeout: Option<Duration>,
    /// JetStream stream size limit in bytes (e.g. 10GiB); the replicator waits while it is
    /// full [env: PG_FLO_NATS_STREAM_MAX_BYTES] [default: unlimited]
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub nats_stream_max_bytes: Option<u64>,
    /// Stream changes only (the default mode) [env: PG_FLO_STREAM]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub stream: Option<bool>,
    /// Copy the existing rows, then stream changes [env: PG_FLO_COPY_AND_STREAM]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub copy_and_stream: Option<bool>,
    /// Copy the existing rows only [env: PG_FLO_COPY]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub copy: Option<bool>,
    /// Parallel copy workers per table; a value <= 0 means 4
    /// [env: PG_FLO_MAX_COPY_WORKERS_PER_TABLE] [default: 4]
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub max_copy_workers_per_table: Option<i64>,
    /// Replicate DDL changes [env: PG_FLO_TRACK_DDL]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub track_ddl: Option<bool>,
    /// Stream mode: when the group's slot is gone (dropped, lost in a failover) after the
    /// group has published, create a new one and go on, accepting that the changes made while
    /// it was missing are not replicated (without it the replicator stops; re-copy with
    /// --copy-and-stream instead) [env: PG_FLO_ACCEPT_LOST_SLOT]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub accept_lost_slot: Option<bool>,
    /// Remove the group's replication slot, publication, DDL capture objects and NATS streams,
    /// then exit (the group's unconsumed changes are lost) [env: PG_FLO_CLEANUP]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub cleanup: Option<bool>,
    /// Attempts for retried operations; 0 selects the defaults (3, 1s, 8s)
    /// [env: PG_FLO_RETRY_MAX_ATTEMPTS] [default: 3]
    #[arg(long, value_name = "N")]
    pub retry_max_attempts: Option<u32>,
    /// First wait between retries [env: PG_FLO_RETRY_INITIAL_WAIT] [default: 1s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retry_initial_wait: Option<Duration>,
    /// Longest wait between retries [env: PG_FLO_RETRY_MAX_WAIT] [default: 8s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retry_max_wait: Option<Duration>,
    /// Most changes in one NATS message [env: PG_FLO_MAX_BATCH_CHANGES] [default: 1000]
    #[arg(long, value_parser = parse_positive, value_name = "N")]
    pub max_batch_changes: Option<u64>,
    /// Most payload bytes in one NATS message [env: PG_FLO_MAX_BATCH_BYTES] [default: 1MiB]
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub max_batch_bytes: Option<u64>,
    /// Most NATS publishes awaiting their acknowledgement [env: PG_FLO_MAX_IN_FLIGHT]
    /// [default: 256]
    #[arg(long, value_parser = parse_positive, value_name = "N")]
    pub max_in_flight: Option<u64>,
    /// How often the confirmed position is reported to PostgreSQL [env: PG_FLO_STATUS_INTERVAL]
    /// [default: 1s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub status_interval: Option<Duration>,
    /// Address of the admin server (/metrics, /healthz, /readyz), e.g. 0.0.0.0:9100
    /// [env: PG_FLO_METRICS_ADDR] [default: no admin server]
    #[arg(long, value_parser = parse_socket_addr, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Flags of `pg_flo worker`, shared by every sink (accepted before or after the sink name).
#[derive(Debug, Default, Args)]
pub struct WorkerCommonArgs {
    /// Replication group name [env: PG_FLO_GROUP] (required)
    #[arg(long, global = true)]
    pub group: Option<String>,
    /// NATS server URL(s), comma-separated [env: PG_FLO_NATS_URL] (required)
    #[arg(long, global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    /// PEM CA file to verify the NATS server's certificate [env: PG_FLO_NATS_CA_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// NATS credentials file (JWT + NKey seed) [env: PG_FLO_NATS_CREDS_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// How long to keep retrying the first NATS connection [env: PG_FLO_NATS_CONNECT_TIMEOUT]
    /// [default: 30s]
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub nats_connect_timeout: Option<Duration>,
    /// Rules YAML file (transform / filter / exclude) [env: PG_FLO_RULES_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub rules_config: Option<PathBuf>,
    /// Routing YAML file (table and column renames) [env: PG_FLO_ROUTING_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub routing_config: Option<PathBuf>,
    /// Most changes written to the sink per commit [env: PG_FLO_BATCH_SIZE] [default: 1000]
    #[arg(long, global = true, value_parser = parse_positive, value_name = "N")]
    pub batch_size: Option<u64>,
    /// Longest a change waits before the worker writes what it has
    /// [env: PG_FLO_FLUSH_INTERVAL] [default: 100ms]
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub flush_interval: Option<Duration>,
    /// Move a change the sink rejects permanently to the dead-letter subject
    /// pgflo.<group>.dlq (stream pgflo_<group>_dlq) and go on, instead of stopping
    /// [env: PG_FLO_DEAD_LETTER] [default: false]
    #[arg(long, global = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL")]
    pub dead_letter: Option<bool>,
    /// Longest a message waits for a missing predecessor (re-published by the replicator after
    /// a NATS failure) before the worker stops with an error naming both positions
    /// [env: PG_FLO_GAP_TIMEOUT] [default: 5m]
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub gap_timeout: Option<Duration>,
    /// Address of the admin server (/metrics, /healthz, /readyz), e.g. 0.0.0.0:9100
    /// [env: PG_FLO_METRICS_ADDR] [default: no admin server]
    #[arg(long, global = true, value_parser = parse_socket_addr, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// `pg_flo worker [FLAGS] <sink> [SINK FLAGS]`.
#[derive(Debug, Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: WorkerCommonArgs,
    #[command(subcommand)]
    pub sink: SinkCommand,
}

#[derive(Debug, Subcommand)]
pub enum SinkCommand {
    /// Write changes as JSON lines to stdout
    Stdout,
    /// Write changes as JSON lines to files in a directory
    File(FileArgs),
    /// Apply changes to a PostgreSQL database
    Postgres(Box<PostgresArgs>),
    /// POST changes as JSON to a URL
    Webhook(WebhookArgs),
}

#[derive(Debug, Default, Args)]
pub struct FileArgs {
    /// Directory for the output files [env: PG_FLO_FILE_OUTPUT_DIR] (required)
    #[arg(long, value_name = "DIR")]
    pub file_output_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Args)]
pub struct WebhookArgs {
    /// URL to POST the changes to (http:// or https://) [env: PG_FLO_WEBHOOK_URL] (required)
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// Extra request header, e.g. "Authorization: Bearer TOKEN" (repeatable); prefer the env
    /// variable for secrets, one header per line [env: PG_FLO_WEBHOOK_HEADER]
    /// Checked by [`crate::config`] (clap would echo an invalid value, which may be a token).
    #[arg(long, value_parser = parse_secret, value_name = "NAME: VALUE")]
    pub webhook_header: Vec<SecretString>,
    /// Most changes per request: 1 POSTs one JSON object per change (as pg_flo), more POSTs
    /// a JSON array of up to N changes [env: PG_FLO_WEBHOOK_BATCH_SIZE] [default: 1]
    #[arg(long, value_parser = parse_positive, value_name = "N")]
    pub webhook_batch_size: Option<u64>,
    /// Longest one request may take, answer included [env: PG_FLO_WEBHOOK_TIMEOUT]
    /// [default: 10s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_timeout: Option<Duration>,
    /// Attempts per request before the worker rolls back and redelivers
    /// [env: PG_FLO_WEBHOOK_MAX_ATTEMPTS] [default: 10]
    #[arg(long, value_parser = parse_positive, value_name = "N")]
    pub webhook_max_attempts: Option<u64>,
    /// First wait before retrying a request, doubled after each failure
    /// [env: PG_FLO_WEBHOOK_RETRY_INITIAL_WAIT] [default: 500ms]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_retry_initial_wait: Option<Duration>,
    /// Longest wait between retries of a request [env: PG_FLO_WEBHOOK_RETRY_MAX_WAIT]
    /// [default: 30s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_retry_max_wait: Option<Duration>,
}

#[derive(Debug, Default, Args)]
pub struct PostgresArgs {
    /// Target PostgreSQL host [env: PG_FLO_TARGET_HOST] (required)
    #[arg(long)]
    pub target_host: Option<String>,
    /// Target PostgreSQL port [env: PG_FLO_TARGET_PORT] [default: 5432]
    #[arg(long, value_parser = parse_port)]
    pub target_port: Option<u16>,
    /// Target database name [env: PG_FLO_TARGET_DBNAME] (required)
    #[arg(long)]
    pub target_dbname: Option<String>,
    /// Target user [env: PG_FLO_TARGET_USER] (required)
    #[arg(long)]
    pub target_user: Option<String>,
    /// Target password; prefer the env variable [env: PG_FLO_TARGET_PASSWORD] (required)
    #[arg(long, value_parser = parse_secret)]
    pub target_password: Option<SecretString>,
    /// TLS towards the target, as libpq's sslmode [env: PG_FLO_TARGET_SSLMODE]
    /// [default: prefer]
    #[arg(long, value_enum, value_name = "MODE")]
    pub target_sslmode: Option<SslMode>,
    /// PEM CA file for --target-sslmode verify-ca / verify-full [env: PG_FLO_TARGET_SSLROOTCERT]
    #[arg(long, value_name = "FILE")]
    pub target_sslrootcert: Option<PathBuf>,
    /// Copy the source schema of the replicated tables to the target first (needs the
    /// --source-* settings) [env: PG_FLO_TARGET_SYNC_SCHEMA]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub target_sync_schema: Option<bool>,
    /// Disable foreign key checks while applying changes (already so by default: the sink
    /// applies with session_replication_role = replica; kept for pg_flo compatibility, and
    /// forces replica mode even with --target-fire-triggers)
    /// [env: PG_FLO_TARGET_DISABLE_FOREIGN_KEYS]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub target_disable_foreign_keys: Option<bool>,
    /// Let the target's triggers and foreign-key checks fire for replicated changes (default:
    /// off, the sink applies with session_replication_role = replica, like PostgreSQL's own
    /// apply worker; setting that needs a superuser or, on PostgreSQL 15+,
    /// GRANT SET ON PARAMETER session_replication_role) [env: PG_FLO_TARGET_FIRE_TRIGGERS]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool, value_name = "BOOL")]
    pub target_fire_triggers: Option<bool>,
    /// Source PostgreSQL host, for --target-sync-schema [env: PG_FLO_SOURCE_HOST]
    #[arg(long)]
    pub source_host: Option<String>,
    /// Source PostgreSQL port [env: PG_FLO_SOURCE_PORT] [default: 5432]
    #[arg(long, value_parser = parse_port)]
    pub source_port: Option<u16>,
    /// Source database name, for --target-sync-schema [env: PG_FLO_SOURCE_DBNAME]
    #[arg(long)]
    pub source_dbname: Option<String>,
    /// Source user, for --target-sync-schema [env: PG_FLO_SOURCE_USER]
    #[arg(long)]
    pub source_user: Option<String>,
    /// Source password, for --target-sync-schema [env: PG_FLO_SOURCE_PASSWORD]
    #[arg(long, value_parser = parse_secret)]
    pub source_password: Option<SecretString>,
    /// TLS towards the source, as libpq's sslmode [env: PG_FLO_SOURCE_SSLMODE]
    /// [default: prefer]
    #[arg(long, value_enum, value_name = "MODE")]
    pub source_sslmode: Option<SslMode>,
    /// PEM CA file for --source-sslmode verify-ca / verify-full [env: PG_FLO_SOURCE_SSLROOTCERT]
    #[arg(long, value_name = "FILE")]
    pub source_sslrootcert: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn worker_flags_before_or_after_the_sink() {
        for argv in [
            vec!["pg_flo", "worker", "--group", "g", "stdout"],
            vec!["pg_flo", "worker", "stdout", "--group", "g"],
        ] {
            let cli = Cli::try_parse_from(&argv).unwrap();
            let Command::Worker(w) = cli.command else {
                panic!("not a worker: {argv:?}")
            };
            assert_eq!(w.common.group.as_deref(), Some("g"), "{argv:?}");
            assert!(matches!(w.sink, SinkCommand::Stdout));
        }
    }

    #[test]
    fn bool_flags_take_an_optional_value() {
        let cli =
            Cli::try_parse_from(["pg_flo", "replicator", "--copy", "--track-ddl=false"]).unwrap();
        let Command::Replicator(r) = cli.command else {
            panic!("not a replicator")
        };
        assert_eq!(r.copy, Some(true));
        assert_eq!(r.track_ddl, Some(false));
        assert_eq!(r.stream, None);
    }

    #[test]
    fn typed_values_are_parsed() {
        let cli = Cli::try_parse_from([
            "pg_flo",
            "replicator",
            "--port=6543",
            "--tables",
            "a,b",
            "--tables=c",
            "--retry-initial-wait",
            "500ms",
            "--max-copy-workers-per-table",
            "-1",
            "--max-batch-bytes",
            "2MiB",
            "--sslmode",
            "verify-full",
            "--metrics-addr",
            ":9100",
        ])
        .unwrap();
        let Command::Replicator(r) = cli.command else {
            panic!("not a replicator")
        };
        assert_eq!(r.port, Some(6543));
        assert_eq!(r.tables, ["a", "b", "c"]);
        assert_eq!(r.retry_initial_wait, Some(Duration::from_millis(500)));
        assert_eq!(r.max_copy_workers_per_table, Some(-1));
        assert_eq!(r.max_batch_bytes, Some(2 * 1024 * 1024));
        assert_eq!(r.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(r.metrics_addr, Some("0.0.0.0:9100".parse().unwrap()));
    }

    #[test]
    fn bad_port_is_rejected_by_the_parser() {
        let err = Cli::try_parse_from(["pg_flo", "replicator", "--port", "70000"]).unwrap_err();
        assert!(err.to_string().contains("between 1 and 65535"), "{err}");
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let cli = Cli::try_parse_from(["pg_flo", "replicator", "--password", "hunter2"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn worker_without_sink_is_an_error() {
        assert!(Cli::try_parse_from(["pg_flo", "worker"]).is_err());
    }

    #[test]
    fn help_names_env_variables() {
        let help = Cli::command()
            .find_subcommand_mut("replicator")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("PG_FLO_HOST"), "{help}");
        assert!(help.contains("PG_FLO_NATS_URL"), "{help}");
    }
}
