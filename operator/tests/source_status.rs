//! The operator's view of the source database (`pg_flo_operator::source`) against real
//! PostgreSQL: the slot state it reports must be what `pg_replication_slots` says for the slot
//! the real `pg_flo replicator` created, dropping must remove exactly the group's objects, and
//! failures (password, network, TLS) must be clear, bounded in time and free of secrets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use e2e::{free_port, wait_for, PgCluster, PgOptions, Pipeline, TempDir, ARRIVAL_TIMEOUT};
use pg_flo_operator::controller::error_chain;
use pg_flo_operator::crd::{SlotStatus, SslMode};
use pg_flo_operator::source::{
    drop_group_objects, publication_name, read_slot_status, slot_name, DropOutcome,
    SourceConnection, SourceError, CONNECT_TIMEOUT,
};
use secrecy::SecretString;
use tokio_postgres::Client;

/// The operator's connection to `database` of `pg` as the superuser, without TLS.
fn source(pg: &PgCluster, database: &str) -> SourceConnection {
    SourceConnection {
        host: pg.host().to_owned(),
        port: pg.port(),
        database: database.to_owned(),
        user: pg.user().to_owned(),
        password: SecretString::from(pg.password()),
        ssl_mode: SslMode::Disable,
        ca_pem: None,
    }
}

/// `X/Y` -> its 64-bit position.
fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// What the status should say when the slot does not exist.
fn names_only(group: &str) -> SlotStatus {
    SlotStatus {
        name: Some(slot_name(group)),
        publication: Some(publication_name(group)),
        ..SlotStatus::default()
    }
}

/// A reading without its time (set on every reading).
fn without_time(s: SlotStatus) -> SlotStatus {
    assert!(s.read_at.is_some(), "{s:?}");
    SlotStatus { read_at: None, ..s }
}

/// The first column of every row of `sql`, as text.
async fn names(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `pg_replication_slots` as the test sees it, measured directly.
#[derive(Debug)]
struct Observed {
    active: bool,
    restart_lsn: String,
    confirmed_flush_lsn: String,
    lag_bytes: i64,
    retained_bytes: i64,
    wal_status: String,
    safe_wal_size: Option<i64>,
}

async fn observe(c: &Client, slot: &str) -> Observed {
    let row = c
        .query_one(
            "SELECT active, restart_lsn::text, confirmed_flush_lsn::text,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
                    wal_status, safe_wal_size,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    Observed {
        active: row.get(0),
        restart_lsn: row.get(1),
        confirmed_flush_lsn: row.get(2),
        lag_bytes: row.get(3),
        wal_status: row.get(4),
        safe_wal_size: row.get(5),
        retained_bytes: row.get(6),
    }
}

async fn wait_slot_active(c: &Client, slot: &str, active: bool) {
    wait_for(
        &format!("slot {slot} active = {active}"),
        ARRIVAL_TIMEOUT,
        || async move { (observe(c, slot).await.active == active).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_status_is_what_pg_replication_slots_says_for_the_replicators_slot() {
    let p = Pipeline::start(PgOptions {
        // So that safe_wal_size has a value.
        extra_conf: vec![("max_slot_wal_keep_size".into(), "1GB".into())],
        ..PgOptions::default()
    })
    .await
    .unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    let group = "slot-status";
    let slot = slot_name(group);
    let conn = source(&p.pg, &p.source_db);

    // No slot yet: the names (and the time of the reading) only.
    let empty = read_slot_status(&conn, group).await.unwrap();
    assert!(empty.read_at.is_some());
    assert_eq!(
        SlotStatus {
            read_at: None,
            ..empty
        },
        names_only(group)
    );

    // The real replicator creates the slot and publication under the names we report.
    let mut r = p.start_replicator(group, "orders").await.unwrap();
    assert_eq!(
        names(&src, "SELECT slot_name::text FROM pg_replication_slots").await,
        vec!["pg_flo_slot_status_publication".to_owned()]
    );
    assert_eq!(slot, "pg_flo_slot_status_publication");
    assert_eq!(
        names(&src, "SELECT pubname::text FROM pg_publication").await,
        vec![publication_name(group)]
    );

    // Streaming: active.
    wait_slot_active(&src, &slot, true).await;
    let running = read_slot_status(&conn, group).await.unwrap();
    assert_eq!(running.name.as_deref(), Some(slot.as_str()));
    assert_eq!(running.publication, Some(publication_name(group)));
    assert_eq!(running.active, Some(true));
    assert_eq!(running.wal_status.as_deref(), Some("reserved"));
    let confirmed = lsn(running.confirmed_flush_lsn.as_deref().unwrap());
    assert!(lsn(running.restart_lsn.as_deref().unwrap()) <= confirmed);
    assert!(running.lag_bytes.unwrap() >= 0);
    assert!(running.safe_wal_size.unwrap() > 0);

    // Stopped: inactive, and the slot stands still while changes pile up behind it.
    r.terminate().unwrap();
    assert!(r.wait_exit(ARRIVAL_TIMEOUT).await.unwrap().success());
    wait_slot_active(&src, &slot, false).await;
    src.batch_execute(
        "INSERT INTO orders SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g",
    )
    .await
    .unwrap();
    let before = observe(&src, &slot).await;
    let started = k8s_openapi::jiff::Timestamp::now();
    let status = read_slot_status(&conn, group).await.unwrap();
    let finished = k8s_openapi::jiff::Timestamp::now();
    let after = observe(&src, &slot).await;

    assert_eq!(status.name.as_deref(), Some(slot.as_str()));
    assert_eq!(status.publication, Some(publication_name(group)));
    assert_eq!(status.active, Some(false));
    assert!(!before.active && !after.active);
    // An inactive slot does not move: the LSNs are exactly what the view said around the read.
    for observed in [&before, &after] {
        assert_eq!(
            lsn(status.restart_lsn.as_deref().unwrap()),
            lsn(&observed.restart_lsn)
        );
        assert_eq!(
            lsn(status.confirmed_flush_lsn.as_deref().unwrap()),
            lsn(&observed.confirmed_flush_lsn)
        );
    }
    // The WAL may move (checkpoints, standby snapshots): the lag lies between the two
    // measurements, and the 1000 rows written after the last confirmation are in it.
    let lag = status.lag_bytes.unwrap();
    assert!(
        before.lag_bytes <= lag && lag <= after.lag_bytes,
        "{before:?} {status:?} {after:?}"
    );
    assert!(lag > 100_000, "{lag}");
    // Retained WAL is measured from restart_lsn, in the same reading as the lag: at least the
    // lag, by exactly the distance between the two LSNs.
    let retained = status.retained_bytes.unwrap();
    assert!(
        before.retained_bytes <= retained && retained <= after.retained_bytes,
        "{before:?} {status:?} {after:?}"
    );
    assert_eq!(
        retained - lag,
        i64::try_from(
            lsn(status.confirmed_flush_lsn.as_deref().unwrap())
                - lsn(status.restart_lsn.as_deref().unwrap())
        )
        .unwrap()
    );
    // The time of the reading, in whole seconds as the API server keeps it.
    let read_at = status.read_at.clone().unwrap().0;
    assert_eq!(read_at.subsec_nanosecond(), 0);
    assert!(
        started.as_second() <= read_at.as_second() && read_at <= finished,
        "{started} <= {read_at} <= {finished}"
    );
    assert_eq!(status.wal_status.as_deref(), Some("reserved"));
    assert_eq!(before.wal_status, "reserved");
    // safe_wal_size shrinks as WAL is written.
    let safe = status.safe_wal_size.unwrap();
    assert!(
        after.safe_wal_size.unwrap() <= safe && safe <= before.safe_wal_size.unwrap(),
        "{before:?} {status:?} {after:?}"
    );

    // Running again: active again.
    let _r = p.start_replicator(group, "orders").await.unwrap();
    wait_slot_active(&src, &slot, true).await;
    assert_eq!(
        read_slot_status(&conn, group).await.unwrap().active,
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_removes_only_the_groups_objects_and_refuses_an_active_slot() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);")
        .await
        .unwrap();
    let conn = source(&p.pg, &p.source_db);
    let group = "drop-me";
    // Another group on the same database, whose objects must survive.
    let mut keep_args = p.replicator_args("keep", "b");
    keep_args.push("--track-ddl".into());
    let keep = Pipeline::spawn("replicator-keep", &keep_args).unwrap();
    let mut args = p.replicator_args(group, "a");
    args.push("--track-ddl".into());
    let mut r = Pipeline::spawn("replicator-drop-me", &args).unwrap();
    for process in [&keep, &r] {
        process
            .wait_for_output("streaming changes", ARRIVAL_TIMEOUT)
            .await
            .unwrap();
    }
    let slots = "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1";
    let publications = "SELECT pubname::text FROM pg_publication ORDER BY 1";
    let triggers = "SELECT evtname::text FROM pg_event_trigger ORDER BY 1";
    let functions =
        "SELECT proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname = 'internal_pg_flo' ORDER BY 1";
    let tracked = "SELECT DISTINCT group_name FROM internal_pg_flo.ddl_tracked ORDER BY 1";
    let both = vec![
        "pg_flo_drop_me_publication".to_owned(),
        "pg_flo_keep_publication".to_owned(),
    ];
    let everything = || async {
        (
            names(&src, slots).await,
            names(&src, publications).await,
            names(&src, triggers).await,
            names(&src, functions).await,
            names(&src, tracked).await,
        )
    };
    let before = everything().await;
    assert_eq!(before.0, both);
    assert_eq!(before.1, both);
    assert_eq!(
        before.2,
        [
            "pg_flo_ddl_drop_drop_me",
            "pg_flo_ddl_drop_keep",
            "pg_flo_ddl_end_drop_me",
            "pg_flo_ddl_end_keep"
        ]
    );
    assert_eq!(before.4, ["drop-me", "keep"]);

    // In use by the running replicator: refused, nothing dropped.
    wait_slot_active(&src, &slot_name(group), true).await;
    let err = drop_group_objects(&conn, group).await.unwrap_err();
    assert!(matches!(err, SourceError::SlotActive { .. }), "{err:?}");
    assert_eq!(err.category(), "slot-active");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "replication slot pg_flo_drop_me_publication is in use by a replication connection: \
         stop the group's replicator before dropping the slot"
    );
    assert_eq!(everything().await, before);

    // Stopped: slot, publication and DDL capture objects of the group go, the other group's stay.
    r.terminate().unwrap();
    assert!(r.wait_exit(ARRIVAL_TIMEOUT).await.unwrap().success());
    wait_slot_active(&src, &slot_name(group), false).await;
    assert_eq!(
        drop_group_objects(&conn, group).await.unwrap(),
        DropOutcome {
            slot_dropped: true,
            publication_dropped: true,
            owned_by: None
        }
    );
    let (slots_after, publications_after, triggers_after, functions_after, tracked_after) =
        everything().await;
    assert_eq!(slots_after, ["pg_flo_keep_publication"]);
    assert_eq!(publications_after, ["pg_flo_keep_publication"]);
    assert_eq!(
        triggers_after,
        ["pg_flo_ddl_drop_keep", "pg_flo_ddl_end_keep"]
    );
    assert_eq!(functions_after, ["ddl_drop_keep", "ddl_end_keep"]);
    assert_eq!(tracked_after, ["keep"]);
    assert_eq!(
        names(
            &src,
            "SELECT DISTINCT group_name FROM internal_pg_flo.ddl_indexes ORDER BY 1"
        )
        .await,
        ["keep"]
    );

    // Again: nothing left to drop, still Ok.
    assert_eq!(
        drop_group_objects(&conn, group).await.unwrap(),
        DropOutcome::default()
    );
    assert_eq!(
        without_time(read_slot_status(&conn, group).await.unwrap()),
        names_only(group)
    );
    // The other group streams on.
    assert_eq!(
        read_slot_status(&conn, "keep").await.unwrap().active,
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_settings_give_clear_errors_without_the_password() {
    let pg = PgCluster::start(PgOptions::default()).await.unwrap();

    let wrong = "wrong-pa55word-for-the-test";
    let mut conn = source(&pg, "postgres");
    conn.password = SecretString::from(wrong);
    let err = read_slot_status(&conn, "g").await.unwrap_err();
    assert!(matches!(err, SourceError::Authentication { .. }), "{err:?}");
    assert_eq!(err.category(), "authentication");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "password authentication failed for user postgres at 127.0.0.1:{}: check the \
             password in the Secret key of spec.source.password",
            pg.port()
        )
    );
    for text in [error_chain(&err), format!("{err:?}"), format!("{conn:?}")] {
        assert!(!text.contains(wrong), "{text}");
        assert!(!text.contains(pg.password()), "{text}");
    }
    let err = drop_group_objects(&conn, "g").await.unwrap_err();
    assert!(matches!(err, SourceError::Authentication { .. }), "{err:?}");

    let err = read_slot_status(&source(&pg, "nope"), "g")
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::UnknownDatabase { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "database nope does not exist on 127.0.0.1:{}: check spec.source.database",
            pg.port()
        )
    );

    // Nobody listens: refused at once, and worth retrying.
    let mut conn = source(&pg, "postgres");
    conn.port = free_port().unwrap();
    let start = Instant::now();
    let err = read_slot_status(&conn, "g").await.unwrap_err();
    assert!(start.elapsed() < CONNECT_TIMEOUT, "{:?}", start.elapsed());
    assert!(matches!(err, SourceError::Connect { .. }), "{err:?}");
    assert_eq!(err.category(), "connect");
    assert!(err.is_transient());
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{} as user postgres: check \
             spec.source.host and spec.source.port",
            conn.port
        )),
        "{err}"
    );
    assert!(!error_chain(&err).contains(pg.password()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    // Accepts TCP connections (the kernel's backlog) but never speaks.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let conn = SourceConnection {
        host: "127.0.0.1".into(),
        port,
        database: "app".into(),
        user: "flo".into(),
        password: SecretString::from("unused-secret"),
        ssl_mode: SslMode::Prefer,
        ca_pem: None,
    };
    let start = Instant::now();
    let err = read_slot_status(&conn, "g").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= CONNECT_TIMEOUT - Duration::from_millis(100)
            && elapsed < CONNECT_TIMEOUT + Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert!(matches!(err, SourceError::Timeout { .. }), "{err:?}");
    assert_eq!(err.category(), "timeout");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "no answer from PostgreSQL at 127.0.0.1:{port} within 10s while trying to connect: \
             check spec.source.host and spec.source.port, network policies, and the server's load"
        )
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_from_the_secret() {
    let pg = PgCluster::start(PgOptions::tls()).await.unwrap();
    pg.create_database("app").await.unwrap();
    let ca_pem = std::fs::read(pg.ca_cert_path().unwrap()).unwrap();
    let group = "tls-group";
    let verify_full = |host: &str, ca_pem: Option<Vec<u8>>| SourceConnection {
        host: host.to_owned(),
        ssl_mode: SslMode::VerifyFull,
        ca_pem,
        ..source(&pg, "app")
    };

    // The server certificate is for localhost and 127.0.0.1.
    for host in ["localhost", "127.0.0.1"] {
        assert_eq!(
            without_time(
                read_slot_status(&verify_full(host, Some(ca_pem.clone())), group)
                    .await
                    .unwrap()
            ),
            names_only(group)
        );
    }

    // A slot created by hand (no replicator) is read and dropped over TLS.
    let local = pg.client("app").await.unwrap();
    local
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot_name(group)],
        )
        .await
        .unwrap();
    let conn = verify_full("localhost", Some(ca_pem.clone()));
    let status = read_slot_status(&conn, group).await.unwrap();
    let observed = observe(&local, &slot_name(group)).await;
    assert_eq!(status.active, Some(false));
    assert_eq!(
        status.confirmed_flush_lsn.as_deref(),
        Some(observed.confirmed_flush_lsn.as_str())
    );
    assert_eq!(
        status.restart_lsn.as_deref(),
        Some(observed.restart_lsn.as_str())
    );
    assert_eq!(status.wal_status.as_deref(), Some("reserved"));
    // No max_slot_wal_keep_size: no limit, no safe_wal_size.
    assert_eq!(status.safe_wal_size, None);
    assert_eq!(observed.safe_wal_size, None);
    assert_eq!(
        drop_group_objects(&conn, group).await.unwrap(),
        DropOutcome {
            slot_dropped: true,
            publication_dropped: false,
            owned_by: None
        }
    );
    assert!(
        names(&local, "SELECT slot_name::text FROM pg_replication_slots")
            .await
            .is_empty()
    );

    // verify-full without the CA: the fix is the caSecret.
    let err = read_slot_status(&verify_full("localhost", None), group)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Tls { .. }), "{err:?}");
    assert_eq!(err.category(), "tls");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot set up TLS to localhost:{} (sslMode verify-full): set spec.source.caSecret \
             to the Secret key holding the CA certificate (PEM) that signed the server's \
             certificate",
            pg.port()
        )
    );

    // A CA that did not sign the server's certificate: the handshake fails.
    let other = TempDir::new("other-ca").unwrap();
    let other_ca = std::fs::read(e2e::generate_tls(other.path()).unwrap().ca_cert).unwrap();
    let err = read_slot_status(&verify_full("localhost", Some(other_ca)), group)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Handshake { .. }), "{err:?}");
    assert_eq!(err.category(), "tls");
    assert!(err.to_string().contains("spec.source.caSecret"), "{err}");

    // Without TLS the TLS-only server has no pg_hba.conf entry for us.
    let err = read_slot_status(&source(&pg, "app"), group)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Rejected { .. }), "{err:?}");
    assert_eq!(err.category(), "authentication");
}

/// Groups `a-b` and `a_b` share the slot and publication names: deleting `a_b` leaves the
/// objects its publication's mark gives to `a-b`; deleting `a-b` drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_groups_objects_of_the_same_names_are_not_dropped() {
    let pg = PgCluster::start(PgOptions::default()).await.unwrap();
    pg.create_database("app").await.unwrap();
    let local = pg.client("app").await.unwrap();
    for sql in [
        "CREATE TABLE items (id int PRIMARY KEY)",
        "CREATE PUBLICATION pg_flo_a_b_publication FOR TABLE items",
        "COMMENT ON PUBLICATION pg_flo_a_b_publication IS 'pg_flo group a-b'",
        "SELECT pg_create_logical_replication_slot('pg_flo_a_b_publication', 'pgoutput')",
    ] {
        local.batch_execute(sql).await.unwrap();
    }
    let conn = source(&pg, "app");
    let objects = || async {
        (
            names(&local, "SELECT slot_name::text FROM pg_replication_slots").await,
            names(&local, "SELECT pubname::text FROM pg_publication").await,
        )
    };
    let both = vec!["pg_flo_a_b_publication".to_owned()];
    assert_eq!(
        drop_group_objects(&conn, "a_b").await.unwrap(),
        DropOutcome {
            owned_by: Some("a-b".into()),
            ..DropOutcome::default()
        }
    );
    assert_eq!(objects().await, (both.clone(), both));
    assert_eq!(
        drop_group_objects(&conn, "a-b").await.unwrap(),
        DropOutcome {
            slot_dropped: true,
            publication_dropped: true,
            owned_by: None
        }
    );
    assert_eq!(objects().await, (vec![], vec![]));
}
