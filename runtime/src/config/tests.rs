use std::collections::HashMap;

use std::path::Path;

use clap::CommandFactory;
use pg_flo_config::runtime::Settings;
use secrecy::ExposeSecret;

use super::resolve::how_to_set;
use super::*;
use crate::cli::{Cli, CommandLine};

fn cli(args: &[&str]) -> CommandLine {
    let mut argv = vec!["pg_flo"];
    argv.extend_from_slice(args);
    CommandLine::try_parse_from(argv).unwrap()
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
            Settings::is_known(&long),
            "--{long} is not a setting of pg_flo_config::runtime"
        );
    }
}

/// The help of a flag (found in any command; a flag shared by two commands has one help).
fn help_of(cmd: &clap::Command, long: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_help().map(ToString::to_string))
        .or_else(|| cmd.get_subcommands().find_map(|sub| help_of(sub, long)))
}

/// Each flag's help names its variable and states a default that is the real one: giving the
/// stated default as the flag changes nothing.
#[test]
fn help_states_each_variable_and_the_true_default() {
    let bases: [&[&str]; 5] = [
        REQUIRED_REPLICATOR,
        &["worker", "--group=g", "--nats-url=n", "stdout"],
        &[
            "worker",
            "--group=g",
            "--nats-url=n",
            "file",
            "--file-output-dir=/d",
        ],
        &[
            "worker",
            "--group=g",
            "--nats-url=n",
            "postgres",
            "--target-host=t",
            "--target-dbname=d",
            "--target-user=u",
            "--target-password=p",
        ],
        &[
            "worker",
            "--group=g",
            "--nats-url=n",
            "webhook",
            "--webhook-url=http://h/x",
        ],
    ];
    let prose = ["no admin server", "unlimited"];
    let resolved = |args: &[&str]| {
        let loaded = resolve(&cli(args), &env_of(&[]), None).unwrap();
        format!("{:?} {:?}", loaded.process, loaded.log)
    };
    let root = Cli::command();
    let mut checked = 0;
    for base in bases {
        let plain = resolved(base);
        for setting in cli(base).settings() {
            let key = setting.key;
            let help = help_of(&root, &key).unwrap_or_default();
            assert!(
                help.contains(&format!("[env: {}]", env_var(&key))),
                "--{key}: {help}"
            );
            let Some(default) = help
                .split("[default: ")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
            else {
                continue;
            };
            if prose.contains(&default) {
                continue;
            }
            let flag = format!("--{key}={default}");
            let mut args = base.to_vec();
            args.push(&flag);
            assert_eq!(resolved(&args), plain, "{flag} is not the default");
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} defaults checked");
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
        p[0].starts_with("invalid --webhook-url: invalid webhook URL"),
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

/// Found by runtime/tests/config_properties.rs: a header line whose text before the first ':'
/// is not a header name was quoted, and that text may hold part of a token
/// (`Authorization=user:password`, `Authorization Bearer user:password`).
#[test]
fn an_invalid_header_name_is_not_quoted() {
    for line in [
        "Authorization=user:s3cr3t",
        "Authorization Bearer user:s3cr3t",
        "s3cr3t x:y",
    ] {
        let mut args = vec![
            "worker",
            "--group=g",
            "--nats-url=n",
            "webhook",
            "--webhook-url=http://h",
        ];
        args.extend(["--webhook-header", line]);
        let p = problems(&args, &[], None);
        assert_eq!(
            p,
            [
                "invalid --webhook-header: the text before the first ':' is not an HTTP header \
              name (expected \"Name: value\")"
            ],
            "{line}"
        );
    }
}

/// Found by runtime/tests/config_properties.rs: clap took a secret that starts with `-`, given
/// as the next argument, for a flag, and printed it in its error.
#[test]
fn a_secret_flag_takes_a_value_that_starts_with_a_dash() {
    let mut args = REQUIRED_REPLICATOR.to_vec();
    args.retain(|a| !a.starts_with("--password"));
    args.extend(["--password", "--s3cr3t"]);
    let r = replicator(&args, &[], None);
    assert_eq!(r.source.password.expose_secret(), "--s3cr3t");
    let w = worker(
        &[
            "worker",
            "--group=g",
            "--nats-url=n",
            "postgres",
            "--target-host=t",
            "--target-dbname=d",
            "--target-user=u",
            "--target-password",
            "-t",
            "--source-password",
            "--s",
        ],
        &[],
        None,
    );
    let SinkConfig::Postgres(pg) = w.sink else {
        panic!("not postgres")
    };
    assert_eq!(pg.target.password.expose_secret(), "-t");
    let w = worker(
        &[
            "worker",
            "--group=g",
            "--nats-url=n",
            "webhook",
            "--webhook-url=http://h",
            "--webhook-header",
            "-X-Token: t",
        ],
        &[],
        None,
    );
    let SinkConfig::Webhook(h) = w.sink else {
        panic!("not webhook")
    };
    assert_eq!(h.headers[0].name, "-X-Token");
}

/// Found by runtime/tests/config_properties.rs: the enum flags were case-sensitive while their
/// variables and config keys are not.
#[test]
fn enum_flags_ignore_case_as_variables_and_the_file_do() {
    let mut args = REQUIRED_REPLICATOR.to_vec();
    args.extend(["--sslmode=Require", "--log-format=JSON"]);
    let r = replicator(&args, &[], None);
    assert_eq!(r.source.sslmode, SslMode::Require);
    let loaded = resolve(&cli(&args), &env_of(&[]), None).unwrap();
    assert_eq!(loaded.log.format, LogFormat::Json);
    let r = replicator(
        REQUIRED_REPLICATOR,
        &[("PG_FLO_SSLMODE", " REQUIRE ")],
        None,
    );
    assert_eq!(r.source.sslmode, SslMode::Require);
}

/// Found by runtime/tests/config_properties.rs: a value refused by a check after parsing (group
/// name, webhook URL, a zero duration) did not say where it came from.
#[test]
fn checked_values_name_their_source() {
    let mut args = REQUIRED_REPLICATOR.to_vec();
    args.retain(|a| !a.starts_with("--group"));
    args.push("--status-interval=0s");
    let p = problems(&args, &[("PG_FLO_GROUP", "a.b")], None);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("invalid env PG_FLO_GROUP: invalid group name \"a.b\""),
        "{p:?}"
    );
    assert_eq!(
        p[1],
        "invalid --status-interval: status-interval must be greater than 0"
    );
    let p = problems(
        &["worker", "--group=g", "--nats-url=n", "webhook"],
        &[],
        Some("webhook-url: ftp://h/x\n"),
    );
    assert_eq!(
        p,
        [
            "invalid config key webhook-url in /etc/pg_flo.yaml: the webhook URL must start with \
          http:// or https:// and name a host"
        ]
    );
}

/// Found by runtime/tests/config_properties.rs: a tagged value (`!secret x`) was refused with
/// serde's "untagged and internally tagged enums do not support enum input".
#[test]
fn a_tagged_file_value_is_read_as_its_value() {
    let r = replicator(
        &["replicator"],
        &[],
        Some(
            "host: !h h\nport: !p 6000\ndbname: d\nuser: u\npassword: !secret hunter2\n\
             group: g\nnats-url: n\ntables: !t [!a a, b]\n",
        ),
    );
    assert_eq!(r.source.port, 6000);
    assert_eq!(r.source.host, "h");
    assert_eq!(r.source.password.expose_secret(), "hunter2");
    assert_eq!(r.tables, ["a", "b"]);
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
fn nats_credentials_tls_and_replicas() {
    let base = ["worker", "stdout", "--group=g", "--nats-url=nats://n:4222"];
    let with = |extra: &[&str], env: &[(&str, &str)], file: Option<&str>| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        worker(&args, env, file).nats
    };
    let n = with(
        &["--nats-user=pg-flo"],
        &[("PG_FLO_NATS_PASSWORD", "hunter2")],
        Some("nats-stream-replicas: 3\nnats-tls-cert-file: /c/tls.crt\nnats-tls-key-file: /c/tls.key\n"),
    );
    let (user, password) = n.user.as_ref().unwrap();
    assert_eq!(
        (user.as_str(), password.expose_secret()),
        ("pg-flo", "hunter2")
    );
    assert_eq!(n.stream_replicas, Some(3));
    assert_eq!(
        n.client_cert,
        Some(("/c/tls.crt".into(), "/c/tls.key".into()))
    );
    assert!(n.token.is_none());
    let debug = format!("{n:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    let n = with(&[], &[("PG_FLO_NATS_TOKEN", "t0ken")], None);
    assert_eq!(n.token.as_ref().unwrap().expose_secret(), "t0ken");
    assert!(!format!("{n:?}").contains("t0ken"));
    let n = with(&[], &[], None);
    assert_eq!(
        (
            n.user.is_none(),
            n.token.is_none(),
            n.client_cert,
            n.stream_replicas
        ),
        (true, true, None, None)
    );
}

#[test]
fn nats_credentials_given_twice_or_half_are_refused() {
    /// Extra flags, env, the one problem.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        (&["--nats-user=u"], &[], "--nats-user needs --nats-password (set with --nats-password (env PG_FLO_NATS_PASSWORD, config key nats-password))"),
        (&[], &[("PG_FLO_NATS_PASSWORD", "p")], "--nats-password needs --nats-user (set with --nats-user (env PG_FLO_NATS_USER, config key nats-user))"),
        (&["--nats-user=u", "--nats-password=p", "--nats-token=t"], &[], "NATS credentials are given more than once (--nats-user/--nats-password, --nats-token): use one of them"),
        (&["--nats-url=nats://a:b@n", "--nats-token=t"], &[], "NATS credentials are given more than once (credentials in --nats-url, --nats-token): use one of them"),
        (&["--nats-creds-file=/c", "--nats-token=t"], &[], "NATS credentials are given more than once (--nats-token, --nats-creds-file): use one of them"),
        (&["--nats-tls-cert-file=/c"], &[], "--nats-tls-cert-file needs its key file (set with --nats-tls-key-file (env PG_FLO_NATS_TLS_KEY_FILE, config key nats-tls-key-file))"),
        (&["--nats-stream-replicas=6"], &[], "nats-stream-replicas must be between 1 and 5 (JetStream's limit) (set with --nats-stream-replicas (env PG_FLO_NATS_STREAM_REPLICAS, config key nats-stream-replicas))"),
    ];
    for (extra, env, want) in cases {
        let mut args = vec!["worker", "stdout", "--group=g"];
        if !extra.iter().any(|a| a.starts_with("--nats-url")) {
            args.push("--nats-url=nats://n:4222");
        }
        args.extend_from_slice(extra);
        assert_eq!(problems(&args, env, None), [want], "{extra:?}");
    }
}
