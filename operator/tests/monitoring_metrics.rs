//! Every metric the chart's alerts and dashboard read is one the real binaries export.
//!
//! The chart is rendered with `helm template` (PrometheusRule and dashboard ConfigMap on), every
//! PromQL expression is parsed and its metric names collected. Then a real replication runs on
//! throw-away PostgreSQL and NATS with the real `pg_flo` binary (`cargo build -p pg_flo --bin
//! pg_flo` first, or `PG_FLO_BIN`): a copy-and-stream replicator and a postgres worker (copy,
//! stream, a delete whose row the target misses, a killed replication connection), and a
//! webhook worker of a second group. The names of the samples of their three `/metrics`
//! outputs (histograms as `_bucket`, `_sum`, `_count`) must hold every name the chart uses,
//! except the exporter and Prometheus names listed here, each of which the chart must use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "chart_support/helm.rs"]
mod helm;
#[path = "chart_support/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::webhook::{Receiver, Reply};
use e2e::{free_port, http_get, wait_for, PgOptions, Pipeline, Process, ARRIVAL_TIMEOUT};
use serde_json::Value as Json;

/// Names the NATS panels read from prometheus-nats-exporter (`-prefix=nats -varz -jsz=all`),
/// which the pg_flo binaries do not serve (docs/operations.md, "NATS").
const NATS_EXPORTER: [&str; 5] = [
    "nats_stream_total_bytes",
    "nats_varz_connections",
    "nats_varz_in_msgs",
    "nats_varz_mem",
    "nats_varz_out_msgs",
];

/// Names Prometheus itself records for every target.
const PROMETHEUS: [&str; 1] = ["up"];

/// `metric name -> where the chart uses it`, from the rendered PrometheusRule and dashboard.
fn chart_metric_names() -> BTreeMap<String, BTreeSet<String>> {
    let yaml = helm::template_yaml(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
    ]);
    let mut queries = Vec::new();
    for doc in helm::documents(&yaml) {
        let doc: Json = serde_json::to_value(&doc).unwrap();
        match doc["kind"].as_str().unwrap() {
            "PrometheusRule" => queries.extend(promql::rule_queries(&doc)),
            "ConfigMap" => {
                let dashboard: Json =
                    serde_json::from_str(doc["data"]["pg-flo.json"].as_str().unwrap()).unwrap();
                queries.extend(promql::dashboard_queries(&dashboard));
            }
            _ => {}
        }
    }
    assert!(
        queries.iter().any(|q| q.origin.starts_with("alert"))
            && queries.iter().any(|q| q.origin.starts_with("panel")),
        "the rules and the dashboard were rendered"
    );
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for q in &queries {
        for name in promql::metric_names(q) {
            used.entry(name).or_default().insert(q.origin.clone());
        }
    }
    used
}

/// The body of `/metrics` on `port`.
async fn metrics(port: u16) -> String {
    let m = http_get(port, "/metrics").await.unwrap();
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    let (_headers, body) = m.split_once("\r\n\r\n").unwrap();
    body.to_string()
}

/// Waits until the `/metrics` of `port` has `series` at `value`; returns the text.
async fn wait_sample(port: u16, series: &str, value: f64) -> String {
    wait_for(
        &format!("{series} = {value} on :{port}"),
        ARRIVAL_TIMEOUT,
        || async move {
            let m = metrics(port).await;
            (e2e::metric_sample(&m, series) == Some(value)).then_some(m)
        },
    )
    .await
    .unwrap()
}

fn webhook_worker(p: &Pipeline, group: &str, url: &str, port: u16) -> Process {
    let args: Vec<String> = [
        "worker",
        "webhook",
        "--group",
        group,
        "--nats-url",
        &p.nats.url(),
        "--webhook-url",
        url,
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Pipeline::spawn(&format!("worker-{group}"), &args).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_alerts_and_the_dashboard_is_exported_by_the_binaries() {
    let used = chart_metric_names();

    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE items (id int PRIMARY KEY, name text)")
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 100) g")
        .await
        .unwrap();

    // Group `mon`: copy, then stream, into the target database.
    let (rport, wport, hport) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let raddr = format!("127.0.0.1:{rport}");
    let r = p
        .start_replicator_with(
            "mon",
            "items",
            &["--copy-and-stream", "--metrics-addr", &raddr],
        )
        .await
        .unwrap();
    let mut wargs = p.pg_worker_args("mon");
    wargs.extend(["--metrics-addr".into(), format!("127.0.0.1:{wport}")]);
    let w = Pipeline::spawn("worker-mon", &wargs).unwrap();
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    p.wait_equal("public.items", "id").await.unwrap();
    // A streamed insert, and a delete of a row the target no longer has (a conflict).
    let dst = p.target().await.unwrap();
    dst.batch_execute("DELETE FROM items WHERE id = 1")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO items VALUES (101, 'streamed')")
        .await
        .unwrap();
    src.batch_execute("DELETE FROM items WHERE id = 1")
        .await
        .unwrap();
    p.wait_equal("public.items", "id").await.unwrap();
    let wmetrics = wait_sample(
        wport,
        "pg_flo_worker_conflicts_total{kind=\"delete_missing\",table=\"public.items\"}",
        1.0,
    )
    .await;

    // The replication connection is killed: the replicator counts the error and streams again.
    let killed = src
        .query_one(
            "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
             WHERE slot_name = 'pg_flo_mon_publication' AND active",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.get::<_, i64>(0), 1);
    wait_for("a replicator error", ARRIVAL_TIMEOUT, || async {
        metrics(rport)
            .await
            .contains("pg_flo_errors_total{")
            .then_some(())
    })
    .await
    .unwrap();
    src.batch_execute("INSERT INTO items VALUES (102, 'after the reconnect')")
        .await
        .unwrap();
    p.wait_equal("public.items", "id").await.unwrap();
    // The slot's health is read every 5 s.
    let rmetrics = wait_sample(
        rport,
        "pg_flo_replicator_slot_wal_status{status=\"reserved\"}",
        1.0,
    )
    .await;
    let rmetrics = if e2e::metric_sample(&rmetrics, "pg_flo_ready") == Some(1.0) {
        rmetrics
    } else {
        wait_sample(rport, "pg_flo_ready", 1.0).await
    };

    // Group `hook`: a webhook worker, for the webhook metrics.
    let rx = Receiver::start(&[], Reply::Status(200)).await.unwrap();
    let _hr = p.start_replicator("hook", "items").await.unwrap();
    let h = webhook_worker(&p, "hook", &rx.url, hport);
    h.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    src.batch_execute("INSERT INTO items VALUES (103, 'hooked')")
        .await
        .unwrap();
    rx.wait_changes(1).await.unwrap();
    let hmetrics = wait_sample(hport, "pg_flo_webhook_requests_total{status=\"200\"}", 1.0).await;
    let wmetrics = {
        let m = metrics(wport).await;
        if e2e::metric_sample(&m, "pg_flo_ready") == Some(1.0) {
            m
        } else {
            wmetrics
        }
    };

    // Exact values along the way: the copy, the conflict, readiness, no dead letter.
    assert_eq!(
        e2e::metric_sample(&rmetrics, "pg_flo_copy_rows_total{table=\"public.items\"}"),
        Some(100.0)
    );
    assert_eq!(
        e2e::metric_sample(&rmetrics, "pg_flo_copy_ranges{table=\"public.items\"}"),
        e2e::metric_sample(
            &rmetrics,
            "pg_flo_copy_ranges_done_total{table=\"public.items\"}"
        )
    );
    assert_eq!(e2e::metric_sample(&rmetrics, "pg_flo_ready"), Some(1.0));
    assert_eq!(e2e::metric_sample(&wmetrics, "pg_flo_ready"), Some(1.0));
    assert_eq!(
        e2e::metric_sample(
            &wmetrics,
            "pg_flo_worker_messages_total{outcome=\"dead_lettered\"}"
        ),
        Some(0.0),
        "the dead-letter series exists from the start"
    );
    // PgFloLagHigh's threshold must stay below the largest finite bucket (values schema:
    // exclusiveMaximum 600): histogram_quantile cannot go past it.
    let largest_bucket = wmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("pg_flo_worker_lag_seconds_bucket{le=\""))
        .filter_map(|l| l.split('"').next())
        .filter(|le| *le != "+Inf")
        .map(|le| le.parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(largest_bucket, 600.0);

    let exported: BTreeSet<String> = [&rmetrics, &wmetrics, &hmetrics]
        .into_iter()
        .flat_map(|m| promql::exported_names(m))
        .collect();
    let mut missing = Vec::new();
    for (name, origins) in &used {
        let exempt = NATS_EXPORTER.contains(&name.as_str()) || PROMETHEUS.contains(&name.as_str());
        if !exempt && !exported.contains(name) {
            missing.push(format!("{name} (used by {origins:?})"));
        }
    }
    assert!(
        missing.is_empty(),
        "the chart reads metrics the binaries do not export:\n{}\nexported: {exported:#?}",
        missing.join("\n")
    );
    // The exemptions are exactly the foreign names the chart uses.
    let foreign: BTreeSet<&str> = used
        .keys()
        .map(String::as_str)
        .filter(|n| !n.starts_with("pg_flo_"))
        .collect();
    let exempt: BTreeSet<&str> = NATS_EXPORTER.iter().chain(&PROMETHEUS).copied().collect();
    assert_eq!(foreign, exempt);
    drop((r, w, h));
}
