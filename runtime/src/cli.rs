//! Command line of the `pg_flo` binary: pg_flo's commands, and its flags from the settings of
//! `pg_flo_config::runtime` (each setting's field there is its flag, its config-file key and
//! its help; `PG_FLO_<KEY>` is its variable).
//!
//! Every flag is an `Option` (or an empty `Vec`) without a clap default, so that
//! [`crate::config::load`] can tell "not given on the command line" apart from a value and
//! apply the precedence flag > `PG_FLO_*` env > YAML config file > default itself. The env
//! lookup is done there (not through clap's `env` attribute) so it can be injected in tests
//! and every invalid value reported at once without echoing secrets; each flag's help names
//! its variable and its default (checked by the tests of [`crate::config`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pg_flo_config::runtime::{
    ConnectionSettings, FileSinkSettings, GroupSettings, LogSettings, PostgresSinkSettings,
    ReplicatorSettings, WebhookSettings, WorkerSettings,
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

    #[command(flatten)]
    pub log: LogSettings,

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
    #[command(flatten)]
    pub source: ConnectionSettings,
    #[command(flatten)]
    pub group: GroupSettings,
    #[command(flatten)]
    pub replicator: ReplicatorSettings,
}

/// `pg_flo worker [FLAGS] <sink> [SINK FLAGS]`; the worker's flags are accepted before or
/// after the sink name.
#[derive(Debug, Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub group: GroupSettings,
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[command(subcommand)]
    pub sink: SinkCommand,
}

#[derive(Debug, Subcommand)]
pub enum SinkCommand {
    /// Write changes as JSON lines to stdout
    Stdout,
    /// Write changes as JSON lines to files in a directory
    File(FileSinkSettings),
    /// Apply changes to a PostgreSQL database
    Postgres(Box<PostgresSinkSettings>),
    /// POST changes as JSON to a URL
    Webhook(WebhookSettings),
}

/// A parsed command line: the typed [`Cli`], plus which settings were given as flags.
#[derive(Debug)]
pub struct CommandLine {
    pub cli: Cli,
    matches: ArgMatches,
}

/// One setting the command reads: its key and, when given as flags, their text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub flag: Option<Vec<String>>,
}

impl CommandLine {
    /// Parses the process's arguments.
    pub fn try_parse() -> Result<CommandLine, clap::Error> {
        CommandLine::try_parse_from(std::env::args_os())
    }

    /// Parses `argv` (program name first).
    pub fn try_parse_from<I, T>(argv: I) -> Result<CommandLine, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let cli = Cli::from_arg_matches(&matches)?;
        Ok(CommandLine { cli, matches })
    }

    /// Every setting the command reads (the flags of the command and of its parents, but
    /// `--config`), in the order they are declared, with the text of the flags given.
    pub fn settings(&self) -> Vec<Setting> {
        let root = Cli::command();
        let mut command = &root;
        let mut matches = &self.matches;
        let mut out: Vec<Setting> = Vec::new();
        loop {
            for arg in command.get_arguments() {
                let Some(key) = arg.get_long() else { continue };
                if key == "config" || out.iter().any(|s| s.key == key) {
                    continue;
                }
                let id = arg.get_id().as_str();
                let given = matches.value_source(id) == Some(ValueSource::CommandLine);
                let flag = matches.try_get_raw(id).ok().flatten().filter(|_| given);
                out.push(Setting {
                    key: key.to_owned(),
                    flag: flag.map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect()),
                });
            }
            let Some((name, sub)) = matches.subcommand() else {
                return out;
            };
            let Some(next) = command.find_subcommand(name) else {
                return out;
            };
            command = next;
            matches = sub;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pg_flo_config::SslMode;

    use super::*;

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
            assert_eq!(w.group.group.as_deref(), Some("g"), "{argv:?}");
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
        assert_eq!(r.replicator.copy, Some(true));
        assert_eq!(r.replicator.track_ddl, Some(false));
        assert_eq!(r.replicator.stream, None);
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
        assert_eq!(r.source.port, Some(6543));
        assert_eq!(r.replicator.tables, ["a", "b", "c"]);
        assert_eq!(
            r.replicator.retry_initial_wait,
            Some(Duration::from_millis(500))
        );
        assert_eq!(r.replicator.max_copy_workers_per_table, Some(-1));
        assert_eq!(r.replicator.max_batch_bytes, Some(2 * 1024 * 1024));
        assert_eq!(r.source.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(r.group.metrics_addr, Some("0.0.0.0:9100".parse().unwrap()));
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
