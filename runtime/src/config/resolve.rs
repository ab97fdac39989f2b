//! The merge of the three layers of settings, and the resolved configuration built from it.
//!
//! For each setting the command reads ([`CommandLine::settings`], in declaration order) the
//! first of these is taken: the flag, the `PG_FLO_<KEY>` variable (blank counts as unset), the
//! config file's key (`null` or empty counts as unset). The merged entries are parsed with the
//! shared model ([`Settings::from_entries`]), which reports every unusable value; each problem
//! names where its value came from (`--key`, `env PG_FLO_KEY` or `config key key in FILE`), and
//! a value overridden by a higher layer is never looked at. Defaults, required settings and
//! checks across settings follow; every problem is collected before failing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use pg_flo_config::runtime::{
    env_var, ConnectionSettings, GroupSettings, InvalidSetting, PostgresSinkSettings, Settings,
    WebhookSettings, DEFAULT_BATCH_SIZE, DEFAULT_FLUSH_INTERVAL, DEFAULT_GAP_TIMEOUT,
    DEFAULT_LOG_LEVEL, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_CHANGES,
    DEFAULT_MAX_COPY_WORKERS_PER_TABLE, DEFAULT_MAX_IN_FLIGHT, DEFAULT_NATS_CONNECT_TIMEOUT,
    DEFAULT_PORT, DEFAULT_SCHEMA, DEFAULT_STATUS_INTERVAL, DEFAULT_WEBHOOK_BATCH_SIZE,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS, DEFAULT_WEBHOOK_RETRY_INITIAL_WAIT,
    DEFAULT_WEBHOOK_RETRY_MAX_WAIT, DEFAULT_WEBHOOK_TIMEOUT,
};
use secrecy::{ExposeSecret, SecretString};
use serde_yaml::Value;

use super::{
    check_webhook_url, parse_webhook_header, validate_group, ConfigError, ConfigFile, Loaded,
    LogConfig, NatsConfig, PgConnConfig, PostgresSinkConfig, Process, ReplicationMode,
    ReplicatorConfig, RetryConfig, SinkConfig, WebhookSinkConfig, WorkerConfig,
};
use crate::cli::{Command, CommandLine, SinkCommand};

/// JetStream's most replicas of a stream.
const MAX_STREAM_REPLICAS: usize = 5;

/// `--key (env PG_FLO_KEY, config key key)`: every way to set `key`.
pub(super) fn how_to_set(key: &str) -> String {
    format!("--{key} (env {}, config key {key})", env_var(key))
}

/// Merges flags, env (`env`) and `file` with precedence flag > env > file > default and
/// validates the result, reporting every problem at once. No IO.
pub fn resolve(
    cli: &CommandLine,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
) -> Result<Loaded, ConfigError> {
    let (settings, mut r) = Resolver::merge(cli, env, file);
    let log = LogConfig {
        format: settings.log.log_format.unwrap_or_default(),
        level: settings
            .log
            .log_level
            .clone()
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
    };
    let process = match &cli.cli.command {
        Command::Version => Process::Version,
        Command::Replicator(_) => Process::Replicator(Box::new(r.replicator(&settings))),
        Command::Worker(args) => Process::Worker(Box::new(r.worker(&settings, &args.sink))),
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

/// Problems found so far, and where each merged setting came from.
struct Resolver {
    /// Key -> `--key`, `env PG_FLO_KEY` or `config key key in FILE`.
    sources: HashMap<String, String>,
    problems: Vec<String>,
    /// Keys whose value was present but invalid (not also reported as missing).
    invalid: HashSet<String>,
}

impl Resolver {
    /// Takes each setting of the command from its highest layer and parses them all.
    fn merge(
        cli: &CommandLine,
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<&ConfigFile>,
    ) -> (Settings, Resolver) {
        let mut entries = serde_yaml::Mapping::new();
        let mut sources = HashMap::new();
        for setting in cli.settings() {
            let key = setting.key;
            let var = env_var(&key);
            let flag = setting
                .flag
                .filter(|values| values.iter().any(|v| !v.trim().is_empty()));
            let (value, source) = if let Some(mut values) = flag {
                let value = if values.len() == 1 {
                    Value::String(values.remove(0))
                } else {
                    Value::Sequence(values.into_iter().map(Value::String).collect())
                };
                (value, format!("--{key}"))
            } else if let Some(raw) = env(&var).filter(|v| !v.trim().is_empty()) {
                (Value::String(raw), format!("env {var}"))
            } else if let Some((file, value)) = file.and_then(|f| Some((f, f.get(&key)?))) {
                let source = format!("config key {key} in {}", file.path.display());
                (value.clone(), source)
            } else {
                continue;
            };
            entries.insert(Value::String(key.clone()), value);
            sources.insert(key, source);
        }
        let (settings, invalid) = Settings::from_entries(&entries);
        let mut r = Resolver {
            sources,
            problems: Vec::new(),
            invalid: HashSet::new(),
        };
        for InvalidSetting { key, message } in invalid {
            r.invalid_value(&key, message);
        }
        // A flag the model does not know: the flags and the model disagree (a programming
        // error, caught by every test that resolves a command).
        for key in settings.extra.keys() {
            r.problems.push(format!(
                "--{key} is not a setting of pg_flo_config::runtime"
            ));
        }
        (settings, r)
    }

    /// An unusable value of `key`: the problem names where the value came from.
    fn invalid_value(&mut self, key: &str, message: impl fmt::Display) {
        let source = self
            .sources
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("--{key}"));
        self.problems.push(format!("invalid {source}: {message}"));
        self.invalid.insert(key.to_owned());
    }

    /// Reports `key` as missing unless it was present but invalid.
    fn require<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.invalid.contains(key) {
            self.problems
                .push(format!("missing required setting: {}", how_to_set(key)));
        }
        value
    }

    fn required_text(&mut self, key: &str, value: &Option<String>) -> String {
        self.require(key, value.clone()).unwrap_or_default()
    }

    /// A problem across settings, or with a setting that may be unset: it names every way to
    /// set `key`.
    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems
            .push(format!("{message} (set with {})", how_to_set(key)));
    }

    /// A duration that must not be 0 (the defaults are not).
    fn nonzero(&mut self, key: &str, value: Duration) -> Duration {
        if value.is_zero() {
            self.invalid_value(key, format!("{key} must be greater than 0"));
        }
        value
    }

    /// Reports `initial` > `max` of a retry pair.
    fn wait_order(&mut self, prefix: &str, initial: Duration, max: Duration) {
        if initial > max {
            self.problem(
                &format!("{prefix}retry-max-wait"),
                format!(
                    "{prefix}retry-initial-wait ({}) is longer than {prefix}retry-max-wait ({})",
                    humantime::format_duration(initial),
                    humantime::format_duration(max)
                ),
            );
        }
    }

    fn group(&mut self, group: &Option<String>) -> String {
        let group = self.required_text("group", group);
        if !group.is_empty() {
            if let Err(e) = validate_group(&group) {
                self.invalid_value("group", e);
            }
        }
        group
    }

    fn nats(&mut self, g: &GroupSettings) -> NatsConfig {
        let url = self.required_text("nats-url", &g.nats_url);
        let user = match (&g.nats_user, &g.nats_password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, None) => None,
            (Some(_), None) => {
                self.problem("nats-password", "--nats-user needs --nats-password");
                None
            }
            (None, Some(_)) => {
                self.problem("nats-user", "--nats-password needs --nats-user");
                None
            }
        };
        // One way to authenticate: a server takes only one.
        let url_auth = crate::nats::servers(&url).is_ok_and(|(_, auth)| auth.is_some());
        let ways: Vec<&str> = [
            (url_auth, "credentials in --nats-url"),
            (
                g.nats_user.is_some() || g.nats_password.is_some(),
                "--nats-user/--nats-password",
            ),
            (g.nats_token.is_some(), "--nats-token"),
            (g.nats_creds_file.is_some(), "--nats-creds-file"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if ways.len() > 1 {
            self.problems.push(format!(
                "NATS credentials are given more than once ({}): use one of them",
                ways.join(", ")
            ));
        }
        let client_cert = match (&g.nats_tls_cert_file, &g.nats_tls_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    "nats-tls-key-file",
                    "--nats-tls-cert-file needs its key file",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "nats-tls-cert-file",
                    "--nats-tls-key-file needs its certificate file",
                );
                None
            }
        };
        let stream_replicas = g.nats_stream_replicas.map(to_usize);
        if stream_replicas.is_some_and(|n| n > MAX_STREAM_REPLICAS) {
            self.problem(
                "nats-stream-replicas",
                format!("nats-stream-replicas must be between 1 and {MAX_STREAM_REPLICAS} (JetStream's limit)"),
            );
        }
        NatsConfig {
            url,
            ca_file: g.nats_ca_file.clone(),
            creds_file: g.nats_creds_file.clone(),
            user,
            token: g.nats_token.clone(),
            client_cert,
            stream_replicas,
            connect_timeout: g
                .nats_connect_timeout
                .unwrap_or(DEFAULT_NATS_CONNECT_TIMEOUT),
        }
    }

    /// Checks that a verifying sslmode has its CA file (`prefix`: "", "target-", "source-").
    fn check_tls(&mut self, prefix: &str, c: &ConnectionSettings) {
        let mode = c.sslmode.unwrap_or_default();
        if mode.verifies_certificate() && c.sslrootcert.is_none() {
            self.problem(
                &format!("{prefix}sslrootcert"),
                format!(
                    "--{prefix}sslmode {mode} needs the CA certificate file to verify the server"
                ),
            );
        }
    }

    /// An endpoint with host, dbname, user and password required.
    fn connection(&mut self, prefix: &str, c: ConnectionSettings) -> PgConnConfig {
        let key = |name: &str| format!("{prefix}{name}");
        let host = self.require(&key("host"), c.host).unwrap_or_default();
        let dbname = self.require(&key("dbname"), c.dbname).unwrap_or_default();
        let user = self.require(&key("user"), c.user).unwrap_or_default();
        let password = self
            .require(&key("password"), c.password)
            .unwrap_or_else(|| SecretString::from(""));
        PgConnConfig {
            host,
            port: c.port.unwrap_or(DEFAULT_PORT),
            dbname,
            user,
            password,
            sslmode: c.sslmode.unwrap_or_default(),
            sslrootcert: c.sslrootcert,
        }
    }

    fn replicator(&mut self, s: &Settings) -> ReplicatorConfig {
        self.check_tls("", &s.source);
        let source = self.connection("", s.source.clone());
        let group = self.group(&s.group.group);
        let nats = self.nats(&s.group);
        let r = &s.replicator;

        let flag = |b: Option<bool>| b.unwrap_or(false);
        let mode = match (flag(r.stream), flag(r.copy_and_stream), flag(r.copy)) {
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

        let defaults = RetryConfig::default();
        let retry = match r.retry_max_attempts {
            // pg_flo: 0 selects the defaults of all three settings.
            Some(0) => defaults,
            attempts => RetryConfig {
                max_attempts: attempts.unwrap_or(defaults.max_attempts),
                initial_wait: r.retry_initial_wait.unwrap_or(defaults.initial_wait),
                max_wait: r.retry_max_wait.unwrap_or(defaults.max_wait),
            },
        };
        self.wait_order("", retry.initial_wait, retry.max_wait);
        let status_interval = r.status_interval.unwrap_or(DEFAULT_STATUS_INTERVAL);

        ReplicatorConfig {
            source,
            group,
            schema: r
                .schema
                .clone()
                .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned()),
            tables: r.tables.clone(),
            nats,
            mode,
            max_copy_workers_per_table: match r.max_copy_workers_per_table {
                Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
                _ => DEFAULT_MAX_COPY_WORKERS_PER_TABLE,
            },
            track_ddl: flag(r.track_ddl),
            accept_lost_slot: flag(r.accept_lost_slot),
            cleanup: flag(r.cleanup),
            retry,
            max_batch_changes: r
                .max_batch_changes
                .map_or(DEFAULT_MAX_BATCH_CHANGES, to_usize),
            max_batch_bytes: r.max_batch_bytes.map_or(DEFAULT_MAX_BATCH_BYTES, to_usize),
            max_in_flight: r.max_in_flight.map_or(DEFAULT_MAX_IN_FLIGHT, to_usize),
            max_slot_retained_bytes: r.max_slot_retained_bytes,
            stream_max_bytes: r
                .nats_stream_max_bytes
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            status_interval: self.nonzero("status-interval", status_interval),
            metrics_addr: s.group.metrics_addr,
        }
    }

    fn worker(&mut self, s: &Settings, sink: &SinkCommand) -> WorkerConfig {
        let group = self.group(&s.group.group);
        let nats = self.nats(&s.group);
        let w = &s.worker;
        let flush_interval = w.flush_interval.unwrap_or(DEFAULT_FLUSH_INTERVAL);
        let flush_interval = self.nonzero("flush-interval", flush_interval);
        let gap_timeout = w.gap_timeout.unwrap_or(DEFAULT_GAP_TIMEOUT);
        let gap_timeout = self.nonzero("gap-timeout", gap_timeout);
        let sink = match sink {
            SinkCommand::Stdout => SinkConfig::Stdout,
            SinkCommand::File(_) => SinkConfig::File {
                output_dir: self
                    .require("file-output-dir", s.file.file_output_dir.clone())
                    .unwrap_or_default(),
            },
            SinkCommand::Webhook(_) => SinkConfig::Webhook(self.webhook_sink(&s.webhook)),
            SinkCommand::Postgres(_) => {
                SinkConfig::Postgres(self.postgres_sink(&s.postgres, &group))
            }
        };
        WorkerConfig {
            group,
            nats,
            rules_config: w.rules_config.clone(),
            routing_config: w.routing_config.clone(),
            batch_size: w.batch_size.map_or(DEFAULT_BATCH_SIZE, to_usize),
            flush_interval,
            dead_letter: w.dead_letter.unwrap_or(false),
            gap_timeout,
            sink,
            metrics_addr: s.group.metrics_addr,
        }
    }

    fn webhook_sink(&mut self, w: &WebhookSettings) -> WebhookSinkConfig {
        let url = self.required_text("webhook-url", &w.webhook_url);
        if !url.is_empty() {
            if let Err(e) = check_webhook_url(&url) {
                self.invalid_value("webhook-url", e);
            }
        }
        let mut headers = Vec::new();
        for line in &w.webhook_header {
            match parse_webhook_header(line.expose_secret()) {
                Ok(header) => headers.push(header),
                Err(e) => self.invalid_value("webhook-header", e),
            }
        }
        let timeout = w.webhook_timeout.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
        let timeout = self.nonzero("webhook-timeout", timeout);
        let retry_initial_wait = w
            .webhook_retry_initial_wait
            .unwrap_or(DEFAULT_WEBHOOK_RETRY_INITIAL_WAIT);
        let retry_initial_wait = self.nonzero("webhook-retry-initial-wait", retry_initial_wait);
        let retry_max_wait = w
            .webhook_retry_max_wait
            .unwrap_or(DEFAULT_WEBHOOK_RETRY_MAX_WAIT);
        self.wait_order("webhook-", retry_initial_wait, retry_max_wait);
        WebhookSinkConfig {
            url,
            headers,
            batch_size: w
                .webhook_batch_size
                .map_or(DEFAULT_WEBHOOK_BATCH_SIZE, to_usize),
            timeout,
            max_attempts: w
                .webhook_max_attempts
                .map_or(DEFAULT_WEBHOOK_MAX_ATTEMPTS, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                }),
            retry_initial_wait,
            retry_max_wait,
        }
    }

    fn postgres_sink(&mut self, p: &PostgresSinkSettings, group: &str) -> PostgresSinkConfig {
        let target = p.target();
        self.check_tls("target-", &target);
        let target = self.connection("target-", target);
        let sync_schema = p.target_sync_schema.unwrap_or(false);
        let source = p.schema_source();
        self.check_tls("source-", &source);
        // The source is only needed to copy the schema (pg_flo required it always).
        let complete = source.host.is_some()
            && source.dbname.is_some()
            && source.user.is_some()
            && source.password.is_some();
        let source = (sync_schema || complete).then(|| self.connection("source-", source));
        PostgresSinkConfig {
            target,
            source,
            sync_schema,
            disable_foreign_keys: p.target_disable_foreign_keys.unwrap_or(false),
            fire_triggers: p.target_fire_triggers.unwrap_or(false),
            group: group.to_owned(),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
