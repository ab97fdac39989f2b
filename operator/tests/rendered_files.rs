//! The contract between the operator and the worker for rules and routing: every example Rule
//! and Route (`operator/examples/`) is valid for the operator, renders into `rules.yaml` /
//! `routing.yaml`, and the rendered files load with the worker's parser and validator
//! (`pg_flo_config::rules::parse` / `routing::parse`, which `pg_flo::worker::rules::Rules` and
//! `routing::Routes` load with) without a warning or a problem, with every rule and route.
//! The keys written are pg_flo's, listed here independently of the shared model: renaming a
//! key of the model or of the CRD fails this test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::path::PathBuf;

use pg_flo_operator::controller::attach::{route_problems, rule_problems};
use pg_flo_operator::controller::validate::{validate, Refs};
use pg_flo_operator::crd::{ReplicationGroup, Route, Rule};
use pg_flo_operator::resources::config_map;
use serde_yaml::Value;

/// pg_flo's rules file keys (`tables`, rule keys, parameters).
const RULES_KEYS: &[&str] = &[
    "tables",
    "type",
    "column",
    "parameters",
    "operations",
    "allow_empty_deletes",
    "pattern",
    "replace",
    "mask_char",
    "operator",
    "value",
];
/// pg_flo's routing file keys (below the source table key).
const ROUTING_KEYS: &[&str] = &[
    "source_table",
    "destination_table",
    "column_mappings",
    "operations",
    "source",
    "destination",
];

/// Every Rule and Route of every example file.
fn examples() -> (Vec<Rule>, Vec<Route>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let (mut rules, mut routes) = (Vec::new(), Vec::new());
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            match value["kind"].as_str() {
                Some("Rule") => rules.push(serde_yaml::from_value(value).unwrap()),
                Some("Route") => routes.push(serde_yaml::from_value(value).unwrap()),
                _ => {}
            }
        }
    }
    (rules, routes)
}

/// A valid group of the given name (the minimal example, renamed).
fn group(name: &str) -> ReplicationGroup {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/replicationgroup-minimal.yaml");
    let mut rg: ReplicationGroup =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    rg.metadata.name = Some(name.into());
    rg.metadata.namespace = Some("cdc".into());
    rg.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    rg
}

/// The keys of every mapping in `value`, except those at depth `data_keys_at` (table names).
fn keys(value: &Value, data_keys_at: usize, depth: usize, out: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                if depth != data_keys_at {
                    out.insert(k.as_str().unwrap().to_owned());
                }
                keys(v, data_keys_at, depth + 1, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| keys(v, data_keys_at, depth, out)),
        _ => {}
    }
}

fn only_pg_flo_keys(yaml: &str, data_keys_at: usize, allowed: &[&str]) {
    let mut found = BTreeSet::new();
    keys(
        &serde_yaml::from_str(yaml).unwrap(),
        data_keys_at,
        0,
        &mut found,
    );
    let unknown: Vec<&String> = found
        .iter()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "keys pg_flo does not know: {unknown:?}\n{yaml}"
    );
}

#[test]
fn every_example_rule_renders_into_a_rules_file_the_worker_loads_cleanly() {
    let (rules, _) = examples();
    assert!(rules.len() >= 2, "{}", rules.len());
    let mut seen = BTreeSet::new();
    for rule in &rules {
        assert_eq!(rule_problems(rule), Vec::<String>::new());
        let rg = group(&rule.spec.group_ref.name);
        let cm = config_map(&rg, std::slice::from_ref(rule), &[]).unwrap();
        let yaml = &cm.data.unwrap()["rules.yaml"];
        let (valid, warnings) = pg_flo_config::rules::parse("rules.yaml", yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert!(warnings.is_empty(), "{warnings:?}\n{yaml}");
        assert_eq!(valid.tables.len(), 1);
        assert_eq!(valid.tables[0].table, rule.spec.table);
        assert_eq!(valid.tables[0].rules.len(), rule.spec.rules.len(), "{yaml}");
        // depth 1 holds the table names
        only_pg_flo_keys(yaml, 1, RULES_KEYS);
        seen.extend(rule.spec.rules.iter().map(|r| format!("{:?}", r.type_)));
        seen.extend(
            rule.spec
                .rules
                .iter()
                .filter_map(|r| r.transform.as_ref())
                .map(|t| format!("{:?}", t.type_)),
        );
    }
    // The examples cover every kind of rule and transform.
    for kind in ["Transform", "Filter", "ExcludeColumn", "Regex", "Mask"] {
        assert!(
            seen.contains(kind),
            "no example rule of kind {kind}: {seen:?}"
        );
    }
}

#[test]
fn every_example_route_renders_into_a_routing_file_the_worker_loads_cleanly() {
    let (_, routes) = examples();
    assert!(routes.len() >= 2, "{}", routes.len());
    for route in &routes {
        assert_eq!(route_problems(route), Vec::<String>::new());
        let rg = group(&route.spec.group_ref.name);
        let cm = config_map(&rg, &[], std::slice::from_ref(route)).unwrap();
        let yaml = &cm.data.unwrap()["routing.yaml"];
        let (valid, warnings) = pg_flo_config::routing::parse("routing.yaml", yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert!(warnings.is_empty(), "{warnings:?}\n{yaml}");
        let [(key, valid)] = &valid.routes[..] else {
            panic!("{valid:?}")
        };
        assert_eq!(key, &route.spec.source_table);
        assert_eq!(valid.destination_table, route.spec.destination_table);
        assert_eq!(valid.columns.len(), route.spec.column_mappings.len());
        // depth 0 holds the source table names
        only_pg_flo_keys(yaml, 0, ROUTING_KEYS);
    }
}

#[test]
fn the_operator_refuses_what_the_worker_would_refuse() {
    let rule: Rule = serde_yaml::from_str(
        "apiVersion: pgflo.io/v1alpha1
kind: Rule
metadata: {name: r}
spec:
  groupRef: {name: g}
  table: t
  rules:
    - {type: transform, column: a, transform: {type: regex, pattern: '(x', replace: y}}
    - {type: transform, column: b, transform: {type: mask}}
    - {type: filter, column: c, filter: {operator: gte, value: '1'}, operations: []}",
    )
    .unwrap();
    let problems = rule_problems(&rule);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0]
        .starts_with("rules[0] (column a): pattern does not compile: regex parse error:"));
    assert_eq!(
        problems[1],
        "rules[1] (column b): a mask transform needs a one-character `maskChar`"
    );
    let route: Route = serde_yaml::from_str(
        "apiVersion: pgflo.io/v1alpha1
kind: Route
metadata: {name: r}
spec:
  groupRef: {name: g}
  sourceTable: sales.
  destinationTable: d
  columnMappings: [{source: a, destination: x}, {source: b, destination: x}]",
    )
    .unwrap();
    assert_eq!(
        route_problems(&route),
        [
            "the key must name a source table",
            "column_mappings[1]: destination column \"x\" is already the destination of another mapping"
        ]
    );

    // The group refuses to render them (and ignores a Route that loses a conflict: it is not
    // rendered).
    let rg = group("g");
    let mut loser = route.clone();
    loser.metadata.name = Some("s".into());
    let mut refs = Refs {
        rules: vec![rule],
        routes: vec![loser, route],
        ..Refs::default()
    };
    let problems = validate(&rg, &refs).unwrap_err();
    let ours: Vec<&String> = problems
        .iter()
        .filter(|p| p.starts_with("Rule r: ") || p.starts_with("Route "))
        .collect();
    assert_eq!(ours.len(), 4, "{problems:#?}");
    assert!(ours.iter().all(|p| !p.starts_with("Route s:")), "{ours:#?}");
    assert!(ours[2].starts_with("Route r: the key must name a source table: fix the Route"));
    refs.routes.clear();
    refs.rules.clear();
    let problems = validate(&rg, &refs).unwrap_err();
    assert!(
        problems
            .iter()
            .all(|p| !p.starts_with("Rule ") && !p.starts_with("Route ")),
        "{problems:#?}"
    );
}
