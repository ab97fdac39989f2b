//! The committed CRDs in `crds/` are what the Rust types generate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::PathBuf;

use pg_flo_operator::crd;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("crds")
}

#[test]
fn committed_crds_match_the_types() {
    let mut drifted = Vec::new();
    for c in crd::all_crds() {
        let name = crd::crd_file_name(&c);
        let path = crds_dir().join(&name);
        let want = crd::crd_yaml(&c).unwrap();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            drifted.push(name);
        }
    }
    assert!(
        drifted.is_empty(),
        "CRDs out of date: {drifted:?}; run `cargo run -p pg-flo-operator -- crd --out-dir crds` and commit"
    );
}

#[test]
fn crds_dir_holds_only_generated_files() {
    let mut want: Vec<String> = crd::all_crds().iter().map(crd::crd_file_name).collect();
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(crds_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    assert_eq!(have, want, "stale files in crds/");
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
