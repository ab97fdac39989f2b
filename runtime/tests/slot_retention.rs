//! `--max-slot-retained-bytes` against a real PostgreSQL: an open transaction on the source
//! holds the slot's `restart_lsn` back while WAL is written elsewhere, so the slot retains more
//! than the limit; the replicator warns once, exports
//! `pg_flo_replicator_slot_retained_bytes_over_limit 1` and goes on streaming. Once the
//! transaction ends and a checkpoint lets the slot advance, the gauge is 0 again, with one line
//! saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::{free_port, http_get, wait_for, PgOptions, Pipeline};

const WARNING: &str = "the replication slot retains more source WAL than --max-slot-retained-bytes";
const RECOVERED: &str =
    "the replication slot retains less source WAL than --max-slot-retained-bytes again";

/// The value of the unlabelled series `name` in a `/metrics` text.
fn gauge(metrics: &str, name: &str) -> Option<i64> {
    e2e::metric_sample(metrics, name).map(|v| v as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_wal_over_the_limit_warns_once_and_replication_goes_on() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let port = free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let replicator = p
        .start_replicator_with(
            "retained",
            "t",
            &["--max-slot-retained-bytes", "4MiB", "--metrics-addr", &addr],
        )
        .await
        .unwrap();
    let metrics = || async move { http_get(port, "/metrics").await.ok() };
    let limit_gauge = "pg_flo_replicator_slot_retained_bytes_over_limit";
    // Under the limit at first (the gauge exists from the start, at 0).
    let first = metrics().await.unwrap();
    assert_eq!(gauge(&first, limit_gauge), Some(0), "{first}");

    // A transaction left open on a published table: the slot cannot advance its restart_lsn
    // past its start.
    let open = p.source().await.unwrap();
    open.batch_execute("BEGIN; INSERT INTO t VALUES (1, 'open')")
        .await
        .unwrap();
    // About 10 MiB of WAL on a table outside the publication.
    let other = p.source().await.unwrap();
    other
        .batch_execute(
            "CREATE TABLE filler (x text);
             INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 10000)",
        )
        .await
        .unwrap();

    let over = wait_for(
        "retained WAL over the limit",
        Duration::from_secs(60),
        || async {
            let m = metrics().await?;
            (gauge(&m, limit_gauge) == Some(1)).then_some(m)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", replicator.output_dump()));
    let retained = gauge(&over, "pg_flo_replicator_slot_retained_bytes").unwrap();
    assert!(retained > 4 << 20, "{retained}");
    // Later readings over the limit log nothing more; the replicator stays ready. More WAL,
    // then a reading that shows it: at least one more reading happened over the limit.
    other
        .batch_execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
        .await
        .unwrap();
    wait_for(
        "a later reading over the limit",
        Duration::from_secs(60),
        || async {
            let m = metrics().await?;
            (gauge(&m, "pg_flo_replicator_slot_retained_bytes")? > retained
                && gauge(&m, limit_gauge) == Some(1))
            .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", replicator.output_dump()));
    let output = replicator.output_dump();
    assert_eq!(output.matches(WARNING).count(), 1, "{output}");
    assert_eq!(
        gauge(&metrics().await.unwrap(), "pg_flo_ready"),
        Some(1),
        "replication goes on"
    );
    let line = output.lines().find(|l| l.contains(WARNING)).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("limit_bytes=4194304"), "{line}");

    // The transaction ends; checkpoints log the running transactions, so the slot advances.
    open.batch_execute("COMMIT").await.unwrap();
    wait_for(
        "retained WAL under the limit",
        Duration::from_secs(90),
        || async {
            other.batch_execute("CHECKPOINT").await.ok()?;
            let m = metrics().await?;
            (gauge(&m, limit_gauge) == Some(0)).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", replicator.output_dump()));
    let output = replicator.output_dump();
    assert_eq!(output.matches(RECOVERED).count(), 1, "{output}");
    assert_eq!(output.matches(WARNING).count(), 1, "{output}");
}
