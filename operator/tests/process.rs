//! The operator process around the controllers: leader election on a Lease (against the fake
//! Kubernetes API) and the admin endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use pg_flo_operator::leader::{LeaderElector, LeaseConfig};
use pg_flo_operator::metrics::{serve, Health, Metrics};
use support::fake_api::FakeApi;

fn elector(api: &FakeApi, identity: &str) -> LeaderElector {
    LeaderElector::new(
        api.client(),
        LeaseConfig {
            name: "pg-flo-operator".into(),
            namespace: "ops".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(2),
        },
    )
}

fn holder(api: &FakeApi) -> (Option<String>, i32) {
    let l: Lease = api.get("ops", "pg-flo-operator").unwrap();
    let s = l.spec.unwrap();
    (s.holder_identity, s.lease_transitions.unwrap())
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_an_expired_or_released_lease() {
    let api = FakeApi::new();
    let a = elector(&api, "pod-a");
    let b = elector(&api, "pod-b");
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a creates the lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b sees a valid lease"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    assert_eq!(holder(&api), (Some("pod-a".into()), 0));

    // a stops renewing: after the lease duration b takes over, and a learns it lost.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "b takes over the expired lease"
    );
    assert_eq!(holder(&api), (Some("pod-b".into()), 1));
    assert!(!a.try_acquire_or_renew().await.unwrap());

    // a's release does not touch b's lease; b's release lets a in at once.
    a.release().await;
    assert_eq!(holder(&api), (Some("pod-b".into()), 1));
    b.release().await;
    assert_eq!(holder(&api), (None, 1));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&api), (Some("pod-a".into()), 2));

    // Every write after the first carried the resourceVersion it read (optimistic concurrency).
    let puts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 4);
    assert!(puts
        .iter()
        .all(|r| r.body["metadata"]["resourceVersion"].is_string()));
}

#[tokio::test]
async fn a_stale_write_loses_the_race() {
    let api = FakeApi::new();
    let a = elector(&api, "pod-a");
    assert!(a.try_acquire_or_renew().await.unwrap());
    // Someone else renews between a's read and a's write: a's write carries a stale version.
    let mut lease: Lease = api.get("ops", "pg-flo-operator").unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("pod-c".into());
    api.replace(&lease);
    let mut stale: Lease = api.get("ops", "pg-flo-operator").unwrap();
    stale.metadata.resource_version = Some("1".into());
    stale.spec.as_mut().unwrap().holder_identity = Some("pod-a".into());
    let leases: kube::Api<Lease> = kube::Api::namespaced(api.client(), "ops");
    let err = leases
        .replace("pg-flo-operator", &Default::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "pod-c holds a fresh lease"
    );
}

#[tokio::test]
async fn the_admin_endpoint_serves_metrics_and_health() {
    let metrics = Arc::new(Metrics::new().unwrap());
    let health = Health::default();
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        health.clone(),
    )
    .await
    .unwrap();
    let port = addr.port();
    let get = |path: &'static str| async move { e2e::http_get(port, path).await.unwrap() };
    let healthz = get("/healthz").await;
    assert!(
        healthz.starts_with("HTTP/1.1 200 OK") && healthz.ends_with("\r\n\r\nok\n"),
        "{healthz}"
    );
    let readyz = get("/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503 Service Unavailable") && readyz.ends_with("not ready\n"),
        "{readyz}"
    );
    health.set_ready(true);
    let readyz = get("/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 200 OK") && readyz.ends_with("\r\n\r\nready\n"),
        "{readyz}"
    );
    metrics.observe_reconcile("ReplicationGroup", Duration::from_millis(30), None);
    metrics.observe_reconcile(
        "ReplicationGroup",
        Duration::from_millis(30),
        Some("source"),
    );
    let text = get("/metrics").await;
    assert!(
        text.contains("pg_flo_operator_reconciles_total{kind=\"ReplicationGroup\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("pg_flo_operator_reconcile_errors_total{category=\"source\",kind=\"ReplicationGroup\"} 1"),
        "{text}"
    );
    assert!(text
        .contains("pg_flo_operator_reconcile_duration_seconds_count{kind=\"ReplicationGroup\"} 2"));
}
