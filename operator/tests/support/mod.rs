//! Fixtures of the reconcile tests: the fake Kubernetes API, a real PostgreSQL source, the
//! operator's context, and helpers to run one reconcile the way the controller would.

#![allow(dead_code)] // each test binary uses a part

pub mod fake_api;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use e2e::{PgCluster, PgOptions};
use fake_api::FakeApi;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use pg_flo_operator::controller::{attach, group, Context, Error};
use pg_flo_operator::crd::{ReplicationGroup, Route, Rule};
use pg_flo_operator::metrics::Metrics;

/// Namespace of every test object.
pub const NS: &str = "data";
/// Runtime image the test context renders.
pub const IMAGE: &str = "registry.test/pg-flo:test";

/// Rule `mask-email` of group `orders`: masks `orders.email` with `*`.
pub const MASK_EMAIL: &str = "apiVersion: pgflo.io/v1alpha1
kind: Rule
metadata: {name: mask-email}
spec:
  groupRef: {name: orders}
  table: orders
  rules:
    - {type: transform, column: email, transform: {type: mask, maskChar: '*'}}";

/// One test's world: the fake API, the operator context on it, a real source database.
pub struct Env {
    pub api: FakeApi,
    pub ctx: Arc<Context>,
    pub pg: PgCluster,
}

pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// An operator context on `api`: status every 30 s, the slot read at most every `slot_refresh`
/// (the tests' [`Env`] reads it on every reconcile).
pub fn context(api: &FakeApi, slot_refresh: Duration) -> Arc<Context> {
    Arc::new(base_context(api, slot_refresh))
}

/// [`context`] of an operator that knows its own pods (`--operator-pod-labels`).
pub fn context_with_operator_pods(
    api: &FakeApi,
    pods: pg_flo_operator::resources::OperatorPods,
) -> Arc<Context> {
    Arc::new(base_context(api, Duration::ZERO).with_operator_pods(Some(pods)))
}

fn base_context(api: &FakeApi, slot_refresh: Duration) -> Context {
    Context::new(
        api.client(),
        IMAGE.into(),
        Reporter {
            controller: "pg-flo-operator".into(),
            instance: Some("test".into()),
        },
        Arc::new(Metrics::new().unwrap()),
        Duration::from_secs(30),
    )
    .with_slot_refresh(slot_refresh)
}

/// A test whose operator made a request its RBAC does not permit fails (the fake API answered
/// it `403 Forbidden`, as a real API server would; see `pg_flo_operator::rbac`).
impl Drop for Env {
    fn drop(&mut self) {
        let forbidden = self.api.forbidden();
        if !forbidden.is_empty() && !std::thread::panicking() {
            panic!("requests the operator's RBAC does not permit: {forbidden:#?}");
        }
    }
}

impl Env {
    /// Starts PostgreSQL (database `shop`) and an empty fake API.
    pub async fn start() -> Env {
        let pg = PgCluster::start(PgOptions::default()).await.unwrap();
        pg.create_database("shop").await.unwrap();
        let api = FakeApi::new();
        let ctx = context(&api, Duration::ZERO);
        Env { api, ctx, pg }
    }

    /// One reconcile of the stored group with another context.
    pub async fn reconcile_with(&self, ctx: &Arc<Context>, name: &str) -> Result<Action, Error> {
        let rg = Arc::new(self.stored(name));
        group::reconcile(rg, ctx.clone()).await
    }

    /// Stores the Secret `src` with the source's real credentials.
    pub fn source_secret(&self) {
        self.api.insert(&secret(
            "src",
            &[("user", self.pg.user()), ("password", self.pg.password())],
        ));
    }

    /// A group on the real source with `extra` YAML merged into its spec (stdout sink, managed
    /// NATS unless `extra` says otherwise).
    pub fn group(&self, name: &str, extra: &str) -> ReplicationGroup {
        self.group_in(NS, name, extra)
    }

    /// [`Env::group`] in namespace `ns`.
    pub fn group_in(&self, ns: &str, name: &str, extra: &str) -> ReplicationGroup {
        let mut spec: serde_yaml::Value = serde_yaml::from_str(&format!(
            "source: {{host: 127.0.0.1, port: {port}, database: shop, tables: [orders], \
             sslMode: disable, user: {{name: src, key: user}}, password: {{name: src, key: password}}}}\n\
             sink: {{stdout: {{}}}}\n\
             nats: {{managed: {{}}}}\n",
            port = self.pg.port()
        ))
        .unwrap();
        if !extra.trim().is_empty() {
            let extra: serde_yaml::Value = serde_yaml::from_str(extra).unwrap();
            for (k, v) in extra.as_mapping().unwrap() {
                spec[k.as_str().unwrap()] = v.clone();
            }
        }
        let doc = serde_yaml::to_string(&serde_yaml::Value::Mapping(
            [
                ("apiVersion".into(), "pgflo.io/v1alpha1".into()),
                ("kind".into(), "ReplicationGroup".into()),
                (
                    "metadata".into(),
                    serde_yaml::from_str(&format!("{{name: {name}, namespace: {ns}}}")).unwrap(),
                ),
                ("spec".into(), spec),
            ]
            .into_iter()
            .collect(),
        ))
        .unwrap();
        serde_yaml::from_str(&doc).unwrap()
    }

    /// The stored group.
    pub fn stored(&self, name: &str) -> ReplicationGroup {
        self.stored_in(NS, name)
    }

    /// The stored group of namespace `ns`.
    pub fn stored_in(&self, ns: &str, name: &str) -> ReplicationGroup {
        self.api
            .get::<ReplicationGroup>(ns, name)
            .expect("group stored")
    }

    /// One reconcile of the stored group of namespace `ns`.
    pub async fn reconcile_in(&self, ns: &str, name: &str) -> Result<Action, Error> {
        let rg = Arc::new(self.stored_in(ns, name));
        group::reconcile(rg, self.ctx.clone()).await
    }

    /// Marks the StatefulSet `name` rolled out at its generation, with `available` of its one
    /// replica ready and available (what the StatefulSet controller would report).
    pub fn set_available(&self, name: &str, available: i32) {
        let sts: StatefulSet = self.api.get(NS, name).unwrap();
        self.api.set_status::<StatefulSet>(
            NS,
            name,
            serde_json::json!({"observedGeneration": sts.metadata.generation, "replicas": 1,
                               "updatedReplicas": 1, "readyReplicas": available,
                               "availableReplicas": available}),
        );
    }

    /// Changes the stored group's spec as a user's `kubectl apply` would (generation bumps).
    pub fn edit(&self, name: &str, change: impl FnOnce(&mut ReplicationGroup)) {
        let mut rg = self.stored(name);
        change(&mut rg);
        self.api.replace(&rg);
    }

    /// One reconcile of the stored group, as the controller would run it.
    pub async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let rg = Arc::new(self.stored(name));
        group::reconcile(rg, self.ctx.clone()).await
    }

    /// Reconciles until the finalizer is on and the group applied (two reconciles).
    pub async fn create(&self, rg: &ReplicationGroup) -> Action {
        self.api.insert(rg);
        let name = rg.metadata.name.clone().unwrap();
        let ns = rg.metadata.namespace.clone().unwrap();
        let first = self.reconcile_in(&ns, &name).await.unwrap();
        assert_eq!(
            first,
            Action::await_change(),
            "first reconcile adds the finalizer"
        );
        assert_eq!(
            self.stored_in(&ns, &name).metadata.finalizers,
            Some(vec!["pgflo.io/cleanup".to_string()])
        );
        self.reconcile_in(&ns, &name).await.unwrap()
    }

    pub async fn reconcile_rule(&self, name: &str) -> Result<Action, Error> {
        let r = Arc::new(self.api.get::<Rule>(NS, name).unwrap());
        attach::reconcile_rule(r, self.ctx.clone()).await
    }

    pub async fn reconcile_route(&self, name: &str) -> Result<Action, Error> {
        let r = Arc::new(self.api.get::<Route>(NS, name).unwrap());
        attach::reconcile_route(r, self.ctx.clone()).await
    }
}

/// Creates the table `orders` (if missing) and the publication and slot of runtime group
/// `group` on the source, as the replicator would; the client to look at them.
pub async fn create_group_slot(env: &Env, group: &str) -> tokio_postgres::Client {
    let c = env.pg.client("shop").await.unwrap();
    c.batch_execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    let name = pg_flo_source::names::slot_name(group);
    c.batch_execute(&format!("CREATE PUBLICATION {name} FOR TABLE orders"))
        .await
        .unwrap();
    c.batch_execute(&format!(
        "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"
    ))
    .await
    .unwrap();
    c
}

/// Whether the slot and the publication `name` exist.
pub async fn slot_and_publication(c: &tokio_postgres::Client, name: &str) -> (bool, bool) {
    let count = |sql: &'static str| async move {
        c.query_one(sql, &[&name]).await.unwrap().get::<_, i64>(0) == 1
    };
    (
        count("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1").await,
        count("SELECT count(*) FROM pg_publication WHERE pubname = $1").await,
    )
}

/// Parses a namespaced custom resource from YAML (namespace set to [`NS`]).
pub fn cr<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
    let mut v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    v["metadata"]["namespace"] = NS.into();
    serde_yaml::from_value(v).unwrap()
}

/// The annotation `key` of a StatefulSet's pod template.
pub fn pod_annotation(d: &StatefulSet, key: &str) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[key]
        .clone()
}

/// The config hash annotation of a StatefulSet's pod template (changes roll the pods).
pub fn pod_hash(d: &StatefulSet) -> String {
    pod_annotation(d, pg_flo_operator::resources::CONFIG_HASH_ANNOTATION)
}

/// The pod spec of a StatefulSet's template.
pub fn pod_spec(d: &StatefulSet) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

/// The (first) container of a StatefulSet's pod.
pub fn container(d: &StatefulSet) -> &Container {
    &pod_spec(d).containers[0]
}

/// The pod `<group>-<component>-0` as its StatefulSet would create it: the operator's labels,
/// the config `hash` annotation, one container `component` running (ready or not) with
/// `restarts` restarts; `container` (JSON) is merged into the container status (e.g. a waiting
/// state).
pub fn runtime_pod(
    group: &str,
    component: &str,
    hash: &str,
    ready: bool,
    container: serde_json::Value,
) -> k8s_openapi::api::core::v1::Pod {
    let mut c = serde_json::json!({
        "name": component, "image": IMAGE, "imageID": "", "ready": ready,
        "restartCount": 0, "state": {"running": {"startedAt": "2025-06-01T10:00:00Z"}}
    });
    for (k, v) in container.as_object().unwrap() {
        c[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{group}-{component}-0"), "namespace": NS,
            "labels": pg_flo_operator::resources::labels(group, component),
            "annotations": {"pgflo.io/config-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                "name": format!("{group}-{component}"), "uid": "uid-sts", "controller": true}]
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [c]
        }
    }))
    .unwrap()
}

/// The config hash the group's ConfigMap holds now.
pub fn rendered_hash(env: &Env, group: &str) -> String {
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        env.api.get(NS, &format!("{group}-pg-flo-config")).unwrap();
    pg_flo_operator::resources::config_hash(&cm)
}

/// `(status, reason, message)` of the `Accepted` condition of Rule `name`.
pub fn rule_accepted(env: &Env, name: &str) -> (String, String, String) {
    let r: Rule = env.api.get(NS, name).unwrap();
    let c = r
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Accepted")
        .unwrap();
    (c.status, c.reason, c.message)
}

/// Status, reason and message of condition `type_` of a group (panics when missing).
pub fn condition(rg: &ReplicationGroup, type_: &str) -> (String, String, String) {
    let c = rg
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("condition {type_} missing"))
        .clone();
    (c.status, c.reason, c.message)
}
