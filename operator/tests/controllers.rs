//! The controllers as the operator runs them (`controller::run`: watches, mappers, debounce,
//! requeues), on the fake Kubernetes API with watches and a real PostgreSQL source: a group is
//! applied, a Rule added later re-renders the group and is applied once a ready worker pod runs
//! its configuration (pod watch -> group status -> Rule), a Secret created late unblocks an
//! invalid group, and a delete runs the finalizer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use pg_flo_operator::controller::{run, RunConfig};
use pg_flo_operator::crd::{Phase, ReplicationGroup, Rule};
use support::{cr, Env, MASK_EMAIL, NS};

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_controllers_follow_changes_through_watches() {
    let env = Env::start().await;
    // The group comes first, its Secret later: Degraded until the Secret exists.
    env.api.insert(&env.group("orders", ""));
    // A group the operator's types cannot decode (the schema allows int64, the field is u32):
    // it gets an Event, and must not stop the watch of the others.
    let mut broken = serde_json::to_value(env.group("broken", "")).unwrap();
    broken["spec"]["workerBatchSize"] = serde_json::json!(5_000_000_000u64);
    env.api.insert_json::<ReplicationGroup>(NS, broken);
    let ctx = env.ctx.clone();
    let controllers = tokio::spawn(async move {
        Box::pin(run(
            ctx,
            RunConfig {
                namespaces: vec![NS.into()],
            },
        ))
        .await;
    });

    let phase = |env: &Env| {
        env.api
            .get::<ReplicationGroup>(NS, "orders")
            .and_then(|g| g.status)
            .and_then(|s| s.phase)
    };
    eventually("the invalid group is Degraded", || {
        phase(&env) == Some(Phase::Degraded)
    })
    .await;
    assert!(env.api.names::<StatefulSet>(NS).is_empty());

    // Creating the Secret triggers the group through the Secret watch.
    env.source_secret();
    eventually("the group is applied", || {
        env.api.names::<StatefulSet>(NS)
            == vec!["orders-nats", "orders-replicator", "orders-worker"]
            && phase(&env) == Some(Phase::Pending)
    })
    .await;

    // A Rule added later: rendered by the group controller, pending until the worker runs it.
    env.api.insert(&cr::<Rule>(MASK_EMAIL));
    let accepted = |env: &Env| {
        env.api
            .get::<Rule>(NS, "mask-email")
            .and_then(|r| r.status)
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Accepted"))
            .map(|c| (c.status, c.reason))
    };
    eventually("the Rule is rendered and pending", || {
        let rendered = env
            .api
            .get::<ConfigMap>(NS, "orders-pg-flo-config")
            .and_then(|c| c.data)
            .is_some_and(|d| d.contains_key("rules.yaml"));
        rendered
            && accepted(&env) == Some(("False".into(), "Pending".into()))
            && env
                .api
                .get::<Rule>(NS, "mask-email")
                .and_then(|r| r.status)
                .is_some_and(|s| {
                    s.conditions[0]
                        .message
                        .starts_with("rendered into configuration")
                })
    })
    .await;

    // The worker pod with that configuration becomes ready: through the pod watch, the group's
    // status and the Rule controller's watch of the group, the Rule is applied.
    let hash = support::rendered_hash(&env, "orders");
    env.api.insert(&support::runtime_pod(
        "orders",
        "worker",
        &hash,
        true,
        serde_json::json!({}),
    ));
    eventually("the Rule is applied", || {
        accepted(&env) == Some(("True".into(), "Applied".into()))
    })
    .await;
    eventually("the group's status shows the worker pod", || {
        let pods = env
            .api
            .get::<ReplicationGroup>(NS, "orders")
            .and_then(|g| g.status)
            .map(|s| s.pods)
            .unwrap_or_default();
        pods.len() == 1 && pods[0].ready && pods[0].config_hash.as_deref() == Some(hash.as_str())
    })
    .await;

    let events = env.api.events(NS);
    let invalid = events
        .iter()
        .find(|e| e.1 == "InvalidObject")
        .unwrap_or_else(|| panic!("no InvalidObject event: {events:?}"));
    assert_eq!(invalid.0, "Warning");
    assert!(
        invalid
            .2
            .starts_with("the operator cannot read this ReplicationGroup: ")
            && invalid.2.contains("5000000000"),
        "{}",
        invalid.2
    );
    assert!(env
        .api
        .names::<StatefulSet>(NS)
        .iter()
        .all(|n| !n.starts_with("broken")));

    // Deleting the group (retain): the finalizer runs and the group goes.
    let groups: kube::Api<ReplicationGroup> = kube::Api::namespaced(env.api.admin_client(), NS);
    groups.delete("orders", &Default::default()).await.unwrap();
    eventually("the group is gone", || {
        env.api.get::<ReplicationGroup>(NS, "orders").is_none()
    })
    .await;
    // The Rule is told its group is gone.
    eventually("the Rule reports GroupNotFound", || {
        env.api
            .get::<Rule>(NS, "mask-email")
            .and_then(|r| r.status)
            .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "GroupNotFound"))
    })
    .await;
    controllers.abort();

    // Secrets: listed and watched by metadata only, read one by one by name; nothing else.
    let secrets: Vec<_> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.path
                .starts_with(&format!("/api/v1/namespaces/{NS}/secrets"))
        })
        .collect();
    let collection = |r: &support::fake_api::Recorded| r.path.ends_with("/secrets");
    assert!(
        secrets
            .iter()
            .any(|r| collection(r) && r.query.contains("watch=true")),
        "the Secret watch ran"
    );
    for r in &secrets {
        if collection(r) {
            assert_eq!(r.method, "GET", "{r:?}");
            assert!(
                r.accept.contains("as=PartialObjectMetadata"),
                "a list or watch of Secrets with their data: {r:?}"
            );
        } else {
            assert!(
                matches!(r.method.as_str(), "GET" | "PATCH"),
                "only get by name and apply (<group>-nats-auth): {r:?}"
            );
        }
    }
    // (The support's Env also fails the test on any request the RBAC table does not permit.)
    assert_eq!(env.api.forbidden(), Vec::<String>::new());
}
