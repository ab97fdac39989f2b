//! The NATS client settings against a real server: `--nats-user` with the password from
//! `PG_FLO_NATS_PASSWORD` authenticates and is printed nowhere; an existing stream is brought to
//! the wanted size limit (with `discard: new`) and replicas (replicas above 1 on a cluster: see
//! operator/tests/nats_cluster.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use async_nats::jetstream::stream::DiscardPolicy;
use e2e::{NatsServer, Process};

const GROUP: &str = "settings";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_settings_authenticate_and_stay_secret() {
    let nats = NatsServer::start_with_password("pgflo", "secretpw")
        .await
        .unwrap();
    let mut w = Process::spawn_pg_flo(
        "worker",
        [
            "worker",
            "stdout",
            "--group",
            GROUP,
            "--nats-url",
            &nats.url(),
            "--nats-user",
            "pgflo",
        ],
        [
            ("PG_FLO_NATS_PASSWORD", "secretpw"),
            ("PG_FLO_LOG_LEVEL", "debug"),
        ],
    )
    .unwrap();
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.output_dump()));
    w.terminate().unwrap();
    w.wait_exit(Duration::from_secs(30)).await.unwrap();
    let out = format!("{}{}", w.stdout(), w.stderr());
    assert!(!out.contains("secretpw"), "the password leaked:\n{out}");

    // A wrong password is refused (and the process says so without the password).
    let mut bad = Process::spawn_pg_flo(
        "worker-bad",
        [
            "worker",
            "stdout",
            "--group",
            GROUP,
            "--nats-url",
            &nats.url(),
            "--nats-user",
            "pgflo",
            "--nats-connect-timeout",
            "2s",
        ],
        [("PG_FLO_NATS_PASSWORD", "wrongpw")],
    )
    .unwrap();
    let status = bad.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success());
    let out = format!("{}{}", bad.stdout(), bad.stderr());
    assert!(out.contains("could not connect to NATS"), "{out}");
    assert!(!out.contains("wrongpw"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_gets_the_wanted_size_limit_and_replicas() {
    let nats = NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let name = pg_flo::config::stream_name(GROUP);
    let subject = pg_flo::config::subject(GROUP);
    // Created without a limit (as a worker that starts first does).
    let mut s = pg_flo::nats::ensure_stream(&js, &name, &subject, None, None)
        .await
        .unwrap();
    let c = s.info().await.unwrap().config.clone();
    assert_eq!((c.max_bytes, c.num_replicas), (-1, 1));
    // The replicator's settings then apply to it.
    let mut s = pg_flo::nats::ensure_stream(&js, &name, &subject, Some(64 << 20), Some(1))
        .await
        .unwrap();
    let c = s.info().await.unwrap().config.clone();
    assert_eq!(
        (c.max_bytes, c.num_replicas, c.discard),
        (64 << 20, 1, DiscardPolicy::New)
    );
    // The state stream too.
    let mut st = pg_flo::nats::ensure_state_stream(&js, GROUP, Some(1))
        .await
        .unwrap();
    assert_eq!(st.info().await.unwrap().config.num_replicas, 1);
}
