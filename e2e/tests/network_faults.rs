//! Network faults on every link of a running pipeline, through the harness's fault-injecting
//! proxy ([`e2e::FaultProxy`]): source -> replicator, replicator -> NATS, NATS -> worker and
//! worker -> target. While transactions stream, the links are cut (between messages and in the
//! middle of one) and frozen, one after another; once they heal, the target equals the source
//! (nothing lost, nothing applied twice), and every link was really broken (its proxy saw the
//! client connect again).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{FaultProxy, PgOptions, Pipeline, ARRIVAL_TIMEOUT};

/// Sets the value of `flag` in `args`.
fn set(args: &mut [String], flag: &str, value: String) {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value;
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_frozen_links_lose_and_duplicate_nothing() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE events (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL)")
        .await
        .unwrap();
    let source = FaultProxy::start(addr(p.pg.port())).await.unwrap();
    let publish = FaultProxy::start(addr(p.nats.port())).await.unwrap();
    let consume = FaultProxy::start(addr(p.nats.port())).await.unwrap();
    let target = FaultProxy::start(addr(p.pg.port())).await.unwrap();

    let mut rargs = p.replicator_args("faults", "events");
    set(&mut rargs, "--port", source.port().to_string());
    set(
        &mut rargs,
        "--nats-url",
        format!("nats://127.0.0.1:{}", publish.port()),
    );
    // Small messages: a transaction spans several, so cuts fall inside transactions too. The
    // replicator rides out the faults in the process, as the operator runs it (pg_flo's
    // default of 3 attempts without progress would exit, leaving a restart to a supervisor).
    rargs.extend([
        "--max-batch-changes".into(),
        "20".into(),
        "--retry-max-attempts".into(),
        "1000".into(),
    ]);
    let r = Pipeline::spawn("replicator-faults", &rargs).unwrap();
    r.wait_streaming().await.unwrap();
    let mut wargs = p.pg_worker_args("faults");
    set(&mut wargs, "--target-port", target.port().to_string());
    set(
        &mut wargs,
        "--nats-url",
        format!("nats://127.0.0.1:{}", consume.port()),
    );
    let w = Pipeline::spawn("worker-faults", &wargs).unwrap();
    w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
        .await
        .unwrap();

    let src = p.source().await.unwrap();
    let workload = tokio::spawn(async move {
        for tx in 0..40 {
            src.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO events SELECT g, 'v' || g, 0 FROM generate_series({0} * 50 + 1, {0} * 50 + 50) g;
                 UPDATE events SET n = n + 1, v = v || '+' WHERE id % 7 = {1};
                 DELETE FROM events WHERE id = {0} * 50 + 3;
                 COMMIT;",
                tx,
                tx % 7
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    });

    // One fault after another while the workload runs.
    let pause = Duration::from_millis(250);
    for round in 0..3u64 {
        source.cut();
        tokio::time::sleep(pause).await;
        publish.cut_after(1500 + round * 700);
        tokio::time::sleep(pause).await;
        consume.cut();
        tokio::time::sleep(pause).await;
        target.cut_after(800 + round * 300);
        tokio::time::sleep(pause).await;
        publish.freeze();
        consume.freeze();
        tokio::time::sleep(Duration::from_millis(600)).await;
        publish.thaw();
        consume.thaw();
        target.cut();
        tokio::time::sleep(pause).await;
    }
    workload.await.unwrap();
    p.wait_equal("public.events", "id")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", r.output_dump(), w.output_dump()));
    for (link, proxy) in [
        ("source -> replicator", &source),
        ("replicator -> NATS", &publish),
        ("NATS -> worker", &consume),
        ("worker -> target", &target),
    ] {
        assert!(
            proxy.connections() > 1,
            "the {link} link was never broken ({} connection)",
            proxy.connections()
        );
    }
}
