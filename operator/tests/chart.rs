//! The Helm chart `charts/pg-flo-operator/`: `helm lint` passes, `helm template` renders the
//! objects the operator needs (checked as typed k8s-openapi objects, with exact least-privilege
//! RBAC for both the cluster-wide and the per-namespace install), the values schema rejects bad
//! values, and every value is in the schema, commented in values.yaml and listed in the README.
//!
//! Needs `helm` (v3.8+ or v4): `$HELM`, else `<repo>/target/tools/helm`, which
//! `scripts/fetch-helm.sh` (run by `scripts/setup.sh`) puts there. A missing helm fails the
//! tests; they are never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

const RELEASE: &str = "flo";
const NAMESPACE: &str = "pgflo-system";
/// `<release>-<chart>`: the release name does not contain the chart name.
const FULLNAME: &str = "flo-pg-flo-operator";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn chart_dir() -> PathBuf {
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
fn helm(args: &[&str]) -> Output {
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

fn helm_ok(args: &[&str]) -> String {
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
}

fn template(set: &[&str]) -> Rendered {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(set);
    parse(&helm_ok(&args))
}

fn parse(yaml: &str) -> Rendered {
    let mut r = Rendered::default();
    for de in serde_yaml::Deserializer::from_str(yaml) {
        let doc: serde_yaml::Value = serde::Deserialize::deserialize(de).unwrap();
        if doc.is_null() {
            continue; // an empty document (a template rendered to nothing)
        }
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

/// (apiGroup, resource) -> verbs of the watched-resource rules: the brief's least-privilege table.
fn expected_rules() -> BTreeMap<(String, String), BTreeSet<String>> {
    let crud = [
        "get", "list", "watch", "create", "patch", "update", "delete",
    ];
    let read = ["get", "list", "watch"];
    let mut m = BTreeMap::new();
    let mut add = |group: &str, resources: &[&str], verbs: &[&str]| {
        for r in resources {
            m.insert((group.to_string(), r.to_string()), set(verbs));
        }
    };
    add(
        "pgflo.io",
        &["replicationgroups", "rules", "routes"],
        &["get", "list", "watch", "patch", "update"],
    );
    add(
        "pgflo.io",
        &["replicationgroups/status", "rules/status", "routes/status"],
        &["get", "patch", "update"],
    );
    add("pgflo.io", &["replicationgroups/finalizers"], &["update"]);
    add("", &["configmaps", "services", "serviceaccounts"], &crud);
    add("", &["secrets"], &read);
    add("", &["pods"], &["list", "watch"]);
    add("", &["events"], &["create", "patch"]);
    add("events.k8s.io", &["events"], &["create", "patch"]);
    add("apps", &["deployments", "statefulsets"], &crud);
    add(
        "batch",
        &["jobs"],
        &["get", "list", "watch", "create", "patch", "delete"],
    );
    add("policy", &["poddisruptionbudgets"], &crud);
    m
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
    let want: BTreeMap<_, _> = [(
        ("coordination.k8s.io".to_string(), "leases".to_string()),
        set(&["get", "create", "update", "patch"]),
    )]
    .into_iter()
    .collect();
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
    assert_eq!(
        rules[&("pgflo.io".to_string(), "replicationgroups".to_string())],
        set(&["get", "list", "watch", "patch", "update"])
    );
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
fn invalid_values_fail_the_schema() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    // (values, the key the error must name). Key names rather than whole messages: Helm 4 and
    // Helm >= 3.18 word schema errors differently from older Helm 3.
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "logFormat=xml"], "logFormat"),
        (&["--set", "bogus=1"], "bogus"),
        (&["--set", "image.bogus=1"], "bogus"),
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
fn kubernetes_older_than_1_25_is_refused() {
    let chart = chart_dir();
    let out = helm(&[
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--kube-version",
        "1.24.0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubeVersion"));
}

#[test]
fn helm_ships_the_three_crds() {
    let chart = chart_dir();
    let yaml = helm_ok(&["show", "crds", chart.to_str().unwrap()]);
    let mut names: Vec<String> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &serde_yaml::Value| !d.is_null())
        .map(|d| {
            assert_eq!(d["kind"].as_str(), Some("CustomResourceDefinition"));
            d["metadata"]["name"].as_str().unwrap().to_string()
        })
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
