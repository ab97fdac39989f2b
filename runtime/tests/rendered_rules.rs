//! The rules and routing files the operator renders (its committed builder snapshots,
//! `operator/tests/snapshots/*.yaml`, checked against the operator's output by its own tests)
//! load with the worker's loaders without a warning. A key renamed on the worker's side, or in
//! the operator's output, fails here or in the operator's snapshot test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::PathBuf;

use pg_flo::worker::routing::Routes;
use pg_flo::worker::rules::Rules;
use serde_yaml::Value;

/// `(snapshot, content)` of every `file` (`rules.yaml`, `routing.yaml`) the snapshots hold.
fn rendered(file: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../operator/tests/snapshots");
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            if doc["kind"].as_str() != Some("ConfigMap") {
                continue;
            }
            if let Some(content) = doc["data"][file].as_str() {
                out.push((path.display().to_string(), content.to_owned()));
            }
        }
    }
    out
}

#[test]
fn rendered_rules_files_load_without_warnings() {
    let files = rendered("rules.yaml");
    assert!(!files.is_empty(), "no snapshot renders rules.yaml");
    for (snapshot, yaml) in files {
        let (rules, warnings) = Rules::from_yaml("rules.yaml", &yaml)
            .unwrap_or_else(|e| panic!("{snapshot}: {e}\n{yaml}"));
        assert!(warnings.is_empty(), "{snapshot}: {warnings:?}");
        assert!(!rules.is_empty(), "{snapshot}");
    }
}

#[test]
fn rendered_routing_files_load_without_warnings() {
    let files = rendered("routing.yaml");
    assert!(!files.is_empty(), "no snapshot renders routing.yaml");
    for (snapshot, yaml) in files {
        let (routes, warnings) = Routes::from_yaml("routing.yaml", &yaml)
            .unwrap_or_else(|e| panic!("{snapshot}: {e}\n{yaml}"));
        assert!(warnings.is_empty(), "{snapshot}: {warnings:?}");
        assert!(!routes.is_empty(), "{snapshot}");
    }
}
