//! End-to-end: bad input gets a clear error that names the problem and the fix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::{free_port, PgOptions, Pipeline, Process, WalLevel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_without_logical_wal_level() {
    let p = Pipeline::start(PgOptions::wal_level(WalLevel::Replica))
        .await
        .unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let mut r = Pipeline::spawn("replicator", &p.replicator_args("g", "t")).unwrap();
    r.expect_failure(&[
        "wal_level=replica",
        "ALTER SYSTEM SET wal_level = logical",
        "restart PostgreSQL",
    ])
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_primary_key_or_identity() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE ok (id int PRIMARY KEY); CREATE TABLE nokey (a int, b text)")
        .await
        .unwrap();
    let mut r = Pipeline::spawn("replicator", &p.replicator_args("g", "ok,nokey")).unwrap();
    r.expect_failure(&[
        "table public.nokey has no primary key and REPLICA IDENTITY DEFAULT",
        "ADD PRIMARY KEY",
        "REPLICA IDENTITY USING INDEX",
        "REPLICA IDENTITY FULL",
    ])
    .await
    .unwrap();
    // Nothing was created for a group that cannot run.
    let src = p.source().await.unwrap();
    let slots = src
        .query("SELECT 1 FROM pg_replication_slots", &[])
        .await
        .unwrap();
    assert_eq!(slots.len(), 0);
}

/// A worker that cannot log in to its target says so and how to go on, not that a change was
/// rejected (no change was; `--dead-letter` would not help).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_wrong_target_password_names_the_login_not_a_change() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let _r = p.start_replicator("g", "t").await.unwrap();
    let mut args = p.pg_worker_args("g");
    let i = args.iter().position(|a| a == "--target-password").unwrap();
    args[i + 1] = "not-the-password".into();
    args.push("--dead-letter".into());
    let mut w = Pipeline::spawn("worker", &args).unwrap();
    w.expect_failure(&[
        "could not connect to the target database",
        "password authentication failed",
        "--target-password",
    ])
    .await
    .unwrap();
    let log = w.stderr();
    assert!(!log.contains("rejected a change"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password leaked: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let mut args = p.replicator_args("g", "t");
    let i = args.iter().position(|a| a == "--password").unwrap();
    args[i + 1] = "not-the-password".into();
    let mut r = Pipeline::spawn("replicator", &args).unwrap();
    r.expect_failure(&["password authentication failed", "postgres"])
        .await
        .unwrap();
    assert!(
        !r.stderr().contains("not-the-password"),
        "the password leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_unreachable_at_start() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let port = free_port().unwrap();
    // Credentials in the URL (and a second server in the list) are never printed.
    let dead = format!("nats://user:secretpw@127.0.0.1:{port},nats://user:secretpw@[::1]:{port}");
    let shown = format!("nats://<redacted>@127.0.0.1:{port},nats://<redacted>@[::1]:{port}");
    let mut args = p.replicator_args("g", "t");
    let i = args.iter().position(|a| a == "--nats-url").unwrap();
    args[i + 1] = dead.clone();
    args.extend(["--nats-connect-timeout".to_owned(), "2s".to_owned()]);
    let mut r = Pipeline::spawn("replicator", &args).unwrap();
    let mut w = Process::spawn_pg_flo(
        "worker",
        [
            "worker",
            "stdout",
            "--group",
            "g",
            "--nats-url",
            &dead,
            "--nats-connect-timeout",
            "2s",
        ],
        [("PG_FLO_LOG_LEVEL", "debug")],
    )
    .unwrap();
    for p in [&mut r, &mut w] {
        p.expect_failure(&["could not connect to NATS at", &shown, "--nats-url"])
            .await
            .unwrap();
        let out = format!("{}{}", p.stdout(), p.stderr());
        // It retried before giving up.
        assert!(out.contains("nats not reachable yet"), "{out}");
        assert!(!out.contains("secretpw"), "the password leaked:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sink_name() {
    let mut w = Process::spawn_pg_flo(
        "worker",
        [
            "worker",
            "kafka",
            "--group",
            "g",
            "--nats-url",
            "nats://127.0.0.1:4222",
        ],
        [("PG_FLO_LOG_LEVEL", "info")],
    )
    .unwrap();
    w.expect_failure(&[
        "unrecognized subcommand 'kafka'",
        "sinks are: stdout, file, postgres, webhook",
    ])
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_settings_are_all_named() {
    let mut r =
        Process::spawn_pg_flo("replicator", ["replicator"], [("HOME", "/nonexistent")]).unwrap();
    r.expect_failure(&[
        "--host (env PG_FLO_HOST",
        "--dbname",
        "--user",
        "--password",
        "--group",
        "--nats-url",
    ])
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_only_replicator_and_yaml_configured_worker() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    // pg_flo's env-only configuration (which cobra's required flags broke), tables split on
    // spaces as pg_flo's viper did, and no PG_FLO_PORT... except that ours is not 5432.
    let port = p.pg.port().to_string();
    let url = p.nats.url();
    let r = Process::spawn_pg_flo(
        "replicator",
        ["replicator"],
        [
            ("PG_FLO_HOST", "127.0.0.1"),
            ("PG_FLO_PORT", port.as_str()),
            ("PG_FLO_DBNAME", "source"),
            ("PG_FLO_USER", p.pg.user()),
            ("PG_FLO_PASSWORD", p.pg.password()),
            ("PG_FLO_GROUP", "envonly"),
            ("PG_FLO_TABLES", "t"),
            ("PG_FLO_NATS_URL", url.as_str()),
            ("PG_FLO_SSLMODE", "disable"),
        ],
    )
    .unwrap();
    r.wait_streaming().await.unwrap();
    let dir = e2e::TempDir::new("pg-flo-yaml").unwrap();
    let config = dir.path().join("worker.yaml");
    std::fs::write(
        &config,
        format!(
            "group: envonly\nnats-url: {url}\ntarget-host: 127.0.0.1\ntarget-port: {port}\n\
             target-dbname: target\ntarget-user: {}\ntarget-password: {}\ntarget-sslmode: disable\n\
             some-future-key: 1\n",
            p.pg.user(),
            p.pg.password()
        ),
    )
    .unwrap();
    let w = Process::spawn_pg_flo(
        "worker",
        ["--config", config.to_str().unwrap(), "worker", "postgres"],
        [("PG_FLO_LOG_LEVEL", "info")],
    )
    .unwrap();
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        w.stderr().contains("some-future-key"),
        "unknown key not warned about:\n{}",
        w.stderr()
    );
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (1, 'configured'), (2, '')")
        .await
        .unwrap();
    p.wait_equal("public.t", "id").await.unwrap();
}
