//! End-to-end: the real `pg_flo` binaries stream changes from PostgreSQL through NATS
//! JetStream to `pg_flo worker webhook`, which POSTs them to a receiver written here (a minimal
//! HTTP/1.1 server on a loopback port that records every request and answers from a script).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::webhook::{Receiver, Reply};
use e2e::{wait_for, PgOptions, Pipeline, Process, ARRIVAL_TIMEOUT};

const ITEMS: &str = "CREATE TABLE public.items (id int PRIMARY KEY, name text)";

/// `pg_flo worker webhook` for `group`, posting to `url`, with `extra` flags and `envs`.
async fn start_worker(
    p: &Pipeline,
    group: &str,
    url: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Process {
    let mut args: Vec<String> = vec![
        "worker".into(),
        "webhook".into(),
        "--group".into(),
        group.into(),
        "--nats-url".into(),
        p.nats.url(),
        "--webhook-url".into(),
        url.into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut env = vec![("PG_FLO_LOG_LEVEL", "info")];
    env.extend_from_slice(envs);
    let w = Process::spawn_pg_flo(&format!("worker-{group}"), &args, env).unwrap();
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    w
}

/// A pipeline with `public.items` in the source and a replicator streaming it for `group`.
async fn setup(group: &str) -> (Pipeline, Process) {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute(ITEMS)
        .await
        .unwrap();
    let r = p.start_replicator(group, "items").await.unwrap();
    (p, r)
}

fn ids(changes: &[serde_json::Value]) -> Vec<i64> {
    changes
        .iter()
        .map(|c| {
            c.get("NewTuple")
                .or_else(|| c.get("OldTuple"))
                .and_then(|t| t["id"].as_i64())
                .unwrap_or_else(|| panic!("no id in {c}"))
        })
        .collect()
}

const FAST_RETRIES: &[&str] = &[
    "--webhook-retry-initial-wait",
    "100ms",
    "--webhook-retry-max-wait",
    "200ms",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_post_per_change_with_pg_flo_json_and_custom_headers() {
    let (p, _r) = setup("hook").await;
    let rx = Receiver::start(&[], Reply::Status(200)).await.unwrap();
    let w = start_worker(
        &p,
        "hook",
        &rx.url,
        &["--webhook-header", "Authorization: Bearer e2e-s3cr3t"],
        &[],
    )
    .await;
    let src = p.source().await.unwrap();
    for i in 1..=3 {
        src.execute(
            "INSERT INTO items VALUES ($1, $2)",
            &[&i, &format!("item{i}")],
        )
        .await
        .unwrap();
    }
    src.execute("UPDATE items SET name = 'renamed' WHERE id = 1", &[])
        .await
        .unwrap();
    src.execute("UPDATE items SET name = 'renamed' WHERE id = 2", &[])
        .await
        .unwrap();
    src.execute("DELETE FROM items WHERE id = 3", &[])
        .await
        .unwrap();
    rx.wait_changes(6).await.unwrap();
    // A later change arrives after all of them: nothing was sent twice before it.
    src.execute("INSERT INTO items VALUES (99, 'sentinel')", &[])
        .await
        .unwrap();
    let changes = rx.wait_changes(7).await.unwrap();

    let requests = rx.requests();
    assert_eq!(requests.len(), 7, "one POST per change: {requests:#?}");
    let types: Vec<&str> = changes
        .iter()
        .map(|c| c["Type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["INSERT", "INSERT", "INSERT", "UPDATE", "UPDATE", "DELETE", "INSERT"]
    );
    assert_eq!(ids(&changes), [1, 2, 3, 1, 2, 3, 99]);
    for (r, c) in requests.iter().zip(&changes) {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hook");
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Bearer e2e-s3cr3t")
        );
        assert!(c.is_object(), "one JSON object per request: {c}");
        assert_eq!(c["Schema"], "public");
        assert_eq!(c["Table"], "items");
        assert_eq!(c["ReplicationKey"]["Type"], "PRIMARY KEY");
        assert!(c["LSN"].as_str().unwrap().contains('/'), "{c}");
        assert!(c["EmittedAt"].is_string(), "{c}");
    }
    assert_eq!(changes[0]["NewTuple"]["name"], "item1");
    assert_eq!(changes[3]["NewTuple"]["name"], "renamed");
    assert_eq!(changes[5]["OldTuple"]["id"], 3);
    assert!(changes[5].get("NewTuple").is_none());
    let log = format!("{}{}", w.stdout(), w.stderr());
    assert!(
        !log.contains("e2e-s3cr3t"),
        "header value in the log:\n{log}"
    );
    assert!(
        log.contains("Authorization"),
        "header names are logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_500_are_retried_without_loss_or_reordering() {
    let (p, _r) = setup("retry").await;
    let rx = Receiver::start(
        &[Reply::Status(500), Reply::Status(500)],
        Reply::Status(200),
    )
    .await
    .unwrap();
    let port = e2e::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut flags = FAST_RETRIES.to_vec();
    flags.extend(["--metrics-addr", addr.as_str()]);
    let w = start_worker(&p, "retry", &rx.url, &flags, &[]).await;
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO items SELECT g, 'x' FROM generate_series(1, 5) g")
        .await
        .unwrap();
    let changes = rx.wait_changes(5).await.unwrap();
    assert_eq!(ids(&changes), [1, 2, 3, 4, 5]);
    let statuses: Vec<Reply> = rx.requests().iter().map(|r| r.reply).collect();
    assert_eq!(
        statuses,
        [
            Reply::Status(500),
            Reply::Status(500),
            Reply::Status(200),
            Reply::Status(200),
            Reply::Status(200),
            Reply::Status(200),
            Reply::Status(200)
        ]
    );
    let first = ids(&[rx.requests()[0].json().unwrap()]);
    assert_eq!(first, [1], "the failed request is repeated, not skipped");
    let metrics = e2e::http_get(port, "/metrics").await.unwrap();
    for line in [
        "pg_flo_webhook_requests_total{status=\"500\"} 2",
        "pg_flo_webhook_requests_total{status=\"200\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    assert!(
        w.stderr().contains("webhook request failed; retrying"),
        "{}",
        w.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried() {
    let (p, _r) = setup("dropped").await;
    let rx = Receiver::start(&[Reply::Close], Reply::Status(200))
        .await
        .unwrap();
    let _w = start_worker(&p, "dropped", &rx.url, FAST_RETRIES, &[]).await;
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO items SELECT g, 'x' FROM generate_series(1, 3) g")
        .await
        .unwrap();
    let changes = rx.wait_changes(3).await.unwrap();
    assert_eq!(ids(&changes), [1, 2, 3]);
    let requests = rx.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert_eq!(requests[0].reply, Reply::Close);
    assert_eq!(ids(&[requests[0].json().unwrap()]), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_posts_json_arrays_of_at_most_n_changes() {
    let (p, _r) = setup("batched").await;
    let rx = Receiver::start(&[], Reply::Status(200)).await.unwrap();
    let _w = start_worker(
        &p,
        "batched",
        &rx.url,
        &["--webhook-batch-size", "3"],
        &[("PG_FLO_WEBHOOK_HEADER", "X-Pipeline: e2e\nX-Other: 2")],
    )
    .await;
    // One source transaction: one commit of 7 changes.
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO items SELECT g, 'x' FROM generate_series(1, 7) g")
        .await
        .unwrap();
    let changes = rx.wait_changes(7).await.unwrap();
    assert_eq!(ids(&changes), [1, 2, 3, 4, 5, 6, 7]);
    let requests = rx.requests();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| r.json().unwrap().as_array().expect("a JSON array").len())
        .collect();
    assert_eq!(sizes, [3, 3, 1]);
    for r in &requests {
        assert_eq!(r.headers.get("x-pipeline").map(String::as_str), Some("e2e"));
        assert_eq!(r.headers.get("x-other").map(String::as_str), Some("2"));
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
    assert_eq!(changes[0]["Type"], "INSERT");
    assert_eq!(changes[0]["Table"], "items");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_is_acked_before_its_2xx() {
    let (p, _r) = setup("unacked").await;
    let rx = Receiver::start(&[], Reply::Status(500)).await.unwrap();
    let mut w = start_worker(&p, "unacked", &rx.url, FAST_RETRIES, &[]).await;
    let src = p.source().await.unwrap();
    for i in 1..=3 {
        src.execute("INSERT INTO items VALUES ($1, 'x')", &[&i])
            .await
            .unwrap();
    }
    wait_for(
        "the receiver to refuse a few requests",
        ARRIVAL_TIMEOUT,
        || {
            let n = rx.requests().len();
            async move { (n >= 4).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert!(rx.accepted().is_empty());
    // SIGTERM while the receiver keeps failing: the retries stop, nothing is acked.
    w.terminate().unwrap();
    let status = w
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("worker did not stop\n{}", w.output_dump()));
    assert!(status.success(), "{status:?}\n{}", w.output_dump());

    rx.set_default(Reply::Status(200));
    let _w2 = start_worker(&p, "unacked", &rx.url, FAST_RETRIES, &[]).await;
    let changes = rx.wait_changes(3).await.unwrap();
    let mut got = ids(&changes);
    got.dedup();
    assert_eq!(
        got,
        [1, 2, 3],
        "every change arrives, in order: {changes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_stops_the_worker_naming_the_status_and_skips_nothing() {
    let (p, _r) = setup("rejected").await;
    let rx = Receiver::start(&[], Reply::Status(400)).await.unwrap();
    let mut w = start_worker(&p, "rejected", &rx.url, &[], &[]).await;
    p.source()
        .await
        .unwrap()
        .execute("INSERT INTO items VALUES (1, 'private-value')", &[])
        .await
        .unwrap();
    let status = w
        .wait_exit(ARRIVAL_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("worker did not stop\n{}", w.output_dump()));
    assert!(!status.success(), "{}", w.output_dump());
    let err = w.stderr();
    for needle in [
        "400 Bad Request",
        &rx.url,
        "INSERT public.items at LSN",
        "after 1 attempt(s)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        !err.contains("private-value"),
        "row value in the log:\n{err}"
    );
    assert_eq!(rx.requests().len(), 1, "a 400 is not retried");

    // Nothing was acked: a worker against a healthy receiver delivers the change.
    rx.set_default(Reply::Status(200));
    let _w2 = start_worker(&p, "rejected", &rx.url, &[], &[]).await;
    let changes = rx.wait_changes(1).await.unwrap();
    assert_eq!(ids(&changes), [1]);
    assert_eq!(changes[0]["NewTuple"]["name"], "private-value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letter_a_rejected_change_is_set_aside_and_the_rest_is_delivered() {
    let (p, _r) = setup("dlqhook").await;
    let rx = Receiver::start(&[], Reply::Status(200)).await.unwrap();
    rx.reject_containing("poison");
    let mut w = start_worker(&p, "dlqhook", &rx.url, &["--dead-letter"], &[]).await;
    let src = p.source().await.unwrap();
    for sql in [
        "INSERT INTO items VALUES (1, 'fine')",
        "INSERT INTO items VALUES (2, 'poison')",
        "INSERT INTO items VALUES (3, 'fine too')",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    let changes = rx.wait_changes(2).await.unwrap();
    assert_eq!(ids(&changes), [1, 3]);
    assert!(w.try_status().unwrap().is_none(), "{}", w.output_dump());
    let err = w.stderr();
    assert!(
        err.contains("moving a rejected message to the dead-letter subject"),
        "{err}"
    );
    assert!(err.contains("400 Bad Request"), "{err}");
    let jsz = e2e::http_get(p.nats.monitor_port(), "/jsz?streams=true")
        .await
        .unwrap();
    assert!(jsz.contains("pgflo_dlqhook_dlq"), "{jsz}");
}

/// Values larger than a NATS message (3 MiB and 64 MiB, the server's max_payload being 1 MiB)
/// reach the receiver whole, in order, each change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_larger_than_a_nats_message_are_posted_whole() {
    let (p, _r) = setup("bighook").await;
    let rx = Receiver::start(&[], Reply::Status(200)).await.unwrap();
    let w = start_worker(&p, "bighook", &rx.url, &[], &[]).await;
    let src = p.source().await.unwrap();
    src.batch_execute(
        "BEGIN; INSERT INTO items VALUES (1, 'small'); \
         INSERT INTO items VALUES (2, repeat('2abcdefgh', 3 * 1024 * 1024 / 9)); \
         INSERT INTO items VALUES (3, repeat('3abcdefgh', 64 * 1024 * 1024 / 9)); COMMIT; \
         INSERT INTO items VALUES (4, 'after')",
    )
    .await
    .unwrap();
    let changes = rx.wait_changes(4).await.unwrap();
    assert_eq!(ids(&changes), [1, 2, 3, 4], "{}", w.output_dump());
    for (c, (prefix, len)) in changes.iter().zip([
        ("small", 5),
        ("2abcdefgh", 3 * 1024 * 1024 / 9 * 9),
        ("3abcdefgh", 64 * 1024 * 1024 / 9 * 9),
        ("after", 5),
    ]) {
        let name = c["NewTuple"]["name"].as_str().unwrap();
        assert_eq!(name.len(), len);
        assert!(name.starts_with(prefix) && name.ends_with(&prefix[prefix.len() - 1..]));
    }
    assert_eq!(rx.accepted().len(), 4, "one post per change, none twice");
}
