//! Running `helm` on the chart `charts/pg-flo-operator/` from the tests (`chart.rs`,
//! `monitoring_metrics.rs`).
//!
//! Needs `helm` (v3.8+ or v4): `$HELM`, else `<repo>/target/tools/helm`, which
//! `scripts/fetch-helm.sh` (run by `scripts/setup.sh`) puts there. A missing helm fails the
//! tests; they are never skipped.

#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;
use std::process::{Command, Output};

pub const RELEASE: &str = "flo";
pub const NAMESPACE: &str = "pgflo-system";
/// `<release>-<chart>`: the release name does not contain the chart name.
pub const FULLNAME: &str = "flo-pg-flo-operator";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/pg-flo-operator")
}

fn helm_path() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM").filter(|h| !h.is_empty()) {
        let h = PathBuf::from(h);
        // A bare name is looked up on PATH; a relative path is relative to the repository
        // root (tests run in operator/, which would surprise).
        return if h.is_relative() && h.components().count() > 1 {
            repo_root().join(h)
        } else {
            h
        };
    }
    let p = repo_root().join("target/tools/helm");
    if !p.is_file() {
        panic!(
            "helm not found: HELM is unset and {} does not exist; run `scripts/fetch-helm.sh` \
             (or `scripts/setup.sh`), or set HELM=/path/to/helm",
            p.display()
        );
    }
    p
}

/// Runs helm with its config, cache and data dirs in a throw-away directory, so the user's
/// repositories and plugins play no part.
pub fn helm(args: &[&str]) -> Output {
    let helm = helm_path();
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    std::fs::create_dir_all(&home).unwrap();
    Command::new(&helm)
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run `scripts/fetch-helm.sh` or set HELM=/path/to/helm",
                helm.display()
            )
        })
}

pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` of the chart as release [`RELEASE`] in [`NAMESPACE`] with the extra `set`
/// arguments: the rendered multi-document YAML.
pub fn template_yaml(set: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(set);
    helm_ok(&args)
}

/// The non-empty documents of a multi-document YAML stream.
pub fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|de| serde::Deserialize::deserialize(de).unwrap())
        .filter(|d: &serde_yaml::Value| !d.is_null())
        .collect()
}
