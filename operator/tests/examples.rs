//! The example custom resources in `operator/examples/` deserialize into the Rust types and
//! validate against the generated CRD schemas (OpenAPI v3 structural part; the CEL rules in
//! `x-kubernetes-validations` are evaluated by the apiserver only).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use pg_flo_operator::crd::{
    DesiredState, Mode, ReclaimPolicy, ReplicationGroup, Route, Rule, RuleType, SslMode,
};
use serde::de::DeserializeOwned;

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(crd: &CustomResourceDefinition) -> jsonschema::Validator {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    let schema = serde_json::to_value(schema).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn schema_errors(crd: &CustomResourceDefinition, doc: &serde_json::Value) -> Vec<String> {
    validator(crd)
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Parses an example, checks it against the schema, and returns the typed resource.
fn load<K: DeserializeOwned + CustomResourceExt>(name: &str) -> K {
    let text = example(name);
    let json: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let errors = schema_errors(&K::crd(), &json);
    assert!(errors.is_empty(), "{name}: {errors:#?}");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_example_is_covered() {
    let mut files: Vec<String> =
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "quickstart.yaml",
            "replicationgroup-full.yaml",
            "replicationgroup-minimal.yaml",
            "route.yaml",
            "rule.yaml"
        ]
    );
}

#[test]
fn minimal_replication_group_gets_the_defaults() {
    let rg: ReplicationGroup = load("replicationgroup-minimal.yaml");
    let s = &rg.spec;
    assert_eq!(s.source.port, 5432);
    assert_eq!(s.source.schema, "public");
    assert!(s.source.tables.is_empty());
    assert_eq!(s.source.ssl_mode, SslMode::Prefer);
    assert_eq!(s.mode, Mode::Stream);
    assert_eq!(s.copy_workers_per_table, 4);
    assert!(!s.track_ddl);
    assert!(s.sink.stdout.is_some());
    let managed = s.nats.managed.as_ref().unwrap();
    assert_eq!(managed.replicas, 1);
    assert_eq!(managed.storage_size, "1Gi");
    assert_eq!(s.state, DesiredState::Running);
    assert_eq!(s.reclaim_policy, ReclaimPolicy::Retain);
    assert!(!s.dead_letter);
}

#[test]
fn full_replication_group_round_trips() {
    let rg: ReplicationGroup = load("replicationgroup-full.yaml");
    let s = &rg.spec;
    assert_eq!(s.source.ssl_mode, SslMode::VerifyFull);
    assert_eq!(s.source.tables, ["orders", "customers"]);
    assert_eq!(s.mode, Mode::CopyAndStream);
    assert_eq!(s.copy_workers_per_table, 8);
    assert!(s.track_ddl);
    let pg = s.sink.postgres.as_ref().unwrap();
    assert_eq!(pg.port, 5433);
    assert!(pg.sync_schema && pg.disable_foreign_keys);
    assert!(s.nats.external.is_some());
    assert_eq!(s.worker_batch_size, Some(500));
    assert_eq!(s.reclaim_policy, ReclaimPolicy::Delete);
    assert_eq!(s.group_name.as_deref(), Some("shop_to_warehouse"));
    let replicator = s.replicator.as_ref().unwrap();
    assert_eq!(replicator.tolerations[0].key.as_deref(), Some("dedicated"));
    assert!(replicator
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .is_some());
    assert_eq!(
        replicator.priority_class_name.as_deref(),
        Some("cdc-critical")
    );
    assert_eq!(replicator.pod_labels["team"], "data");
    let worker = s.worker.as_ref().unwrap();
    assert_eq!(worker.topology_spread_constraints[0].max_skew, 1);
    assert!(s.copy_job.as_ref().unwrap().resources.is_some());
    // What we serialize validates too (defaults included).
    let json = serde_json::to_value(&rg).unwrap();
    assert_eq!(
        schema_errors(&ReplicationGroup::crd(), &json),
        Vec::<String>::new()
    );
    let back: ReplicationGroup = serde_json::from_value(json).unwrap();
    assert_eq!(back.spec, rg.spec);
}

#[test]
fn rule_and_route_examples_load() {
    let rule: Rule = load("rule.yaml");
    assert_eq!(rule.spec.rules.len(), 4);
    assert_eq!(rule.spec.rules[3].type_, RuleType::ExcludeColumn);
    let route: Route = load("route.yaml");
    assert_eq!(route.spec.column_mappings.len(), 2);
}

#[test]
fn schema_rejects_bad_values() {
    let base: serde_json::Value =
        serde_yaml::from_str(&example("replicationgroup-minimal.yaml")).unwrap();
    let cases: [(&str, serde_json::Value); 8] = [
        ("/spec/groupName", "My.Group".into()),
        ("/spec/groupName", "".into()),
        ("/spec/groupName", "x".repeat(45).into()),
        ("/spec/source/sslMode", "allow".into()),
        ("/spec/mode", "copy_and_stream".into()),
        ("/spec/copyWorkersPerTable", 0.into()),
        ("/spec/copyWorkersPerTable", 65.into()),
        ("/spec/state", "running ".into()),
    ];
    for (pointer, value) in cases {
        let mut doc = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.to_owned(), value.clone());
        assert!(
            !schema_errors(&ReplicationGroup::crd(), &doc).is_empty(),
            "{pointer} = {value} accepted"
        );
    }
    let mut no_password = base.clone();
    no_password["spec"]["source"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    assert!(!schema_errors(&ReplicationGroup::crd(), &no_password).is_empty());
}

#[test]
fn crds_carry_the_cel_rules() {
    let yaml = serde_yaml::to_string(&ReplicationGroup::crd()).unwrap();
    for needle in [
        "self.metadata.name.matches(",
        "source.host is immutable",
        "source.database is immutable",
        "exactly one of sink.postgres, sink.webhook, sink.file, sink.stdout",
        "exactly one of nats.managed, nats.external",
        "nats.managed.replicas must be 1 or 3",
        "groupName is immutable",
        "self.spec.groupName == self.status.groupName",
        // Transitions of spec.nats refused up front (see controller/nats_change.rs).
        "has(self.managed) == has(oldSelf.managed)",
        "self.replicas == oldSelf.replicas",
        "nats.managed.storageClass is immutable",
        "quantity(self.storageSize).compareTo(quantity(oldSelf.storageSize)) >= 0",
        "isQuantity(self)",
        "self.url == oldSelf.url",
        "nats.external.user and nats.external.password go together",
        "at most one of nats.external.password, nats.external.token, nats.external.credentialsSecret",
        "nats.external.clientCertSecret needs nats.external.caSecret",
    ] {
        assert!(yaml.contains(needle), "missing CEL rule: {needle}");
    }
}

/// The README's complete example: every document is a valid object, the group renders with its
/// Rule and Route, and the README shows the file verbatim.
#[test]
fn quickstart_is_valid_renders_and_is_the_readme_example() {
    use k8s_openapi::api::core::v1::Secret;
    let text = example("quickstart.yaml");
    let mut groups: Vec<ReplicationGroup> = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut routes: Vec<Route> = Vec::new();
    let mut secrets: Vec<Secret> = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let json = <serde_json::Value as serde::Deserialize>::deserialize(doc)
            .unwrap_or_else(|e| panic!("quickstart.yaml: {e}"));
        let kind = json["kind"].as_str().unwrap().to_owned();
        let errors = match kind.as_str() {
            "ReplicationGroup" => schema_errors(&ReplicationGroup::crd(), &json),
            "Rule" => schema_errors(&Rule::crd(), &json),
            "Route" => schema_errors(&Route::crd(), &json),
            _ => Vec::new(),
        };
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
        match kind.as_str() {
            "ReplicationGroup" => groups.push(serde_json::from_value(json).unwrap()),
            "Rule" => rules.push(serde_json::from_value(json).unwrap()),
            "Route" => routes.push(serde_json::from_value(json).unwrap()),
            "Secret" => secrets.push(serde_json::from_value(json).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
    }
    assert_eq!(
        (groups.len(), rules.len(), routes.len(), secrets.len()),
        (1, 1, 1, 2)
    );
    let mut rg = groups.remove(0);
    rg.metadata.namespace = Some("shop".into());
    rg.metadata.uid = Some("00000000-0000-0000-0000-000000000009".into());
    // Every Secret reference of the group names a Secret of the file, with the key.
    for u in pg_flo_operator::controller::validate::secret_uses(&rg) {
        let s = secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(u.secret.as_str()))
            .unwrap_or_else(|| panic!("{} names a Secret not in the file", u.field));
        let key = u.key.unwrap();
        assert!(
            s.string_data.as_ref().unwrap().contains_key(&key),
            "{}: key {key}",
            u.field
        );
    }
    for r in &rules {
        assert!(pg_flo_operator::controller::attach::rule_problems(r).is_empty());
    }
    let d = pg_flo_operator::resources::build(&rg, &rules, &routes, "pg-flo:test", &[]).unwrap();
    let data = d.config_map.data.unwrap();
    assert!(
        data["rules.yaml"].contains("customers:"),
        "{}",
        data["rules.yaml"]
    );
    assert!(data["routing.yaml"].starts_with("orders:\n  destination_table: shop_orders"));
    assert!(d.nats.is_some());

    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{text}```")),
        "README.md must show operator/examples/quickstart.yaml verbatim in a ```yaml block"
    );
}
