//! The committed CRDs in `crds/` and their copy in the Helm chart
//! (`charts/pg-flo-operator/files/crds/`, rendered by `templates/crds.yaml`) are what the Rust
//! types generate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};

use pg_flo_operator::crd;

/// The one command that regenerates both copies.
const REGENERATE: &str = "cargo run -p pg-flo-operator -- crd --out-dir crds \
     && cp crds/*.yaml charts/pg-flo-operator/files/crds/";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crds_dir() -> PathBuf {
    repo_root().join("crds")
}

fn chart_crds_dir() -> PathBuf {
    repo_root().join("charts/pg-flo-operator/files/crds")
}

/// Names of the files in `dir` whose content differs from the generated CRD (or are missing).
fn drifted(dir: &Path) -> Vec<String> {
    let mut drifted = Vec::new();
    for c in crd::all_crds() {
        let name = crd::crd_file_name(&c);
        let want = crd::crd_yaml(&c).unwrap();
        let have = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if have != want {
            drifted.push(name);
        }
    }
    drifted
}

/// (expected, present) file names of `dir`, sorted.
fn file_names(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut want: Vec<String> = crd::all_crds().iter().map(crd::crd_file_name).collect();
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    (want, have)
}

#[test]
fn committed_crds_match_the_types() {
    let drifted = drifted(&crds_dir());
    assert!(
        drifted.is_empty(),
        "CRDs out of date: {drifted:?}; run `{REGENERATE}` and commit"
    );
}

#[test]
fn chart_crds_match_the_types() {
    let drifted = drifted(&chart_crds_dir());
    assert!(
        drifted.is_empty(),
        "chart CRDs (charts/pg-flo-operator/files/crds/) out of date: {drifted:?}; run `{REGENERATE}` and commit"
    );
}

#[test]
fn crds_dir_holds_only_generated_files() {
    let (want, have) = file_names(&crds_dir());
    assert_eq!(have, want, "stale files in crds/; remove them");
}

#[test]
fn chart_crds_dir_holds_only_generated_files() {
    let (want, have) = file_names(&chart_crds_dir());
    assert_eq!(
        have, want,
        "stale files in charts/pg-flo-operator/files/crds/; remove them"
    );
}

#[test]
fn multi_document_output_parses_back() {
    let yaml = crd::all_crds_yaml().unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "replicationgroups.pgflo.io",
            "rules.pgflo.io",
            "routes.pgflo.io"
        ]
    );
}
