//! Property tests of the configuration: how `pg_flo` resolves its settings from flags,
//! `PG_FLO_*` variables and the config file, and what the config, rules and routing loaders
//! say about a bad file.
//!
//! - Precedence: for generated values of representative settings (text, numbers, durations,
//!   booleans, enums, lists, webhook headers), each absent, blank or set in each layer and
//!   spelled in the ways the value grammar allows, the resolved value is the one of the highest
//!   layer that sets it, else the default (compared against a model in the test).
//! - No config file text and no variable makes loading panic; a bad value is reported naming
//!   the setting and where it came from (`--key`, `env PG_FLO_KEY`, `config key key in FILE`),
//!   and a bad value overridden by a higher layer is not looked at.
//! - Secrets (passwords, webhook headers, the webhook URL's credentials) never show up in an
//!   error or warning, wherever they are placed and whatever else is wrong.
//! - Rules and routing files with one broken rule (route) are reported naming the file, the
//!   table and the rule number (the column mapping), and no rule's value (filter value, regex
//!   replacement, destination names) is quoted by an error about another field.
//!
//! Everything runs in memory (`resolve` takes the command line, an env lookup and the parsed
//! file); bounded so that the file runs in a few seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use clap::CommandFactory;
use pg_flo::cli::{Cli, CommandLine};
use pg_flo::config::{
    env_var, load_with, resolve, ConfigError, ConfigFile, Loaded, LogFormat, Process, SinkConfig,
    SslMode,
};
use pg_flo::redact::error_chain;
use pg_flo::worker::routing::{Routes, RoutingError};
use pg_flo::worker::rules::{Rules, RulesError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use secrecy::ExposeSecret;

fn config() -> ProptestConfig {
    cases(192)
}

fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Relative to the package (the tests' working directory); `SourceParallel` finds no
        // lib.rs for an integration test.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/config_properties.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// Where the config file is said to be.
const FILE: &str = "/etc/pg_flo/pg_flo.yaml";

// ---------------------------------------------------------------------------------------------
// Loading

/// The three layers given to the loader.
#[derive(Clone, Debug, Default)]
struct Input {
    /// Flags, after the command's base arguments.
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// Config file text.
    file: String,
}

/// Why loading failed, as the operator sees it.
#[derive(Debug)]
enum Failure {
    /// clap refused the command line (`pg_flo` prints this text).
    Cli(String),
    /// The config file could not be used.
    File(String),
    /// Every problem, and the printed error.
    Invalid(Vec<String>, String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Cli(t) | Failure::File(t) | Failure::Invalid(_, t) => t,
        }
    }
}

/// `pg_flo <base> <input.args>` with `input.env` and `input.file` as the config file, as
/// `config::load` resolves it (every error rendered as `pg_flo` prints it).
fn load(base: &[&str], input: &Input) -> Result<Loaded, Failure> {
    let argv = ["pg_flo"]
        .iter()
        .chain(base)
        .map(|s| (*s).to_owned())
        .chain(input.args.iter().cloned());
    let cli = CommandLine::try_parse_from(argv).map_err(|e| Failure::Cli(e.to_string()))?;
    let file = ConfigFile::parse(Path::new(FILE), &input.file)
        .map_err(|e| Failure::File(error_chain(&e)))?;
    let env = |name: &str| input.env.get(name).cloned();
    match resolve(&cli, &env, Some(&file)) {
        Ok(loaded) => Ok(loaded),
        Err(e @ ConfigError::Invalid(_)) => {
            let text = error_chain(&e);
            let ConfigError::Invalid(problems) = e else {
                unreachable!()
            };
            Err(Failure::Invalid(problems, text))
        }
        Err(e) => Err(Failure::File(error_chain(&e))),
    }
}

fn parses(base: &[&str], args: &[String]) -> bool {
    let argv = ["pg_flo"]
        .iter()
        .chain(base)
        .map(|s| (*s).to_owned())
        .chain(args.iter().cloned());
    CommandLine::try_parse_from(argv).is_ok()
}

fn missing(key: &str) -> String {
    format!(
        "missing required setting: --{key} (env {}, config key {key})",
        env_var(key)
    )
}

/// The commands, with every required setting given as a flag.
const REPLICATOR: &[&str] = &[
    "replicator",
    "--host=h",
    "--dbname=d",
    "--user=u",
    "--password=p",
    "--group=g",
    "--nats-url=nats://n",
];
const POSTGRES: &[&str] = &[
    "worker",
    "--group=g",
    "--nats-url=nats://n",
    "postgres",
    "--target-host=t",
    "--target-dbname=d",
    "--target-user=u",
    "--target-password=p",
];
const WEBHOOK: &[&str] = &[
    "worker",
    "--group=g",
    "--nats-url=nats://n",
    "webhook",
    "--webhook-url=http://hooks.example/x",
];
const FILE_SINK: &[&str] = &[
    "worker",
    "--group=g",
    "--nats-url=nats://n",
    "file",
    "--file-output-dir=/out",
];
const COMMANDS: [&[&str]; 4] = [REPLICATOR, POSTGRES, WEBHOOK, FILE_SINK];

/// Every config key (every long flag but `--config`, `--help`, `--version`).
fn all_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long() {
                    if !matches!(long, "config" | "help" | "version")
                        && !out.iter().any(|k| k == long)
                    {
                        out.push(long.to_owned());
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut keys = Vec::new();
        walk(&Cli::command(), &mut keys);
        keys
    })
}

/// A typed setting of a command (one whose flag refuses `zzq`) and a value it accepts.
#[derive(Clone, Debug)]
struct Typed {
    key: String,
    valid: String,
}

/// The typed settings each of [`COMMANDS`] reads (those its base arguments do not set).
fn typed(command: usize) -> &'static [Typed] {
    static TYPED: OnceLock<Vec<Vec<Typed>>> = OnceLock::new();
    &TYPED.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|base| {
                let cli =
                    CommandLine::try_parse_from(["pg_flo"].iter().chain(base.iter())).unwrap();
                let mut out = Vec::new();
                for setting in cli.settings() {
                    let key = setting.key;
                    if setting.flag.is_some() || parses(base, &[format!("--{key}=zzq")]) {
                        continue; // set by the base, or any text
                    }
                    let valid = ["false", "1", "1s", "require", "json", "127.0.0.1:9100"]
                        .into_iter()
                        .find(|v| {
                            let input = Input {
                                args: vec![format!("--{key}={v}")],
                                ..Input::default()
                            };
                            load(base, &input).is_ok()
                        })
                        .unwrap_or_else(|| panic!("no valid value found for --{key}"));
                    out.push(Typed {
                        key,
                        valid: valid.to_owned(),
                    });
                }
                out
            })
            .collect()
    })[command]
}

#[test]
fn typed_settings_are_found() {
    let keys = |c: usize| -> Vec<&str> { typed(c).iter().map(|t| t.key.as_str()).collect() };
    for key in [
        "port",
        "sslmode",
        "track-ddl",
        "status-interval",
        "max-batch-bytes",
        "metrics-addr",
        "log-format",
    ] {
        assert!(keys(0).contains(&key), "{key}: {:?}", keys(0));
    }
    for key in ["target-port", "target-sslmode", "gap-timeout", "batch-size"] {
        assert!(keys(1).contains(&key), "{key}: {:?}", keys(1));
    }
    assert!(keys(2).contains(&"webhook-timeout"), "{:?}", keys(2));
    assert!(!keys(0).contains(&"host") && !keys(0).contains(&"schema"));
}

// ---------------------------------------------------------------------------------------------
// 1. Precedence

/// A value of a setting, as the resolved configuration holds it.
#[derive(Clone, Debug, PartialEq)]
enum V {
    Text(String),
    Num(u64),
    Dur(Duration),
    Bool(bool),
    Ssl(SslMode),
    Log(LogFormat),
    List(Vec<String>),
    /// Webhook headers: name, value.
    Headers(Vec<(String, String)>),
}

/// One layer of one setting: absent, blank (counts as unset) or set, in spelling `.1`.
#[derive(Clone, Debug)]
enum Slot {
    Absent,
    Blank(usize),
    Set(V, usize),
}

fn slot(value: BoxedStrategy<V>) -> BoxedStrategy<Slot> {
    prop_oneof![
        3 => Just(Slot::Absent),
        1 => (0usize..12).prop_map(Slot::Blank),
        4 => (value, 0usize..12).prop_map(|(v, sp)| Slot::Set(v, sp)),
    ]
    .boxed()
}

/// A setting of the precedence model: its key, its default (`None`: required) and its values.
struct Spec {
    key: &'static str,
    default: Option<V>,
    /// Whether the flag takes any text, so that `--key=` is a blank flag.
    text: bool,
    values: fn() -> BoxedStrategy<V>,
}

fn pick<T: Clone>(forms: &[T], sp: usize) -> T {
    forms[sp % forms.len()].clone()
}

/// The text of a value for a flag or a variable, in one of the spellings the grammar takes.
fn text(v: &V, sp: usize) -> String {
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    match v {
        V::Text(s) => s.clone(),
        V::Num(n) => pick(&[format!("{n}"), format!(" {n} "), format!("+{n}")], sp),
        V::Dur(d) => {
            let ms = d.as_millis();
            let mut forms = vec![
                format!("{ms}ms"),
                humantime::format_duration(*d).to_string(),
            ];
            if ms % 1000 == 0 {
                forms.push(format!("{}s", ms / 1000));
            }
            pick(&forms, sp)
        }
        V::Bool(true) => pick(&["true", "T", "1", "TRUE", "True", "t"], sp).to_owned(),
        V::Bool(false) => pick(&["false", "F", "0", "FALSE", "False", "f"], sp).to_owned(),
        V::Ssl(m) => {
            let s = m.to_string();
            pick(&[s.clone(), s.to_ascii_uppercase(), cap(&s)], sp)
        }
        V::Log(f) => {
            let s = f.to_string();
            pick(&[s.clone(), s.to_ascii_uppercase(), cap(&s)], sp)
        }
        V::List(items) => pick(&[items.join(","), items.join(" "), items.join(", ")], sp),
        V::Headers(hs) => {
            let lines: Vec<String> = hs.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            pick(&[lines.join("\n"), lines.join("\r\n") + "\n"], sp)
        }
    }
}

/// The flags that give `v`.
fn flag_args(key: &str, v: &V, sp: usize) -> Vec<String> {
    match v {
        V::Bool(true) if sp % 2 == 0 => vec![format!("--{key}")],
        V::Bool(_) => vec![format!("--{key}={}", text(v, sp))],
        V::List(items) if sp % 2 == 0 => items.iter().map(|i| format!("--{key}={i}")).collect(),
        V::Headers(hs) => hs
            .iter()
            .flat_map(|(n, v)| match sp % 2 {
                0 => vec![format!("--{key}={n}: {v}")],
                _ => vec![format!("--{key}"), format!("{n}:{v}")],
            })
            .collect(),
        // The space-padded spellings are for variables.
        V::Ssl(_) | V::Log(_) | V::Text(_) if sp % 3 == 1 => {
            vec![format!("--{key}"), text(v, sp)]
        }
        _ => vec![format!("--{key}={}", text(v, sp))],
    }
}

/// The value of `key: ...` in the config file: plain, quoted, or a block.
fn yaml(v: &V, sp: usize) -> String {
    match v {
        V::Text(s) => pick(&[s.clone(), format!("'{s}'"), format!("\"{s}\"")], sp),
        V::Num(n) => pick(&[format!("{n}"), format!("'{n}'"), format!("\"{n}\"")], sp),
        V::Dur(_) | V::Ssl(_) | V::Log(_) => {
            let t = text(v, sp);
            pick(&[t.clone(), format!("'{t}'")], sp / 3)
        }
        V::Bool(b) => pick(
            &[
                b.to_string(),
                format!("'{}'", text(v, sp)),
                if *b { "1" } else { "0" }.to_owned(),
            ],
            sp,
        ),
        V::List(items) => pick(
            &[
                format!("[{}]", items.join(", ")),
                items.iter().map(|i| format!("\n  - {i}")).collect(),
                items.join(", "),
                format!("'{}'", items.join(" ")),
            ],
            sp,
        ),
        V::Headers(hs) => pick(
            &[
                hs.iter()
                    .map(|(n, v)| format!("\n  - '{n}: {v}'"))
                    .collect(),
                format!(
                    "|\n{}",
                    hs.iter()
                        .map(|(n, v)| format!("  {n}: {v}\n"))
                        .collect::<String>()
                ),
                format!(
                    "[{}]",
                    hs.iter()
                        .map(|(n, v)| format!("'{n}: {v}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ],
            sp,
        ),
    }
}

fn host() -> BoxedStrategy<V> {
    "h[a-z0-9.-]{0,12}".prop_map(V::Text).boxed()
}
fn schema() -> BoxedStrategy<V> {
    "s[a-z0-9_]{0,8}".prop_map(V::Text).boxed()
}
fn log_level() -> BoxedStrategy<V> {
    "lv[a-z_]{0,6}(=[a-z]{1,5})?".prop_map(V::Text).boxed()
}
fn webhook_url() -> BoxedStrategy<V> {
    ("h[a-z0-9]{0,8}", 1u16..=65535, "[a-z0-9/]{0,8}")
        .prop_map(|(h, port, path)| V::Text(format!("http://{h}.example:{port}/{path}")))
        .boxed()
}
fn port() -> BoxedStrategy<V> {
    (1u64..=65535).prop_map(V::Num).boxed()
}
fn positive() -> BoxedStrategy<V> {
    (1u64..=10_000_000).prop_map(V::Num).boxed()
}
fn duration() -> BoxedStrategy<V> {
    prop_oneof![
        (1u64..=3_600_000).prop_map(Duration::from_millis),
        (1u64..=3_600).prop_map(Duration::from_secs),
    ]
    .prop_map(V::Dur)
    .boxed()
}
fn boolean() -> BoxedStrategy<V> {
    any::<bool>().prop_map(V::Bool).boxed()
}
fn sslmode() -> BoxedStrategy<V> {
    select(vec![
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ])
    .prop_map(V::Ssl)
    .boxed()
}
fn log_format() -> BoxedStrategy<V> {
    select(vec![LogFormat::Text, LogFormat::Json])
        .prop_map(V::Log)
        .boxed()
}
fn tables() -> BoxedStrategy<V> {
    vec("t[a-z0-9_]{0,6}", 1..4).prop_map(V::List).boxed()
}
fn headers() -> BoxedStrategy<V> {
    vec(
        ("X-[A-Za-z]{1,6}", "[A-Za-z0-9]{1,6}( [A-Za-z0-9]{1,6})?"),
        1..3,
    )
    .prop_map(V::Headers)
    .boxed()
}

fn replicator_specs() -> Vec<Spec> {
    vec![
        Spec {
            key: "host",
            default: None,
            text: true,
            values: host,
        },
        Spec {
            key: "schema",
            default: Some(V::Text("public".to_owned())),
            text: true,
            values: schema,
        },
        Spec {
            key: "port",
            default: Some(V::Num(5432)),
            text: false,
            values: port,
        },
        Spec {
            key: "max-batch-changes",
            default: Some(V::Num(1000)),
            text: false,
            values: positive,
        },
        Spec {
            key: "status-interval",
            default: Some(V::Dur(Duration::from_secs(1))),
            text: false,
            values: duration,
        },
        Spec {
            key: "track-ddl",
            default: Some(V::Bool(false)),
            text: false,
            values: boolean,
        },
        Spec {
            key: "sslmode",
            default: Some(V::Ssl(SslMode::Prefer)),
            text: false,
            values: sslmode,
        },
        Spec {
            key: "tables",
            default: Some(V::List(Vec::new())),
            text: false,
            values: tables,
        },
        Spec {
            key: "log-format",
            default: Some(V::Log(LogFormat::Text)),
            text: false,
            values: log_format,
        },
    ]
}

fn webhook_specs() -> Vec<Spec> {
    vec![
        Spec {
            key: "webhook-url",
            default: None,
            text: true,
            values: webhook_url,
        },
        Spec {
            key: "webhook-timeout",
            default: Some(V::Dur(Duration::from_secs(10))),
            text: false,
            values: duration,
        },
        Spec {
            key: "webhook-batch-size",
            default: Some(V::Num(1)),
            text: false,
            values: positive,
        },
        Spec {
            key: "gap-timeout",
            default: Some(V::Dur(Duration::from_secs(300))),
            text: false,
            values: duration,
        },
        Spec {
            key: "dead-letter",
            default: Some(V::Bool(false)),
            text: false,
            values: boolean,
        },
        Spec {
            key: "webhook-header",
            default: Some(V::Headers(Vec::new())),
            text: false,
            values: headers,
        },
        Spec {
            key: "log-level",
            default: Some(V::Text("info".to_owned())),
            text: true,
            values: log_level,
        },
        Spec {
            key: "log-format",
            default: Some(V::Log(LogFormat::Text)),
            text: false,
            values: log_format,
        },
    ]
}

/// Flag, env and file slots for every spec.
fn layers(specs: &[Spec]) -> impl Strategy<Value = Vec<[Slot; 3]>> {
    specs
        .iter()
        .map(|s| {
            (slot((s.values)()), slot((s.values)()), slot((s.values)()))
                .prop_map(|(f, e, y)| [f, e, y])
        })
        .collect::<Vec<_>>()
}

/// Puts each spec's layers into the input.
fn place(specs: &[Spec], layers: &[[Slot; 3]]) -> Input {
    let mut input = Input::default();
    for (spec, [flag, env, file]) in specs.iter().zip(layers) {
        let key = spec.key;
        match flag {
            Slot::Set(v, sp) => input.args.extend(flag_args(key, v, *sp)),
            Slot::Blank(sp) if spec.text => {
                input
                    .args
                    .push(format!("--{key}={}", pick(&["", " "], *sp)));
            }
            Slot::Blank(_) | Slot::Absent => {}
        }
        match env {
            Slot::Set(v, sp) => {
                let t = text(v, *sp);
                // Variables may carry spaces around a typed value.
                let t = match v {
                    V::Ssl(_) | V::Log(_) | V::Bool(_) | V::Dur(_) if sp % 4 == 3 => {
                        format!(" {t}\t")
                    }
                    _ => t,
                };
                input.env.insert(env_var(key), t);
            }
            Slot::Blank(sp) => {
                input
                    .env
                    .insert(env_var(key), pick(&["", " ", "\t"], *sp).to_owned());
            }
            Slot::Absent => {}
        }
        match file {
            Slot::Set(v, sp) => input.file += &format!("{key}: {}\n", yaml(v, *sp)),
            Slot::Blank(sp) => {
                input.file += &format!("{key}: {}\n", pick(&["", "null", "~", "''", "[]"], *sp));
            }
            Slot::Absent => {}
        }
    }
    input
}

/// The model: the highest layer that sets the value (a blank flag, variable or file value
/// counts as unset).
fn expected(layers: &[Slot; 3]) -> Option<V> {
    layers.iter().find_map(|s| match s {
        Slot::Set(v, _) => Some(v.clone()),
        _ => None,
    })
}

fn resolved_replicator(key: &str, loaded: &Loaded) -> V {
    let Process::Replicator(r) = &loaded.process else {
        panic!("not a replicator: {:?}", loaded.process)
    };
    match key {
        "host" => V::Text(r.source.host.clone()),
        "schema" => V::Text(r.schema.clone()),
        "port" => V::Num(r.source.port.into()),
        "max-batch-changes" => V::Num(r.max_batch_changes as u64),
        "status-interval" => V::Dur(r.status_interval),
        "track-ddl" => V::Bool(r.track_ddl),
        "sslmode" => V::Ssl(r.source.sslmode),
        "tables" => V::List(r.tables.clone()),
        "log-format" => V::Log(loaded.log.format),
        other => panic!("{other}"),
    }
}

fn resolved_webhook(key: &str, loaded: &Loaded) -> V {
    let Process::Worker(w) = &loaded.process else {
        panic!("not a worker: {:?}", loaded.process)
    };
    let SinkConfig::Webhook(h) = &w.sink else {
        panic!("not webhook: {:?}", w.sink)
    };
    match key {
        "webhook-url" => V::Text(h.url.clone()),
        "webhook-timeout" => V::Dur(h.timeout),
        "webhook-batch-size" => V::Num(h.batch_size as u64),
        "gap-timeout" => V::Dur(w.gap_timeout),
        "dead-letter" => V::Bool(w.dead_letter),
        "webhook-header" => V::Headers(
            h.headers
                .iter()
                .map(|h| (h.name.clone(), h.value.expose_secret().to_owned()))
                .collect(),
        ),
        "log-level" => V::Text(loaded.log.level.clone()),
        "log-format" => V::Log(loaded.log.format),
        other => panic!("{other}"),
    }
}

fn check_precedence(
    base: &[&str],
    specs: &[Spec],
    layers: &[[Slot; 3]],
    resolved: fn(&str, &Loaded) -> V,
) -> Result<(), TestCaseError> {
    let input = place(specs, layers);
    let outcome = load(base, &input);
    let missing: Vec<String> = specs
        .iter()
        .zip(layers)
        .filter(|(spec, l)| spec.default.is_none() && expected(l).is_none())
        .map(|(spec, _)| missing(spec.key))
        .collect();
    if !missing.is_empty() {
        match outcome {
            Err(Failure::Invalid(problems, _)) => prop_assert_eq!(problems, missing),
            other => prop_assert!(false, "expected {:?}, got {:?}", missing, other),
        }
        return Ok(());
    }
    let loaded = outcome.map_err(|f| TestCaseError::fail(format!("{input:?}: {f:?}")))?;
    for (spec, l) in specs.iter().zip(layers) {
        let want = expected(l).or_else(|| spec.default.clone());
        prop_assert_eq!(
            Some(resolved(spec.key, &loaded)),
            want,
            "--{} from {:?}",
            spec.key,
            input
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_highest_layer_that_sets_a_value_wins(layers in layers(&replicator_specs())) {
        let base = [
            "replicator", "--dbname=d", "--user=u", "--password=p", "--group=g",
            "--nats-url=nats://n", "--sslrootcert=/ca.pem",
        ];
        check_precedence(&base, &replicator_specs(), &layers, resolved_replicator)?;
    }

    #[test]
    fn the_highest_layer_that_sets_a_webhook_setting_wins(layers in layers(&webhook_specs())) {
        let base = ["worker", "--group=g", "--nats-url=nats://n", "webhook"];
        check_precedence(&base, &webhook_specs(), &layers, resolved_webhook)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. No panic; a bad value names its setting and source

/// YAML values that are odd for a setting.
const ODD_VALUES: &[&str] = &[
    "~",
    "null",
    "''",
    "[]",
    "{}",
    "[a, b]",
    "{a: 1}",
    "!tag x",
    "!!str 1",
    "!!int x",
    "!!binary aGk=",
    "&a 1",
    "*a",
    "|\n  x\n  y",
    ">-\n  y",
    "0",
    "-1",
    "1e400",
    "0x10",
    "0o7",
    ".inf",
    "-.nan",
    "18446744073709551616",
    "-9223372036854775809",
    "1.5",
    "true",
    "yes",
    "\"\\u0000\"",
    "'a''b'",
    "? x",
    "- - x",
    "\"\\t\"",
    "[[[[[[]]]]]]",
    "{? [a]: b}",
    "-",
    "\"\u{202e}\"",
    "'é'",
    "1_000",
    "5m 3s",
    "9999999999999999999999d",
    "-5s",
    "0s",
];

fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => select(all_keys().to_vec()),
        1 => "[A-Za-z_-]{1,12}",
    ];
    let value = prop_oneof![
        3 => select(ODD_VALUES.to_vec()).prop_map(str::to_owned),
        2 => "[ -~]{0,16}",
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ];
    let line = prop_oneof![
        4 => (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k}: {v}")),
        1 => (key, vec(value, 0..3)).prop_map(|(k, items)| {
            format!("{k}:{}", items.iter().map(|i| format!("\n  - {i}")).collect::<String>())
        }),
        1 => "[ -~\t]{0,30}",
    ];
    vec(line, 0..10).prop_map(|lines| lines.join("\n"))
}

/// The commands a config file is tried with (nothing given as flags).
const BARE: [&[&str]; 6] = [
    &["replicator"],
    &["worker", "stdout"],
    &["worker", "file"],
    &["worker", "postgres", "--target-sync-schema"],
    &["worker", "webhook"],
    &["version"],
];

/// Every problem a lone config file (no flags, no variables) yields names the file's key.
fn check_file_only(text: &str) -> Result<(), TestCaseError> {
    let input = Input {
        file: text.to_owned(),
        ..Input::default()
    };
    for base in BARE {
        match load(base, &input) {
            Ok(_) | Err(Failure::File(_)) => {}
            Err(Failure::Cli(e)) => prop_assert!(false, "{}", e),
            Err(Failure::Invalid(problems, _)) => {
                for p in problems {
                    if p.starts_with("invalid ") {
                        prop_assert!(
                            p.starts_with("invalid config key ") && p.contains(FILE),
                            "{}",
                            p
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// A value a typed setting refuses.
fn bad_value() -> impl Strategy<Value = String> {
    prop_oneof!["zzq[a-z]{0,5}", "zzq[ -~]{0,8}", "-[1-9][0-9]{0,3}zz"]
}

proptest! {
    // Each case loads six commands.
    #![proptest_config(cases(128))]

    #[test]
    fn no_config_file_makes_loading_panic(text in yamlish()) {
        check_file_only(&text)?;
    }

    /// Also read from disk by `load_with` (`--config FILE`), where bytes that are not UTF-8
    /// are an error naming the file.
    #[test]
    fn no_config_file_bytes_make_loading_panic(bytes in vec(any::<u8>(), 0..400)) {
        check_file_only(&String::from_utf8_lossy(&bytes))?;
        let path = std::env::temp_dir().join(format!("pg_flo_cfgprop_{}.yaml", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let cli = CommandLine::try_parse_from([
            "pg_flo", "worker", "--config", path.to_str().unwrap(), "stdout",
        ])
        .unwrap();
        let loaded = load_with(&cli, &|_| None);
        std::fs::remove_file(&path).unwrap();
        match loaded {
            Ok(_) => prop_assert!(std::str::from_utf8(&bytes).is_ok()),
            Err(e @ (ConfigError::ReadFile { .. } | ConfigError::ParseFile { .. } | ConfigError::NotAMap { .. })) => {
                let text = error_chain(&e);
                prop_assert!(text.contains(path.to_str().unwrap()), "{}", text);
            }
            Err(ConfigError::Invalid(_)) => {}
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_variable_makes_loading_panic(
        command in 0usize..COMMANDS.len(),
        vars in vec((any::<Index>(), prop_oneof![
            "\\PC{0,24}",
            ".{0,24}",
            select(ODD_VALUES.to_vec()).prop_map(str::to_owned),
        ]), 0..12),
    ) {
        let base = BARE[command];
        let keys = all_keys();
        let input = Input {
            env: vars
                .into_iter()
                .map(|(i, v)| (env_var(&keys[i.index(keys.len())]), v))
                .collect(),
            ..Input::default()
        };
        match load(base, &input) {
            Ok(_) => {}
            Err(Failure::Invalid(problems, _)) => {
                for p in problems {
                    if p.starts_with("invalid ") {
                        prop_assert!(p.starts_with("invalid env PG_FLO_"), "{}", p);
                    } else {
                        prop_assert!(p.contains("--") || p.contains("PG_FLO_"), "{}", p);
                    }
                }
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }

    /// A typed setting's bad value, as a flag, a variable or a file value (text, list or
    /// map), is reported once, naming the setting and its source; overridden by a good value
    /// of a higher layer, it is never looked at.
    #[test]
    fn a_bad_value_is_reported_with_its_source(
        command in 0usize..COMMANDS.len(),
        which in any::<Index>(),
        bad in bad_value(),
        structure in 0usize..4,
        layer in 0usize..3,
        shadow in any::<bool>(),
    ) {
        let base = COMMANDS[command];
        let settings = typed(command);
        let Typed { key, valid } = &settings[which.index(settings.len())];
        let var = env_var(key);
        let mut input = Input::default();
        let source = match layer {
            0 => {
                input.args.push(format!("--{key}={bad}"));
                format!("--{key}")
            }
            1 => {
                input.env.insert(var.clone(), bad.clone());
                format!("env {var}")
            }
            _ => {
                let quoted = yaml_quoted(&bad);
                let value = match structure {
                    0 => quoted,
                    1 => format!("[{quoted}]"),
                    2 => format!("\n  - {quoted}"),
                    _ => format!("{{a: {quoted}}}"),
                };
                input.file = format!("{key}: {value}\n");
                format!("config key {key} in {FILE}")
            }
        };
        let shadowed = shadow && layer > 0;
        if shadowed {
            if layer == 2 && structure % 2 == 0 {
                input.env.insert(var, valid.clone());
            } else {
                input.args.push(format!("--{key}={valid}"));
            }
        }
        let outcome = load(base, &input);
        match (layer, outcome) {
            (_, Ok(_)) => prop_assert!(shadowed, "{:?} accepted", input),
            (0, Err(Failure::Cli(e))) => {
                prop_assert!(e.contains("invalid value"), "{}", e);
                prop_assert!(
                    e.contains(&format!("'--{key} ")) || e.contains(&format!("'--{key}[")),
                    "{}",
                    e
                );
            }
            (_, Err(Failure::Invalid(problems, _))) if !shadowed => {
                prop_assert_eq!(problems.len(), 1, "{:?}", problems);
                let want = format!("invalid {source}: ");
                prop_assert!(problems[0].starts_with(&want), "{:?}, want {}", problems, want);
            }
            (_, other) => prop_assert!(false, "{:?} from {:?}", other, input),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Secrets never in messages

/// A secret and the pieces of it no message may contain.
#[derive(Clone, Debug)]
struct Secret {
    text: String,
    pieces: Vec<String>,
}

/// Characters that make a secret awkward in a URL, a header or YAML.
const SEPARATORS: &[&str] = &[
    ":", ": ", " ", "-", "#", " #", "@", "'", "\"", "\\", "[", "]", "{", "}", "%", "!", "&", "*",
    ",", "=", "/", "?", "|", ">", "\t",
];
const LEADS: &[&str] = &[
    "[", "{", "!", "&", "*", "'", "\"", "#", "|", ">", "%", "@", "`", "?", ":", " ",
];

fn secret() -> impl Strategy<Value = Secret> {
    (
        prop_oneof![
            3 => Just(""),
            // A secret that looks like a flag.
            2 => select(vec!["-", "--"]),
            3 => select(LEADS.to_vec()),
        ],
        vec(("Zq[A-Za-z0-9]{4,8}", select(SEPARATORS.to_vec())), 1..4),
    )
        .prop_map(|(lead, parts)| {
            let mut text = lead.to_owned();
            let mut pieces = Vec::new();
            for (i, (piece, sep)) in parts.iter().enumerate() {
                if i > 0 {
                    text += sep;
                }
                text += piece;
                pieces.push(piece.clone());
            }
            Secret { text, pieces }
        })
}

/// The secret settings, and the command that reads each one (without it).
#[derive(Clone, Copy, Debug)]
enum SecretSetting {
    Password,
    TargetPassword,
    SourcePassword,
    WebhookHeader,
    WebhookUrl,
}

impl SecretSetting {
    fn key(self) -> &'static str {
        match self {
            SecretSetting::Password => "password",
            SecretSetting::TargetPassword => "target-password",
            SecretSetting::SourcePassword => "source-password",
            SecretSetting::WebhookHeader => "webhook-header",
            SecretSetting::WebhookUrl => "webhook-url",
        }
    }

    /// The command (index into [`COMMANDS`]) and its base arguments without this setting.
    fn command(self) -> (usize, Vec<&'static str>) {
        let (i, base): (usize, &[&str]) = match self {
            SecretSetting::Password => (0, REPLICATOR),
            SecretSetting::TargetPassword | SecretSetting::SourcePassword => (1, POSTGRES),
            SecretSetting::WebhookHeader | SecretSetting::WebhookUrl => (2, WEBHOOK),
        };
        let prefix = format!("--{}=", self.key());
        let mut base: Vec<&str> = base
            .iter()
            .copied()
            .filter(|a| !a.starts_with(&prefix))
            .collect();
        if let SecretSetting::SourcePassword = self {
            base.extend(["--source-host=s", "--source-dbname=d", "--source-user=u"]);
        }
        (i, base)
    }

    /// The setting's value holding `secret`, in form `form` (well-formed or not).
    fn value(self, secret: &str, form: usize) -> String {
        match self {
            SecretSetting::Password
            | SecretSetting::TargetPassword
            | SecretSetting::SourcePassword => secret.to_owned(),
            SecretSetting::WebhookHeader => pick(
                &[
                    format!("Authorization: Bearer {secret}"),
                    format!("Authorization Bearer {secret}"),
                    secret.to_owned(),
                    format!("Bad Name: {secret}"),
                    format!("Authorization: Bearer {secret}\u{1}"),
                    format!("Authorization={secret}"),
                ],
                form,
            ),
            SecretSetting::WebhookUrl => {
                // Credentials as a URL holds them: characters that end the user info would
                // move the secret out of it (into the host or the path, which are shown).
                let secret: String = secret
                    .chars()
                    .map(|c| if "/?#@\\\t %".contains(c) { '-' } else { c })
                    .collect();
                pick(
                    &[
                        format!("https://user:{secret}@hooks.example/x"),
                        format!("ftp://user:{secret}@hooks.example/x"),
                        format!("http://user:{secret}@/x"),
                        format!("hooks.example/x?token={secret}"),
                        format!("http://hooks.example/x?token={secret}#{secret}"),
                    ],
                    form,
                )
            }
        }
    }
}

/// Where the secret setting is put.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// `--key=value`.
    FlagEq,
    /// `--key value`.
    FlagSeparate,
    Env,
    /// `key: "value"` (quoted as YAML quotes it).
    FileQuoted,
    /// `key: value` as is, which may not be YAML.
    FileRaw,
    /// `key: [value]`.
    FileList,
    /// `key: {value: 1}`.
    FileMapKey,
    /// `key: {k: value}`.
    FileMapValue,
    /// `key: !tag value`.
    FileTagged,
}

/// `s` as a YAML double-quoted scalar (JSON's string syntax is YAML's).
fn yaml_quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Another problem next to the secret.
#[derive(Clone, Debug)]
enum Other {
    /// A typed setting's bad value, in layer `.2` (0 flag, 1 env, 2 file).
    Bad(Index, String, usize),
    /// An unknown key in the file.
    Unknown(String),
    /// A required setting of the base left out.
    Drop(Index),
}

fn other() -> impl Strategy<Value = Other> {
    prop_oneof![
        3 => (any::<Index>(), bad_value(), 0usize..3).prop_map(|(i, b, l)| Other::Bad(i, b, l)),
        1 => "[a-z_]{1,10}".prop_map(Other::Unknown),
        1 => any::<Index>().prop_map(Other::Drop),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn secrets_are_never_in_messages(
        setting in select(vec![
            SecretSetting::Password,
            SecretSetting::TargetPassword,
            SecretSetting::SourcePassword,
            SecretSetting::WebhookHeader,
            SecretSetting::WebhookUrl,
        ]),
        secret in secret(),
        form in 0usize..8,
        place in select(vec![
            Place::FlagEq, Place::FlagSeparate, Place::Env, Place::FileQuoted, Place::FileRaw,
            Place::FileList, Place::FileMapKey, Place::FileMapValue, Place::FileTagged,
        ]),
        others in vec(other(), 0..3),
    ) {
        let (command, mut base) = setting.command();
        let key = setting.key();
        let value = setting.value(&secret.text, form);
        let mut input = Input::default();
        for o in &others {
            match o {
                Other::Bad(i, bad, layer) => {
                    let settings = typed(command);
                    let k = &settings[i.index(settings.len())].key;
                    match layer {
                        0 => input.args.push(format!("--{k}={bad}")),
                        1 => {
                            input.env.insert(env_var(k), bad.clone());
                        }
                        _ => input.file += &format!("{k}: {}\n", yaml_quoted(bad)),
                    }
                }
                Other::Unknown(k) => input.file += &format!("{k}: 1\n"),
                Other::Drop(i) => {
                    let at = 1 + i.index(base.len() - 1);
                    if base[at].starts_with("--") {
                        base.remove(at);
                    }
                }
            }
        }
        match place {
            Place::FlagEq => input.args.push(format!("--{key}={value}")),
            Place::FlagSeparate => input.args.extend([format!("--{key}"), value.clone()]),
            Place::Env => {
                input.env.insert(env_var(key), value.clone());
            }
            Place::FileQuoted => input.file += &format!("{key}: {}\n", yaml_quoted(&value)),
            Place::FileRaw => input.file += &format!("{key}: {value}\n"),
            Place::FileList => input.file += &format!("{key}: [{}]\n", yaml_quoted(&value)),
            Place::FileMapKey => input.file += &format!("{key}: {{{}: 1}}\n", yaml_quoted(&value)),
            Place::FileMapValue => input.file += &format!("{key}: {{k: {}}}\n", yaml_quoted(&value)),
            Place::FileTagged => input.file += &format!("{key}: !secret {}\n", yaml_quoted(&value)),
        }
        let texts: Vec<String> = match load(&base, &input) {
            Ok(loaded) => loaded.warnings,
            Err(failure) => vec![failure.text().to_owned()],
        };
        for text in &texts {
            for piece in &secret.pieces {
                prop_assert!(!text.contains(piece.as_str()), "{:?} shows {:?}: {}", input, piece, text);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Rules and routing files

const RULES_FILE: &str = "/etc/pg_flo/rules.yaml";
const ROUTING_FILE: &str = "/etc/pg_flo/routing.yaml";

/// One rule as written: rule-level keys, then `parameters` (a mapping of these keys, or
/// `None`), or a whole rule that is not a mapping.
#[derive(Clone, Debug, Default)]
struct RuleDoc {
    top: Vec<(String, String)>,
    params: Option<Vec<(String, String)>>,
    raw: Option<String>,
}

impl RuleDoc {
    fn set(list: &mut Vec<(String, String)>, key: &str, value: String) {
        match list.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => list.push((key.to_owned(), value)),
        }
    }

    fn remove(list: &mut Vec<(String, String)>, key: &str) {
        list.retain(|(k, _)| k != key);
    }

    fn top(&mut self, key: &str, value: String) {
        Self::set(&mut self.top, key, value);
    }

    fn param(&mut self, key: &str, value: String) {
        Self::set(self.params.get_or_insert_with(Vec::new), key, value);
    }

    fn render(&self) -> String {
        if let Some(raw) = &self.raw {
            return format!("    - {raw}\n");
        }
        let mut out = String::new();
        let mut lines: Vec<String> = self.top.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        if let Some(params) = &self.params {
            if params.is_empty() {
                lines.push("parameters: {}".to_owned());
            } else {
                lines.push(format!(
                    "parameters:{}",
                    params
                        .iter()
                        .map(|(k, v)| format!("\n        {k}: {v}"))
                        .collect::<String>()
                ));
            }
        }
        for (i, line) in lines.iter().enumerate() {
            out += if i == 0 { "    - " } else { "      " };
            out += line;
            out += "\n";
        }
        out
    }
}

/// A valid rule's kind.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Regex,
    Mask,
    Filter,
    Exclude,
}

/// A valid rule: its kind, column, distinctive value (filter value or regex replacement),
/// operator and operations, and whether its scalars carry a YAML tag.
#[derive(Clone, Debug)]
struct GenRule {
    kind: Kind,
    column: String,
    value: String,
    operator: &'static str,
    operations: Option<Vec<&'static str>>,
    in_params: bool,
    tag: bool,
}

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        select(vec![Kind::Regex, Kind::Mask, Kind::Filter, Kind::Exclude]),
        "c[a-z0-9_]{0,5}",
        "Zq[A-Za-z0-9]{6}",
        select(vec!["eq", "ne", "gt", "lt", "gte", "lte", "contains"]),
        proptest::option::of(proptest::sample::subsequence(
            vec!["INSERT", "UPDATE", "DELETE", "insert", "TRUNCATE"],
            1..4,
        )),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(kind, column, value, operator, operations, in_params, tag)| GenRule {
                kind,
                column,
                value,
                operator,
                operations,
                in_params,
                tag,
            },
        )
}

impl GenRule {
    fn scalar(&self, s: &str) -> String {
        if self.tag {
            format!("!t '{s}'")
        } else {
            format!("'{s}'")
        }
    }

    fn doc(&self) -> RuleDoc {
        let mut d = RuleDoc::default();
        let kind = match self.kind {
            Kind::Regex | Kind::Mask => "transform",
            Kind::Filter => "filter",
            Kind::Exclude => "exclude_column",
        };
        d.top("type", kind.to_owned());
        d.top("column", self.scalar(&self.column));
        match self.kind {
            Kind::Regex => {
                d.param("type", "regex".to_owned());
                d.param("pattern", self.scalar("^(.)[a-z]*$"));
                d.param("replace", self.scalar(&self.value));
            }
            Kind::Mask => {
                d.param("type", "mask".to_owned());
                d.param("mask_char", self.scalar("*"));
            }
            Kind::Filter => {
                d.param("operator", self.scalar(self.operator));
                d.param("value", self.scalar(&self.value));
            }
            Kind::Exclude => {}
        }
        if let Some(ops) = &self.operations {
            let list = format!("[{}]", ops.join(", "));
            if self.in_params {
                d.param("operations", list);
            } else {
                d.top("operations", list);
            }
        }
        d
    }
}

/// What breaks the broken rule.
#[derive(Clone, Copy, Debug)]
enum Break {
    MissingColumn,
    ColumnNotText,
    UnknownType,
    MissingType,
    TransformWithoutType,
    UnknownTransform,
    RegexWithoutPattern,
    RegexWithoutReplace,
    BadRegex,
    EmptyMask,
    UnknownOperator,
    FilterWithoutOperator,
    FilterWithoutValue,
    ValueNotScalar,
    ReplaceNotScalar,
    UnknownOperation,
    OperationsNotAList,
    OperationsDisagree,
    BadAllowEmptyDeletes,
    ParametersNotAMapping,
    NotAMapping,
}

const BREAKS: [Break; 21] = [
    Break::MissingColumn,
    Break::ColumnNotText,
    Break::UnknownType,
    Break::MissingType,
    Break::TransformWithoutType,
    Break::UnknownTransform,
    Break::RegexWithoutPattern,
    Break::RegexWithoutReplace,
    Break::BadRegex,
    Break::EmptyMask,
    Break::UnknownOperator,
    Break::FilterWithoutOperator,
    Break::FilterWithoutValue,
    Break::ValueNotScalar,
    Break::ReplaceNotScalar,
    Break::UnknownOperation,
    Break::OperationsNotAList,
    Break::OperationsDisagree,
    Break::BadAllowEmptyDeletes,
    Break::ParametersNotAMapping,
    Break::NotAMapping,
];

/// Breaks `rule` (its kind is changed to the one the break needs); returns the message the
/// problem must contain. `word` is an unknown name.
fn break_rule(rule: &GenRule, b: Break, word: &str) -> (RuleDoc, String) {
    let as_kind = |kind| {
        GenRule {
            kind,
            ..rule.clone()
        }
        .doc()
    };
    let v = rule.scalar(&rule.value);
    match b {
        Break::MissingColumn => {
            let mut d = as_kind(Kind::Filter);
            RuleDoc::remove(&mut d.top, "column");
            (d, "missing `column`".to_owned())
        }
        Break::ColumnNotText => {
            let mut d = as_kind(Kind::Filter);
            d.top("column", format!("[{}]", rule.column));
            (d, "`column` must be a non-empty string".to_owned())
        }
        Break::UnknownType => {
            let mut d = as_kind(Kind::Filter);
            d.top("type", word.to_owned());
            (d, format!("unknown rule type \"{word}\""))
        }
        Break::MissingType => {
            let mut d = as_kind(Kind::Filter);
            RuleDoc::remove(&mut d.top, "type");
            (d, "missing `type`".to_owned())
        }
        Break::TransformWithoutType => {
            let mut d = as_kind(Kind::Regex);
            RuleDoc::remove(d.params.as_mut().unwrap(), "type");
            (d, "missing parameter `type`".to_owned())
        }
        Break::UnknownTransform => {
            let mut d = as_kind(Kind::Regex);
            d.param("type", word.to_owned());
            (d, format!("unknown transform type \"{word}\""))
        }
        Break::RegexWithoutPattern => {
            let mut d = as_kind(Kind::Regex);
            RuleDoc::remove(d.params.as_mut().unwrap(), "pattern");
            (d, "missing parameter `pattern`".to_owned())
        }
        Break::RegexWithoutReplace => {
            let mut d = as_kind(Kind::Regex);
            RuleDoc::remove(d.params.as_mut().unwrap(), "replace");
            (d, "missing parameter `replace`".to_owned())
        }
        Break::BadRegex => {
            let mut d = as_kind(Kind::Regex);
            d.param("pattern", rule.scalar(&format!("({word}")));
            (d, "invalid regex pattern".to_owned())
        }
        Break::EmptyMask => {
            let mut d = as_kind(Kind::Mask);
            d.param("mask_char", rule.scalar(""));
            (d, "parameter `mask_char` must not be empty".to_owned())
        }
        Break::UnknownOperator => {
            let mut d = as_kind(Kind::Filter);
            d.param("operator", rule.scalar(word));
            (d, format!("unknown filter operator \"{word}\""))
        }
        Break::FilterWithoutOperator => {
            let mut d = as_kind(Kind::Filter);
            RuleDoc::remove(d.params.as_mut().unwrap(), "operator");
            (d, "missing parameter `operator`".to_owned())
        }
        Break::FilterWithoutValue => {
            let mut d = as_kind(Kind::Filter);
            RuleDoc::remove(d.params.as_mut().unwrap(), "value");
            (d, "missing parameter `value`".to_owned())
        }
        Break::ValueNotScalar => {
            let mut d = as_kind(Kind::Filter);
            d.param("value", format!("[{v}]"));
            (
                d,
                "parameter `value` must be a string, number or boolean".to_owned(),
            )
        }
        Break::ReplaceNotScalar => {
            let mut d = as_kind(Kind::Regex);
            d.param("replace", format!("{{k: {v}}}"));
            (d, "parameter `replace` must be a string".to_owned())
        }
        Break::UnknownOperation => {
            let mut d = as_kind(rule.kind);
            d.top("operations", format!("[INSERT, {}]", rule.scalar(word)));
            (d, format!("unknown operation \"{word}\""))
        }
        Break::OperationsNotAList => {
            let mut d = as_kind(rule.kind);
            d.top("operations", "3".to_owned());
            (d, "`operations` must be a list".to_owned())
        }
        Break::OperationsDisagree => {
            let mut d = as_kind(Kind::Filter);
            d.top("operations", "[INSERT]".to_owned());
            d.param("operations", "[UPDATE]".to_owned());
            (d, "with different values".to_owned())
        }
        Break::BadAllowEmptyDeletes => {
            let mut d = as_kind(rule.kind);
            d.top("allow_empty_deletes", word.to_owned());
            (d, "`allow_empty_deletes` must be true or false".to_owned())
        }
        Break::ParametersNotAMapping => {
            let mut d = as_kind(Kind::Filter);
            d.params = None;
            d.top("parameters", format!("[operator, eq, value, {v}]"));
            (d, "`parameters` must be a mapping".to_owned())
        }
        Break::NotAMapping => (
            RuleDoc {
                raw: Some(v.clone()),
                ..RuleDoc::default()
            },
            "a rule must be a mapping".to_owned(),
        ),
    }
}

/// A rules file: tables with valid rules, one of them broken.
#[derive(Clone, Debug)]
struct BrokenRules {
    tables: Vec<(String, Vec<GenRule>)>,
    /// Table index, rule index, break, unknown word.
    broken: (Index, Index, Break, String),
}

fn broken_rules() -> impl Strategy<Value = BrokenRules> {
    (
        vec(
            (
                proptest::option::of("s[a-z0-9_]{0,4}"),
                "[a-z0-9_]{0,6}",
                vec(gen_rule(), 1..4),
            ),
            1..4,
        ),
        any::<Index>(),
        any::<Index>(),
        select(BREAKS.to_vec()),
        "zz[a-z]{1,5}",
    )
        .prop_map(|(tables, t, n, b, word)| BrokenRules {
            tables: tables
                .into_iter()
                .enumerate()
                .map(|(i, (schema, name, rules))| {
                    let table = format!("t{i}_{name}");
                    let key = schema.map_or(table.clone(), |s| format!("{s}.{table}"));
                    (key, rules)
                })
                .collect(),
            broken: (t, n, b, word),
        })
}

/// A valid route: a destination, column mappings and operations, all distinctive names.
#[derive(Clone, Debug)]
struct GenRoute {
    destination: String,
    /// Source column, destination column (distinctive).
    columns: Vec<(String, String)>,
    operations: Option<Vec<&'static str>>,
    tag: bool,
}

/// What breaks the broken route.
#[derive(Clone, Copy, Debug)]
enum RouteBreak {
    UnknownOperation,
    OperationsNotAList,
    DestinationNotAName,
    MappingWithoutSource,
    MappingDuplicateDestination,
    MappingNotAMap,
    MappingsNotAList,
    RouteNotAMap,
}

fn gen_route() -> impl Strategy<Value = GenRoute> {
    (
        "Zq[A-Za-z0-9]{6}",
        vec("Zq[A-Za-z0-9]{6}", 1..4),
        proptest::option::of(proptest::sample::subsequence(
            vec!["INSERT", "UPDATE", "delete", "TRUNCATE", "DDL"],
            0..4,
        )),
        any::<bool>(),
    )
        .prop_map(|(destination, dests, operations, tag)| GenRoute {
            destination,
            columns: dests
                .into_iter()
                .enumerate()
                .map(|(i, d)| (format!("c{i}"), format!("{d}{i}")))
                .collect(),
            operations,
            tag,
        })
}

impl GenRoute {
    fn scalar(&self, s: &str) -> String {
        if self.tag {
            format!("!t '{s}'")
        } else {
            format!("'{s}'")
        }
    }

    /// The route as the value of its key (the text after `key:`), broken by `b` (the break,
    /// which column mapping, the unknown word); and the message the problem must contain.
    fn render(&self, b: Option<(RouteBreak, usize, &str)>) -> (String, String) {
        let mut out = String::new();
        let mut message = String::new();
        let mapping = b.map_or(usize::MAX, |(_, i, _)| i % self.columns.len());
        match b {
            Some((RouteBreak::DestinationNotAName, _, _)) => {
                out += "  destination_table: []\n";
                message = "destination_table must be a non-empty table name".to_owned();
            }
            _ => out += &format!("  destination_table: {}\n", self.scalar(&self.destination)),
        }
        if let Some((RouteBreak::MappingsNotAList, _, _)) = b {
            out += "  column_mappings: {source: a, destination: b}\n";
            message = "column_mappings must be a list".to_owned();
        } else {
            out += "  column_mappings:\n";
            for (i, (source, dest)) in self.columns.iter().enumerate() {
                let source = self.scalar(source);
                let dest = self.scalar(dest);
                match b {
                    Some((RouteBreak::MappingWithoutSource, _, _)) if i == mapping => {
                        out += &format!("    - destination: {dest}\n");
                        message = format!("column_mappings[{i}]: source is missing");
                    }
                    Some((RouteBreak::MappingNotAMap, _, _)) if i == mapping => {
                        out += &format!("    - {dest}\n");
                        message = format!("column_mappings[{i}] must be a map");
                    }
                    Some((RouteBreak::MappingDuplicateDestination, _, _)) if i == mapping => {
                        let first = self.scalar(&self.columns[0].1);
                        out += &format!("    - {{source: x{i}, destination: {first}}}\n");
                        message = format!("column_mappings[{i}]: destination column");
                    }
                    _ => out += &format!("    - {{source: {source}, destination: {dest}}}\n"),
                }
            }
        }
        match (b, &self.operations) {
            (Some((RouteBreak::UnknownOperation, _, word)), _) => {
                out += &format!("  operations: [INSERT, {}]\n", self.scalar(word));
                message = format!("unknown operation \"{word}\"");
            }
            (Some((RouteBreak::OperationsNotAList, _, _)), _) => {
                out += "  operations: INSERT\n";
                message = "operations must be a list".to_owned();
            }
            (_, Some(ops)) => out += &format!("  operations: [{}]\n", ops.join(", ")),
            (_, None) => {}
        }
        if let Some((RouteBreak::RouteNotAMap, _, _)) = b {
            return (
                format!(" [{}]\n", self.scalar(&self.destination)),
                "must be a map with destination_table".to_owned(),
            );
        }
        (format!("\n{out}"), message)
    }
}

proptest! {
    #![proptest_config(config())]

    /// One broken rule among valid ones: every problem names the file, its table and its
    /// number; the expected problem is there; no rule's value (filter value, regex
    /// replacement) is quoted.
    #[test]
    fn a_broken_rule_is_named_and_no_value_is_quoted(file in broken_rules()) {
        let (t, n, b, word) = &file.broken;
        let t = t.index(file.tables.len());
        let n = n.index(file.tables[t].1.len());
        let mut yaml = "tables:\n".to_owned();
        let mut want = String::new();
        for (i, (table, rules)) in file.tables.iter().enumerate() {
            yaml += &format!("  {table}:\n");
            for (j, rule) in rules.iter().enumerate() {
                if (i, j) == (t, n) {
                    let (doc, message) = break_rule(rule, *b, word);
                    yaml += &doc.render();
                    want = message;
                } else {
                    yaml += &rule.doc().render();
                }
            }
        }
        let err = match Rules::from_yaml(RULES_FILE, &yaml) {
            Ok(_) => return Err(TestCaseError::fail(format!("accepted:\n{yaml}"))),
            Err(e) => e,
        };
        let text = error_chain(&err);
        let RulesError::Invalid { path, problems } = &err else {
            return Err(TestCaseError::fail(format!("{text}\n{yaml}")));
        };
        prop_assert_eq!(path, RULES_FILE);
        prop_assert!(text.contains(RULES_FILE), "{}", text);
        let at = format!("{RULES_FILE}: table {}, rule #{}: ", file.tables[t].0, n + 1);
        prop_assert!(problems.iter().all(|p| p.starts_with(&at)), "{:?}, want {}\n{}", problems, at, yaml);
        prop_assert!(problems.iter().any(|p| p.contains(&want)), "{:?}, want {}\n{}", problems, want, yaml);
        for (_, rules) in &file.tables {
            for rule in rules {
                prop_assert!(!text.contains(&rule.value), "{} quoted:\n{}\n{}", rule.value, text, yaml);
            }
        }
    }

    /// One broken route among valid ones: every problem names the file and the route (and
    /// the column mapping); no destination name of another field is quoted.
    #[test]
    fn a_broken_route_is_named_and_no_other_value_is_quoted(
        routes in vec((proptest::option::of("s[a-z0-9_]{0,4}"), gen_route()), 1..4),
        which in any::<Index>(),
        b in select(vec![
            RouteBreak::UnknownOperation, RouteBreak::OperationsNotAList,
            RouteBreak::DestinationNotAName, RouteBreak::MappingWithoutSource,
            RouteBreak::MappingDuplicateDestination, RouteBreak::MappingNotAMap,
            RouteBreak::MappingsNotAList, RouteBreak::RouteNotAMap,
        ]),
        mapping in 0usize..4,
        word in "zz[a-z]{1,5}",
    ) {
        let broken = which.index(routes.len());
        let mut yaml = String::new();
        let mut want = String::new();
        let mut keys = Vec::new();
        let mut allowed = String::new();
        for (i, (schema, route)) in routes.iter().enumerate() {
            let table = format!("t{i}");
            let key = schema.as_ref().map_or(table.clone(), |s| format!("{s}.{table}"));
            let b = if i == broken {
                let mapping = match b {
                    // A duplicate needs an earlier mapping.
                    RouteBreak::MappingDuplicateDestination if route.columns.len() > 1 => {
                        1 + mapping % (route.columns.len() - 1)
                    }
                    RouteBreak::MappingDuplicateDestination => usize::MAX,
                    _ => mapping,
                };
                if mapping == usize::MAX {
                    None
                } else {
                    if let RouteBreak::MappingDuplicateDestination = b {
                        allowed = route.columns[0].1.clone();
                    }
                    Some((b, mapping, word.as_str()))
                }
            } else {
                None
            };
            let (body, message) = route.render(b);
            yaml += &format!("{key}:{body}");
            if i == broken {
                want = message;
            }
            keys.push(key);
        }
        let result = Routes::from_yaml(ROUTING_FILE, &yaml);
        if want.is_empty() {
            // The break did not apply (a duplicate of a single mapping): a valid file.
            prop_assert!(result.is_ok(), "{:?}\n{}", result.err().map(|e| error_chain(&e)), yaml);
            return Ok(());
        }
        let err = match result {
            Ok(_) => return Err(TestCaseError::fail(format!("accepted:\n{yaml}"))),
            Err(e) => e,
        };
        let text = error_chain(&err);
        let RoutingError::Invalid { path, problems } = &err else {
            return Err(TestCaseError::fail(format!("{text}\n{yaml}")));
        };
        prop_assert_eq!(path, ROUTING_FILE);
        prop_assert!(text.contains(ROUTING_FILE), "{}", text);
        let at = format!("route {:?}: ", keys[broken]);
        prop_assert!(problems.iter().all(|p| p.starts_with(&at)), "{:?}, want {}\n{}", problems, at, yaml);
        prop_assert!(problems.iter().any(|p| p.contains(&want)), "{:?}, want {}\n{}", problems, want, yaml);
        for (_, route) in &routes {
            let names = std::iter::once(&route.destination).chain(route.columns.iter().map(|(_, d)| d));
            for name in names {
                if *name != allowed {
                    prop_assert!(!text.contains(name.as_str()), "{} quoted:\n{}\n{}", name, text, yaml);
                }
            }
        }
    }
}
