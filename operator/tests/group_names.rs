//! The runtime group name (slot, publication, streams) on the fake Kubernetes API with a real
//! PostgreSQL source (and a real NATS where streams matter): the namespace-qualified default,
//! an explicit `spec.groupName`, a collision refused on the newer group, a group created before
//! `spec.groupName` keeping its name, and a delete with `reclaimPolicy: delete` that leaves
//! another group's objects alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use pg_flo_operator::crd::{Phase, ReplicationGroup, ReplicationGroupStatus, SlotStatus};
use support::{condition, create_group_slot, secret, slot_and_publication, Env, NS};

const OTHER: &str = "other";

fn recorded(rg: &ReplicationGroup) -> Option<String> {
    rg.status.as_ref().and_then(|s| s.group_name.clone())
}

/// The `group:` of a group's rendered replicator and worker config (asserted equal).
fn rendered_group(env: &Env, ns: &str, name: &str) -> String {
    let cm: ConfigMap = env
        .api
        .get(ns, &format!("{name}-pg-flo-config"))
        .expect("ConfigMap");
    let data = cm.data.unwrap();
    let group = |file: &str| -> String {
        let v: serde_yaml::Value = serde_yaml::from_str(&data[file]).unwrap();
        v["group"].as_str().unwrap().to_owned()
    };
    assert_eq!(group("replicator.yaml"), group("worker.yaml"));
    group("replicator.yaml")
}

/// The source Secret `src` in namespace `ns`.
fn source_secret_in(env: &Env, ns: &str) {
    let mut s = secret(
        "src",
        &[("user", env.pg.user()), ("password", env.pg.password())],
    );
    s.metadata.namespace = Some(ns.into());
    env.api.insert(&s);
}

async fn delete_group(env: &Env, ns: &str, name: &str) {
    let groups: kube::Api<ReplicationGroup> = kube::Api::namespaced(env.api.admin_client(), ns);
    groups.delete(name, &Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_name_is_namespace_qualified_so_two_namespaces_never_share_a_slot() {
    let env = Env::start().await;
    env.source_secret();
    source_secret_in(&env, OTHER);
    env.create(&env.group("orders", "")).await;
    env.create(&env.group_in(OTHER, "orders", "")).await;
    create_group_slot(&env, "data_orders").await;
    create_group_slot(&env, "other_orders").await;
    for (ns, group) in [(NS, "data_orders"), (OTHER, "other_orders")] {
        env.reconcile_in(ns, "orders").await.unwrap();
        let got = env.stored_in(ns, "orders");
        assert_eq!(recorded(&got).as_deref(), Some(group));
        assert_eq!(rendered_group(&env, ns, "orders"), group);
        let slot = got.status.as_ref().unwrap().slot.clone().unwrap();
        let want = format!("pg_flo_{group}_publication");
        assert_eq!(slot.name.as_deref(), Some(want.as_str()));
        assert!(slot.restart_lsn.is_some(), "the real slot was read");
        assert_eq!(condition(&got, "Degraded").0, "False");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_group_name_keeps_a_pg_flo_name_and_cannot_change_afterwards() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "{groupName: orders}"))
        .await;
    create_group_slot(&env, "orders").await;
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    assert_eq!(recorded(&got).as_deref(), Some("orders"));
    assert_eq!(rendered_group(&env, NS, "orders"), "orders");
    let slot = got.status.as_ref().unwrap().slot.clone().unwrap();
    assert_eq!(slot.name.as_deref(), Some("pg_flo_orders_publication"));
    assert!(slot.restart_lsn.is_some());

    // A changed spec.groupName (the CRD's CEL rules refuse it; an older CRD might not) is an
    // invalid spec: the running configuration stays.
    env.edit("orders", |rg| rg.spec.group_name = Some("orders2".into()));
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    let got = env.stored("orders");
    assert_eq!(
        condition(&got, "Degraded"),
        (
            "True".into(),
            "InvalidSpec".into(),
            "spec.groupName: \"orders2\" differs from \"orders\", the name the group already runs \
             under (status.groupName: its slot, publication and streams): set spec.groupName to \
             \"orders\" or remove it"
                .into()
        )
    );
    assert_eq!(recorded(&got).as_deref(), Some("orders"));
    assert_eq!(rendered_group(&env, NS, "orders"), "orders");
    // Removing it keeps the recorded name.
    env.edit("orders", |rg| rg.spec.group_name = None);
    env.reconcile("orders").await.unwrap();
    assert_eq!(condition(&env.stored("orders"), "Degraded").0, "False");
    assert_eq!(rendered_group(&env, NS, "orders"), "orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_name_in_use_is_refused_on_the_newer_group_until_the_other_goes() {
    let env = Env::start().await;
    env.source_secret();
    source_secret_in(&env, OTHER);
    env.create(&env.group("orders", "{groupName: shared}"))
        .await;
    // Same name on the same server (slot names are unique per server, whatever the database).
    let newer = env.group_in(OTHER, "sales", "{groupName: shared}");
    let action = env.create(&newer).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let got = env.stored_in(OTHER, "sales");
    assert_eq!(got.status.as_ref().unwrap().phase, Some(Phase::Degraded));
    let port = env.pg.port();
    assert_eq!(
        condition(&got, "Degraded"),
        (
            "True".into(),
            "GroupNameConflict".into(),
            format!(
                "group name \"shared\" is already used by ReplicationGroup data/orders (both would \
                 use the replication slot and publication pg_flo_shared_publication on \
                 127.0.0.1:{port}): set spec.groupName to another name; nothing is applied until \
                 then"
            )
        )
    );
    assert_eq!(condition(&got, "Ready").0, "False");
    assert_eq!(condition(&got, "Progressing").0, "False");
    assert_eq!(
        recorded(&got),
        None,
        "the name is not recorded for the newer group"
    );
    assert!(env.api.names::<ConfigMap>(OTHER).is_empty());
    assert!(env.api.names::<StatefulSet>(OTHER).is_empty());
    let events = env.api.events(OTHER);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.0 == "Warning" && e.1 == "GroupNameConflict")
            .count(),
        1,
        "{events:?}"
    );
    // Again: no second Event.
    env.reconcile_in(OTHER, "sales").await.unwrap();
    assert_eq!(env.api.events(OTHER).len(), events.len());
    // The older group is unaffected.
    let older = env.stored("orders");
    assert_eq!(condition(&older, "Degraded").0, "False");
    assert_eq!(recorded(&older).as_deref(), Some("shared"));

    // The older group goes (retain): the newer one takes the name.
    delete_group(&env, NS, "orders").await;
    env.reconcile("orders").await.unwrap();
    assert!(env.api.get::<ReplicationGroup>(NS, "orders").is_none());
    env.reconcile_in(OTHER, "sales").await.unwrap();
    let got = env.stored_in(OTHER, "sales");
    assert_eq!(condition(&got, "Degraded").0, "False");
    assert_eq!(recorded(&got).as_deref(), Some("shared"));
    assert_eq!(rendered_group(&env, OTHER, "sales"), "shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_name_on_one_external_nats_is_refused_even_on_two_sources() {
    let env = Env::start().await;
    env.source_secret();
    source_secret_in(&env, OTHER);
    let nats = e2e::NatsServer::start().await.unwrap();
    let url = nats.url();
    env.create(&env.group(
        "orders",
        &format!("{{groupName: shared, nats: {{external: {{url: '{url}'}}}}}}"),
    ))
    .await;
    // Another source server (spelled differently): only the streams collide.
    let mut newer = env.group_in(
        OTHER,
        "orders",
        &format!("{{groupName: shared, nats: {{external: {{url: '{url}/'}}}}}}"),
    );
    newer.spec.source.host = "localhost".into();
    env.create(&newer).await;
    let got = env.stored_in(OTHER, "orders");
    assert_eq!(
        condition(&got, "Degraded").2,
        format!(
            "group name \"shared\" is already used by ReplicationGroup data/orders (both would use \
             the streams pgflo_shared_* on {}): set spec.groupName to another name; nothing is \
             applied until then",
            url.to_ascii_lowercase()
        )
    );
}

/// A group whose status was written by an earlier operator (slot named after `metadata.name`),
/// as in a live cluster: its ConfigMap says which group the pods run.
fn legacy(env: &Env, ns: &str, name: &str, extra: &str) -> ReplicationGroup {
    let mut rg = env.group_in(ns, name, extra);
    rg.metadata.finalizers = Some(vec!["pgflo.io/cleanup".into()]);
    rg.status = Some(ReplicationGroupStatus {
        observed_generation: Some(1),
        phase: Some(Phase::Streaming),
        slot: Some(SlotStatus {
            name: Some(format!("pg_flo_{name}_publication")),
            publication: Some(format!("pg_flo_{name}_publication")),
            ..SlotStatus::default()
        }),
        ..ReplicationGroupStatus::default()
    });
    env.api.insert(&rg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_from_before_group_names_keeps_its_name() {
    let env = Env::start().await;
    env.source_secret();
    let rg = legacy(&env, NS, "orders", "");
    // Its ConfigMap as the earlier operator rendered it.
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "orders-pg-flo-config", "namespace": NS,
            "ownerReferences": [{"apiVersion": "pgflo.io/v1alpha1", "kind": "ReplicationGroup",
                "name": "orders", "uid": rg.uid().unwrap(), "controller": true}]},
        "data": {"replicator.yaml": "group: orders\nnats-url: nats://orders-nats.data.svc:4222\n"}
    }))
    .unwrap();
    env.api.insert(&cm);
    create_group_slot(&env, "orders").await;
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    assert_eq!(recorded(&got).as_deref(), Some("orders"));
    assert_eq!(rendered_group(&env, NS, "orders"), "orders");
    let slot = got.status.as_ref().unwrap().slot.clone().unwrap();
    assert_eq!(slot.name.as_deref(), Some("pg_flo_orders_publication"));
    assert!(slot.restart_lsn.is_some(), "still the old slot");

    // Without the ConfigMap, a status naming a slot is enough.
    legacy(&env, NS, "sales", "");
    env.reconcile("sales").await.unwrap();
    assert_eq!(recorded(&env.stored("sales")).as_deref(), Some("sales"));
    assert_eq!(rendered_group(&env, NS, "sales"), "sales");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_never_drops_another_groups_slot() {
    let env = Env::start().await;
    env.source_secret();
    source_secret_in(&env, OTHER);
    // Two groups of one name in two namespaces: distinct default names, distinct slots.
    env.create(&env.group("orders", "{reclaimPolicy: delete}"))
        .await;
    env.create(&env.group_in(OTHER, "orders", "{reclaimPolicy: delete}"))
        .await;
    let c = create_group_slot(&env, "data_orders").await;
    create_group_slot(&env, "other_orders").await;
    delete_group(&env, NS, "orders").await;
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    assert!(env.api.get::<ReplicationGroup>(NS, "orders").is_none());
    assert_eq!(
        slot_and_publication(&c, "pg_flo_data_orders_publication").await,
        (false, false)
    );
    assert_eq!(
        slot_and_publication(&c, "pg_flo_other_orders_publication").await,
        (true, true)
    );

    // Two groups from before group names, both named `orders` on one database (they shared a
    // slot already): the first to be reconciled records the name, the other is refused, and
    // deleting the refused one leaves the slot to the first.
    for ns in ["blue", "green"] {
        legacy(&env, ns, "orders", "{reclaimPolicy: delete}");
        source_secret_in(&env, ns);
    }
    create_group_slot(&env, "orders").await;
    env.reconcile_in("blue", "orders").await.unwrap();
    let blue = env.stored_in("blue", "orders");
    assert_eq!(
        recorded(&blue).as_deref(),
        Some("orders"),
        "{:?}",
        blue.status
    );
    env.reconcile_in("green", "orders").await.unwrap();
    let green = env.stored_in("green", "orders");
    assert_eq!(condition(&green, "Degraded").1, "GroupNameConflict");
    assert_eq!(recorded(&green), None);
    delete_group(&env, "green", "orders").await;
    env.reconcile_in("green", "orders").await.unwrap();
    assert!(env.api.get::<ReplicationGroup>("green", "orders").is_none());
    assert_eq!(
        slot_and_publication(&c, "pg_flo_orders_publication").await,
        (true, true),
        "blue/orders still uses it"
    );
    let events = env.api.events("green");
    let skipped = events.iter().find(|e| e.1 == "CleanupSkipped").unwrap();
    assert_eq!(
        (skipped.0.as_str(), skipped.2.as_str()),
        (
            "Warning",
            "the replication slot and publication pg_flo_orders_publication also belong to \
             ReplicationGroup blue/orders (same group name): left in place"
        )
    );
    // Deleting blue/orders, now alone with the name, drops it.
    delete_group(&env, "blue", "orders").await;
    env.reconcile_in("blue", "orders").await.unwrap();
    assert_eq!(
        slot_and_publication(&c, "pg_flo_orders_publication").await,
        (false, false)
    );
}
