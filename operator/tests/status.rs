//! Status that tells the truth, on the fake Kubernetes API with a real PostgreSQL source and a
//! real nats-server: pod and container states (a crash-looping worker is Degraded, not a
//! rollout), Rules `Accepted` only once a ready worker runs a configuration that contains them,
//! the worker's consumer counts read from JetStream, and reconcile errors as a condition and
//! one Event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::controller::Action;
use pg_flo_operator::controller::nats_status::read_consumer;
use pg_flo_operator::controller::validate::NatsAccess;
use pg_flo_operator::crd::{ConsumerStatus, Phase, PodState, ReplicationGroup, Rule};
use serde_json::json;
use support::{condition, cr, rendered_hash, rule_accepted, runtime_pod, Env, MASK_EMAIL, NS};

fn phase(rg: &ReplicationGroup) -> Phase {
    rg.status.as_ref().unwrap().phase.unwrap()
}

/// The Events of `reason` so far.
fn events_of(env: &Env, reason: &str) -> Vec<(String, String, String)> {
    env.api
        .events(NS)
        .into_iter()
        .filter(|e| e.1 == reason)
        .collect()
}

/// What the kubelet reports after a permanent sink rejection: the worker exits, its last log
/// line (the termination message, `FallbackToLogsOnError`) says why, and it is restarted with
/// a growing back-off.
fn crash_looping(restarts: i32) -> serde_json::Value {
    json!({
        "restartCount": restarts,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 2m40s restarting failed container=worker"}},
        "lastState": {"terminated": {
            "exitCode": 1, "reason": "Error", "finishedAt": "2025-06-01T11:58:00Z",
            "message": "2025-06-01T11:57:59.9Z  INFO pg_flo::worker: worker lease acquired\n\
                        2025-06-01T11:58:00.1Z ERROR pg_flo: pg_flo stopped error=the target \
                        rejected a change permanently: column \"email\" of relation \"orders\" \
                        does not exist (SQLSTATE 42703)\n"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_worker_is_degraded_with_its_last_words_not_a_rollout() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    let hash = rendered_hash(&env, "orders");
    env.set_available("orders-replicator", 1);
    env.set_available("orders-worker", 0);
    env.api
        .insert(&runtime_pod("orders", "replicator", &hash, true, json!({})));
    env.api.insert(&runtime_pod(
        "orders",
        "worker",
        &hash,
        false,
        crash_looping(5),
    ));
    env.reconcile("orders").await.unwrap();

    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Degraded);
    let message = "worker pod orders-worker-0 is in CrashLoopBackOff after 5 restarts; last exit \
                   code 1 (Error) at 2025-06-01T11:58:00Z: pg_flo stopped error=the target \
                   rejected a change permanently: column \"email\" of relation \"orders\" does \
                   not exist (SQLSTATE 42703): see `kubectl logs orders-worker-0 --previous`";
    assert_eq!(
        condition(&got, "Degraded"),
        ("True".into(), "WorkerCrashLooping".into(), message.into())
    );
    assert_eq!(
        condition(&got, "Ready"),
        ("False".into(), "Degraded".into(), message.into())
    );
    assert_eq!(condition(&got, "Progressing").1, "Stalled");
    let st = got.status.as_ref().unwrap();
    assert_eq!(
        st.pods,
        vec![
            PodState {
                component: "replicator".into(),
                name: "orders-replicator-0".into(),
                ready: true,
                restarts: 0,
                state: "Running".into(),
                config_hash: Some(hash.clone()),
            },
            PodState {
                component: "worker".into(),
                name: "orders-worker-0".into(),
                ready: false,
                restarts: 5,
                state: "CrashLoopBackOff".into(),
                config_hash: Some(hash.clone()),
            },
        ]
    );
    assert_eq!(st.config_hash.as_deref(), Some(hash.as_str()));
    let warnings = events_of(&env, "WorkerCrashLooping");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        (warnings[0].0.as_str(), warnings[0].2.as_str()),
        ("Warning", message)
    );

    // One more restart: the message counts it, the Event is not repeated (one per reason and
    // 15 minutes).
    env.api.remove::<Pod>(NS, "orders-worker-0");
    env.api.insert(&runtime_pod(
        "orders",
        "worker",
        &hash,
        false,
        crash_looping(6),
    ));
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    assert!(
        condition(&got, "Degraded")
            .2
            .starts_with("worker pod orders-worker-0 is in CrashLoopBackOff after 6 restarts;"),
        "{:?}",
        condition(&got, "Degraded")
    );
    assert_eq!(events_of(&env, "WorkerCrashLooping").len(), 1);

    // Fixed (the column exists now): the worker runs and is ready; Healthy again.
    env.api.remove::<Pod>(NS, "orders-worker-0");
    env.api.insert(&runtime_pod(
        "orders",
        "worker",
        &hash,
        true,
        json!({"restartCount": 7, "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
               "finishedAt": "2025-06-01T11:58:00Z"}}}),
    ));
    env.set_available("orders-worker", 1);
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    assert_eq!(phase(&got), Phase::Streaming);
    assert_eq!(condition(&got, "Degraded").1, "Healthy");
    assert_eq!(got.status.unwrap().pods[1].restarts, 7);
    assert_eq!(events_of(&env, "Healthy").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_is_applied_only_once_a_ready_worker_runs_a_configuration_with_it() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    let before = rendered_hash(&env, "orders");
    env.api
        .insert(&runtime_pod("orders", "worker", &before, true, json!({})));

    // An invalid sibling Rule: the group applies nothing, the worker keeps its configuration.
    env.api.insert(&cr::<Rule>(
        "apiVersion: pgflo.io/v1alpha1
kind: Rule
metadata: {name: broken}
spec:
  groupRef: {name: orders}
  table: orders
  rules:
    - {type: transform, column: note, transform: {type: regex, pattern: '([a-z', replace: x}}",
    ));
    env.reconcile("orders").await.unwrap();
    assert_eq!(
        condition(&env.stored("orders"), "Degraded").1,
        "InvalidSpec"
    );

    // A new masking Rule meanwhile: not applied, and it says why.
    env.api.insert(&cr::<Rule>(MASK_EMAIL));
    env.reconcile("orders").await.unwrap();
    assert_eq!(rendered_hash(&env, "orders"), before, "not rendered");
    env.reconcile_rule("mask-email").await.unwrap();
    let invalid = condition(&env.stored("orders"), "Degraded").2;
    assert_eq!(
        rule_accepted(&env, "mask-email"),
        (
            "False".into(),
            "NotApplied".into(),
            format!(
                "ReplicationGroup orders applies no configuration (InvalidSpec: {invalid}); its \
                 worker keeps the previous configuration, without this Rule as it is now"
            )
        )
    );
    assert!(invalid.starts_with("Rule broken: rules[0] (column note): pattern does not compile"));
    env.reconcile_rule("broken").await.unwrap();
    assert_eq!(rule_accepted(&env, "broken").1, "InvalidRule");

    // The broken Rule goes: the mask is rendered, but the worker still runs the old hash.
    env.api.remove::<Rule>(NS, "broken");
    env.reconcile("orders").await.unwrap();
    let after = rendered_hash(&env, "orders");
    assert_ne!(after, before);
    let cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    assert_eq!(
        cm.metadata.annotations.unwrap()["pgflo.io/rules"],
        "mask-email=1"
    );
    env.reconcile_rule("mask-email").await.unwrap();
    assert_eq!(
        rule_accepted(&env, "mask-email"),
        (
            "False".into(),
            "Pending".into(),
            format!(
                "rendered into configuration {after} of ReplicationGroup orders; waiting for a \
                 ready worker pod running it (orders-worker-0 runs {before})"
            )
        )
    );

    // The StatefulSet replaced the pod: new hash, not ready yet.
    env.api.remove::<Pod>(NS, "orders-worker-0");
    env.api
        .insert(&runtime_pod("orders", "worker", &after, false, json!({})));
    env.reconcile_rule("mask-email").await.unwrap();
    assert_eq!(
        rule_accepted(&env, "mask-email").2,
        format!(
            "rendered into configuration {after} of ReplicationGroup orders; waiting for a ready \
             worker pod running it (orders-worker-0 runs {after}, not ready)"
        )
    );

    // Ready: applied.
    env.api.remove::<Pod>(NS, "orders-worker-0");
    env.api
        .insert(&runtime_pod("orders", "worker", &after, true, json!({})));
    env.reconcile_rule("mask-email").await.unwrap();
    assert_eq!(
        rule_accepted(&env, "mask-email"),
        (
            "True".into(),
            "Applied".into(),
            format!(
                "the worker pod orders-worker-0 of ReplicationGroup orders runs configuration \
                 {after}, which contains this Rule"
            )
        )
    );
    let applied = events_of(&env, "Applied");
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(applied[0].0, "Normal");

    // The group's status shows the same: rendered hash and what the worker pod runs.
    env.reconcile("orders").await.unwrap();
    let st = env.stored("orders").status.unwrap();
    assert_eq!(st.config_hash.as_deref(), Some(after.as_str()));
    assert_eq!(st.pods[0].config_hash.as_deref(), Some(after.as_str()));
    assert!(st.pods[0].ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_error_becomes_a_condition_and_one_event() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    env.api.insert(&cr::<Rule>(MASK_EMAIL));

    // The API server refuses the worker StatefulSet (e.g. a webhook or a quota).
    let refusal = "admission webhook \"quota.example\" denied the request: too many pods";
    env.api
        .fail("PATCH", "/statefulsets/orders-worker", 422, refusal);
    let err = env.reconcile("orders").await.unwrap_err();
    assert_eq!(err.reason(), "KubernetesApiError");
    let message = format!(
        "cannot apply StatefulSet orders-worker: {refusal} (422 Invalid) (retried with backoff)"
    );
    let got = env.stored("orders");
    let degraded = condition(&got, "Degraded");
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "KubernetesApiError")
    );
    assert_eq!(degraded.2, message);
    let warnings = events_of(&env, "KubernetesApiError");
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        (warnings[0].0.as_str(), warnings[0].2.as_str()),
        ("Warning", degraded.2.as_str())
    );

    // The retry fails the same way: no second Event, no status write.
    env.api.clear_requests();
    env.reconcile("orders").await.unwrap_err();
    assert_eq!(events_of(&env, "KubernetesApiError").len(), 1);
    let status_writes = env
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/status"))
        .count();
    assert_eq!(status_writes, 0);

    // The API accepts it again: healthy, with its Event.
    env.api.clear_failures();
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::requeue(Duration::from_secs(30))
    );
    assert_eq!(condition(&env.stored("orders"), "Degraded").1, "Healthy");
    assert_eq!(events_of(&env, "Healthy").len(), 1);

    // A Rule whose check fails: Accepted Unknown with the reason, one Event.
    env.api.fail(
        "GET",
        "/configmaps/orders-pg-flo-config",
        500,
        "etcd timeout",
    );
    let err = env.reconcile_rule("mask-email").await.unwrap_err();
    assert_eq!(err.reason(), "KubernetesApiError");
    env.reconcile_rule("mask-email").await.unwrap_err();
    let (status, reason, message) = rule_accepted(&env, "mask-email");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("Unknown", "KubernetesApiError")
    );
    assert!(
        message
            == "the operator cannot tell whether the worker uses this Rule: cannot get ConfigMap \
                orders-pg-flo-config: etcd timeout (500 Invalid) (retried with backoff)",
        "{message}"
    );
    let rule_warnings: Vec<_> = events_of(&env, "KubernetesApiError")
        .into_iter()
        .filter(|e| e.2.starts_with("the operator cannot tell"))
        .collect();
    assert_eq!(rule_warnings.len(), 1, "{rule_warnings:?}");
    env.api.clear_failures();
    env.reconcile_rule("mask-email").await.unwrap();
    assert_eq!(rule_accepted(&env, "mask-email").1, "Pending");
}

/// The durable consumer as the worker creates it (the runtime's own functions), on a real
/// nats-server.
async fn worker_consumer(
    js: &jetstream::Context,
    group: &str,
) -> jetstream::consumer::Consumer<jetstream::consumer::pull::Config> {
    let subject = pg_flo_config::names::subject(group);
    let stream = pg_flo::nats::ensure_stream(
        js,
        &pg_flo_config::names::stream_name(group),
        &subject,
        None,
        None,
    )
    .await
    .unwrap();
    pg_flo::nats::recreate_consumer(
        &stream,
        &pg_flo_config::names::consumer_name(group),
        &subject,
        1000,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_counts_come_from_jetstream_and_a_failed_reading_is_shown() {
    let mut nats = e2e::NatsServer::start().await.unwrap();
    let group = "data_orders";
    let access = NatsAccess {
        url: nats.url(),
        credentials: None,
        user: None,
        token: None,
        ca_pem: None,
        client_cert: None,
    };
    // No stream, no consumer yet (the worker has not started): names, no counts, no error.
    let none = read_consumer(&access, group).await;
    assert!(none.read_at.is_some());
    assert_eq!(
        ConsumerStatus {
            read_at: None,
            ..none
        },
        ConsumerStatus {
            name: Some("pgflo_data_orders_consumer".into()),
            stream: Some("pgflo_data_orders_stream".into()),
            ..ConsumerStatus::default()
        }
    );

    // Five change messages (the runtime's encoding) of transactions committed an hour ago, a
    // second apart; two delivered to the worker, the first of them acknowledged (applied).
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let consumer = worker_consumer(&js, group).await;
    let hour_ago_us = (k8s_openapi::jiff::Timestamp::now().as_second() - 3600) * 1_000_000;
    for i in 0..5 {
        let batch = pg_flo::message::ChangeBatch {
            version: pg_flo::message::FORMAT_VERSION,
            commit_lsn: 0x1600_0000 + i,
            commit_time_us: hour_ago_us + i as i64 * 1_000_000,
            xid: 700 + i as u32,
            seq: 0x1600_0000 + i,
            last: true,
            prev: None,
            emitted_at_us: hour_ago_us,
            relations: vec![],
            changes: vec![],
            source: None,
            copy: false,
        };
        js.publish(
            pg_flo_config::names::subject(group),
            batch.encode().unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut batch = consumer.fetch().max_messages(2).messages().await.unwrap();
    let mut delivered = 0;
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        if delivered == 0 {
            m.double_ack().await.unwrap();
        }
        delivered += 1;
    }
    assert_eq!(delivered, 2);

    // Through a reconcile of a group on this NATS.
    let env = Env::start().await;
    env.source_secret();
    let rg = env.group(
        "orders",
        &format!("{{nats: {{external: {{url: '{}'}}}}}}", nats.url()),
    );
    env.create(&rg).await;
    let consumer_status = env.stored("orders").status.unwrap().consumer.unwrap();
    let read_at = consumer_status.read_at.clone();
    // The oldest change not applied is the second message's: committed an hour ago plus 1 s.
    let lag = pg_flo_operator::controller::nats_status::lag_seconds(
        hour_ago_us + 1_000_000,
        read_at.as_ref().unwrap().0.as_microsecond(),
    );
    assert!((3599..3700).contains(&lag), "{lag}");
    assert_eq!(
        consumer_status,
        ConsumerStatus {
            name: Some("pgflo_data_orders_consumer".into()),
            stream: Some("pgflo_data_orders_stream".into()),
            pending: Some(3),
            ack_pending: Some(1),
            redelivered: Some(0),
            lag_seconds: Some(lag),
            read_at: read_at.clone(),
            error: None,
        }
    );

    // NATS goes away: the error is shown with the last counts and when they were read; the
    // group is not degraded by it.
    nats.stop().await.unwrap();
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    let c = got.status.as_ref().unwrap().consumer.clone().unwrap();
    assert_eq!(
        (c.pending, c.ack_pending, c.lag_seconds, c.read_at.clone()),
        (Some(3), Some(1), Some(lag), read_at)
    );
    let error = c.error.unwrap();
    assert!(
        error.starts_with(&format!("cannot connect to NATS at {}: ", nats.url())),
        "{error}"
    );
    assert_eq!(condition(&got, "Degraded").1, "Healthy");
}
