//! Reconcile scenarios against the fake Kubernetes API (tests/support/fake_api.rs) and a real
//! PostgreSQL source: create, update rolling the pods, pause/stop/resume, invalid spec, Rules
//! and Routes added after the group, delete with `retain` and with `delete`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use pg_flo_operator::crd::{DesiredState, Phase, ReplicationGroup, Route, Rule};
use serde_json::json;
use support::{
    container, cr, create_group_slot, pod_annotation, pod_hash, secret, slot_and_publication, Env,
    IMAGE, MASK_EMAIL, NS,
};

/// `(status, reason, message)` of the condition `type_`.
fn find<'a>(conditions: &'a [Condition], type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("condition {type_} missing"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn condition<'a>(rg: &'a ReplicationGroup, type_: &str) -> (&'a str, &'a str, &'a str) {
    find(&rg.status.as_ref().unwrap().conditions, type_)
}

fn phase(rg: &ReplicationGroup) -> Phase {
    rg.status.as_ref().unwrap().phase.unwrap()
}

/// The replicator and worker StatefulSets (not the managed NATS one), by name.
fn workloads(env: &Env) -> Vec<StatefulSet> {
    env.api
        .list::<StatefulSet>(NS)
        .into_iter()
        .filter(|s| !s.name_any().ends_with("-nats"))
        .collect()
}

fn workload_names(env: &Env) -> Vec<String> {
    workloads(env).iter().map(|s| s.name_any()).collect()
}

fn replicas(d: &StatefulSet) -> i32 {
    d.spec.as_ref().unwrap().replicas.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_applies_every_object_and_reports_the_real_slot() {
    let env = Env::start().await;
    env.source_secret();
    let rg = env.group("orders", "");
    let action = env.create(&rg).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    let uid = env.stored("orders").uid().unwrap();
    assert_eq!(
        env.api.names::<ConfigMap>(NS),
        vec!["orders-nats-config", "orders-pg-flo-config"]
    );
    assert_eq!(env.api.names::<NetworkPolicy>(NS), vec!["orders-nats"]);
    assert_eq!(
        env.api.names::<Secret>(NS),
        vec!["orders-nats-auth", "src"],
        "the managed NATS's credentials are generated"
    );
    assert_eq!(env.api.names::<ServiceAccount>(NS), vec!["orders-pg-flo"]);
    assert_eq!(
        workload_names(&env),
        vec!["orders-replicator", "orders-worker"]
    );
    assert_eq!(
        env.api.names::<StatefulSet>(NS),
        vec!["orders-nats", "orders-replicator", "orders-worker"]
    );
    assert_eq!(
        env.stored("orders").status.unwrap().group_name.as_deref(),
        Some("data_orders")
    );
    assert_eq!(
        env.api.names::<Service>(NS),
        vec!["orders-nats", "orders-nats-headless"]
    );
    assert_eq!(
        env.api.names::<PodDisruptionBudget>(NS),
        vec!["orders-nats"]
    );
    for d in workloads(&env) {
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ReplicationGroup", uid.as_str(), Some(true))
        );
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some(IMAGE));
        assert_eq!(replicas(&d), 1);
        assert_eq!(d.labels()["pgflo.io/group"], "orders");
    }
    // Every write of a child is a server-side apply by our field manager, forced.
    let applies: Vec<_> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH"
                && !r.path.ends_with("/status")
                && !r.path.contains("replicationgroups")
        })
        .collect();
    // ServiceAccount, 2 ConfigMaps, 2 Services, StatefulSet, PDB, NetworkPolicy, the NATS
    // credentials Secret, 2 Deployments.
    assert_eq!(applies.len(), 11, "{applies:#?}");
    for r in &applies {
        assert!(
            r.content_type.starts_with("application/apply-patch+yaml"),
            "{r:?}"
        );
        assert!(
            r.query.contains("fieldManager=pg-flo-operator") && r.query.contains("force=true"),
            "{r:?}"
        );
    }

    // No slot yet, workloads not available: Pending, names known.
    let got = env.stored("orders");
    let st = got.status.as_ref().unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(phase(&got), Phase::Pending);
    assert_eq!(condition(&got, "Ready").0, "False");
    assert_eq!(condition(&got, "Ready").1, "Pending");
    assert_eq!(condition(&got, "Progressing").0, "True");
    assert_eq!(condition(&got, "Degraded").0, "False");
    assert_eq!(condition(&got, "Paused").0, "False");
    let slot = st.slot.as_ref().unwrap();
    assert_eq!(slot.name.as_deref(), Some("pg_flo_data_orders_publication"));
    assert_eq!(
        slot.publication.as_deref(),
        Some("pg_flo_data_orders_publication")
    );
    assert_eq!(slot.restart_lsn, None);

    // The slot exists and WAL was written past it; both workloads are available.
    let c = create_group_slot(&env, "data_orders").await;
    c.batch_execute(
        "INSERT INTO orders SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g",
    )
    .await
    .unwrap();
    env.set_available("orders-replicator", 1);
    env.set_available("orders-worker", 1);
    env.reconcile("orders").await.unwrap();
    let row = c
        .query_one(
            "SELECT restart_lsn::text, confirmed_flush_lsn::text, wal_status, active FROM pg_replication_slots WHERE slot_name = 'pg_flo_data_orders_publication'",
            &[],
        )
        .await
        .unwrap();
    let after: i64 = c
        .query_one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'pg_flo_data_orders_publication'", &[])
        .await
        .unwrap()
        .get(0);
    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Streaming);
    assert_eq!(
        condition(&got, "Ready"),
        ("True", "Streaming", "replicator and worker are running")
    );
    assert_eq!(condition(&got, "Progressing").0, "False");
    let slot = got.status.as_ref().unwrap().slot.clone().unwrap();
    assert_eq!(
        slot.restart_lsn.as_deref(),
        Some(row.get::<_, String>(0).as_str())
    );
    assert_eq!(
        slot.confirmed_flush_lsn.as_deref(),
        Some(row.get::<_, String>(1).as_str())
    );
    assert_eq!(
        slot.wal_status.as_deref(),
        Some(row.get::<_, String>(2).as_str())
    );
    assert_eq!(slot.active, Some(false));
    let lag = slot.lag_bytes.unwrap();
    assert!(
        lag > 200_000 && lag <= after,
        "lag {lag}, measured after {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_rolls_the_pods_and_a_rule_or_route_added_later_rerenders() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    let before: Vec<String> = workloads(&env).iter().map(pod_hash).collect();
    assert_eq!(before[0], before[1], "both pods carry the config hash");
    let cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    assert!(!cm.data.as_ref().unwrap().contains_key("rules.yaml"));

    // Spec change: the rendered worker config changes, both pod templates roll.
    env.edit("orders", |rg| rg.spec.worker_batch_size = Some(250));
    env.reconcile("orders").await.unwrap();
    let cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    assert!(
        cm.data.as_ref().unwrap()["worker.yaml"].contains("batch-size: 250"),
        "{cm:?}"
    );
    let after: Vec<String> = workloads(&env).iter().map(pod_hash).collect();
    assert_ne!(before[0], after[0]);
    assert_eq!(after[0], after[1]);
    assert_eq!(
        env.stored("orders").status.unwrap().observed_generation,
        Some(2)
    );

    // A Rule added after the group: rendered, pods roll again (it is applied once the worker
    // runs it: see `a_rule_is_applied_only_once_a_ready_worker_runs_a_configuration_with_it`).
    env.api.insert(&cr::<Rule>(MASK_EMAIL));
    env.reconcile_rule("mask-email").await.unwrap();
    assert_eq!(support::rule_accepted(&env, "mask-email").1, "Pending");
    env.reconcile("orders").await.unwrap();
    let cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    let data = cm.data.unwrap();
    assert_eq!(
        data["rules.yaml"],
        "tables:\n  orders:\n  - type: transform\n    column: email\n    parameters:\n      mask_char: '*'\n      type: mask\n"
    );
    assert!(data["worker.yaml"].contains("rules-config: /etc/pg-flo/rules.yaml"));
    let with_rule: Vec<String> = workloads(&env).iter().map(pod_hash).collect();
    assert_ne!(with_rule[0], after[0]);

    // A Route: accepted and rendered; a second Route of the same table conflicts.
    for (name, dest) in [
        ("orders-to-archive", "archive"),
        ("zz-orders-elsewhere", "elsewhere"),
    ] {
        env.api.insert(&cr::<Route>(&format!(
            "apiVersion: pgflo.io/v1alpha1
kind: Route
metadata: {{name: {name}}}
spec:
  groupRef: {{name: orders}}
  sourceTable: orders
  destinationTable: {dest}
  columnMappings: [{{source: note, destination: remark}}]"
        )));
        env.reconcile_route(name).await.unwrap();
    }
    let winner: Route = env.api.get(NS, "orders-to-archive").unwrap();
    assert_eq!(
        find(&winner.status.unwrap().conditions, "Accepted").1,
        "Pending"
    );
    let loser: Route = env.api.get(NS, "zz-orders-elsewhere").unwrap();
    let st = loser.status.unwrap();
    let (status, reason, message) = find(&st.conditions, "Accepted");
    assert_eq!((status, reason), ("False", "Conflict"));
    assert!(
        message.starts_with("Route orders-to-archive also routes orders"),
        "{message}"
    );
    env.reconcile("orders").await.unwrap();
    // The worker runs the new configuration: the winner is applied, the other still conflicts.
    env.api.insert(&support::runtime_pod(
        "orders",
        "worker",
        &support::rendered_hash(&env, "orders"),
        true,
        json!({}),
    ));
    for name in ["orders-to-archive", "zz-orders-elsewhere"] {
        env.reconcile_route(name).await.unwrap();
    }
    let winner: Route = env.api.get(NS, "orders-to-archive").unwrap();
    assert_eq!(
        find(&winner.status.unwrap().conditions, "Accepted").1,
        "Applied"
    );
    let loser: Route = env.api.get(NS, "zz-orders-elsewhere").unwrap();
    assert_eq!(
        find(&loser.status.unwrap().conditions, "Accepted").1,
        "Conflict"
    );
    let cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    assert_eq!(
        cm.data.unwrap()["routing.yaml"],
        "orders:\n  destination_table: archive\n  column_mappings:\n  - source: note\n    destination: remark\n"
    );
    let events = env.api.events(NS);
    assert!(
        events.iter().any(|e| e.0 == "Warning" && e.1 == "Conflict"),
        "{events:?}"
    );

    // A rotated password rolls both pods (Secret versions, never content, in the annotation).
    let versions = |env: &Env| -> Vec<String> {
        workloads(env)
            .iter()
            .map(|d| pod_annotation(d, "pgflo.io/secrets-version"))
            .collect()
    };
    let before = versions(&env);
    assert!(
        before[0].starts_with("orders-nats-auth=") && before[0].contains(",src="),
        "{before:?}"
    );
    let hashes_before: Vec<String> = workloads(&env).iter().map(pod_hash).collect();
    env.api.replace(&secret(
        "src",
        &[("user", env.pg.user()), ("password", "rotated")],
    ));
    env.reconcile("orders").await.unwrap();
    let after = versions(&env);
    assert_ne!(before[0], after[0]);
    assert_eq!(after[0], after[1]);
    assert!(!after[0].contains("rotated"));
    let hashes_after: Vec<String> = workloads(&env).iter().map(pod_hash).collect();
    assert_eq!(
        hashes_before, hashes_after,
        "the config itself did not change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_scales_to_zero_stop_removes_the_workloads_and_running_brings_them_back() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;

    env.edit("orders", |rg| rg.spec.state = DesiredState::Paused);
    env.reconcile("orders").await.unwrap();
    let ds = workloads(&env);
    assert_eq!(ds.iter().map(replicas).collect::<Vec<_>>(), vec![0, 0]);
    assert_eq!(
        env.api.names::<StatefulSet>(NS),
        vec!["orders-nats", "orders-replicator", "orders-worker"],
        "NATS (the stream) stays"
    );
    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Paused);
    assert_eq!(condition(&got, "Paused").0, "True");
    assert_eq!(condition(&got, "Ready").1, "Paused");

    env.edit("orders", |rg| rg.spec.state = DesiredState::Stopped);
    env.reconcile("orders").await.unwrap();
    assert!(
        workload_names(&env).is_empty(),
        "stopped removes the workloads"
    );
    assert_eq!(env.api.names::<StatefulSet>(NS), vec!["orders-nats"]);
    assert_eq!(
        env.api.names::<ConfigMap>(NS),
        vec!["orders-nats-config", "orders-pg-flo-config"]
    );
    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Stopped);
    assert_eq!(condition(&got, "Paused").1, "Stopped");
    let deletes: Vec<String> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        deletes,
        vec![
            "/apis/apps/v1/namespaces/data/statefulsets/orders-replicator",
            "/apis/apps/v1/namespaces/data/statefulsets/orders-worker"
        ]
    );

    env.edit("orders", |rg| rg.spec.state = DesiredState::Running);
    env.reconcile("orders").await.unwrap();
    let ds = workloads(&env);
    assert_eq!(ds.iter().map(replicas).collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(phase(&env.stored("orders")), Phase::Pending);
}

/// The default runtime group is `<namespace>_<name>`: one that cannot name a replication slot
/// (a dot, allowed in Kubernetes names) is refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_cannot_name_a_replication_slot_is_an_invalid_spec() {
    let env = Env::start().await;
    env.source_secret();
    env.api.insert(&env.group("orders.v2", ""));
    // The first pass adds the finalizer, the second validates.
    for _ in 0..2 {
        env.reconcile("orders.v2").await.unwrap();
    }
    let got = env.stored("orders.v2");
    assert_eq!(phase(&got), Phase::Degraded);
    let (status, reason, message) = condition(&got, "Degraded");
    assert_eq!((status, reason), ("True", "InvalidSpec"));
    assert_eq!(
        message,
        "the default group name (<namespace>_<name>): invalid group name \"data_orders.v2\": use \
         only letters, digits, '_' and '-' (the group is part of NATS subjects and PostgreSQL \
         object names): set spec.groupName"
    );
    assert!(workload_names(&env).is_empty());
    assert!(env.api.names::<ConfigMap>(NS).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_becomes_a_condition_and_an_event_and_creates_nothing() {
    let env = Env::start().await;
    // No Secret `src`, and a webhook header Secret without keys.
    env.api.insert(&secret("hooks", &[]));
    let rg = env.group(
        "orders",
        "sink: {webhook: {url: 'https://example.test/hook', headersSecret: {name: hooks}}}",
    );
    env.api.insert(&rg);
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Degraded);
    let (status, reason, message) = condition(&got, "Degraded");
    assert_eq!((status, reason), ("True", "InvalidSpec"));
    assert_eq!(
        message,
        "spec.source.user: Secret src not found in namespace data: create it or fix the reference; \
         spec.source.password: Secret src not found in namespace data: create it or fix the reference; \
         spec.sink.webhook.headersSecret: Secret hooks has no keys: add one key per HTTP header"
    );
    assert_eq!(condition(&got, "Ready").0, "False");
    assert!(env.api.names::<ConfigMap>(NS).is_empty());
    assert!(workload_names(&env).is_empty());
    assert!(env.api.names::<StatefulSet>(NS).is_empty());
    let events = env.api.events(NS);
    assert_eq!(
        events.len(),
        1,
        "one Event, not one per reconcile: {events:?}"
    );
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("Warning", "InvalidSpec")
    );

    // Fixing the references makes it apply; a Rule with a broken regex then degrades the group
    // without dropping the running configuration.
    env.source_secret();
    env.api
        .remove::<k8s_openapi::api::core::v1::Secret>(NS, "hooks");
    env.api
        .insert(&secret("hooks", &[("Authorization", "Bearer t0ken")]));
    env.reconcile("orders").await.unwrap();
    assert_eq!(workload_names(&env).len(), 2);
    let worker: StatefulSet = env.api.get(NS, "orders-worker").unwrap();
    let env_vars = worker.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let header = env_vars
        .iter()
        .find(|e| e.name == "PG_FLO_WEBHOOK_HEADER")
        .unwrap();
    assert_eq!(
        header.value.as_deref(),
        Some("Authorization: $(PG_FLO_WEBHOOK_HEADER_0)")
    );
    assert!(
        !format!("{env_vars:?}").contains("t0ken"),
        "no header value in the pod spec"
    );
    let cm_before: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();

    env.api.insert(&cr::<Rule>(
        "apiVersion: pgflo.io/v1alpha1
kind: Rule
metadata: {name: broken}
spec:
  groupRef: {name: orders}
  table: orders
  rules:
    - {type: transform, column: email, transform: {type: regex, pattern: '([a-z', replace: x}}",
    ));
    env.reconcile_rule("broken").await.unwrap();
    let rule: Rule = env.api.get(NS, "broken").unwrap();
    let st = rule.status.unwrap();
    let (status, reason, message) = find(&st.conditions, "Accepted");
    assert_eq!((status, reason), ("False", "InvalidRule"));
    assert!(
        message.starts_with("rules[0] (column email): pattern does not compile"),
        "{message}"
    );
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    let (status, reason, message) = condition(&got, "Degraded");
    assert_eq!((status, reason), ("True", "InvalidSpec"));
    assert!(
        message.starts_with("Rule broken: rules[0] (column email): pattern does not compile"),
        "{message}"
    );
    let cm_after: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    assert_eq!(
        cm_before.data, cm_after.data,
        "the previous configuration stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_routes_of_an_unknown_group_wait_for_it() {
    let env = Env::start().await;
    env.api.insert(&cr::<Route>(
        "apiVersion: pgflo.io/v1alpha1
kind: Route
metadata: {name: r1}
spec: {groupRef: {name: later}, sourceTable: orders, destinationTable: o2}",
    ));
    assert_eq!(
        env.reconcile_route("r1").await.unwrap(),
        Action::await_change()
    );
    let r: Route = env.api.get(NS, "r1").unwrap();
    let st = r.status.unwrap();
    let (status, reason, message) = find(&st.conditions, "Accepted");
    assert_eq!((status, reason), ("False", "GroupNotFound"));
    assert_eq!(
        message,
        "ReplicationGroup later not found in namespace data: create it or fix spec.groupRef.name"
    );
    // Reconciling again without a change writes nothing.
    env.api.clear_requests();
    env.reconcile_route("r1").await.unwrap();
    assert!(
        env.api.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        env.api.requests()
    );

    env.source_secret();
    env.api.insert(&env.group("later", ""));
    // A Route the types cannot decode (its own InvalidObject Event) does not stop the verdict.
    env.api.insert_json::<Route>(
        NS,
        json!({"metadata": {"name": "undecodable"},
               "spec": {"groupRef": {"name": "later"}, "sourceTable": "t",
                        "destinationTable": "u", "columnMappings": "not a list"}}),
    );
    env.reconcile_route("r1").await.unwrap();
    let r: Route = env.api.get(NS, "r1").unwrap();
    let st = r.status.unwrap();
    assert_eq!(
        find(&st.conditions, "Accepted"),
        (
            "False",
            "Pending",
            "waiting for ReplicationGroup later to render this Route (generation 1) into its \
             configuration"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_retain_keeps_the_slot() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    let c = create_group_slot(&env, "data_orders").await;
    let client = env.api.admin_client();
    let groups: kube::Api<ReplicationGroup> = kube::Api::namespaced(client, NS);
    groups.delete("orders", &Default::default()).await.unwrap();
    assert!(env.stored("orders").metadata.deletion_timestamp.is_some());
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    assert!(
        env.api.get::<ReplicationGroup>(NS, "orders").is_none(),
        "finalizer removed, group gone"
    );
    assert_eq!(
        slot_and_publication(&c, "pg_flo_data_orders_publication").await,
        (true, true)
    );
    let events = env.api.events(NS);
    let retained = events.iter().find(|e| e.1 == "SlotRetained").unwrap();
    assert_eq!(retained.0, "Warning");
    assert!(
        retained
            .2
            .contains("SELECT pg_drop_replication_slot('pg_flo_data_orders_publication')"),
        "{}",
        retained.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_delete_waits_for_the_pods_then_drops_slot_publication_and_streams() {
    let env = Env::start().await;
    env.source_secret();
    let nats = e2e::NatsServer::start().await.unwrap();
    let rg = env.group(
        "orders",
        &format!(
            "{{reclaimPolicy: delete, nats: {{external: {{url: '{}'}}}}}}",
            nats.url()
        ),
    );
    env.create(&rg).await;
    assert_eq!(
        env.api.names::<StatefulSet>(NS),
        vec!["orders-replicator", "orders-worker"],
        "external NATS: no NATS StatefulSet"
    );
    let c = create_group_slot(&env, "data_orders").await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    for s in [
        "pgflo_data_orders_stream",
        "pgflo_data_orders_state",
        "pgflo_data_orders_dlq",
    ] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: s.into(),
            subjects: vec![format!("{s}.x")],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // A replicator pod is still there.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-replicator-abc", "namespace": NS, "labels": {
            "app.kubernetes.io/name": "pg-flo", "app.kubernetes.io/instance": "orders",
            "app.kubernetes.io/component": "replicator"}},
    }))
    .unwrap();
    env.api.insert(&pod);

    let groups: kube::Api<ReplicationGroup> = kube::Api::namespaced(env.api.admin_client(), NS);
    groups.delete("orders", &Default::default()).await.unwrap();
    let err = env.reconcile("orders").await.unwrap_err();
    assert_eq!(err.category(), "cleanup-pending");
    assert!(workload_names(&env).is_empty(), "workloads deleted first");
    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Deleting);
    assert_eq!(
        condition(&got, "Ready").2,
        "waiting for pods orders-replicator-abc to terminate before dropping the slot"
    );
    assert_eq!(
        slot_and_publication(&c, "pg_flo_data_orders_publication").await,
        (true, true)
    );

    // The pod is gone: the slot, publication and streams are dropped, the group goes.
    env.api.remove::<Pod>(NS, "orders-replicator-abc");
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    assert_eq!(
        slot_and_publication(&c, "pg_flo_data_orders_publication").await,
        (false, false)
    );
    for s in [
        "pgflo_data_orders_stream",
        "pgflo_data_orders_state",
        "pgflo_data_orders_dlq",
    ] {
        assert!(js.get_stream(s).await.is_err(), "stream {s} deleted");
    }
    assert!(env.api.get::<ReplicationGroup>(NS, "orders").is_none());
    let events = env.api.events(NS);
    assert!(
        events.iter().any(|e| e.0 == "Normal" && e.1 == "CleanedUp"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_runs_a_job_once_and_reports_its_completion() {
    use k8s_openapi::api::batch::v1::Job;
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "{mode: copy}")).await;
    assert_eq!(env.api.names::<Job>(NS), vec!["orders-copy"]);
    assert_eq!(
        workload_names(&env),
        vec!["orders-worker"],
        "no replicator StatefulSet"
    );
    assert_eq!(phase(&env.stored("orders")), Phase::Copying);

    // Pausing suspends the Job with a merge patch (its pod template is immutable).
    env.edit("orders", |rg| rg.spec.state = DesiredState::Paused);
    env.api.clear_requests();
    env.reconcile("orders").await.unwrap();
    let job: Job = env.api.get(NS, "orders-copy").unwrap();
    assert_eq!(job.spec.unwrap().suspend, Some(true));
    let job_writes: Vec<_> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/jobs/orders-copy") && r.method == "PATCH")
        .collect();
    assert_eq!(job_writes.len(), 1);
    assert!(job_writes[0]
        .content_type
        .starts_with("application/merge-patch+json"));
    assert_eq!(job_writes[0].body, json!({"spec": {"suspend": true}}));

    // Running again; the Job completes: phase Completed, Ready.
    env.edit("orders", |rg| rg.spec.state = DesiredState::Running);
    env.reconcile("orders").await.unwrap();
    env.api.set_status::<Job>(
        NS,
        "orders-copy",
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Completed);
    assert_eq!(
        condition(&got, "Ready").1,
        "CopyComplete",
        "{:?}",
        got.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_triggered_by_its_own_status_write_writes_nothing() {
    // Every status write is a watch event that triggers a reconcile. Under traffic a fresh slot
    // reading would differ each time and loop once per debounce; within the slot refresh the
    // last reading is reused, the status comes out equal, and nothing is written.
    let env = Env::start().await;
    env.source_secret();
    let ctx = support::context(&env.api, Duration::from_secs(30));
    env.api.insert(&env.group("orders", ""));
    env.reconcile_with(&ctx, "orders").await.unwrap();
    env.reconcile_with(&ctx, "orders").await.unwrap();
    let c = create_group_slot(&env, "data_orders").await;
    env.set_available("orders-replicator", 1);
    env.set_available("orders-worker", 1);
    env.reconcile_with(&ctx, "orders").await.unwrap();
    let streaming = env.stored("orders");
    assert_eq!(phase(&streaming), Phase::Streaming);

    c.batch_execute("INSERT INTO orders SELECT g, 'x' FROM generate_series(1, 500) g")
        .await
        .unwrap();
    env.api.clear_requests();
    assert_eq!(
        env.reconcile_with(&ctx, "orders").await.unwrap(),
        Action::requeue(Duration::from_secs(30))
    );
    let status_writes = env
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/status"))
        .count();
    assert_eq!(env.stored("orders").status, streaming.status);
    assert_eq!(status_writes, 0, "no status write within the slot refresh");

    // A context whose refresh is due reads the new lag and writes it.
    let due = support::context(&env.api, Duration::ZERO);
    env.reconcile_with(&due, "orders").await.unwrap();
    // (The reused reading predates the slot: no LSNs yet; the due one has them.)
    assert_eq!(streaming.status.unwrap().slot.unwrap().restart_lsn, None);
    let slot = env.stored("orders").status.unwrap().slot.unwrap();
    assert!(slot.restart_lsn.is_some());
    assert!(slot.lag_bytes.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_of_the_group_that_cannot_be_read_holds_the_configuration() {
    // A Rule the operator's types cannot decode (here: `operations` not a list) might be a
    // mask: the group keeps its previous configuration until it is readable or gone.
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    let cm_before: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    let rule = |group: &str| {
        json!({
            "metadata": {"name": format!("bad-{group}")},
            "spec": {"groupRef": {"name": group}, "table": "orders", "rules": [
                {"type": "transform", "column": "email", "operations": "INSERT",
                 "transform": {"type": "mask", "maskChar": "*"}}]}
        })
    };
    env.api.insert_json::<Rule>(NS, rule("other-group"));
    env.reconcile("orders").await.unwrap();
    assert_eq!(
        condition(&env.stored("orders"), "Degraded").0,
        "False",
        "another group's Rule"
    );

    env.api.insert_json::<Rule>(NS, rule("orders"));
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    let (status, reason, message) = condition(&got, "Degraded");
    assert_eq!((status, reason), ("True", "InvalidSpec"));
    assert!(
        message.starts_with("Rule bad-orders cannot be read ("),
        "{message}"
    );
    let cm_after: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    assert_eq!(cm_before.data, cm_after.data);

    env.api.remove::<Rule>(NS, "bad-orders");
    env.reconcile("orders").await.unwrap();
    assert_eq!(condition(&env.stored("orders"), "Degraded").0, "False");
}
