#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! Tests against a real PostgreSQL: every test starts its own throw-away cluster through the
//! e2e harness ([`e2e::PgCluster`]) and works in a fresh database of it. A missing server
//! binary fails the test with the install command; it is never skipped.
//!
//! One cluster per test rather than one per test binary: `cargo nextest` runs every test in
//! its own process (so a shared cluster would save nothing there), a cluster in a `static` is
//! never dropped, so its server would outlive the test process (and `unsafe_code` is
//! forbidden, so no `atexit` hook can stop it), while a cluster starts and stops in about a
//! second. Owned by the test, the cluster is dropped even when the test panics: the server is
//! stopped and the tail of its log printed.

use std::time::{SystemTime, UNIX_EPOCH};

use e2e::{PgCluster, PgOptions};
use tokio_postgres::{Client, SimpleQueryMessage};

use pg_flo::config::{PgConnConfig, PostgresSinkConfig, SslMode};
use pg_flo::fixtures::{batch, change, del, ins, text as t, text_relation as relation, upd};
use pg_flo::lsn::Lsn;
use pg_flo::message::{
    Change, ChangeBatch, KeyKind, OldKind, Op, Position, Relation, SourceId, Truncate, Value,
};
use pg_flo::retry::Retry;
use pg_flo::sink::postgres::*;
use pg_flo::sink::{Sink, SinkError};

/// A throw-away cluster with a fresh database, for one test; dropping it stops the server.
struct TestDb {
    cluster: PgCluster,
    dbname: String,
}

impl TestDb {
    async fn start() -> Self {
        let cluster = PgCluster::start(PgOptions::default()).await.unwrap();
        let dbname = "pgsink_test".to_owned();
        cluster.create_database(&dbname).await.unwrap();
        Self { cluster, dbname }
    }

    /// A new connection to the test's database (its task runs on the test's runtime).
    async fn client(&self) -> Client {
        self.connect(&self.dbname).await
    }

    /// A new connection to database `dbname` of the test's cluster.
    async fn connect(&self, dbname: &str) -> Client {
        self.cluster.client(dbname).await.unwrap()
    }

    /// The sink's target: the test's database.
    fn target(&self) -> PgConnConfig {
        self.target_db(&self.dbname)
    }

    /// Database `dbname` of the test's cluster as a sink target or source.
    fn target_db(&self, dbname: &str) -> PgConnConfig {
        PgConnConfig {
            host: self.cluster.host().into(),
            port: self.cluster.port(),
            dbname: dbname.into(),
            user: self.cluster.user().into(),
            password: self.cluster.password().to_owned().into(),
            sslmode: SslMode::Disable,
            sslrootcert: None,
        }
    }
}

fn cfg(db: &TestDb, group: &str) -> PostgresSinkConfig {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    PostgresSinkConfig {
        target: db.target(),
        source: None,
        sync_schema: false,
        disable_foreign_keys: false,
        fire_triggers: false,
        group: format!("{group}-{}-{nanos}", std::process::id()),
    }
}

/// Applies one message and commits its transaction.
async fn apply_commit(sink: &mut PostgresSink, b: &ChangeBatch) {
    sink.apply(b).await.unwrap();
    sink.commit(b.position()).await.unwrap();
}

/// Rows of a query as text (`None` for NULL).
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).map(str::to_owned))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .collect()
}

fn r(vals: &[Option<&str>]) -> Vec<Option<String>> {
    vals.iter().map(|v| v.map(str::to_owned)).collect()
}

async fn fresh_schema(client: &Client, schema: &str, ddl: &str) {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path = {schema}; {ddl}; RESET search_path"
        ))
        .await
        .unwrap();
}

/// A sink (group `group`) on the fresh schema `schema` of the test's database, made with `ddl`.
async fn sink_on_schema(db: &TestDb, schema: &str, ddl: &str, group: &str) -> PostgresSink {
    let client = db.client().await;
    fresh_schema(&client, schema, ddl).await;
    PostgresSink::with_client(client, cfg(db, group))
        .await
        .unwrap()
}

/// `schema.table` with text columns, keyed (primary key) on `id`.
fn by_id(schema: &str, table: &str, columns: &[&str]) -> Relation {
    relation(schema, table, columns, KeyKind::PrimaryKey, &["id"])
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

async fn upsert_is_idempotent_and_keeps_null_and_empty(db: &TestDb) {
    let rel = by_id(
        "pgsink_upsert",
        "Users",
        &["id", "Name", "note", "n", "ts", "b", "arr", "j", "u", "ok"],
    );
    let row1 = vec![
        t("1"),
        t("a"),
        t(""),
        t("1.50"),
        t("2024-01-02 03:04:05.123456+00"),
        t("\\x0102ff"),
        t("{1,2,NULL}"),
        t("{\"k\": [1, \"x\"]}"),
        t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        t("t"),
    ];
    let row2 = vec![
        t("2"),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    ];
    let mut sink = sink_on_schema(
        db,
        "pgsink_upsert",
        r#"CREATE TABLE "Users" (id int PRIMARY KEY, "Name" text, note text DEFAULT 'dflt',
             n numeric, ts timestamptz, b bytea, arr int[], j jsonb, u uuid, ok bool)"#,
        "upsert",
    )
    .await;
    let b1 = batch(
        100,
        std::slice::from_ref(&rel),
        vec![ins(0, row1.clone()), ins(0, row2.clone())],
    );
    apply_commit(&mut sink, &b1).await;
    let expected = vec![
        r(&[
            Some("1"),
            Some("a"),
            Some(""),
            Some("1.50"),
            Some("2024-01-02 03:04:05.123456+00"),
            Some("\\x0102ff"),
            Some("{1,2,NULL}"),
            Some("{\"k\": [1, \"x\"]}"),
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Some("t"),
        ]),
        r(&[
            Some("2"),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ]),
    ];
    let select = r#"SET TimeZone = 'UTC'; SELECT * FROM pgsink_upsert."Users" ORDER BY id"#;
    assert_eq!(rows(sink.client(), select).await, expected);

    // The same message again (redelivery): skipped.
    apply_commit(&mut sink, &b1).await;
    assert_eq!(rows(sink.client(), select).await, expected);

    // The same inserts at a later position (a replay or re-copy): the upsert converges.
    let mut row1b = row1.clone();
    row1b[1] = t("b");
    let b2 = batch(
        200,
        std::slice::from_ref(&rel),
        vec![ins(0, row1b), ins(0, row2)],
    );
    apply_commit(&mut sink, &b2).await;
    apply_commit(
        &mut sink,
        &batch(201, std::slice::from_ref(&rel), b2.changes.clone()),
    )
    .await;
    let mut expected_b = expected.clone();
    expected_b[0][1] = Some("b".into());
    assert_eq!(rows(sink.client(), select).await, expected_b);
    assert_eq!(
        rows(
            sink.client(),
            r#"SELECT count(*) FROM pgsink_upsert."Users" WHERE note = '' AND "Name" IS NOT NULL"#
        )
        .await,
        vec![r(&[Some("1")])]
    );
}

async fn update_with_unchanged_toast_keeps_the_value(db: &TestDb) {
    let rel = by_id("pgsink_toast", "docs", &["id", "body", "n"]);
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut sink = sink_on_schema(
        db,
        "pgsink_toast",
        "CREATE TABLE docs (id int PRIMARY KEY, body text, n int)",
        "toast",
    )
    .await;
    let rels = std::slice::from_ref(&rel);
    apply_commit(
        &mut sink,
        &batch(10, rels, vec![ins(0, vec![t("1"), t(&big), t("1")])]),
    )
    .await;
    // Unchanged TOAST, key unchanged, no old tuple.
    apply_commit(
        &mut sink,
        &batch(
            20,
            rels,
            vec![upd(0, vec![t("1"), Value::UnchangedToast, t("2")], None)],
        ),
    )
    .await;
    let select = "SELECT id, md5(body), length(body), n FROM pgsink_toast.docs ORDER BY id";
    let got = rows(sink.client(), select).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][2].as_deref(), Some("200000"));
    assert_eq!(got[0][3].as_deref(), Some("2"));
    let body_md5 = got[0][1].clone();
    // Unchanged TOAST with a key change: the row moves, the value stays.
    apply_commit(
        &mut sink,
        &batch(
            30,
            rels,
            vec![upd(
                0,
                vec![t("7"), Value::UnchangedToast, t("3")],
                Some((OldKind::Key, vec![t("1"), Value::Null, Value::Null])),
            )],
        ),
    )
    .await;
    assert_eq!(
        rows(sink.client(), select).await,
        vec![vec![
            Some("7".into()),
            body_md5,
            Some("200000".into()),
            Some("3".into())
        ]]
    );
    // Every non-key column unchanged TOAST but the key: still applied.
    apply_commit(
        &mut sink,
        &batch(
            40,
            rels,
            vec![upd(
                0,
                vec![t("7"), Value::UnchangedToast, Value::Null],
                None,
            )],
        ),
    )
    .await;
    assert_eq!(
        rows(
            sink.client(),
            "SELECT id, length(body), n FROM pgsink_toast.docs"
        )
        .await,
        vec![r(&[Some("7"), Some("200000"), None])]
    );
}

async fn key_change_deletes_the_old_row(db: &TestDb) {
    let rel = by_id("pgsink_keychange", "k", &["id", "v"]);
    let rels = std::slice::from_ref(&rel);
    let mut sink = sink_on_schema(
        db,
        "pgsink_keychange",
        "CREATE TABLE k (id int PRIMARY KEY, v text)",
        "keychange",
    )
    .await;
    apply_commit(
        &mut sink,
        &batch(
            10,
            rels,
            vec![ins(0, vec![t("1"), t("a")]), ins(0, vec![t("2"), t("b")])],
        ),
    )
    .await;
    apply_commit(
        &mut sink,
        &batch(
            20,
            rels,
            vec![
                upd(
                    0,
                    vec![t("10"), t("a2")],
                    Some((OldKind::Key, vec![t("1"), Value::Null])),
                ),
                // Old key equal to the new one: a plain upsert.
                upd(
                    0,
                    vec![t("2"), t("b2")],
                    Some((OldKind::Key, vec![t("2"), Value::Null])),
                ),
            ],
        ),
    )
    .await;
    assert_eq!(
        rows(
            sink.client(),
            "SELECT * FROM pgsink_keychange.k ORDER BY id"
        )
        .await,
        vec![r(&[Some("2"), Some("b2")]), r(&[Some("10"), Some("a2")])]
    );
}

async fn deletes_by_pk_composite_key_and_full_identity(db: &TestDb) {
    let rels = vec![
        by_id("pgsink_delete", "pk", &["id", "v"]),
        relation(
            "pgsink_delete",
            "comp",
            &["a", "b", "v"],
            KeyKind::PrimaryKey,
            &["a", "b"],
        ),
        relation(
            "pgsink_delete",
            "uq",
            &["a", "b", "v"],
            KeyKind::Unique,
            &["a", "b"],
        ),
        relation(
            "pgsink_delete",
            "full_t",
            &["x", "y", "j"],
            KeyKind::Full,
            &[],
        ),
    ];
    let mut sink = sink_on_schema(
        db,
        "pgsink_delete",
        "CREATE TABLE pk (id int PRIMARY KEY, v text);
         CREATE TABLE comp (a int, b text, v text, PRIMARY KEY (a, b));
         CREATE TABLE uq (a int NOT NULL, b int, v text);
         CREATE UNIQUE INDEX uq_ab ON uq (a, b);
         CREATE TABLE full_t (x int, y text, j json)",
        "delete",
    )
    .await;
    apply_commit(
        &mut sink,
        &batch(
            10,
            &rels,
            vec![
                ins(0, vec![t("1"), t("a")]),
                ins(0, vec![t("2"), t("b")]),
                ins(1, vec![t("1"), t("x"), t("keep")]),
                ins(1, vec![t("1"), t("y"), t("go")]),
                ins(2, vec![t("1"), Value::Null, t("null-b")]),
                ins(2, vec![t("1"), t("2"), t("two")]),
                ins(3, vec![t("1"), t("dup"), t("{\"a\": 1}")]),
                ins(3, vec![t("1"), t("dup"), t("{\"a\": 1}")]),
                ins(3, vec![t("2"), Value::Null, t("[]")]),
                ins(3, vec![t("3"), t(""), Value::Null]),
            ],
        ),
    )
    .await;
    apply_commit(
        &mut sink,
        &batch(
            20,
            &rels,
            vec![
                del(0, OldKind::Key, vec![t("1"), Value::Null]),
                del(1, OldKind::Key, vec![t("1"), t("y"), Value::Null]),
                // A NULL key value is matched with IS NULL.
                del(2, OldKind::Key, vec![t("1"), Value::Null, Value::Null]),
                // FULL identity: exactly one of the two identical rows goes.
                del(3, OldKind::Full, vec![t("1"), t("dup"), t("{\"a\": 1}")]),
                // FULL identity update matched through NULL and json (no equality operator).
                upd(
                    3,
                    vec![t("20"), t("z"), t("[1]")],
                    Some((OldKind::Full, vec![t("2"), Value::Null, t("[]")])),
                ),
                // '' is not NULL.
                del(3, OldKind::Full, vec![t("3"), Value::Null, Value::Null]),
            ],
        ),
    )
    .await;
    let c = sink.client();
    assert_eq!(
        rows(c, "SELECT * FROM pgsink_delete.pk ORDER BY id").await,
        vec![r(&[Some("2"), Some("b")])]
    );
    assert_eq!(
        rows(c, "SELECT * FROM pgsink_delete.comp ORDER BY a, b").await,
        vec![r(&[Some("1"), Some("x"), Some("keep")])]
    );
    assert_eq!(
        rows(c, "SELECT * FROM pgsink_delete.uq ORDER BY a, b").await,
        vec![r(&[Some("1"), Some("2"), Some("two")])]
    );
    assert_eq!(
        rows(c, "SELECT * FROM pgsink_delete.full_t ORDER BY x").await,
        vec![
            r(&[Some("1"), Some("dup"), Some("{\"a\": 1}")]),
            r(&[Some("3"), Some(""), None]),
            r(&[Some("20"), Some("z"), Some("[1]")]),
        ]
    );
    apply_commit(
        &mut sink,
        &batch(
            30,
            &rels,
            vec![del(3, OldKind::Full, vec![t("3"), t(""), Value::Null])],
        ),
    )
    .await;
    assert_eq!(
        rows(
            sink.client(),
            "SELECT x FROM pgsink_delete.full_t ORDER BY x"
        )
        .await,
        vec![r(&[Some("1")]), r(&[Some("20")])]
    );
}

async fn truncate_empties_tables(db: &TestDb) {
    let rels = vec![
        by_id("pgsink_truncate", "a", &["id", "v"]),
        by_id("pgsink_truncate", "b", &["id"]),
    ];
    let mut sink = sink_on_schema(
        db,
        "pgsink_truncate",
        "CREATE TABLE a (id serial PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY);
         INSERT INTO a (v) VALUES ('x'), ('y'); INSERT INTO b VALUES (1)",
        "truncate",
    )
    .await;
    let mut tr = change(Op::Truncate, 0, None, None);
    tr.truncate = Some(Truncate {
        relations: vec![0, 1],
        cascade: false,
        restart_identity: true,
    });
    // All-key table: the upsert is ON CONFLICT DO NOTHING.
    apply_commit(
        &mut sink,
        &batch(
            10,
            &rels,
            vec![ins(1, vec![t("1")]), ins(1, vec![t("2")]), tr],
        ),
    )
    .await;
    let c = sink.client();
    assert_eq!(
        rows(c, "SELECT (SELECT count(*) FROM pgsink_truncate.a), (SELECT count(*) FROM pgsink_truncate.b)").await,
        vec![r(&[Some("0"), Some("0")])]
    );
    assert_eq!(
        rows(c, "SELECT is_called FROM pgsink_truncate.a_id_seq").await,
        vec![r(&[Some("f")])]
    );
}

/// A source `TRUNCATE ... CASCADE` truncates the listed tables only, in one statement (so a
/// foreign key between them is fine), never a target table outside the group: a foreign key
/// from one makes it fail, as in PostgreSQL's logical replication. The reset of a restarted
/// copy, though, must succeed despite such a foreign key.
async fn truncate_stays_inside_the_group(db: &TestDb) {
    let client = db.client().await;
    let check = db.client().await;
    fresh_schema(
        &client,
        "pgsink_trunc_fk",
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
         CREATE TABLE outside (id int PRIMARY KEY, parent_id int CONSTRAINT out_fk REFERENCES parent (id));
         INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1);
         INSERT INTO outside VALUES (1, 2)",
    )
    .await;
    let rels = vec![
        by_id("pgsink_trunc_fk", "parent", &["id"]),
        by_id("pgsink_trunc_fk", "child", &["id", "parent_id"]),
    ];
    let truncate = |cascade: bool| {
        let mut tr = change(Op::Truncate, 0, None, None);
        tr.truncate = Some(Truncate {
            relations: vec![0, 1],
            cascade,
            restart_identity: false,
        });
        tr
    };
    let counts = "SELECT (SELECT count(*) FROM pgsink_trunc_fk.parent), \
                  (SELECT count(*) FROM pgsink_trunc_fk.child), \
                  (SELECT count(*) FROM pgsink_trunc_fk.outside)";
    let mut sink = PostgresSink::with_client(client, cfg(db, "trunc-fk"))
        .await
        .unwrap();
    let err = apply_now(&mut sink, &batch(10, &rels, vec![truncate(true)]))
        .await
        .unwrap_err();
    assert_eq!(err.retry(), Retry::Permanent, "{err}");
    assert!(err.to_string().contains("never CASCADE"), "{err}");
    sink.rollback().await.unwrap();
    assert_eq!(
        rows(&check, counts).await,
        vec![r(&[Some("2"), Some("1"), Some("1")])]
    );

    // The reset of a restarted copy (a copy message: xid 0) goes through, and the copy's
    // rows follow in the same transaction; the outside table is untouched.
    let mut reset = batch(
        20,
        &rels,
        vec![
            truncate(false),
            ins(0, vec![t("2")]),
            ins(1, vec![t("5"), t("2")]),
        ],
    );
    reset.xid = 0;
    apply_commit(&mut sink, &reset).await;
    assert_eq!(
        rows(&check, "SELECT id FROM pgsink_trunc_fk.parent").await,
        vec![r(&[Some("2")])]
    );
    assert_eq!(
        rows(&check, "SELECT id, parent_id FROM pgsink_trunc_fk.child").await,
        vec![r(&[Some("5"), Some("2")])]
    );
    assert_eq!(
        rows(&check, "SELECT id, parent_id FROM pgsink_trunc_fk.outside").await,
        vec![r(&[Some("1"), Some("2")])]
    );

    // Without the outside reference, the source's TRUNCATE ... CASCADE empties both listed
    // tables (the foreign key between them is fine in one statement) and nothing else.
    check
        .batch_execute("ALTER TABLE pgsink_trunc_fk.outside DROP CONSTRAINT out_fk")
        .await
        .unwrap();
    apply_commit(&mut sink, &batch(30, &rels, vec![truncate(true)])).await;
    assert_eq!(
        rows(&check, counts).await,
        vec![r(&[Some("0"), Some("0"), Some("1")])]
    );
}

/// Log lines written while a test runs (a `tracing` writer).
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Captures this thread's log lines (the test runtime is single-threaded) until the guard
    /// is dropped.
    fn start(&self) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn conflicts(table: &str, kind: &str) -> u64 {
    pg_flo::metrics::get()
        .worker_conflicts
        .with_label_values(&[table, kind])
        .get()
}

/// An UPDATE or DELETE whose row the target lacks is counted in
/// `pg_flo_worker_conflicts_total{table,kind}` once its transaction commits, and logged with
/// the table and the key column names, never a value.
async fn conflicts_are_counted_and_logged_without_values(db: &TestDb) {
    let logs = LogCapture::default();
    let _guard = logs.start();
    let client = db.client().await;
    let check = db.client().await;
    fresh_schema(
        &client,
        "pgsink_conf",
        "CREATE TABLE c (id text PRIMARY KEY, body text, n text); CREATE TABLE f (a text, b text)",
    )
    .await;
    let rels = vec![
        by_id("pgsink_conf", "c", &["id", "body", "n"]),
        relation("pgsink_conf", "f", &["a", "b"], KeyKind::Full, &[]),
    ];
    let mut sink = PostgresSink::with_client(client, cfg(db, "conflicts"))
        .await
        .unwrap();
    let key = |i: u32| t(&format!("key-s3cr3t-{i}"));
    let val = t("value-s3cr3t");
    apply_commit(
        &mut sink,
        &batch(
            10,
            &rels,
            (1..=4)
                .map(|i| ins(0, vec![key(i), val.clone(), val.clone()]))
                .chain([ins(1, vec![val.clone(), val.clone()])])
                .collect(),
        ),
    )
    .await;
    // The target drifts: every row goes.
    check
        .batch_execute("DELETE FROM pgsink_conf.c; DELETE FROM pgsink_conf.f")
        .await
        .unwrap();
    let (c, f) = ("pgsink_conf.c", "pgsink_conf.f");
    let before = [
        conflicts(c, "update_missing"),
        conflicts(c, "delete_missing"),
        conflicts(f, "delete_missing"),
    ];
    let changes = vec![
        // Unchanged TOAST: cannot be upserted, changes nothing.
        upd(0, vec![key(1), Value::UnchangedToast, val.clone()], None),
        del(0, OldKind::Key, vec![key(2), Value::Null, Value::Null]),
        // A full new row: upserted (inserted), not seen as a conflict.
        upd(0, vec![key(3), val.clone(), t("new")], None),
        // A key change whose old row is missing: counted, and the new row inserted.
        upd(
            0,
            vec![key(5), val.clone(), t("moved")],
            Some((OldKind::Key, vec![key(4), Value::Null, Value::Null])),
        ),
        del(1, OldKind::Full, vec![val.clone(), val.clone()]),
    ];
    // An attempt that is rolled back counts nothing; the retry counts once.
    apply_now(&mut sink, &batch(20, &rels, changes.clone()))
        .await
        .unwrap();
    sink.rollback().await.unwrap();
    assert_eq!(conflicts(c, "delete_missing"), before[1]);
    apply_commit(&mut sink, &batch(20, &rels, changes)).await;
    let after = [
        conflicts(c, "update_missing"),
        conflicts(c, "delete_missing"),
        conflicts(f, "delete_missing"),
    ];
    assert_eq!(
        after
            .iter()
            .zip(before)
            .map(|(a, b)| a - b)
            .collect::<Vec<_>>(),
        vec![2, 1, 1]
    );
    assert_eq!(
        rows(
            &check,
            "SELECT right(id, 1), n FROM pgsink_conf.c ORDER BY id"
        )
        .await,
        vec![r(&[Some("3"), Some("new")]), r(&[Some("5"), Some("moved")])]
    );
    let text = logs.text();
    assert!(!text.contains("s3cr3t"), "a value reached the log:\n{text}");
    for needle in [
        "table=pgsink_conf.c conflict=update_missing key=id count=2",
        "table=pgsink_conf.c conflict=delete_missing key=id count=1",
        "table=pgsink_conf.f conflict=delete_missing key=replica identity full count=1",
    ] {
        assert!(text.contains(needle), "{needle:?} not logged:\n{text}");
    }
    assert!(text.contains("WARN"), "{text}");
}

/// The buffer of a large source transaction is sent once its bytes reach the limit, long
/// before the change-count limit: two large rows are on the target (in the open
/// transaction) before the commit.
async fn buffer_is_flushed_by_bytes(db: &TestDb) {
    let rel = by_id("pgsink_bytes", "b", &["id", "body"]);
    let rels = std::slice::from_ref(&rel);
    let mut sink = sink_on_schema(
        db,
        "pgsink_bytes",
        "CREATE TABLE b (id int PRIMARY KEY, body text)",
        "bytes",
    )
    .await;
    sink.set_flush_bytes(1 << 20);
    let big = "x".repeat(600 << 10);
    let count = "SELECT count(*) FROM pgsink_bytes.b";
    // One source transaction in three messages.
    let mut msgs: Vec<ChangeBatch> = (0..3u64)
        .map(|i| {
            let mut m = batch(10, rels, vec![ins(0, vec![t(&i.to_string()), t(&big)])]);
            m.seq = i;
            m.last = i == 2;
            m
        })
        .collect();
    sink.apply(&msgs[0]).await.unwrap();
    assert_eq!(rows(sink.client(), count).await, vec![r(&[Some("0")])]);
    sink.apply(&msgs[1]).await.unwrap();
    // 1.2 MiB buffered: sent into the open transaction.
    assert_eq!(rows(sink.client(), count).await, vec![r(&[Some("2")])]);
    let last = msgs.pop().unwrap();
    sink.apply(&last).await.unwrap();
    assert_eq!(rows(sink.client(), count).await, vec![r(&[Some("2")])]);
    sink.commit(last.position()).await.unwrap();
    assert_eq!(rows(&db.client().await, count).await, vec![r(&[Some("3")])]);
}

async fn rollback_discards_and_position_is_committed_atomically(db: &TestDb) {
    let client = db.client().await;
    let second = db.client().await;
    fresh_schema(
        &client,
        "pgsink_position",
        "CREATE TABLE p (id int PRIMARY KEY)",
    )
    .await;
    let rel = by_id("pgsink_position", "p", &["id"]);
    let rels = std::slice::from_ref(&rel);
    let config = cfg(db, "position");
    let mut sink = PostgresSink::with_client(client, config.clone())
        .await
        .unwrap();
    assert_eq!(sink.applied_position().await.unwrap(), None);

    // A source transaction spanning two messages, committed once.
    let mut m0 = batch(0x1_0000_0010, rels, vec![ins(0, vec![t("1")])]);
    m0.last = false;
    let mut m1 = batch(0x1_0000_0010, rels, vec![ins(0, vec![t("2")])]);
    m1.seq = 1;
    sink.apply(&m0).await.unwrap();
    sink.apply(&m1).await.unwrap();
    let p1 = m1.position();
    sink.commit(p1).await.unwrap();
    assert_eq!(sink.applied_position().await.unwrap(), Some(p1));
    assert_eq!(
        rows(
            sink.client(),
            &format!(
                "SELECT commit_lsn::text, seq FROM internal_pg_flo.applied_position WHERE group_name = '{}'",
                config.group
            )
        )
        .await,
        vec![r(&[Some("1/10"), Some("1")])]
    );

    // Applied then rolled back: neither the row nor the position moves.
    let m2 = batch(0x1_0000_0020, rels, vec![ins(0, vec![t("3")])]);
    sink.apply(&m2).await.unwrap();
    // Send what `apply` buffered into the open transaction.
    sink.flush().await.unwrap();
    assert_eq!(
        rows(sink.client(), "SELECT count(*) FROM pgsink_position.p").await,
        vec![r(&[Some("3")])]
    );
    sink.rollback().await.unwrap();
    assert_eq!(
        rows(
            sink.client(),
            "SELECT id FROM pgsink_position.p ORDER BY id"
        )
        .await,
        vec![r(&[Some("1")]), r(&[Some("2")])]
    );
    assert_eq!(sink.applied_position().await.unwrap(), Some(p1));

    // A failing statement (no such table) aborts the message; rollback keeps the old position.
    let mut bad_rel = rel.clone();
    bad_rel.table = "missing".into();
    let bad = batch(0x1_0000_0030, &[bad_rel], vec![ins(0, vec![t("9")])]);
    let err = apply_now(&mut sink, &bad).await.unwrap_err();
    assert_eq!(err.retry(), Retry::Permanent);
    let msg = err.to_string();
    assert!(msg.contains(r#""pgsink_position"."missing""#), "{msg}");
    assert!(msg.contains("--target-sync-schema"), "{msg}");
    sink.rollback().await.unwrap();
    assert_eq!(sink.applied_position().await.unwrap(), Some(p1));

    // The redelivered message applies after the rollback.
    sink.apply(&m2).await.unwrap();
    sink.commit(m2.position()).await.unwrap();
    assert_eq!(sink.applied_position().await.unwrap(), Some(m2.position()));

    // Nothing applied but a newer position: recorded; an older one never moves it back.
    let p3 = Position::end_of(Lsn(0x1_0000_0040));
    sink.commit(p3).await.unwrap();
    assert_eq!(sink.applied_position().await.unwrap(), Some(p3));
    sink.commit(p1).await.unwrap();
    assert_eq!(sink.applied_position().await.unwrap(), Some(p3));

    // A restarted sink (new connection) reads the position and skips what it covers.
    drop(sink);
    let mut again = PostgresSink::with_client(second, config).await.unwrap();
    assert_eq!(again.applied_position().await.unwrap(), Some(p3));
    let old = batch(0x1_0000_0030, rels, vec![ins(0, vec![t("100")])]);
    again.apply(&old).await.unwrap();
    again.commit(old.position()).await.unwrap();
    assert_eq!(
        rows(
            again.client(),
            "SELECT id FROM pgsink_position.p ORDER BY id"
        )
        .await,
        vec![r(&[Some("1")]), r(&[Some("2")]), r(&[Some("3")])]
    );
    assert_eq!(again.applied_position().await.unwrap(), Some(p3));
}

/// The applied position is written in the same target transaction as the data: the data rows
/// and the group's position row carry the same `xmin`. (Once the position was written in its
/// own transaction after `COMMIT`; a crash between the two re-applied the batch.)
async fn position_shares_the_data_transaction(db: &TestDb) {
    let client = db.client().await;
    let check = db.client().await;
    fresh_schema(
        &client,
        "pgsink_xmin",
        "CREATE TABLE x (id int PRIMARY KEY, v text); CREATE TABLE nokey (v text)",
    )
    .await;
    let rels = vec![
        by_id("pgsink_xmin", "x", &["id", "v"]),
        relation("pgsink_xmin", "nokey", &["v"], KeyKind::Full, &[]),
    ];
    let config = cfg(db, "xmin");
    let mut sink = PostgresSink::with_client(client, config.clone())
        .await
        .unwrap();
    let xmins = |id: &str| {
        format!(
            "SELECT (SELECT xmin::text FROM pgsink_xmin.x WHERE id = {id}), \
                    (SELECT xmin::text FROM internal_pg_flo.applied_position WHERE group_name = '{}')",
            config.group
        )
    };
    // Every commit: the first (the position statement not yet prepared), later ones, and a
    // commit after a DDL-free statement cache flush (rollback).
    for (i, lsn) in [10u64, 20, 30].into_iter().enumerate() {
        let id = (i + 1).to_string();
        apply_commit(
            &mut sink,
            &batch(
                lsn,
                &rels,
                vec![ins(0, vec![t(&id), t("v")]), ins(1, vec![t("row")])],
            ),
        )
        .await;
        let got = rows(&check, &xmins(&id)).await;
        assert!(got[0][0].is_some(), "row {id} missing: {got:?}");
        assert_eq!(
            got[0][0], got[0][1],
            "data and position in different transactions"
        );
        if i == 1 {
            sink.rollback().await.unwrap();
        }
    }
    // A run of inserts goes in by COPY, the last thing sent before the position and COMMIT:
    // still one transaction, every copied row with the position's xmin.
    let run: Vec<Change> = (100..100 + 40)
        .map(|i| ins(0, vec![t(&i.to_string()), t("copied")]))
        .collect();
    apply_commit(&mut sink, &batch(40, &rels, run)).await;
    assert_eq!(
        rows(
            &check,
            &format!(
                "SELECT count(*), count(DISTINCT x.xmin::text), \
                        bool_and(x.xmin::text = (SELECT xmin::text FROM internal_pg_flo.applied_position \
                                                 WHERE group_name = '{}')) \
                 FROM pgsink_xmin.x WHERE v = 'copied'",
                config.group
            )
        )
        .await,
        vec![r(&[Some("40"), Some("1"), Some("t")])]
    );
}

async fn errors_are_classified(db: &TestDb) {
    let rel = by_id("pgsink_errors", "c", &["id", "v"]);
    let mut sink = sink_on_schema(
        db,
        "pgsink_errors",
        "CREATE TABLE c (id int PRIMARY KEY, v int CHECK (v > 0)); CREATE TABLE nokey (id int)",
        "errors",
    )
    .await;
    sink.apply(&batch(
        10,
        std::slice::from_ref(&rel),
        vec![ins(0, vec![t("1"), t("-1")])],
    ))
    .await
    .unwrap();
    // `apply` buffers; the target sees (and rejects) the change when it is sent.
    let err = sink.flush().await.unwrap_err();
    assert_eq!(err.retry(), Retry::Permanent, "{err}");
    assert!(
        err.to_string()
            .contains(r#"upserting into "pgsink_errors"."c""#),
        "{err}"
    );
    sink.rollback().await.unwrap();

    // ON CONFLICT needs a matching unique index in the target.
    let nokey = by_id("pgsink_errors", "nokey", &["id"]);
    let err = apply_now(&mut sink, &batch(11, &[nokey], vec![ins(0, vec![t("1")])]))
        .await
        .unwrap_err();
    assert_eq!(err.retry(), Retry::Permanent, "{err}");
    assert!(err.to_string().contains("--target-sync-schema"), "{err}");
    sink.rollback().await.unwrap();

    // A key column missing from the relation.
    let mut bad = rel.clone();
    bad.key.columns = vec!["gone".into()];
    let err = apply_now(
        &mut sink,
        &batch(12, &[bad], vec![ins(0, vec![t("1"), t("1")])]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SinkError::Invalid(_)), "{err}");
    assert!(err.to_string().contains(r#""pgsink_errors"."c""#), "{err}");
    sink.rollback().await.unwrap();

    // Still usable afterwards.
    apply_commit(
        &mut sink,
        &batch(
            13,
            std::slice::from_ref(&rel),
            vec![ins(0, vec![t("1"), t("5")])],
        ),
    )
    .await;
    assert_eq!(
        rows(sink.client(), "SELECT * FROM pgsink_errors.c").await,
        vec![r(&[Some("1"), Some("5")])]
    );
}

async fn foreign_keys_can_be_disabled(db: &TestDb) {
    let client = db.client().await;
    fresh_schema(
        &client,
        "pgsink_fk",
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id))",
    )
    .await;
    let rels = vec![
        by_id("pgsink_fk", "parent", &["id"]),
        by_id("pgsink_fk", "child", &["id", "parent_id"]),
    ];
    // pg_flo's flag, with --target-fire-triggers: replica mode all the same.
    let mut config = cfg(db, "fk");
    config.disable_foreign_keys = true;
    config.fire_triggers = true;
    let mut sink = PostgresSink::with_client(client, config).await.unwrap();
    // The child arrives before its parent.
    apply_commit(
        &mut sink,
        &batch(10, &rels, vec![ins(1, vec![t("1"), t("5")])]),
    )
    .await;
    apply_commit(&mut sink, &batch(20, &rels, vec![ins(0, vec![t("5")])])).await;
    assert_eq!(
        rows(sink.client(), "SELECT * FROM pgsink_fk.child").await,
        vec![r(&[Some("1"), Some("5")])]
    );
    assert_eq!(
        rows(sink.client(), "SHOW session_replication_role").await,
        vec![r(&[Some("replica")])]
    );
}

/// Replicated rows arrive as the source wrote them: the target's BEFORE trigger (copied by a
/// schema sync, say) does not rewrite them and its AFTER INSERT audit trigger adds no row that
/// collides with the replicated audit rows. `--target-fire-triggers` lets them fire.
async fn target_triggers_do_not_fire(db: &TestDb) {
    let client = db.client().await;
    fresh_schema(
        &client,
        "pgsink_trig",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE audit (id int PRIMARY KEY, note text);
         CREATE SEQUENCE audit_ids START 1;
         CREATE FUNCTION rewrite() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN NEW.v := 'rewritten'; RETURN NEW; END $$;
         CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO pgsink_trig.audit VALUES (nextval('pgsink_trig.audit_ids'), 'trigger');
              RETURN NULL; END $$;
         CREATE TRIGGER a_rewrite BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION rewrite();
         CREATE TRIGGER b_audit AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION audit()",
    )
    .await;
    let rels = vec![
        by_id("pgsink_trig", "t", &["id", "v"]),
        by_id("pgsink_trig", "audit", &["id", "note"]),
    ];
    let changes = || {
        vec![
            ins(0, vec![t("1"), t("one")]),
            // The source's own audit row for that insert.
            ins(1, vec![t("1"), t("source")]),
            ins(0, vec![t("2"), t("two")]),
            upd(0, vec![t("2"), t("two-b")], None),
        ]
    };
    let mut sink = PostgresSink::with_client(client, cfg(db, "trig"))
        .await
        .unwrap();
    apply_commit(&mut sink, &batch(10, &rels, changes())).await;
    let check = db.client().await;
    let t_rows = "SELECT id, v FROM pgsink_trig.t ORDER BY id";
    let audit_rows = "SELECT id, note FROM pgsink_trig.audit ORDER BY id";
    assert_eq!(
        rows(&check, t_rows).await,
        vec![r(&[Some("1"), Some("one")]), r(&[Some("2"), Some("two-b")])]
    );
    assert_eq!(
        rows(&check, audit_rows).await,
        vec![r(&[Some("1"), Some("source")])]
    );

    // Opted out: the triggers fire (the trigger's audit row takes the id of the source's).
    check
        .batch_execute("TRUNCATE pgsink_trig.t, pgsink_trig.audit")
        .await
        .unwrap();
    let mut config = cfg(db, "trig-fire");
    config.fire_triggers = true;
    let mut firing = PostgresSink::with_client(db.client().await, config)
        .await
        .unwrap();
    assert_eq!(
        rows(firing.client(), "SHOW session_replication_role").await,
        vec![r(&[Some("origin")])]
    );
    apply_commit(
        &mut firing,
        &batch(10, &rels, vec![ins(0, vec![t("1"), t("one")])]),
    )
    .await;
    assert_eq!(
        rows(&check, t_rows).await,
        vec![r(&[Some("1"), Some("rewritten")])]
    );
    assert_eq!(
        rows(&check, audit_rows).await,
        vec![r(&[Some("1"), Some("trigger")])]
    );
}

/// A target user that may not set `session_replication_role` fails at start with an error
/// naming the fixes; each fix works.
async fn replica_role_needs_a_grant_or_an_opt_out(db: &TestDb) {
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE applier LOGIN PASSWORD 'applier-pw';
             GRANT CREATE ON DATABASE {} TO applier",
            db.dbname
        ))
        .await
        .unwrap();
    let mut config = cfg(db, "grant");
    config.target.user = "applier".into();
    config.target.password = "applier-pw".to_owned().into();
    let err = PostgresSink::connect(config.clone()).await.err().unwrap();
    assert_eq!(err.retry(), Retry::Permanent, "{err}");
    let msg = err.to_string();
    for needle in [
        "session_replication_role",
        r#"GRANT SET ON PARAMETER session_replication_role TO "applier""#,
        "--target-fire-triggers",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }

    let mut opted_out = config.clone();
    opted_out.fire_triggers = true;
    let sink = PostgresSink::connect(opted_out).await.unwrap();
    drop(sink);

    admin
        .batch_execute("GRANT SET ON PARAMETER session_replication_role TO applier")
        .await
        .unwrap();
    let sink = PostgresSink::connect(config).await.unwrap();
    assert_eq!(
        rows(
            sink.client(),
            "SELECT current_user, current_setting('session_replication_role')"
        )
        .await,
        vec![r(&[Some("applier"), Some("replica")])]
    );
}

async fn long_pipelined_batch_keeps_order(db: &TestDb) {
    let rel = by_id("pgsink_pipe", "p", &["id", "v"]);
    let mut changes = Vec::new();
    for i in 0..500 {
        let id = i.to_string();
        changes.push(ins(0, vec![t(&id), t("v0")]));
        changes.push(upd(0, vec![t(&id), t("v1")], None));
        if i % 2 == 0 {
            changes.push(del(0, OldKind::Key, vec![t(&id), Value::Null]));
        }
    }
    let mut sink = sink_on_schema(
        db,
        "pgsink_pipe",
        "CREATE TABLE p (id int PRIMARY KEY, v text)",
        "pipe",
    )
    .await;
    apply_commit(&mut sink, &batch(10, std::slice::from_ref(&rel), changes)).await;
    assert_eq!(
        rows(
            sink.client(),
            "SELECT count(*), count(*) FILTER (WHERE v = 'v1'), min(id), max(id) FROM pgsink_pipe.p"
        )
        .await,
        vec![r(&[Some("250"), Some("250"), Some("1"), Some("499")])]
    );
}

async fn lost_connection_is_transient(db: &TestDb) {
    let killer = db.client().await;
    let rel = by_id("pgsink_lost", "l", &["id"]);
    let rels = std::slice::from_ref(&rel);
    let mut sink = sink_on_schema(
        db,
        "pgsink_lost",
        "CREATE TABLE l (id int PRIMARY KEY)",
        "lost",
    )
    .await;
    sink.apply(&batch(10, rels, vec![ins(0, vec![t("1")])]))
        .await
        .unwrap();
    let pid = rows(sink.client(), "SELECT pg_backend_pid()").await[0][0]
        .clone()
        .unwrap();
    killer
        .batch_execute(&format!("SELECT pg_terminate_backend({pid}, 5000)"))
        .await
        .unwrap();
    let err = sink.commit(Position::end_of(Lsn(10))).await.unwrap_err();
    assert_eq!(err.retry(), Retry::Transient, "{err:?}");
    sink.rollback().await.unwrap();
    sink.apply(&batch(10, rels, vec![ins(0, vec![t("1")])]))
        .await
        .unwrap();
    let err = sink.flush().await.unwrap_err();
    assert_eq!(err.retry(), Retry::Transient, "{err:?}");
    // Nothing reached the target.
    assert_eq!(
        rows(&killer, "SELECT count(*) FROM pgsink_lost.l").await,
        vec![r(&[Some("0")])]
    );
}

async fn sync_schema_copies_tables(db: &TestDb) {
    // The test's cluster is fresh: no leftovers of an earlier run to drop.
    let client = db.client().await;
    client
        .batch_execute("CREATE DATABASE pgsink_sync_src")
        .await
        .unwrap();
    client
        .batch_execute("CREATE DATABASE pgsink_sync_dst")
        .await
        .unwrap();
    let source = db.target_db("pgsink_sync_src");
    let target = db.target_db("pgsink_sync_dst");
    let src = db.connect(&source.dbname).await;
    src.batch_execute(
        r#"CREATE TABLE "Mixed Case" (id int PRIMARY KEY, v text); CREATE TYPE mood AS ENUM ('a', 'b')"#,
    )
    .await
    .unwrap();
    let mut config = cfg(db, "sync");
    config.source = Some(source);
    config.target = target.clone();
    config.sync_schema = true;
    for _ in 0..2 {
        // The second run meets "already exists" errors, which are tolerated.
        let dst = db.connect(&target.dbname).await;
        let sink = PostgresSink::with_client(dst, config.clone())
            .await
            .unwrap();
        assert_eq!(
            rows(
                sink.client(),
                r#"SELECT count(*) FROM "Mixed Case", (SELECT 'b'::mood) m"#
            )
            .await,
            vec![r(&[Some("0")])]
        );
    }
    drop(src);
    let mut no_source = config.clone();
    no_source.source = None;
    let dst = db.connect(&target.dbname).await;
    let err = PostgresSink::with_client(dst, no_source)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("--target-sync-schema"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Test entry points
// ---------------------------------------------------------------------------------------------

/// A long run of upserts (merged into multi-row statements): exact values (NULL, '', tabs,
/// newlines, backslashes, \N as text), idempotent on replay, later changes win.
async fn long_runs_are_upserted_exactly(db: &TestDb) {
    let rel = by_id("pgsink_bulk", "b", &["id", "txt", "arr", "j"]);
    let n = 1024;
    let row = |i: usize| {
        let txt = match i % 4 {
            0 => Value::Null,
            1 => t(""),
            2 => t("tab\there\nnew line \\ back\\slash"),
            _ => t("\\N"),
        };
        vec![
            t(&i.to_string()),
            txt,
            t("{\"a\tb\",NULL,\"c\\\\d\"}"),
            t("{\"k\": \"v\\nw\"}"),
        ]
    };
    let changes: Vec<Change> = (1..=n).map(|i| ins(0, row(i))).collect();
    let b1 = batch(100, std::slice::from_ref(&rel), changes.clone());
    let mut sink = sink_on_schema(
        db,
        "pgsink_bulk",
        "CREATE TABLE b (id int PRIMARY KEY, txt text, arr text[], j jsonb)",
        "bulk",
    )
    .await;
    apply_commit(&mut sink, &b1).await;
    let check = db.client().await;
    let got = rows(
        &check,
        "SELECT count(*), count(txt), sum(length(txt)), count(*) FILTER (WHERE txt = E'\\\\N'),
                count(*) FILTER (WHERE txt = E'tab\\there\\nnew line \\\\ back\\\\slash'),
                min(arr::text), min(j::text)
         FROM pgsink_bulk.b",
    )
    .await;
    let quarter = (n / 4).to_string();
    assert_eq!(
        got,
        vec![r(&[
            Some(&n.to_string()),
            Some(&(3 * n / 4).to_string()),
            Some(&((n / 4) * (2 + "tab\there\nnew line \\ back\\slash".len())).to_string()),
            Some(&quarter),
            Some(&quarter),
            Some("{\"a\tb\",NULL,\"c\\\\d\"}"),
            Some("{\"k\": \"v\\nw\"}"),
        ])]
    );
    // Replayed under a newer position (as a re-copy would be) with changed values: upserted.
    let changed: Vec<Change> = (1..=n)
        .map(|i| {
            ins(
                0,
                vec![t(&i.to_string()), t("again"), Value::Null, Value::Null],
            )
        })
        .collect();
    let b2 = batch(200, std::slice::from_ref(&rel), changed);
    // The first run went in by COPY; this one meets existing keys: its COPY fails with a
    // transient error, the worker would roll back and redeliver, and the table's inserts are
    // upserted from then on.
    sink.apply(&b2).await.unwrap();
    let e = sink.commit(b2.position()).await.unwrap_err();
    assert_eq!(e.retry(), Retry::Transient, "{e:?}");
    assert!(
        e.to_string().contains(
            "copying rows into \"pgsink_bulk\".\"b\" (a row already exists: retrying with upserts)"
        ),
        "{e}"
    );
    sink.rollback().await.unwrap();
    assert_eq!(
        rows(
            &check,
            "SELECT count(*) FILTER (WHERE txt = 'again') FROM pgsink_bulk.b"
        )
        .await,
        vec![r(&[Some("0")])]
    );
    apply_commit(&mut sink, &b2).await;
    assert_eq!(
        rows(&check, "SELECT count(*), count(*) FILTER (WHERE txt = 'again' AND arr IS NULL) FROM pgsink_bulk.b").await,
        vec![r(&[Some(&n.to_string()), Some(&n.to_string())])]
    );
}

/// Runs of inserts go in by `COPY` only into plain tables without rewrite rules: `COPY` fires
/// triggers but no rules, so a table with a rule (which fires here, triggers being on) gets
/// `INSERT`s. A trigger records which statement wrote each row (`current_query()`).
async fn copy_only_where_it_does_what_insert_does(db: &TestDb) {
    let client = db.client().await;
    fresh_schema(
        &client,
        "pgsink_copy",
        "CREATE TABLE plain (id int PRIMARY KEY, v text);
         CREATE TABLE ruled (id int, v text);
         CREATE TABLE qlog (tbl text, q text);
         CREATE TABLE rlog (id int);
         CREATE FUNCTION log_query() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO pgsink_copy.qlog VALUES (TG_TABLE_NAME, left(current_query(), 4));
              RETURN NEW; END $$;
         CREATE TRIGGER log_plain BEFORE INSERT ON plain FOR EACH ROW EXECUTE FUNCTION log_query();
         CREATE TRIGGER log_ruled BEFORE INSERT ON ruled FOR EACH ROW EXECUTE FUNCTION log_query();
         CREATE RULE also_log AS ON INSERT TO ruled DO ALSO INSERT INTO pgsink_copy.rlog VALUES (NEW.id)",
    )
    .await;
    let rels = vec![
        by_id("pgsink_copy", "plain", &["id", "v"]),
        relation("pgsink_copy", "ruled", &["id", "v"], KeyKind::Full, &[]),
    ];
    let mut changes: Vec<Change> = (1..=40)
        .map(|i| ins(0, vec![t(&i.to_string()), t("p")]))
        .collect();
    changes.extend((1..=40).map(|i| ins(1, vec![t(&i.to_string()), t("r")])));
    let mut config = cfg(db, "copyrules");
    config.fire_triggers = true;
    let mut sink = PostgresSink::with_client(client, config).await.unwrap();
    apply_commit(&mut sink, &batch(10, &rels, changes)).await;
    let check = db.client().await;
    assert_eq!(
        rows(
            &check,
            "SELECT tbl, q, count(*) FROM pgsink_copy.qlog GROUP BY tbl, q ORDER BY tbl, q"
        )
        .await,
        vec![
            r(&[Some("plain"), Some("COPY"), Some("40")]),
            r(&[Some("ruled"), Some("INSE"), Some("40")]),
        ]
    );
    assert_eq!(
        rows(
            &check,
            "SELECT (SELECT count(*) FROM pgsink_copy.rlog), (SELECT count(*) FROM pgsink_copy.ruled), \
                    (SELECT count(*) FROM pgsink_copy.plain)"
        )
        .await,
        vec![r(&[Some("40"), Some("40"), Some("40")])]
    );
}

/// The source's values of a target's `GENERATED ALWAYS` identity column are written as they
/// are, by a single insert (`OVERRIDING SYSTEM VALUE`) as by a copied run (`COPY`), as
/// PostgreSQL's apply worker does.
async fn identity_values_from_the_source_are_kept(db: &TestDb) {
    let mut sink = sink_on_schema(
        db,
        "pgsink_ident",
        "CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
        "ident",
    )
    .await;
    let rel = by_id("pgsink_ident", "ident", &["id", "v"]);
    let one = batch(
        10,
        std::slice::from_ref(&rel),
        vec![ins(0, vec![t("42"), t("one")])],
    );
    apply_commit(&mut sink, &one).await;
    let run: Vec<Change> = (100..140)
        .map(|i| ins(0, vec![t(&i.to_string()), t("run")]))
        .collect();
    apply_commit(&mut sink, &batch(20, std::slice::from_ref(&rel), run)).await;
    let check = db.client().await;
    assert_eq!(
        rows(
            &check,
            "SELECT v, count(*), min(id), max(id) FROM pgsink_ident.ident GROUP BY v ORDER BY v"
        )
        .await,
        vec![
            r(&[Some("one"), Some("1"), Some("42"), Some("42")]),
            r(&[Some("run"), Some("40"), Some("100"), Some("139")]),
        ]
    );
}

const SOURCE_A: SourceId = SourceId {
    system_identifier: 7_300_000_000_000_000_001,
    slot_origin: 0x4000,
};
const SOURCE_B: SourceId = SourceId {
    system_identifier: 7_400_000_000_000_000_002,
    slot_origin: 0x100,
};

/// One insert into `rel` from `source`.
fn sourced(
    lsn: u64,
    seq: u64,
    rel: &Relation,
    id: &str,
    source: Option<SourceId>,
    copy: bool,
) -> ChangeBatch {
    let mut b = batch(lsn, std::slice::from_ref(rel), vec![ins(0, vec![t(id)])]);
    b.seq = seq;
    b.source = source;
    b.copy = copy;
    b
}

/// The group's stored row: position, source, and the transaction that wrote it.
async fn position_row(client: &Client, group: &str) -> Vec<Vec<Option<String>>> {
    rows(
        client,
        &format!(
            "SELECT commit_lsn::text, seq::text, source_system_identifier::text, \
             source_slot_origin::text FROM internal_pg_flo.applied_position \
             WHERE group_name = '{group}'"
        ),
    )
    .await
}

async fn position_is_kept_per_source(db: &TestDb) {
    let client = db.client().await;
    let check = db.client().await;
    fresh_schema(&client, "pgsink_src", "CREATE TABLE s (id int PRIMARY KEY)").await;
    let rel = by_id("pgsink_src", "s", &["id"]);
    let config = cfg(db, "source");
    let group = config.group.clone();
    let mut sink = PostgresSink::with_client(client, config.clone())
        .await
        .unwrap();

    // Source A streams far ahead; the row stores its identity.
    apply_commit(
        &mut sink,
        &sourced(0x5000, 0, &rel, "1", Some(SOURCE_A), false),
    )
    .await;
    assert_eq!(
        position_row(&check, &group).await,
        vec![r(&[
            Some("0/5000"),
            Some("0"),
            Some("7300000000000000001"),
            Some("0/4000")
        ])]
    );
    assert_eq!(sink.applied_source(), Some(SOURCE_A));

    // Source B's streamed messages are refused, below and above A's position; nothing applied.
    for lsn in [0x200, 0x9000] {
        let err = apply_now(
            &mut sink,
            &sourced(lsn, 0, &rel, "2", Some(SOURCE_B), false),
        )
        .await
        .unwrap_err();
        assert_eq!(err.retry(), Retry::Permanent);
        assert!(!err.dead_letterable());
        let msg = err.to_string();
        for needle in [
            group.as_str(),
            "system identifier 7300000000000000001, slot created at 0/4000",
            "system identifier 7400000000000000002, slot created at 0/100",
            "--copy-and-stream",
            &format!("DELETE FROM internal_pg_flo.applied_position WHERE group_name = '{group}'"),
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
        sink.rollback().await.unwrap();
    }
    assert_eq!(ids_of(&check).await, vec![r(&[Some("1")])]);
    assert_eq!(
        position_row(&check, &group).await[0][0].as_deref(),
        Some("0/5000")
    );

    // A copy of source B starts over. Crash (rollback) before its commit: A's position stays.
    let c0 = sourced(0xFF, 0, &rel, "10", Some(SOURCE_B), true);
    let c1 = sourced(0xFF, 1, &rel, "11", Some(SOURCE_B), true);
    sink.apply(&c0).await.unwrap();
    sink.flush().await.unwrap();
    sink.rollback().await.unwrap();
    assert_eq!(
        sink.applied_position().await.unwrap(),
        Some(Position {
            commit_lsn: 0x5000,
            seq: 0
        })
    );
    assert_eq!(sink.applied_source(), Some(SOURCE_A));
    // Redelivered: applied, and the position replaced at its commit.
    sink.apply(&c0).await.unwrap();
    sink.apply(&c1).await.unwrap();
    sink.commit(c1.position()).await.unwrap();
    assert_eq!(
        position_row(&check, &group).await,
        vec![r(&[
            Some("0/FF"),
            Some("1"),
            Some("7400000000000000002"),
            Some("0/100")
        ])]
    );
    assert_eq!(
        ids_of(&check).await,
        vec![r(&[Some("1")]), r(&[Some("10")]), r(&[Some("11")])]
    );
    // The reset position was written in the copied rows' transaction.
    let xmins = rows(
        &check,
        &format!(
            "SELECT DISTINCT xmin::text FROM pgsink_src.s WHERE id IN (10, 11) \
             UNION SELECT xmin::text FROM internal_pg_flo.applied_position \
             WHERE group_name = '{group}'"
        ),
    )
    .await;
    assert_eq!(xmins.len(), 1, "{xmins:?}");

    // B streams on from its copy; a redelivered copy message is a duplicate again.
    apply_commit(
        &mut sink,
        &sourced(0x200, 0, &rel, "12", Some(SOURCE_B), false),
    )
    .await;
    apply_commit(&mut sink, &c1).await;
    assert_eq!(
        position_row(&check, &group).await[0][0].as_deref(),
        Some("0/200")
    );
    // Now source A is the stranger.
    let err = apply_now(
        &mut sink,
        &sourced(0x6000, 0, &rel, "3", Some(SOURCE_A), false),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SinkError::SourceMismatch { stored, got, .. } if stored == SOURCE_B && got == SOURCE_A)
    );
    sink.rollback().await.unwrap();

    // A restarted sink reads position and source back.
    drop(sink);
    let mut again = PostgresSink::with_client(db.client().await, config)
        .await
        .unwrap();
    assert_eq!(
        again.applied_position().await.unwrap(),
        Some(Position {
            commit_lsn: 0x200,
            seq: 0
        })
    );
    assert_eq!(again.applied_source(), Some(SOURCE_B));
    assert!(apply_now(
        &mut again,
        &sourced(0x300, 0, &rel, "4", Some(SOURCE_A), false)
    )
    .await
    .is_err());
    again.rollback().await.unwrap();
    assert_eq!(
        ids_of(&check).await,
        vec![
            r(&[Some("1")]),
            r(&[Some("10")]),
            r(&[Some("11")]),
            r(&[Some("12")])
        ]
    );
}

async fn ids_of(c: &Client) -> Vec<Vec<Option<String>>> {
    rows(c, "SELECT id::text FROM pgsink_src.s ORDER BY id").await
}

/// A target set up by a version without sources: its table gains the columns, its row adopts
/// the first source applied; messages without source are compared by position.
async fn positions_of_older_versions_are_compared_and_adopt(db: &TestDb) {
    let client = db.client().await;
    let check = db.client().await;
    fresh_schema(&client, "pgsink_src", "CREATE TABLE s (id int PRIMARY KEY)").await;
    let config = cfg(db, "old");
    let group = config.group.clone();
    check
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS internal_pg_flo; \
             CREATE TABLE internal_pg_flo.applied_position (group_name text PRIMARY KEY, \
               commit_lsn pg_lsn NOT NULL, seq bigint NOT NULL, \
               updated_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO internal_pg_flo.applied_position (group_name, commit_lsn, seq) \
               VALUES ('{group}', '0/1000', 0)"
        ))
        .await
        .unwrap();
    let rel = by_id("pgsink_src", "s", &["id"]);
    let mut sink = PostgresSink::with_client(client, config).await.unwrap();
    assert_eq!(
        position_row(&check, &group).await,
        vec![r(&[Some("0/1000"), Some("0"), None, None])]
    );
    assert_eq!(sink.applied_source(), None);

    // At or below the stored position: skipped, whether sourced or not.
    apply_commit(
        &mut sink,
        &sourced(0x1000, 0, &rel, "1", Some(SOURCE_A), false),
    )
    .await;
    apply_commit(&mut sink, &sourced(0x800, 0, &rel, "2", None, false)).await;
    apply_commit(&mut sink, &sourced(0x700, 0, &rel, "3", None, true)).await;
    assert_eq!(ids_of(&check).await, Vec::<Vec<Option<String>>>::new());
    // After it: applied, and the row adopts the source.
    apply_commit(
        &mut sink,
        &sourced(0x2000, 0, &rel, "4", Some(SOURCE_A), false),
    )
    .await;
    assert_eq!(
        position_row(&check, &group).await,
        vec![r(&[
            Some("0/2000"),
            Some("0"),
            Some("7300000000000000001"),
            Some("0/4000")
        ])]
    );
    // A message without source (older replicator) moves the position, keeps the source.
    apply_commit(&mut sink, &sourced(0x3000, 0, &rel, "5", None, false)).await;
    apply_commit(&mut sink, &sourced(0x2500, 0, &rel, "6", None, false)).await;
    assert_eq!(
        position_row(&check, &group).await,
        vec![r(&[
            Some("0/3000"),
            Some("0"),
            Some("7300000000000000001"),
            Some("0/4000")
        ])]
    );
    assert_eq!(ids_of(&check).await, vec![r(&[Some("4")]), r(&[Some("5")])]);

    // Back to a stored row without source: a copy (always of a new slot) starts over.
    check
        .batch_execute(&format!(
            "UPDATE internal_pg_flo.applied_position SET source_system_identifier = NULL, \
             source_slot_origin = NULL WHERE group_name = '{group}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        sink.applied_position().await.unwrap().map(|p| p.commit_lsn),
        Some(0x3000)
    );
    assert_eq!(sink.applied_source(), None);
    apply_commit(
        &mut sink,
        &sourced(0xFF, 0, &rel, "7", Some(SOURCE_B), true),
    )
    .await;
    assert_eq!(
        position_row(&check, &group).await,
        vec![r(&[
            Some("0/FF"),
            Some("0"),
            Some("7400000000000000002"),
            Some("0/100")
        ])]
    );
}

macro_rules! pg_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let db = super::TestDb::start().await;
            super::$name(&db).await;
        }
    )*};
}

mod run {
    pg_tests!(
        upsert_is_idempotent_and_keeps_null_and_empty,
        update_with_unchanged_toast_keeps_the_value,
        key_change_deletes_the_old_row,
        deletes_by_pk_composite_key_and_full_identity,
        truncate_empties_tables,
        truncate_stays_inside_the_group,
        conflicts_are_counted_and_logged_without_values,
        buffer_is_flushed_by_bytes,
        rollback_discards_and_position_is_committed_atomically,
        errors_are_classified,
        position_shares_the_data_transaction,
        foreign_keys_can_be_disabled,
        target_triggers_do_not_fire,
        replica_role_needs_a_grant_or_an_opt_out,
        long_pipelined_batch_keeps_order,
        lost_connection_is_transient,
        sync_schema_copies_tables,
        long_runs_are_upserted_exactly,
        copy_only_where_it_does_what_insert_does,
        identity_values_from_the_source_are_kept,
        position_is_kept_per_source,
        positions_of_older_versions_are_compared_and_adopt,
    );
}

/// Applies and sends at once (`apply` alone only buffers), so a test sees the target's answer.
async fn apply_now(sink: &mut PostgresSink, b: &ChangeBatch) -> Result<(), SinkError> {
    sink.apply(b).await?;
    sink.flush().await
}
