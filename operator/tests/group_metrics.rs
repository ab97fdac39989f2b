//! The operator's per-group gauges (`pg_flo_operator_group_*`) through its real admin endpoint,
//! after reconciles on the fake Kubernetes API with a real PostgreSQL source (a real slot): one
//! scrape shows each group's phase, readiness, ready pods, slot and consumer as its status
//! says; a paused group keeps its slot series (no runtime pod exports them then); a deleted
//! group's series are gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::collections::BTreeMap;

use pg_flo_operator::crd::{DesiredState, ReplicationGroup};
use pg_flo_operator::metrics::{serve, Health};
use serde_json::json;
use support::{create_group_slot, rendered_hash, runtime_pod, Env, NS};

/// `(metric, labels)` -> value of every `pg_flo_operator_group_*` sample.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Scrapes `/metrics` on `port` and keeps the per-group samples.
async fn scrape(port: u16) -> Samples {
    let response = e2e::http_get(port, "/metrics").await.unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    body.lines()
        .filter(|l| l.starts_with("pg_flo_operator_group_"))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap();
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            ((name.to_owned(), labels), value.parse().unwrap())
        })
        .collect()
}

/// One expected sample: metric, its extra label, value.
type Want = (&'static str, Option<(&'static str, &'static str)>, f64);

/// The samples of group `orders` the status says, with `extra` labels per metric.
fn expected(rg: &ReplicationGroup, values: &[Want]) -> Samples {
    let group = rg
        .status
        .as_ref()
        .unwrap()
        .group_name
        .clone()
        .unwrap_or_default();
    values
        .iter()
        .map(|(m, extra, v)| {
            let mut labels: BTreeMap<String, String> = [
                ("namespace", NS),
                ("group", "orders"),
                ("runtime_group", group.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            if let Some((k, v)) = extra {
                labels.insert((*k).to_owned(), (*v).to_owned());
            }
            (((*m).to_owned(), labels), *v)
        })
        .collect()
}

/// Readiness (of the group and both pods) and the series of an inactive slot with
/// `wal_status` reserved, as the status shows it.
fn ready_and_slot(ready: f64, slot: &pg_flo_operator::crd::SlotStatus) -> Vec<Want> {
    let mut want = vec![
        ("pg_flo_operator_group_ready", None, ready),
        ("pg_flo_operator_group_slot_active", None, 0.0),
        (
            "pg_flo_operator_group_slot_lag_bytes",
            None,
            slot.lag_bytes.unwrap() as f64,
        ),
        (
            "pg_flo_operator_group_slot_retained_bytes",
            None,
            slot.retained_bytes.unwrap() as f64,
        ),
        (
            "pg_flo_operator_group_slot_read_timestamp_seconds",
            None,
            slot.read_at.as_ref().unwrap().0.as_second() as f64,
        ),
    ];
    for component in ["replicator", "worker"] {
        want.push((
            "pg_flo_operator_group_pods_ready",
            Some(("component", component)),
            ready,
        ));
    }
    for status in ["reserved", "extended", "unreserved", "lost"] {
        let on = if status == "reserved" { 1.0 } else { 0.0 };
        want.push((
            "pg_flo_operator_group_slot_wal_status",
            Some(("status", status)),
            on,
        ));
    }
    want
}

fn phases(current: &str) -> Vec<Want> {
    pg_flo_operator::metrics::PHASES
        .iter()
        .map(|p| {
            let name: &'static str = Box::leak(format!("{p:?}").into_boxed_str());
            (
                "pg_flo_operator_group_phase",
                Some(("phase", name)),
                f64::from(u8::from(name == current)),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scrape_of_the_operator_shows_every_group_as_its_status_says() {
    let env = Env::start().await;
    env.source_secret();
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        env.ctx.metrics.clone(),
        Health::default(),
    )
    .await
    .unwrap();
    let port = addr.port();

    // A streaming group on a real slot (created as the replicator would), its pods ready; its
    // managed NATS is not reachable from the test: no consumer counts.
    let source = create_group_slot(&env, "data_orders").await;
    source
        .batch_execute("INSERT INTO orders VALUES (1, 'a')")
        .await
        .unwrap();
    env.create(&env.group("orders", "")).await;
    let hash = rendered_hash(&env, "orders");
    env.set_available("orders-replicator", 1);
    env.set_available("orders-worker", 1);
    for component in ["replicator", "worker"] {
        env.api
            .insert(&runtime_pod("orders", component, &hash, true, json!({})));
    }
    env.reconcile("orders").await.unwrap();
    let rg = env.stored("orders");
    let st = rg.status.clone().unwrap();
    let slot = st.slot.clone().unwrap();
    assert_eq!(st.group_name.as_deref(), Some("data_orders"));
    assert!(st.consumer.as_ref().unwrap().error.is_some());
    let mut want = phases("Streaming");
    want.extend(ready_and_slot(1.0, &slot));
    assert!(slot.lag_bytes.unwrap() > 0, "{slot:?}");
    assert_eq!(
        slot.safe_wal_size, None,
        "no max_slot_wal_keep_size: no series"
    );
    assert_eq!(scrape(port).await, expected(&rg, &want));

    // Paused: the pods go, the phase and readiness follow, the slot is still shown.
    env.edit("orders", |rg| rg.spec.state = DesiredState::Paused);
    for component in ["replicator", "worker"] {
        env.api
            .remove::<k8s_openapi::api::core::v1::Pod>(NS, &format!("orders-{component}-0"));
    }
    env.reconcile("orders").await.unwrap();
    let rg = env.stored("orders");
    let slot = rg.status.clone().unwrap().slot.unwrap();
    let mut want = phases("Paused");
    want.extend(ready_and_slot(0.0, &slot));
    assert_eq!(scrape(port).await, expected(&rg, &want));

    // Deleted (retain): the finalizer goes, and so do the group's series.
    let groups: kube::Api<ReplicationGroup> = kube::Api::namespaced(env.api.admin_client(), NS);
    groups.delete("orders", &Default::default()).await.unwrap();
    env.reconcile("orders").await.unwrap();
    assert!(env.api.get::<ReplicationGroup>(NS, "orders").is_none());
    assert_eq!(scrape(port).await, Samples::new());
}
