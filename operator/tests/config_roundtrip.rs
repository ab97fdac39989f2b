//! The config the operator renders is the config the runtime loads: for every example group
//! (`operator/examples/`) and every builder snapshot (`tests/snapshots/`), each `pg_flo`
//! container's arguments, environment (Secrets and the downward API replaced by stand-ins,
//! `$(VAR)` expanded as the kubelet does) and mounted config file are loaded with the runtime's
//! own loader (`pg_flo::config::load_with`): zero errors, zero warnings, and every key of the
//! rendered file is one the command reads (a key the runtime would not look at counts as a
//! silent default).
//!
//! Both sides use `pg_flo_config::runtime::Settings`, so a key can only drift where its names
//! meet: the serde key (what the operator writes and the file parser knows), the clap flag
//! (what the runtime looks up; its env variable is derived from it) and the operator's
//! hand-written `PG_FLO_*` variables. Checked by hand with temporary edits, each of which made
//! this test fail: `#[serde(rename = "batch-sizes")]` on `WorkerSettings::batch_size` (the
//! rendered key is no longer read, and the snapshots' `batch-size` is unknown),
//! `#[arg(long = "dead-letters")]` on `WorkerSettings::dead_letter` (the rendered
//! `dead-letter` is no longer read) and `PG_FLO_TARGET_PASSWORD` renamed in
//! `resources/workloads.rs` (a required setting missing).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use e2e::TempDir;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec};
use pg_flo::cli::CommandLine;
use pg_flo_operator::crd::{ReplicationGroup, Route, Rule};
use pg_flo_operator::resources::{build, CONFIG_DIR};

const IMAGE: &str = "ghcr.io/pg-flo/pg-flo:test";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a group's pods see: the ConfigMap's files and the pod specs.
struct Rendered {
    name: String,
    files: BTreeMap<String, String>,
    pods: Vec<PodSpec>,
}

fn pod_of_workload(d: &StatefulSet) -> PodSpec {
    d.spec.clone().unwrap().template.spec.unwrap()
}

fn pod_of_job(j: &Job) -> PodSpec {
    j.spec.clone().unwrap().template.spec.unwrap()
}

/// Every document of a multi-document YAML file with its `kind`.
fn documents(path: &Path) -> Vec<(String, serde_yaml::Value)> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            (kind, v)
        })
        .filter(|(kind, _)| !kind.is_empty())
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every ReplicationGroup of the examples, built with every example Rule and Route (aimed at
/// it) and a webhook header key.
fn examples() -> Vec<Rendered> {
    let mut groups = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut routes: Vec<Route> = Vec::new();
    for path in yaml_files(&manifest_dir().join("examples")) {
        for (kind, doc) in documents(&path) {
            match kind.as_str() {
                "ReplicationGroup" => {
                    let rg: ReplicationGroup = serde_yaml::from_value(doc).unwrap();
                    groups.push((path.clone(), rg));
                }
                "Rule" => rules.push(serde_yaml::from_value(doc).unwrap()),
                "Route" => routes.push(serde_yaml::from_value(doc).unwrap()),
                _ => {}
            }
        }
    }
    assert!(groups.len() >= 3, "{groups:?}", groups = groups.len());
    groups
        .into_iter()
        .map(|(path, mut rg)| {
            let name = rg.metadata.name.clone().unwrap();
            rg.metadata.namespace = Some("cdc".into());
            rg.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
            let mine = |group: &str| group == name;
            let rules: Vec<Rule> = rules
                .iter()
                .filter(|r| mine(&r.spec.group_ref.name))
                .cloned()
                .collect();
            let routes: Vec<Route> = routes
                .iter()
                .filter(|r| mine(&r.spec.group_ref.name))
                .cloned()
                .collect();
            let d = build(&rg, &rules, &routes, IMAGE, &["Authorization".into()]).unwrap();
            let mut pods = vec![pod_of_workload(&d.replicator), pod_of_workload(&d.worker)];
            pods.extend(d.copy_job.as_ref().map(pod_of_job));
            Rendered {
                name: format!("{} ({name})", path.display()),
                files: d.config_map.data.unwrap(),
                pods,
            }
        })
        .collect()
}

/// The ConfigMap and the pods of every builder snapshot.
fn snapshots() -> Vec<Rendered> {
    let paths = yaml_files(&manifest_dir().join("tests/snapshots"));
    assert!(paths.len() >= 8, "{paths:?}");
    paths
        .into_iter()
        .map(|path| {
            let mut files = BTreeMap::new();
            let mut pods = Vec::new();
            for (kind, doc) in documents(&path) {
                match kind.as_str() {
                    "ConfigMap" => {
                        let cm: ConfigMap = serde_yaml::from_value(doc).unwrap();
                        files.extend(cm.data.unwrap());
                    }
                    "StatefulSet"
                        if doc["metadata"]["labels"]["app.kubernetes.io/component"] != "nats" =>
                    {
                        pods.push(pod_of_workload(&serde_yaml::from_value(doc).unwrap()))
                    }
                    "Job" => pods.push(pod_of_job(&serde_yaml::from_value(doc).unwrap())),
                    _ => {}
                }
            }
            Rendered {
                name: path.display().to_string(),
                files,
                pods,
            }
        })
        .collect()
}

/// `$(NAME)` replaced by the value of an earlier variable, as the kubelet does.
fn expand(value: &str, env: &HashMap<String, String>) -> String {
    let mut out = value.to_owned();
    for (name, v) in env {
        out = out.replace(&format!("$({name})"), v);
    }
    out
}

/// Loads every `pg_flo` container of `r` with the runtime's loader; returns the problems.
fn load_all(r: &Rendered) -> Vec<String> {
    let dir = TempDir::new("pg-flo-config-roundtrip").unwrap();
    for (file, text) in &r.files {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let mut problems = Vec::new();
    let mut containers = 0;
    for pod in &r.pods {
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            if c.command.as_deref() != Some(&["pg_flo".to_owned()][..]) {
                continue;
            }
            containers += 1;
            let mut env = HashMap::new();
            for e in c.env.iter().flatten() {
                let value = match (&e.value, &e.value_from) {
                    (Some(v), _) => expand(v, &env),
                    (None, Some(from)) if from.secret_key_ref.is_some() => "s3cret".to_owned(),
                    (None, Some(_)) => "downward-api".to_owned(),
                    (None, None) => String::new(),
                };
                env.insert(e.name.clone(), value);
            }
            let args: Vec<String> = c.args.clone().unwrap_or_default();
            let argv = std::iter::once("pg_flo".to_owned()).chain(args.iter().map(|a| {
                a.replace(
                    &format!("{CONFIG_DIR}/"),
                    &format!("{}/", dir.path().display()),
                )
            }));
            let what = format!("{}: {} {}", r.name, c.name, args.join(" "));
            let cli = match CommandLine::try_parse_from(argv) {
                Ok(cli) => cli,
                Err(e) => {
                    problems.push(format!("{what}: {e}"));
                    continue;
                }
            };
            match pg_flo::config::load_with(&cli, &|name| env.get(name).cloned()) {
                Ok(loaded) => {
                    for w in loaded.warnings {
                        problems.push(format!("{what}: warning: {w}"));
                    }
                    let Some(path) = loaded.config_file else {
                        problems.push(format!("{what}: no config file"));
                        continue;
                    };
                    let read: Vec<String> = cli.settings().into_iter().map(|s| s.key).collect();
                    let text = std::fs::read_to_string(&path).unwrap();
                    let file: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
                    for key in file.keys() {
                        let key = key.as_str().unwrap();
                        if !read.iter().any(|k| k == key) {
                            problems.push(format!(
                                "{what}: {} has key {key}, which this command does not read",
                                path.display()
                            ));
                        }
                    }
                }
                Err(e) => problems.push(format!("{what}: {}", pg_flo::redact::error_chain(&e))),
            }
        }
    }
    assert!(
        containers >= 2,
        "{}: {containers} pg_flo containers",
        r.name
    );
    problems
}

#[test]
fn every_example_group_loads_cleanly_in_the_runtime() {
    let problems: Vec<String> = examples().iter().flat_map(load_all).collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_builder_snapshot_loads_cleanly_in_the_runtime() {
    let problems: Vec<String> = snapshots().iter().flat_map(load_all).collect();
    assert!(problems.is_empty(), "{problems:#?}");
}
