//! Proves the test harness itself: throw-away PostgreSQL (plain and TLS-only) and NATS
//! servers start, accept the clients they should, refuse the ones they should not, and
//! restart in place.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::{
    count, dump_table, read_info_line, wait_for, wait_for_eq, NatsServer, PgCluster, PgOptions,
    Process, WalLevel,
};

#[tokio::test]
async fn postgres_cluster_is_logical_and_takes_password_logins() {
    let pg = PgCluster::start(PgOptions::default()).await.unwrap();
    let admin = pg.client("postgres").await.unwrap();
    let wal_level: String = admin.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
    assert_eq!(wal_level, "logical");

    pg.create_database("app").await.unwrap();
    // Over TCP with scram-sha-256, through the keyword connection string.
    let (client, conn) = tokio_postgres::connect(&pg.conn_string("app"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE public.t (id int PRIMARY KEY, v text);
             INSERT INTO public.t VALUES (2, 'b'), (1, 'a'), (3, NULL);",
        )
        .await
        .unwrap();
    assert_eq!(count(&client, "public.t").await.unwrap(), 3);
    assert_eq!(
        dump_table(&client, "public.t", "id").await.unwrap(),
        "(1,a)\n(2,b)\n(3,)"
    );

    // A wrong password is refused.
    let wrong = format!(
        "host=127.0.0.1 port={} user=postgres password=nope dbname=app",
        pg.port()
    );
    assert!(tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .is_err());

    let replica = PgCluster::start(PgOptions::wal_level(WalLevel::Replica))
        .await
        .unwrap();
    let wal_level: String = replica
        .client("postgres")
        .await
        .unwrap()
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wal_level, "replica");
}

#[tokio::test]
async fn postgres_restart_keeps_port_and_data() {
    let mut pg = PgCluster::start(PgOptions::default()).await.unwrap();
    let port = pg.port();
    pg.client("postgres")
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kept (id int)")
        .await
        .unwrap();
    pg.restart().await.unwrap();
    assert_eq!(pg.port(), port);
    let client = pg.client("postgres").await.unwrap();
    assert_eq!(count(&client, "kept").await.unwrap(), 0);
}

#[tokio::test]
async fn tls_cluster_refuses_plain_tcp() {
    let pg = PgCluster::start(PgOptions::tls()).await.unwrap();
    let ca = pg.ca_cert_path().unwrap();
    assert!(ca.is_file(), "{}", ca.display());

    let plain = format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname=postgres sslmode=disable",
        pg.port(),
        pg.password()
    );
    let err = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a non-TLS TCP login must be refused");
    assert!(
        format!("{err:?}").contains("no encryption"),
        "unexpected error: {err:?}"
    );

    // The unix socket still works for setup.
    let ssl: String = pg
        .client("postgres")
        .await
        .unwrap()
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ssl, "on");

    // The server certificate verifies against the CA for host name localhost.
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-starttls", "postgres", "-verify_return_error"])
        .args(["-verify_hostname", "localhost", "-CAfile"])
        .arg(ca)
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", pg.port()));
    let mut s_client = Process::spawn("openssl s_client", cmd).unwrap();
    let status = s_client.wait_exit(Duration::from_secs(20)).await;
    assert!(
        s_client.stdout().contains("Verify return code: 0 (ok)"),
        "status {status:?}\n{}",
        s_client.output_dump()
    );
}

#[tokio::test]
async fn nats_server_greets_and_restarts_in_place() {
    let mut nats = NatsServer::start().await.unwrap();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
    let info = read_info_line(nats.port()).await.unwrap();
    assert!(info.starts_with("INFO {"), "{info}");
    assert!(info.contains("\"jetstream\":true"), "{info}");

    let port = nats.port();
    nats.restart().await.unwrap();
    assert_eq!(nats.port(), port);
    assert!(read_info_line(port).await.unwrap().starts_with("INFO {"));
    assert!(nats.store_dir().join("jetstream").is_dir());

    nats.kill().unwrap();
    wait_for(
        "the port to refuse clients",
        Duration::from_secs(5),
        || async { read_info_line(port).await.is_err().then_some(()) },
    )
    .await
    .unwrap();
    nats.start_again().await.unwrap();
    assert!(read_info_line(port).await.unwrap().starts_with("INFO {"));
}

#[tokio::test]
async fn process_output_and_signals() {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "echo ready; echo oops >&2; exec sleep 30"]);
    let mut p = Process::spawn("sh", cmd).unwrap();
    p.wait_for_output("ready", Duration::from_secs(5))
        .await
        .unwrap();
    p.wait_for_output("oops", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(p.wait_exit(Duration::from_millis(100)).await, None);
    p.terminate().unwrap();
    let status = p.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(!status.success());
}

#[tokio::test]
async fn wait_for_reports_what_and_last_observation() {
    let err = wait_for_eq("the answer", Duration::from_millis(120), 42, || async {
        Ok::<_, String>(41)
    })
    .await
    .unwrap_err();
    let msg = format!("{err}");
    assert!(msg.contains("the answer"), "{msg}");
    assert!(msg.contains("observed 41"), "{msg}");
}

#[test]
fn pg_flo_bin_is_found_or_explains_how_to_build_it() {
    match e2e::pg_flo_bin() {
        Ok(path) => assert!(path.is_file(), "{}", path.display()),
        Err(e) => assert!(format!("{e}").contains("cargo build --bins"), "{e}"),
    }
}

/// `crash` kills every server process at once (the postmaster too: nothing reinitializes by
/// itself), a paused server answers nothing until resumed, and `start_again` recovers the
/// committed rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashes_pauses_and_recovers_its_committed_rows() {
    let mut pg = PgCluster::start(PgOptions::default()).await.unwrap();
    let c = pg.client("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")
        .await
        .unwrap();

    pg.pause().unwrap();
    let answer = tokio::time::timeout(Duration::from_millis(500), c.simple_query("SELECT 1"));
    assert!(answer.await.is_err(), "a paused server answered");
    pg.resume().unwrap();

    // `crash` returns once every server process is gone.
    pg.crash().unwrap();
    assert!(!pg.is_running());
    assert!(
        pg.client("postgres").await.is_err(),
        "the crashed server still takes connections"
    );
    assert!(c.is_closed() || c.simple_query("SELECT 1").await.is_err());
    pg.start_again().await.unwrap();
    let c = pg.client("postgres").await.unwrap();
    assert_eq!(count(&c, "t").await.unwrap(), 2);
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    assert!(log.contains("database system was interrupted"), "{log}");
    assert!(
        !log.contains("reinitializing"),
        "the postmaster survived: {log}"
    );
}
