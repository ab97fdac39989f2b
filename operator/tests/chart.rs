//! The Helm chart `charts/pg-flo-operator/`: `helm lint` passes, `helm template` renders the
//! objects the operator needs (checked as typed k8s-openapi objects, with exact least-privilege
//! RBAC for both the cluster-wide and the per-namespace install), the values schema rejects bad
//! values, and every value is in the schema, commented in values.yaml and listed in the README.
//! The optional monitoring objects (PodMonitors, PrometheusRule, Grafana dashboard) render only
//! when enabled, select the pods the operator creates, and hold PromQL that parses; each alert
//! has its runbook section in docs/operations.md. (That their metric names are exported by the
//! real binaries is `monitoring_metrics.rs`.)
//!
//! Needs `helm` (v3.8+ or v4): `$HELM`, else `<repo>/target/tools/helm`, which
//! `scripts/fetch-helm.sh` (run by `scripts/setup.sh`) puts there. A missing helm fails the
//! tests; they are never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

#[path = "chart_support/helm.rs"]
mod helm;
#[path = "chart_support/promql.rs"]
mod promql;

use helm::{chart_dir, documents, helm, helm_ok, repo_root, FULLNAME, NAMESPACE, RELEASE};

/// Every object `helm template` renders, typed.
#[derive(Default)]
struct Rendered {
    deployments: Vec<Deployment>,
    service_accounts: Vec<ServiceAccount>,
    services: Vec<Service>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    service_monitors: Vec<Json>,
    /// PodMonitors and PrometheusRules: CRDs without k8s-openapi types, checked as JSON.
    pod_monitors: Vec<Json>,
    prometheus_rules: Vec<Json>,
    config_maps: Vec<ConfigMap>,
    pdbs: Vec<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    crds: Vec<CustomResourceDefinition>,
}

fn template(set: &[&str]) -> Rendered {
    parse(&helm::template_yaml(set))
}

fn parse(yaml: &str) -> Rendered {
    let mut r = Rendered::default();
    // Empty documents (a template rendered to nothing) are skipped.
    for doc in documents(yaml) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Deployment" => r.deployments.push(strict(&doc)),
            "ServiceAccount" => r.service_accounts.push(strict(&doc)),
            "Service" => r.services.push(strict(&doc)),
            "ClusterRole" => r.cluster_roles.push(strict(&doc)),
            "ClusterRoleBinding" => r.cluster_role_bindings.push(strict(&doc)),
            "Role" => r.roles.push(strict(&doc)),
            "RoleBinding" => r.role_bindings.push(strict(&doc)),
            "ServiceMonitor" => r.service_monitors.push(serde_json::to_value(&doc).unwrap()),
            "PodMonitor" => r.pod_monitors.push(serde_json::to_value(&doc).unwrap()),
            "PrometheusRule" => r.prometheus_rules.push(serde_json::to_value(&doc).unwrap()),
            "ConfigMap" => r.config_maps.push(strict(&doc)),
            "PodDisruptionBudget" => r.pdbs.push(strict(&doc)),
            "CustomResourceDefinition" => r.crds.push(strict(&doc)),
            other => panic!("the chart rendered an unexpected kind {other:?}:\n{doc:?}"),
        }
    }
    r
}

/// Deserializes `doc` into `T` and fails if anything was dropped on the way: k8s-openapi
/// ignores unknown fields, so a misspelt or misplaced key would otherwise pass unnoticed.
fn strict<T: DeserializeOwned + Serialize>(doc: &serde_yaml::Value) -> T {
    let typed: T = serde_yaml::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!("{} does not deserialize: {e}\n{doc:?}", describe(doc));
    });
    let original = serde_json::to_value(doc).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    diff(&original, &back, String::new(), &mut diffs);
    assert!(
        diffs.is_empty(),
        "{}: fields lost or changed by the typed round trip (unknown or misplaced keys?): {diffs:#?}",
        describe(doc)
    );
    typed
}

fn describe(doc: &serde_yaml::Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn diff(a: &Json, b: &Json, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Json::Object(a), Json::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(x, y, p, out),
                    (Some(_), None) => out.push(format!("{p}: rendered but unknown to the type")),
                    (None, Some(_)) => out.push(format!("{p}: added by the type")),
                    (None, None) => {}
                }
            }
        }
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} became {b}")),
    }
}

fn chart_yaml() -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap()
}

fn app_version() -> String {
    chart_yaml()["appVersion"].as_str().unwrap().to_string()
}

fn one<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "expected exactly one {what}");
    &items[0]
}

fn container(d: &Deployment) -> &Container {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    one(&pod.containers, "container")
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .map(|e| {
            e.value
                .as_deref()
                .unwrap_or_else(|| panic!("{name} has no value"))
        })
}

fn field_ref<'a>(c: &'a Container, name: &str) -> &'a str {
    let e = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("env {name} missing"));
    &e.value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap()
        .field_path
}

fn standard_labels() -> BTreeMap<String, String> {
    let chart = chart_yaml();
    [
        ("app.kubernetes.io/name", "pg-flo-operator".to_string()),
        ("app.kubernetes.io/instance", RELEASE.to_string()),
        ("app.kubernetes.io/version", app_version()),
        ("app.kubernetes.io/managed-by", "Helm".to_string()),
        (
            "helm.sh/chart",
            format!("pg-flo-operator-{}", chart["version"].as_str().unwrap()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn selector_labels() -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "pg-flo-operator"),
        ("app.kubernetes.io/instance", RELEASE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn assert_labelled(meta: &ObjectMeta) {
    let labels = meta.labels.clone().unwrap_or_default();
    for (k, v) in standard_labels() {
        assert_eq!(
            labels.get(&k),
            Some(&v),
            "label {k} of {:?}",
            meta.name.as_deref()
        );
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// (apiGroup, resource) -> verbs of a table of `pg_flo_operator::rbac`: what the operator's
/// calls need (each entry names them), and what the fake API of the reconcile tests enforces.
fn table_rules(
    table: &[pg_flo_operator::rbac::Permission],
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut m: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (group, resource, verb) in pg_flo_operator::rbac::triples(table) {
        m.entry((group, resource)).or_default().insert(verb);
    }
    m
}

/// The watched-resource rules the chart must grant exactly.
fn expected_rules() -> BTreeMap<(String, String), BTreeSet<String>> {
    table_rules(pg_flo_operator::rbac::WATCHED_NAMESPACES)
}

/// Flattens rules into (apiGroup, resource) -> verbs; a pair in two rules is an error.
fn flatten(rules: &[PolicyRule]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut m = BTreeMap::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "unexpected rule shape: {rule:?}"
        );
        for g in rule.api_groups.as_deref().unwrap_or_default() {
            for r in rule.resources.as_deref().unwrap_or_default() {
                let verbs: BTreeSet<String> = rule.verbs.iter().cloned().collect();
                let prev = m.insert((g.clone(), r.clone()), verbs);
                assert!(prev.is_none(), "({g:?}, {r:?}) appears in two rules");
            }
        }
    }
    m
}

/// Fails with the differing (apiGroup, resource) pairs, not two long maps.
fn assert_rules(
    have: &[PolicyRule],
    want: &BTreeMap<(String, String), BTreeSet<String>>,
    what: &str,
) {
    let have = flatten(have);
    let keys: BTreeSet<&(String, String)> = have.keys().chain(want.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| have.get(*k) != want.get(*k))
        .map(|k| format!("{k:?}: granted {:?}, want {:?}", have.get(k), want.get(k)))
        .collect();
    assert!(
        diffs.is_empty(),
        "{what} rules differ from least privilege: {diffs:#?}"
    );
}

fn assert_lease_role(r: &Rendered) {
    let role = r
        .roles
        .iter()
        .find(|role| role.metadata.name.as_deref() == Some(&format!("{FULLNAME}-leader-election")))
        .expect("leader-election Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_labelled(&role.metadata);
    let want = table_rules(pg_flo_operator::rbac::LEADER_ELECTION);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        [&("coordination.k8s.io".to_string(), "leases".to_string())]
    );
    assert_rules(
        role.rules.as_deref().unwrap(),
        &want,
        "leader-election Role",
    );
    let binding = r
        .role_bindings
        .iter()
        .find(|b| b.metadata.name == role.metadata.name)
        .expect("leader-election RoleBinding");
    assert_eq!(binding.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    assert_binds_operator(binding.subjects.as_deref());
}

fn assert_binds_operator(subjects: Option<&[k8s_openapi::api::rbac::v1::Subject]>) {
    let s = one(subjects.unwrap(), "subject");
    assert_eq!(s.kind, "ServiceAccount");
    assert_eq!(s.name, FULLNAME);
    assert_eq!(s.namespace.as_deref(), Some(NAMESPACE));
}

#[test]
fn helm_lint_passes() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    for extra in [
        &[][..],
        &[
            "--set-json",
            r#"watchNamespaces=["a","b"]"#,
            "--set",
            "serviceMonitor.enabled=true",
        ][..],
        &ALL_MONITORING[..],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(extra);
        let out = helm_ok(&args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn default_values_install_a_cluster_wide_operator() {
    let r = template(&[]);
    assert!(r.service_monitors.is_empty(), "ServiceMonitor is opt-in");
    assert!(r.pod_monitors.is_empty(), "PodMonitors are opt-in");
    assert!(r.prometheus_rules.is_empty(), "PrometheusRule is opt-in");
    assert!(r.config_maps.is_empty(), "the dashboard is opt-in");

    // ServiceAccount.
    let sa = one(&r.service_accounts, "ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some(FULLNAME));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_labelled(&sa.metadata);

    // Deployment.
    let d = one(&r.deployments, "Deployment");
    assert_eq!(d.metadata.name.as_deref(), Some(FULLNAME));
    assert_eq!(d.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_labelled(&d.metadata);
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.selector.match_labels.as_ref(),
        Some(&selector_labels())
    );
    let pod_meta = spec.template.metadata.as_ref().unwrap();
    assert_labelled(pod_meta);
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(FULLNAME));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );

    let c = container(d);
    let image = format!("pg-flo:{}", app_version());
    assert_eq!(c.image.as_deref(), Some(image.as_str()));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    // The image's entrypoint is pg_flo; the operator is the other binary.
    assert_eq!(
        c.command.as_deref(),
        Some(&["pg-flo-operator".to_string()][..])
    );
    assert_eq!(c.args.as_deref(), Some(&["run".to_string()][..]));
    assert_eq!(
        env(c, "PG_FLO_OPERATOR_RUNTIME_IMAGE"),
        c.image.as_deref(),
        "runtime pods must run the operator's own image"
    );
    assert_eq!(env(c, "PG_FLO_OPERATOR_WATCH_NAMESPACES"), None);
    assert_eq!(env(c, "PG_FLO_OPERATOR_METRICS_ADDR"), Some("0.0.0.0:8080"));
    assert_eq!(env(c, "PG_FLO_OPERATOR_LOG_FORMAT"), Some("text"));
    assert_eq!(env(c, "PG_FLO_OPERATOR_LEADER_ELECTION"), Some("true"));
    assert_eq!(env(c, "PG_FLO_OPERATOR_LEASE_NAME"), Some(FULLNAME));
    assert_eq!(env(c, "PG_FLO_OPERATOR_LEASE_NAMESPACE"), Some(NAMESPACE));
    // The managed NATS NetworkPolicies admit the operator's pods: exactly the labels that
    // select them (the pod template carries them), in POD_NAMESPACE.
    let admitted: BTreeMap<String, String> = env(c, "PG_FLO_OPERATOR_POD_LABELS")
        .unwrap()
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(admitted, selector_labels());
    let pod_labels = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert!(admitted.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(field_ref(c, "POD_NAME"), "metadata.name");
    assert_eq!(field_ref(c, "POD_NAMESPACE"), "metadata.namespace");
    let names: Vec<&str> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "duplicate env vars: {names:?}");

    let port = one(c.ports.as_deref().unwrap(), "container port");
    assert_eq!(port.container_port, 8080);
    assert_eq!(port.name.as_deref(), Some("http"));
    let http = IntOrString::String("http".into());
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (live.path.as_deref(), &live.port),
        (Some("/healthz"), &http)
    );
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (ready.path.as_deref(), &ready.port),
        (Some("/readyz"), &http)
    );

    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert!(c.resources.as_ref().unwrap().limits.is_some());

    // Service for /metrics.
    let svc = one(&r.services, "Service");
    assert_eq!(svc.metadata.name.as_deref(), Some(FULLNAME));
    assert_labelled(&svc.metadata);
    let svc_spec = svc.spec.as_ref().unwrap();
    assert_eq!(svc_spec.selector.as_ref(), Some(&selector_labels()));
    let svc_port = one(svc_spec.ports.as_deref().unwrap(), "Service port");
    assert_eq!(svc_port.name.as_deref(), Some("http"));
    assert_eq!(svc_port.port, 8080);
    assert_eq!(svc_port.target_port, Some(http));

    // Cluster-wide RBAC: exactly the least-privilege table, no leases.
    let cr = one(&r.cluster_roles, "ClusterRole");
    assert_eq!(cr.metadata.name.as_deref(), Some(FULLNAME));
    assert_labelled(&cr.metadata);
    let rules = flatten(cr.rules.as_deref().unwrap());
    // Least privilege, spelled out for the objects where it matters most: the custom
    // resources are never updated (only their finalizer and /status patched), Secrets are
    // never updated or deleted, nothing server-side applied needs update, and Events go
    // through events.k8s.io only.
    assert_eq!(
        rules[&("pgflo.io".to_string(), "replicationgroups".to_string())],
        set(&["get", "list", "watch", "patch"])
    );
    assert_eq!(
        rules[&("".to_string(), "secrets".to_string())],
        set(&["get", "list", "watch", "create", "patch"])
    );
    assert!(
        rules
            .iter()
            .filter(|(_, verbs)| verbs.contains("update"))
            .map(|((_, r), _)| r.as_str())
            .eq(["replicationgroups/finalizers"]),
        "{rules:?}"
    );
    assert!(!rules.contains_key(&("".to_string(), "events".to_string())));
    assert!(
        !rules.keys().any(|(_, res)| res == "leases"),
        "leases belong in the namespaced leader-election Role"
    );
    assert_rules(
        cr.rules.as_deref().unwrap(),
        &expected_rules(),
        "ClusterRole",
    );
    let crb = one(&r.cluster_role_bindings, "ClusterRoleBinding");
    assert_labelled(&crb.metadata);
    assert_eq!(crb.role_ref.kind, "ClusterRole");
    assert_eq!(crb.role_ref.name, FULLNAME);
    assert_binds_operator(crb.subjects.as_deref());

    // Leader election: the only Role, in the release namespace.
    assert_eq!(r.roles.len(), 1);
    assert_eq!(r.role_bindings.len(), 1);
    assert_lease_role(&r);
}

#[test]
fn watch_namespaces_install_roles_per_namespace_and_a_service_monitor() {
    let r = template(&[
        "--set-json",
        r#"watchNamespaces=["a","b"]"#,
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=prometheus",
    ]);
    assert!(r.cluster_roles.is_empty(), "no cluster-wide rights");
    assert!(r.cluster_role_bindings.is_empty(), "no cluster-wide rights");

    let c = container(one(&r.deployments, "Deployment"));
    assert_eq!(env(c, "PG_FLO_OPERATOR_WATCH_NAMESPACES"), Some("a,b"));

    // One Role + RoleBinding per watched namespace, plus the leader-election pair.
    assert_eq!(r.roles.len(), 3);
    assert_eq!(r.role_bindings.len(), 3);
    for ns in ["a", "b"] {
        let role = r
            .roles
            .iter()
            .find(|x| x.metadata.namespace.as_deref() == Some(ns))
            .unwrap_or_else(|| panic!("no Role in namespace {ns}"));
        assert_eq!(role.metadata.name.as_deref(), Some(FULLNAME));
        assert_labelled(&role.metadata);
        assert_rules(
            role.rules.as_deref().unwrap(),
            &expected_rules(),
            &format!("Role in {ns}"),
        );
        let binding = r
            .role_bindings
            .iter()
            .find(|x| x.metadata.namespace.as_deref() == Some(ns))
            .unwrap_or_else(|| panic!("no RoleBinding in namespace {ns}"));
        assert_labelled(&binding.metadata);
        assert_eq!(binding.role_ref.kind, "Role");
        assert_eq!(binding.role_ref.name, FULLNAME);
        assert_binds_operator(binding.subjects.as_deref());
    }
    assert_lease_role(&r);

    let sm = one(&r.service_monitors, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["name"], FULLNAME);
    assert_eq!(sm["metadata"]["namespace"], NAMESPACE);
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        sm["metadata"]["labels"]["app.kubernetes.io/instance"],
        RELEASE
    );
    let selector: BTreeMap<String, String> =
        serde_json::from_value(sm["spec"]["selector"]["matchLabels"].clone()).unwrap();
    assert_eq!(selector, selector_labels());
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    let ep = one(endpoints, "ServiceMonitor endpoint");
    assert_eq!(ep["port"], "http");
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(
        ep["honorLabels"], true,
        "the per-group gauges keep their namespace"
    );
    assert_eq!(ep["interval"], "30s");
    assert_eq!(ep["scrapeTimeout"], "10s");
}

#[test]
fn leader_election_off_drops_the_lease_role() {
    let r = template(&["--set", "leaderElection.enabled=false"]);
    assert!(r.roles.is_empty() && r.role_bindings.is_empty());
    let c = container(one(&r.deployments, "Deployment"));
    assert_eq!(env(c, "PG_FLO_OPERATOR_LEADER_ELECTION"), Some("false"));
}

#[test]
fn managed_nats_may_leave_the_operator_out() {
    let r = template(&["--set", "managedNats.admitOperator=false"]);
    let c = container(one(&r.deployments, "Deployment"));
    assert_eq!(env(c, "PG_FLO_OPERATOR_POD_LABELS"), None);
}

#[test]
fn image_tag_and_extra_env_reach_the_container() {
    let r = template(&[
        "--set",
        "image.repository=registry.example.com/pg-flo",
        "--set",
        "image.tag=1.2.3",
        "--set",
        "logFormat=json",
        "--set-json",
        r#"extraEnv=[{"name":"RUST_LOG","value":"debug"}]"#,
        "--set-json",
        r#"imagePullSecrets=[{"name":"regcred"},{"name":"mirror"}]"#,
    ]);
    let c = container(one(&r.deployments, "Deployment"));
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/pg-flo:1.2.3")
    );
    assert_eq!(env(c, "PG_FLO_OPERATOR_RUNTIME_IMAGE"), c.image.as_deref());
    assert_eq!(env(c, "PG_FLO_OPERATOR_LOG_FORMAT"), Some("json"));
    assert_eq!(env(c, "RUST_LOG"), Some("debug"));
    assert_eq!(
        env(c, "PG_FLO_OPERATOR_RUNTIME_IMAGE_PULL_SECRETS"),
        Some("regcred,mirror"),
        "the runtime pods get the same pull secrets"
    );
}

#[test]
fn image_digest_pins_the_operator_and_the_runtime_pods() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let r = template(&[
        "--set",
        "image.repository=registry.example.com/pg-flo",
        "--set",
        "image.tag=1.2.3",
        "--set",
        &format!("image.digest={digest}"),
    ]);
    let c = container(one(&r.deployments, "Deployment"));
    let want = format!("registry.example.com/pg-flo@{digest}");
    assert_eq!(c.image.as_deref(), Some(want.as_str()), "the digest wins");
    assert_eq!(env(c, "PG_FLO_OPERATOR_RUNTIME_IMAGE"), Some(want.as_str()));
}

#[test]
fn invalid_values_fail_the_schema() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    // (values, the key the error must name). Key names rather than whole messages: Helm 4 and
    // Helm >= 3.18 word schema errors differently from older Helm 3.
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "logFormat=xml"], "logFormat"),
        (&["--set", "bogus=1"], "bogus"),
        (&["--set", "image.bogus=1"], "bogus"),
        (&["--set", "image.digest=latest"], "digest"),
        (&["--set", "image.digest=sha256:abc"], "digest"),
        (&["--set", "crds.install=yes"], "install"),
        (&["--set", "managedNats.bogus=1"], "bogus"),
        (
            &["--set-json", r#"watchNamespaces=["Not_A_Namespace"]"#],
            "watchNamespaces",
        ),
        (
            &[
                "--set",
                "replicaCount=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "replicaCount",
        ),
        (&["--set", "serviceMonitor.interval=soon"], "interval"),
        (&["--set", "runtimePodMonitor.bogus=1"], "bogus"),
        (&["--set", "natsPodMonitor.port=Prom_Metrics"], "port"),
        // histogram_quantile cannot go past the largest finite bucket (600 s).
        (
            &["--set", "prometheusRule.lag.p99Seconds=600"],
            "p99Seconds",
        ),
        (&["--set", "prometheusRule.lag.p99Seconds=0"], "p99Seconds"),
        // A window is also a PromQL range, which must be above zero.
        (&["--set", "prometheusRule.deadLetters.window=0s"], "window"),
        (&["--set", "prometheusRule.copyStalled.for=soon"], "for"),
        (
            &["--set", "prometheusRule.slotRetainedWal.bytes=0"],
            "bytes",
        ),
        (
            &["--set", "prometheusRule.runbookBaseUrl=https://x/ops.md#a"],
            "runbookBaseUrl",
        ),
        (&["--set", "grafanaDashboard.namespace=Bad_NS"], "namespace"),
    ];
    for (set, want) in cases {
        let mut args = vec!["template", RELEASE, chart];
        args.extend_from_slice(set);
        let out = helm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "helm accepted {set:?}");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(want),
            "helm {set:?}: expected a schema error naming {want:?}, got:\n{stderr}"
        );
    }
}

#[test]
fn kubernetes_older_than_1_29_is_refused() {
    let chart = chart_dir();
    let out = helm(&[
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--kube-version",
        "1.28.0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubeVersion"));
}

#[test]
fn the_crds_are_templates_that_upgrade_and_are_kept() {
    let r = template(&[]);
    let mut names: Vec<String> = r
        .crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "replicationgroups.pgflo.io",
            "routes.pgflo.io",
            "rules.pgflo.io"
        ]
    );
    for generated in pg_flo_operator::crd::all_crds() {
        let name = generated.metadata.name.clone().unwrap();
        let rendered = r
            .crds
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name.as_str()))
            .unwrap();
        // Kept by `helm uninstall` (and with it every custom resource), labelled as the chart's.
        assert_eq!(
            rendered.metadata.annotations,
            Some(BTreeMap::from([(
                "helm.sh/resource-policy".to_string(),
                "keep".to_string()
            )])),
            "{name}"
        );
        assert_labelled(&rendered.metadata);
        // Otherwise exactly what the types generate (no number turned into a float, no key
        // lost: the template adds metadata as text, it never re-serializes the schema).
        let mut bare = rendered.clone();
        bare.metadata.annotations = None;
        bare.metadata.labels = None;
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::to_value(&generated).unwrap(),
            "{name}"
        );
    }
    // Nothing left in crds/, which Helm would install once and never upgrade.
    let chart = chart_dir();
    assert!(!chart.join("crds").exists(), "charts/pg-flo-operator/crds/");
    let shown = helm_ok(&["show", "crds", chart.to_str().unwrap()]);
    assert!(shown.trim().is_empty(), "{shown}");

    // crds.install: false renders none (the CRDs are applied by hand).
    assert!(template(&["--set", "crds.install=false"]).crds.is_empty());
}

/// Dotted paths of the documented values: an object the schema closes
/// (`additionalProperties: false`) is descended into, and its keys must equal the schema's;
/// anything else (scalars, lists, Kubernetes-typed objects such as `resources`) is one value.
fn value_paths(schema: &Json, values: &Json, prefix: &str, out: &mut Vec<String>) {
    let closed = schema["additionalProperties"] == Json::Bool(false);
    match (closed, schema["properties"].as_object()) {
        (true, Some(props)) => {
            let have: BTreeSet<&String> = values
                .as_object()
                .unwrap_or_else(|| panic!("values.yaml: {prefix} is not an object"))
                .keys()
                .collect();
            let want: BTreeSet<&String> = props.keys().collect();
            assert_eq!(
                have, want,
                "values.yaml keys at {prefix:?} differ from values.schema.json"
            );
            for (k, sub) in props {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(sub, &values[k], &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_in_the_schema_commented_and_in_the_readme() {
    let dir = chart_dir();
    let schema: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("values.schema.json")).unwrap())
            .unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let values_text = std::fs::read_to_string(dir.join("values.yaml")).unwrap();
    let values: Json = serde_yaml::from_str(&values_text).unwrap();
    let mut paths = Vec::new();
    value_paths(&schema, &values, "", &mut paths);

    // Every key line in values.yaml has a comment right above it.
    let mut previous = "";
    for (n, line) in values_text.lines().enumerate() {
        let t = line.trim_start();
        let is_key = t
            .split_once(':')
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
        if is_key && !t.starts_with('#') {
            assert!(
                previous.starts_with('#'),
                "values.yaml line {}: `{t}` has no comment above it",
                n + 1
            );
        }
        if !t.is_empty() {
            previous = t;
        }
    }

    // The README's values table lists exactly these values.
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Values\n")
        .expect("README.md has a `## Values` section")
        .1;
    let section = section.split("\n## ").next().unwrap();
    let listed: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(path, _)| path.to_string())
        .collect();
    let paths: BTreeSet<String> = paths.into_iter().collect();
    assert_eq!(
        listed, paths,
        "charts/pg-flo-operator/README.md values table vs values.yaml"
    );
}

// ---- Monitoring: PodMonitors, PrometheusRule, Grafana dashboard ----

/// Every monitoring switch on.
const ALL_MONITORING: [&str; 8] = [
    "--set",
    "runtimePodMonitor.enabled=true",
    "--set",
    "natsPodMonitor.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "grafanaDashboard.enabled=true",
];

/// The alerts of docs/operations.md, with their severity.
const ALERTS: [(&str, &str); 9] = [
    ("PgFloSlotRetainedWalHigh", "warning"),
    ("PgFloSlotWalUnreserved", "critical"),
    ("PgFloSlotLost", "critical"),
    ("PgFloSlotInactive", "warning"),
    ("PgFloWorkerNotReady", "warning"),
    ("PgFloConsumerPendingGrowing", "warning"),
    ("PgFloDeadLetters", "warning"),
    ("PgFloLagHigh", "warning"),
    ("PgFloCopyStalled", "warning"),
];

/// How every alert names its group (the labels the PodMonitors set).
const GROUP_REF: &str = "{{ $labels.namespace }}/{{ $labels.group }}";

fn keys(v: &Json) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Fails unless the keys of `v` are all among `allowed` (a misspelt field of a CRD object would
/// be dropped, or refused, by the API server) and the `required` ones are present.
fn assert_fields(v: &Json, required: &[&str], allowed: &[&str], what: &str) {
    let have = keys(v);
    let unknown: Vec<&String> = have
        .iter()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what}: unknown fields {unknown:?} in {v}"
    );
    for r in required {
        assert!(
            have.contains(*r),
            "{what}: required field {r} missing in {v}"
        );
    }
}

/// A pod template the operator builds: component label, labels, container port names.
struct OperatorPod {
    origin: String,
    labels: BTreeMap<String, String>,
    ports: BTreeSet<String>,
}

/// The pod templates of the builder snapshots (`tests/snapshots/*.yaml`, which `builders.rs`
/// keeps equal to what the operator builds): replicator and worker Deployments, copy Jobs and
/// NATS StatefulSets.
fn operator_pods() -> Vec<OperatorPod> {
    let dir = repo_root().join("operator/tests/snapshots");
    let mut pods = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        for doc in documents(&std::fs::read_to_string(&f).unwrap()) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if !["Deployment", "Job", "StatefulSet"].contains(&kind) {
                continue;
            }
            let t = &doc["spec"]["template"];
            let labels: BTreeMap<String, String> =
                serde_yaml::from_value(t["metadata"]["labels"].clone()).unwrap();
            let ports = t["spec"]["containers"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            pods.push(OperatorPod {
                origin: format!(
                    "{} {kind} {}",
                    f.file_name().unwrap().to_string_lossy(),
                    doc["metadata"]["name"].as_str().unwrap()
                ),
                labels,
                ports,
            });
        }
    }
    pods
}

/// Whether a Kubernetes label selector (`matchLabels`, `matchExpressions`) selects `labels`.
fn selects(selector: &Json, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let value = labels.get(e["key"].as_str().unwrap());
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap())
                .collect();
            match e["operator"].as_str().unwrap() {
                "In" => value.is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => value.is_none_or(|v| !values.contains(&v.as_str())),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                op => panic!("unknown selector operator {op}"),
            }
        });
    by_labels && by_expressions
}

#[test]
fn each_monitoring_object_renders_only_when_enabled() {
    for switch in [
        "runtimePodMonitor",
        "natsPodMonitor",
        "prometheusRule",
        "grafanaDashboard",
    ] {
        let r = template(&["--set", &format!("{switch}.enabled=true")]);
        let monitors: Vec<&str> = r
            .pod_monitors
            .iter()
            .map(|m| m["metadata"]["name"].as_str().unwrap())
            .collect();
        let want_monitors: Vec<String> = match switch {
            "runtimePodMonitor" => vec![format!("{FULLNAME}-runtime")],
            "natsPodMonitor" => vec![format!("{FULLNAME}-nats")],
            _ => vec![],
        };
        assert_eq!(monitors, want_monitors, "{switch}");
        assert_eq!(
            r.prometheus_rules.len(),
            usize::from(switch == "prometheusRule"),
            "{switch}"
        );
        assert_eq!(
            r.config_maps.len(),
            usize::from(switch == "grafanaDashboard"),
            "{switch}"
        );
        assert!(r.service_monitors.is_empty(), "{switch}");
    }
}

/// Checks a rendered PodMonitor against the fields Prometheus Operator's
/// `monitoring.coreos.com/v1` PodMonitor defines, and returns its spec.
fn check_pod_monitor<'a>(
    m: &'a Json,
    name: &str,
    port: &str,
    extra_label: (&str, &str),
) -> &'a Json {
    assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(m["kind"], "PodMonitor");
    assert_fields(
        m,
        &["apiVersion", "kind", "metadata", "spec"],
        &["apiVersion", "kind", "metadata", "spec"],
        name,
    );
    let meta: ObjectMeta = serde_json::from_value(m["metadata"].clone()).unwrap();
    assert_eq!(meta.name.as_deref(), Some(name));
    assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE));
    assert_labelled(&meta);
    assert_eq!(
        meta.labels
            .as_ref()
            .unwrap()
            .get(extra_label.0)
            .map(String::as_str),
        Some(extra_label.1)
    );
    let spec = &m["spec"];
    assert_fields(
        spec,
        &["selector", "podMetricsEndpoints"],
        &[
            "jobLabel",
            "selector",
            "namespaceSelector",
            "podMetricsEndpoints",
        ],
        name,
    );
    // job="pg-flo": the pods' app.kubernetes.io/name, which the rules and dashboard select on.
    assert_eq!(spec["jobLabel"], "app.kubernetes.io/name");
    let ep = one(spec["podMetricsEndpoints"].as_array().unwrap(), "endpoint");
    assert_fields(
        ep,
        &["port"],
        &["port", "path", "interval", "scrapeTimeout", "relabelings"],
        name,
    );
    assert_eq!(ep["port"], port);
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["interval"], "30s");
    assert_eq!(ep["scrapeTimeout"], "10s");
    assert_eq!(
        ep["relabelings"],
        serde_json::json!([
            {"sourceLabels": ["__meta_kubernetes_pod_label_pgflo_io_group"], "targetLabel": "group"},
            {"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"], "targetLabel": "component"},
        ])
    );
    spec
}

#[test]
fn pod_monitors_scrape_the_pods_the_operator_creates() {
    let mut values = ALL_MONITORING.to_vec();
    values.extend([
        "--set",
        "runtimePodMonitor.labels.release=prometheus",
        "--set",
        "natsPodMonitor.labels.release=prometheus",
    ]);
    let r = template(&values);
    assert_eq!(r.pod_monitors.len(), 2);
    let named = |suffix: &str| {
        let name = format!("{FULLNAME}-{suffix}");
        r.pod_monitors
            .iter()
            .find(|m| m["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no PodMonitor {name}"))
    };
    let runtime = check_pod_monitor(
        named("runtime"),
        &format!("{FULLNAME}-runtime"),
        "metrics",
        ("release", "prometheus"),
    );
    let nats = check_pod_monitor(
        named("nats"),
        &format!("{FULLNAME}-nats"),
        "prom-metrics",
        ("release", "prometheus"),
    );
    // All namespaces, as the operator watches them.
    assert_eq!(
        runtime["namespaceSelector"],
        serde_json::json!({"any": true})
    );
    assert_eq!(nats["namespaceSelector"], serde_json::json!({"any": true}));

    let pods = operator_pods();
    let component = |p: &OperatorPod| p.labels["app.kubernetes.io/component"].clone();
    let mut seen = BTreeSet::new();
    let mut exporters = 0;
    for p in &pods {
        let c = component(p);
        seen.insert(c.clone());
        let is_runtime = c == "replicator" || c == "worker";
        assert_eq!(
            selects(&runtime["selector"], &p.labels),
            is_runtime,
            "runtime PodMonitor vs {}",
            p.origin
        );
        assert_eq!(
            selects(&nats["selector"], &p.labels),
            c == "nats",
            "NATS PodMonitor vs {}",
            p.origin
        );
        // The labels the relabelings and jobLabel read.
        assert_eq!(p.labels["app.kubernetes.io/name"], "pg-flo", "{}", p.origin);
        assert!(p.labels.contains_key("pgflo.io/group"), "{}", p.origin);
        if is_runtime {
            assert!(
                p.ports.contains("metrics"),
                "{}: no port `metrics`",
                p.origin
            );
        } else {
            // The exporter sidecar (`spec.nats.managed.metrics`, on in the managed-nats-3
            // snapshot) serves the port the NATS PodMonitor scrapes.
            exporters += usize::from(p.ports.contains("prom-metrics"));
        }
    }
    assert!(
        exporters > 0,
        "no NATS pod with the exporter's port `prom-metrics`"
    );
    assert_eq!(
        seen,
        set(&["nats", "replicator", "worker"]),
        "snapshot coverage"
    );

    // Watched namespaces only.
    let r = template(&[
        "--set",
        "runtimePodMonitor.enabled=true",
        "--set",
        "natsPodMonitor.enabled=true",
        "--set-json",
        r#"watchNamespaces=["a","b"]"#,
    ]);
    for m in &r.pod_monitors {
        assert_eq!(
            m["spec"]["namespaceSelector"],
            serde_json::json!({"matchNames": ["a", "b"]})
        );
    }
}

/// The runbook sections of docs/operations.md: the `### ` headings under `## Alerts`, with
/// their text.
fn runbook_sections() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let alerts = text
        .split_once("\n## Alerts\n")
        .expect("docs/operations.md has a `## Alerts` section")
        .1;
    let alerts = alerts.split("\n## ").next().unwrap();
    alerts
        .split("\n### ")
        .skip(1)
        .map(|s| {
            let (title, body) = s.split_once('\n').unwrap();
            (title.trim().to_string(), body.to_string())
        })
        .collect()
}

/// GitHub's anchor of a heading made of letters and digits: the heading in lower case.
fn anchor(heading: &str) -> String {
    assert!(
        heading.chars().all(|c| c.is_ascii_alphanumeric()),
        "{heading}"
    );
    heading.to_ascii_lowercase()
}

fn rendered_rule(set: &[&str]) -> Json {
    let mut args = vec!["--set", "prometheusRule.enabled=true"];
    args.extend_from_slice(set);
    one(&template(&args).prometheus_rules, "PrometheusRule").clone()
}

/// `alert name -> rule` of a rendered PrometheusRule.
fn alerts(rule: &Json) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap().to_string();
            assert!(
                out.insert(name.clone(), r.clone()).is_none(),
                "{name} twice"
            );
        }
    }
    out
}

#[test]
fn prometheus_rule_alerts_parse_name_their_group_and_link_their_runbook() {
    let base = "https://example.com/pg_flo/blob/v1/docs/operations.md";
    let rule = rendered_rule(&[
        "--set",
        &format!("prometheusRule.runbookBaseUrl={base}"),
        "--set",
        "prometheusRule.labels.release=prometheus",
    ]);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    let meta: ObjectMeta = serde_json::from_value(rule["metadata"].clone()).unwrap();
    assert_eq!(meta.name.as_deref(), Some(FULLNAME));
    assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE));
    assert_labelled(&meta);
    assert_eq!(meta.labels.as_ref().unwrap()["release"], "prometheus");
    assert_fields(
        &rule["spec"],
        &["groups"],
        &["groups"],
        "PrometheusRule spec",
    );
    let mut group_names = BTreeSet::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        assert_fields(
            g,
            &["name", "rules"],
            &["name", "rules", "interval"],
            "rule group",
        );
        assert!(group_names.insert(g["name"].as_str().unwrap().to_string()));
    }

    let alerts = alerts(&rule);
    let want: BTreeMap<String, &str> = ALERTS.iter().map(|(a, s)| (a.to_string(), *s)).collect();
    assert_eq!(
        alerts.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>()
    );
    let sections = runbook_sections();
    assert_eq!(
        sections.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>(),
        "docs/operations.md: one `### <alert>` runbook section per alert"
    );
    for (name, r) in &alerts {
        assert_fields(
            r,
            &["alert", "expr", "labels", "annotations"],
            &["alert", "expr", "for", "labels", "annotations"],
            name,
        );
        if let Some(d) = r["for"].as_str() {
            promql_parser::util::parse_duration(d)
                .unwrap_or_else(|e| panic!("{name}: for {d:?}: {e}"));
        }
        assert_eq!(
            r["labels"],
            serde_json::json!({"severity": want[name]}),
            "{name}"
        );
        let a = &r["annotations"];
        assert_eq!(
            keys(a),
            set(&["summary", "description", "runbook_url"]),
            "{name}"
        );
        for k in ["summary", "description"] {
            assert!(
                a[k].as_str().unwrap().contains(GROUP_REF),
                "{name}: the {k} does not name the group: {}",
                a[k]
            );
        }
        assert_eq!(
            a["runbook_url"],
            format!("{base}#{}", anchor(name)),
            "{name}"
        );
        let section = &sections[name];
        for part in [
            "**What it means.**",
            "**What to check.**",
            "**What to do.**",
        ] {
            assert!(
                section.contains(part),
                "docs/operations.md {name}: no {part}"
            );
        }

        // The expression parses, reads only the runtime pods' series (job="pg-flo") and keeps
        // the namespace and group labels through every aggregation.
        let q = promql::Query {
            origin: name.clone(),
            expr: r["expr"].as_str().unwrap().to_string(),
        };
        let e = promql::parse(&q);
        for vs in promql::selectors(&e) {
            assert_eq!(
                promql::equal_matcher(&vs, "job").as_deref(),
                Some("pg-flo"),
                "{name}: {vs}"
            );
            let component = promql::equal_matcher(&vs, "component");
            assert!(
                matches!(component.as_deref(), Some("replicator" | "worker")),
                "{name}: {vs} selects no component"
            );
        }
        for by in promql::aggregation_labels(&e) {
            assert!(
                by.contains(&"namespace".to_string()) && by.contains(&"group".to_string()),
                "{name}: an aggregation drops namespace or group: by {by:?}"
            );
        }
    }
}

#[test]
fn alert_thresholds_come_from_the_values() {
    let rule = rendered_rule(&[
        "--set",
        "prometheusRule.slotRetainedWal.bytes=5368709120",
        "--set",
        "prometheusRule.slotRetainedWal.for=20m",
        "--set",
        "prometheusRule.slotInactive.for=3m",
        "--set",
        "prometheusRule.workerNotReady.for=4m",
        "--set",
        "prometheusRule.consumerPending.messages=50000",
        "--set",
        "prometheusRule.consumerPending.for=1h",
        "--set",
        "prometheusRule.deadLetters.window=2h",
        "--set",
        "prometheusRule.copyStalled.for=45m",
        // --set makes a fraction a string; --set-json keeps it a number.
        "--set-json",
        "prometheusRule.lag.p99Seconds=42.5",
        "--set",
        "prometheusRule.lag.for=7m",
    ]);
    let alerts = alerts(&rule);
    // (alert, pieces of the expression, `for`)
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        (
            "PgFloSlotRetainedWalHigh",
            &["> 5368709120", "deriv(", "[20m]"],
            Some("20m"),
        ),
        (
            "PgFloSlotWalUnreserved",
            &["status=\"unreserved\"}) == 1"],
            None,
        ),
        ("PgFloSlotLost", &["status=\"lost\"}) == 1"], None),
        ("PgFloSlotInactive", &["pg_flo_ready{", "up{"], Some("3m")),
        ("PgFloWorkerNotReady", &["pg_flo_ready{", "up{"], Some("4m")),
        (
            "PgFloConsumerPendingGrowing",
            &["> 50000", "[1h]"],
            Some("1h"),
        ),
        (
            "PgFloDeadLetters",
            &["outcome=\"dead_lettered\"}[2h]"],
            None,
        ),
        ("PgFloCopyStalled", &["offset 45m"], None),
        (
            "PgFloLagHigh",
            &["histogram_quantile(0.99,", "> 42.5"],
            Some("7m"),
        ),
    ];
    for (name, pieces, r#for) in cases {
        let r = &alerts[*name];
        let expr = r["expr"].as_str().unwrap();
        for p in *pieces {
            assert!(expr.contains(p), "{name}: {p:?} not in\n{expr}");
        }
        assert_eq!(r["for"].as_str(), *r#for, "{name}");
    }
    assert!(
        alerts["PgFloSlotRetainedWalHigh"]["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("more than 5368709120 bytes")
    );
}

#[test]
fn grafana_dashboard_configmap_holds_the_dashboard() {
    let r = template(&[
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.namespace=monitoring",
        "--set",
        "grafanaDashboard.annotations.grafana_folder=CDC",
    ]);
    let cm = one(&r.config_maps, "ConfigMap");
    assert_eq!(
        cm.metadata.name.as_deref(),
        Some(&*format!("{FULLNAME}-dashboard"))
    );
    assert_eq!(cm.metadata.namespace.as_deref(), Some("monitoring"));
    assert_labelled(&cm.metadata);
    assert_eq!(
        cm.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
        "1"
    );
    assert_eq!(
        cm.metadata.annotations.as_ref().unwrap()["grafana_folder"],
        "CDC"
    );
    let data = cm.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["pg-flo.json"]);
    let file = std::fs::read_to_string(chart_dir().join("dashboards/pg-flo.json")).unwrap();
    assert_eq!(data["pg-flo.json"], file.trim_end());
    // The release namespace by default.
    let r = template(&["--set", "grafanaDashboard.enabled=true"]);
    assert_eq!(
        one(&r.config_maps, "ConfigMap")
            .metadata
            .namespace
            .as_deref(),
        Some(NAMESPACE)
    );

    let d: Json = serde_json::from_str(&file).unwrap();
    assert_eq!(d["uid"], "pg-flo-groups");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "namespace", "group"]);

    // Panels: unique ids, inside the 24-column grid, not overlapping.
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(&str, [i64; 4])> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_i64().unwrap()), "{title}: id twice");
        let g = &p["gridPos"];
        let b = ["x", "y", "w", "h"].map(|k| g[k].as_i64().unwrap());
        assert!(
            b[0] >= 0 && b[2] > 0 && b[0] + b[2] <= 24 && b[3] > 0,
            "{title}: {g}"
        );
        for (other, o) in &boxes {
            let apart = b[0] + b[2] <= o[0]
                || o[0] + o[2] <= b[0]
                || b[1] + b[3] <= o[1]
                || o[1] + o[3] <= b[1];
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title, b));
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refId twice");
    }

    // Every query parses, is scoped to the chosen namespaces and groups of the runtime pods,
    // and keeps the group through its aggregations.
    let mut used = BTreeSet::new();
    for q in promql::dashboard_queries(&d) {
        let e = promql::parse(&q);
        for vs in promql::selectors(&e) {
            used.insert(promql::metric_name(&q, &vs));
            assert_eq!(
                promql::equal_matcher(&vs, "job").as_deref(),
                Some("pg-flo"),
                "{}: {vs}",
                q.origin
            );
            if q.origin.starts_with("panel") {
                assert_eq!(
                    promql::regex_matcher(&vs, "group").as_deref(),
                    Some("$group"),
                    "{}: {vs}",
                    q.origin
                );
            }
            assert_eq!(
                promql::regex_matcher(&vs, "namespace").as_deref(),
                (q.origin != "variable namespace").then_some("$namespace"),
                "{}: {vs}",
                q.origin
            );
        }
        for by in promql::aggregation_labels(&e) {
            assert!(
                by.contains(&"group".to_string()),
                "{}: an aggregation drops the group: by {by:?}",
                q.origin
            );
        }
    }
    // Per group: throughput, lag, retained WAL, pending, errors, copy progress.
    for m in [
        "pg_flo_replicator_changes_published_total",
        "pg_flo_worker_changes_applied_total",
        "pg_flo_worker_lag_seconds_bucket",
        "pg_flo_replicator_lag_bytes",
        "pg_flo_replicator_slot_retained_bytes",
        "pg_flo_replicator_slot_wal_status",
        "pg_flo_worker_consumer_pending",
        "pg_flo_errors_total",
        "pg_flo_worker_messages_total",
        "pg_flo_copy_ranges",
        "pg_flo_copy_ranges_done_total",
        "pg_flo_copy_rows_total",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
}

/// One operator pod: no PodDisruptionBudget (it would block every drain). Several (leader
/// election): one that lets at most one go at a time, selecting exactly the Deployment's pods.
#[test]
fn several_operator_pods_get_a_disruption_budget() {
    assert!(template(&[]).pdbs.is_empty());
    let r = template(&["--set", "replicaCount=2"]);
    let pdb = one(&r.pdbs, "PodDisruptionBudget");
    let spec = pdb.spec.as_ref().unwrap();
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let deployment = one(&r.deployments, "Deployment");
    assert_eq!(
        spec.selector.as_ref().unwrap().match_labels,
        deployment.spec.as_ref().unwrap().selector.match_labels
    );
    assert_eq!(pdb.metadata.namespace.as_deref(), Some(NAMESPACE));
}
