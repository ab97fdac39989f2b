//! The hand-written replication connection against a real PostgreSQL: both
//! `CREATE_REPLICATION_SLOT` syntaxes (the option list of PostgreSQL 15+ and the keywords of
//! earlier versions, which 15 still accepts) with each snapshot action, an exported snapshot
//! that another session imports, and a server whose `idle_session_timeout` would end the idle
//! connection that holds the copy's snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::{PgCluster, PgOptions};
use pg_flo::config::{PgConnConfig, SslMode};
use pg_flo::source::replication::{create_slot_sql, ReplicationConnection, SlotSnapshot};
use secrecy::SecretString;

fn source(pg: &PgCluster) -> PgConnConfig {
    PgConnConfig {
        host: pg.host().to_owned(),
        port: pg.port(),
        dbname: "source".to_owned(),
        user: pg.user().to_owned(),
        password: SecretString::from(pg.password()),
        sslmode: SslMode::Disable,
        sslrootcert: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_slot_syntaxes_and_an_idle_exporting_connection() {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![("idle_session_timeout".into(), "1s".into())],
        ..PgOptions::default()
    })
    .await
    .unwrap();
    pg.create_database("source").await.unwrap();
    let mut conn = ReplicationConnection::connect(&source(&pg), "test")
        .await
        .unwrap();
    let major = conn.server_major().unwrap();
    assert!(major >= 15, "this test needs PostgreSQL 15+, found {major}");

    for (i, (snapshot, version)) in [
        (SlotSnapshot::Nothing, Some(major)),
        (SlotSnapshot::Nothing, Some(14)),
        (SlotSnapshot::Export, Some(major)),
        (SlotSnapshot::Export, Some(14)),
        (SlotSnapshot::Use, Some(major)),
        (SlotSnapshot::Use, Some(13)),
    ]
    .into_iter()
    .enumerate()
    {
        let slot = format!("s{i}");
        let sql = create_slot_sql(&slot, snapshot, version);
        let use_snapshot = snapshot == SlotSnapshot::Use;
        if use_snapshot {
            conn.simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await
                .unwrap();
        }
        let rows = conn
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows.len(), 1, "{sql}");
        assert_eq!(rows[0][0].as_deref(), Some(slot.as_str()), "{sql}");
        assert!(rows[0][1].is_some(), "{sql}: no consistent point");
        let exported = rows[0][2].clone();
        assert_eq!(
            exported.is_some(),
            snapshot == SlotSnapshot::Export,
            "{sql}"
        );
        if let Some(name) = exported {
            // Another session imports it while this connection stays idle.
            let client = pg.client("source").await.unwrap();
            client
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{name}'; COMMIT"
                ))
                .await
                .unwrap_or_else(|e| panic!("importing the snapshot of {sql}: {e}"));
        }
        if use_snapshot {
            conn.simple_query("COMMIT").await.unwrap();
        }
    }

    // The connection's own form for this server is the option list.
    let created = conn.create_slot("own", SlotSnapshot::Export).await.unwrap();
    assert!(created.snapshot_name.is_some());

    // Idle for longer than the server's idle_session_timeout (the exporting connection during
    // a copy): still usable.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rows = conn
        .simple_query("SHOW idle_session_timeout")
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("0"));
    conn.identify_system().await.unwrap();
}

/// A fast shutdown of the source ends the stream with the COPY's CommandComplete (no
/// CopyDone): that is a closed connection to open again, not a protocol violation that stops
/// the replicator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutdown_closes_the_stream_as_a_transient_error() {
    let mut pg = PgCluster::start(PgOptions::default()).await.unwrap();
    pg.create_database("source").await.unwrap();
    pg.client("source")
        .await
        .unwrap()
        .batch_execute("CREATE PUBLICATION p FOR ALL TABLES")
        .await
        .unwrap();
    let mut conn = ReplicationConnection::connect(&source(&pg), "test")
        .await
        .unwrap();
    let slot = conn.create_slot("s", SlotSnapshot::Nothing).await.unwrap();
    let (mut reader, _writer) = conn
        .start_replication("s", "p", slot.consistent_point, false)
        .await
        .unwrap();
    let stop = tokio::spawn(async move {
        pg.stop().await.unwrap();
        pg
    });
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(60), reader.recv()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => break e,
            Err(_) => panic!("the stream did not end within 60 s of the shutdown"),
        }
    };
    assert!(
        matches!(err, pg_flo::source::replication::ReplicationError::Closed),
        "{err:?}"
    );
    assert!(err.is_transient());
    drop(stop.await.unwrap());
}
