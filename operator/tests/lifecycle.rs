//! Workload lifecycle on the fake Kubernetes API with a real PostgreSQL source: the move from
//! the Deployments of an earlier version to StatefulSets without two pods of a component at
//! once, and a finished `mode: copy` that stop/resume never runs again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use pg_flo_operator::crd::{DesiredState, Phase, ReplicationGroup};
use pg_flo_operator::resources::labels;
use serde_json::json;
use support::{condition, Env, NS};

fn replicas(env: &Env, name: &str) -> i32 {
    let s: StatefulSet = env.api.get(NS, name).unwrap();
    s.spec.unwrap().replicas.unwrap()
}

/// A pod of `component` controlled by `kind/owner`, in `phase`.
fn pod(name: &str, component: &str, kind: &str, owner: &str, phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS,
            "labels": {"app.kubernetes.io/name": "pg-flo", "app.kubernetes.io/instance": "orders",
                "app.kubernetes.io/component": component},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner,
                "uid": format!("uid-{owner}"), "controller": true}]},
        "status": {"phase": phase}
    }))
    .unwrap()
}

/// What the earlier operator created for the group: two `Recreate` Deployments, each with a
/// running pod of its ReplicaSet.
fn earlier_version(env: &Env, rg: &ReplicationGroup) {
    for component in ["replicator", "worker"] {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": format!("orders-{component}"), "namespace": NS,
                "labels": labels("orders", component),
                "ownerReferences": [{"apiVersion": "pgflo.io/v1alpha1", "kind": "ReplicationGroup",
                    "name": "orders", "uid": rg.uid().unwrap(), "controller": true}]},
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/component": component}},
                "template": {"spec": {"containers": [{"name": component}]}}}
        }))
        .unwrap();
        env.api.insert(&d);
        env.api.insert(&pod(
            &format!("orders-{component}-6f7c9-x2x9z"),
            component,
            "ReplicaSet",
            &format!("orders-{component}-6f7c9"),
            "Running",
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_of_an_earlier_version_become_stateful_sets_without_two_pods() {
    let env = Env::start().await;
    env.source_secret();
    let mut rg = env.group("orders", "{groupName: orders}");
    rg.metadata.finalizers = Some(vec!["pgflo.io/cleanup".into()]);
    let rg = env.api.insert(&rg);
    earlier_version(&env, &rg);

    // 1. The StatefulSets come at zero pods, then the Deployments go (foreground).
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::requeue(Duration::from_secs(5)),
        "looks again soon"
    );
    assert_eq!(replicas(&env, "orders-replicator"), 0);
    assert_eq!(replicas(&env, "orders-worker"), 0);
    assert!(env.api.names::<Deployment>(NS).is_empty());
    let writes: Vec<(String, String, serde_json::Value)> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            (r.method == "PATCH"
                && (r.path.ends_with("/statefulsets/orders-replicator")
                    || r.path.ends_with("/statefulsets/orders-worker")))
                || (r.method == "DELETE" && r.path.contains("/deployments/"))
        })
        .map(|r| (r.method, r.path, r.body))
        .collect();
    let summary: Vec<(&str, &str)> = writes
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.rsplit('/').next().unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("PATCH", "orders-replicator"),
            ("PATCH", "orders-worker"),
            ("DELETE", "orders-replicator"),
            ("DELETE", "orders-worker"),
        ],
        "the StatefulSets exist before the Deployments are deleted"
    );
    for (method, _, body) in &writes {
        if method == "DELETE" {
            assert_eq!(body["propagationPolicy"], "Foreground", "{body}");
        }
    }
    let got = env.stored("orders");
    assert_eq!(got.status.as_ref().unwrap().phase, Some(Phase::Pending));
    assert_eq!(
        condition(&got, "Progressing"),
        (
            "True".into(),
            "RollingOut".into(),
            "waiting for Deployment orders-replicator, Pod orders-replicator-6f7c9-x2x9z, \
             Deployment orders-worker, Pod orders-worker-6f7c9-x2x9z to terminate before the \
             StatefulSets start their pods (never two pods of one component)"
                .into()
        )
    );

    // 2. The Deployments are gone, one old pod still terminates: that component stays at zero.
    env.api.remove::<Pod>(NS, "orders-worker-6f7c9-x2x9z");
    env.reconcile("orders").await.unwrap();
    assert_eq!(replicas(&env, "orders-replicator"), 0);
    assert_eq!(replicas(&env, "orders-worker"), 1);

    // 3. All old pods gone: one pod each. A finished pod, or the StatefulSet's own, never
    //    holds a StatefulSet back.
    env.api.remove::<Pod>(NS, "orders-replicator-6f7c9-x2x9z");
    env.api.insert(&pod(
        "orders-replicator-0",
        "replicator",
        "StatefulSet",
        "orders-replicator",
        "Running",
    ));
    env.api.insert(&pod(
        "orders-copy-abcde",
        "replicator",
        "Job",
        "orders-copy",
        "Succeeded",
    ));
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::requeue(Duration::from_secs(30))
    );
    assert_eq!(replicas(&env, "orders-replicator"), 1);
    assert_eq!(replicas(&env, "orders-worker"), 1);
    assert_eq!(
        env.stored("orders").status.unwrap().group_name.as_deref(),
        Some("orders")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_copy_job_pod_holds_the_replicator_back_when_switching_to_stream() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "{mode: copy}")).await;
    env.api.insert(&pod(
        "orders-copy-abcde",
        "replicator",
        "Job",
        "orders-copy",
        "Running",
    ));
    env.edit("orders", |rg| {
        rg.spec.mode = pg_flo_operator::crd::Mode::Stream
    });
    env.reconcile("orders").await.unwrap();
    assert!(env.api.names::<Job>(NS).is_empty(), "the Job is deleted");
    assert_eq!(replicas(&env, "orders-replicator"), 0);
    env.api.remove::<Pod>(NS, "orders-copy-abcde");
    env.reconcile("orders").await.unwrap();
    assert_eq!(replicas(&env, "orders-replicator"), 1);
}

fn complete(env: &Env) {
    env.api.set_status::<Job>(
        NS,
        "orders-copy",
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
}

fn job_writes(env: &Env) -> Vec<String> {
    env.api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/jobs") && r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path.rsplit('/').next().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_copy_is_never_run_again_by_stop_and_resume() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "{mode: copy}")).await;
    assert_eq!(env.api.names::<Job>(NS), vec!["orders-copy"]);
    complete(&env);
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    let done_at = got.status.as_ref().unwrap().copy_completion_time.clone();
    assert!(done_at.is_some());
    assert_eq!(got.status.as_ref().unwrap().phase, Some(Phase::Completed));

    env.edit("orders", |rg| rg.spec.state = DesiredState::Stopped);
    env.reconcile("orders").await.unwrap();
    assert!(env.api.names::<Job>(NS).is_empty(), "stopped: the Job goes");
    assert_eq!(
        env.stored("orders").status.unwrap().phase,
        Some(Phase::Stopped)
    );

    env.api.clear_requests();
    env.edit("orders", |rg| rg.spec.state = DesiredState::Running);
    env.reconcile("orders").await.unwrap();
    env.reconcile("orders").await.unwrap();
    assert!(env.api.names::<Job>(NS).is_empty(), "no second copy");
    assert_eq!(job_writes(&env), Vec::<String>::new());
    let got = env.stored("orders");
    assert_eq!(got.status.as_ref().unwrap().phase, Some(Phase::Completed));
    assert_eq!(condition(&got, "Ready").1, "CopyComplete");
    assert_eq!(
        got.status.unwrap().copy_completion_time,
        done_at,
        "recorded once"
    );
    assert_eq!(
        env.api
            .names::<StatefulSet>(NS)
            .iter()
            .filter(|n| n.ends_with("-replicator"))
            .count(),
        0,
        "no streaming replicator either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_finished_just_before_a_stop_is_recorded_before_its_job_goes() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "{mode: copy}")).await;
    // The Job completes and the group is stopped before the operator saw the completion.
    complete(&env);
    env.edit("orders", |rg| rg.spec.state = DesiredState::Stopped);
    env.reconcile("orders").await.unwrap();
    assert_eq!(
        env.api.names::<Job>(NS),
        vec!["orders-copy"],
        "kept until recorded"
    );
    assert!(env
        .stored("orders")
        .status
        .unwrap()
        .copy_completion_time
        .is_some());
    env.reconcile("orders").await.unwrap();
    assert!(env.api.names::<Job>(NS).is_empty());
    env.edit("orders", |rg| rg.spec.state = DesiredState::Running);
    env.reconcile("orders").await.unwrap();
    assert!(env.api.names::<Job>(NS).is_empty(), "no second copy");
    assert_eq!(
        env.stored("orders").status.unwrap().phase,
        Some(Phase::Completed)
    );
}
