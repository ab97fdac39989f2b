//! The operator process around the controllers: leader election on a Lease (against the fake
//! Kubernetes API) and the admin endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use pg_flo_operator::leader::{LeaderElector, LeaseConfig};
use pg_flo_operator::metrics::{serve, Health, Metrics};
use support::fake_api::FakeApi;

/// A 2 s lease, renewed every 667 ms, 1.4 s renew deadline, retried every 200 ms.
fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "pg-flo-operator".into(),
        namespace: "ops".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1400),
        retry_period: Duration::from_millis(200),
    }
}

fn elector(api: &FakeApi, identity: &str) -> LeaderElector {
    LeaderElector::new(api.client(), config(identity))
}

/// [`config`] with every duration `k` times longer: for a test whose windows between
/// timers must survive a loaded machine.
fn slow_elector(api: &FakeApi, identity: &str, k: u32) -> LeaderElector {
    let c = config(identity);
    LeaderElector::new(
        api.client(),
        LeaseConfig {
            lease_duration: c.lease_duration * k,
            renew_deadline: c.renew_deadline * k,
            retry_period: c.retry_period * k,
            ..c
        },
    )
}

/// A Lease held by `holder` whose `renewTime` is `offset` from now (another node's clock).
fn foreign_lease(holder: &str, offset: SignedDuration) -> Lease {
    let at = MicroTime(Timestamp::now().checked_add(offset).unwrap());
    Lease {
        metadata: ObjectMeta {
            name: Some("pg-flo-operator".into()),
            namespace: Some("ops".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(2),
            acquire_time: Some(at.clone()),
            renew_time: Some(at),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
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
    // b saw the renewal: its lease duration counts from now.
    assert!(!b.try_acquire_or_renew().await.unwrap());

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
async fn expiry_is_judged_on_the_local_clock_not_the_holders_renew_time() {
    for (what, offset) in [
        // The holder's clock is an hour behind ours: its fresh renewTime looks long expired.
        ("holder's clock behind", SignedDuration::from_hours(-1)),
        // The holder's clock is an hour ahead: its renewTime looks valid for an hour.
        ("holder's clock ahead", SignedDuration::from_hours(1)),
    ] {
        let api = FakeApi::new();
        api.insert(&foreign_lease("pod-x", offset));
        let b = elector(&api, "pod-b");
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "{what}: a Lease first seen now is valid for its duration"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(!b.try_acquire_or_renew().await.unwrap(), "{what}");
        // pod-x renews (a new record, renewTime still from its skewed clock): b starts over.
        let mut renewed = foreign_lease("pod-x", offset);
        renewed.metadata = api.get::<Lease>("ops", "pg-flo-operator").unwrap().metadata;
        api.replace(&renewed);
        assert!(!b.try_acquire_or_renew().await.unwrap(), "{what}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "{what}: 2.1 s since the first record was seen, but 1.1 s since the renewal"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            b.try_acquire_or_renew().await.unwrap(),
            "{what}: unchanged for a lease duration of local time"
        );
        assert_eq!(holder(&api), (Some("pod-b".into()), 1), "{what}");
    }
}

#[tokio::test]
async fn the_leader_survives_a_failed_renewal_and_steps_down_at_its_renew_deadline() {
    // Three times the usual timings (6 s lease, 4.2 s deadline, 600 ms retries), so that a
    // slow timer on a loaded machine does not close the windows this test aims between.
    const K: u32 = 3;
    let api = FakeApi::new();
    let a = Arc::new(slow_elector(&api, "pod-a", K));
    let b = slow_elector(&api, "pod-b", K);
    let acquired = a.acquire().await;
    let holding = {
        let a = a.clone();
        tokio::spawn(async move { a.hold(acquired).await })
    };
    let version = |api: &FakeApi| {
        api.get::<Lease>("ops", "pg-flo-operator")
            .unwrap()
            .metadata
            .resource_version
    };
    let first = version(&api);
    assert!(!b.try_acquire_or_renew().await.unwrap());

    // The API server fails the renewals for a while (at ~2 s and the retry at ~2.6 s).
    api.fail(
        "PUT",
        "/leases/pg-flo-operator",
        500,
        "etcdserver: request timed out",
    );
    tokio::time::sleep(Duration::from_millis(950) * K).await;
    assert_eq!(version(&api), first, "no renewal went through");
    assert!(!holding.is_finished(), "one failed renewal does not end it");
    api.clear_failures();
    // The next retry (~3.2 s, before the 4.2 s deadline) renews.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1) * K;
    while version(&api) == first {
        assert!(tokio::time::Instant::now() < deadline, "no renewal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let renewed = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500) * K).await;
    assert!(
        !holding.is_finished(),
        "still leading after the first deadline: the retry renewed"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "a standby saw the renewals"
    );
    assert_eq!(holder(&api).0.as_deref(), Some("pod-a"));

    // The API server is gone for good: the leader steps down within its renew deadline of its
    // last renewal, before a standby may take over (a lease duration after it saw it).
    api.fail(
        "GET",
        "/leases/pg-flo-operator",
        503,
        "apiserver unavailable",
    );
    api.fail(
        "PUT",
        "/leases/pg-flo-operator",
        503,
        "apiserver unavailable",
    );
    tokio::time::timeout(Duration::from_secs(3) * K, holding)
        .await
        .expect("the leader steps down")
        .unwrap();
    let stepped_down = renewed.elapsed();
    assert!(
        stepped_down < Duration::from_millis(1400 + 300) * K,
        "stepped down {stepped_down:?} after its last renewal was seen"
    );
    assert!(
        stepped_down < Duration::from_secs(2) * K,
        "before the lease expires"
    );
}

#[tokio::test]
async fn the_leader_steps_down_at_once_when_another_holds_the_lease() {
    let api = FakeApi::new();
    let a = elector(&api, "pod-a");
    let acquired = a.acquire().await;
    // An admin hands the Lease to pod-c.
    let mut lease: Lease = api.get("ops", "pg-flo-operator").unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("pod-c".into());
    api.replace(&lease);
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(2), a.hold(acquired))
        .await
        .expect("the leader steps down");
    // At its first renewal (a third of the lease), not at the renew deadline.
    assert!(started.elapsed() < Duration::from_millis(1000));
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
