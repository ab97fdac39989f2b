//! The source side at its bad moments, with the real binary, PostgreSQL and nats-server (its
//! default `max_payload`, 1 MiB): values and transactions larger than a message, a
//! transaction re-published with other batch settings after a crash, schema and key changes
//! inside transactions, a lost slot, a transaction larger than the stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::{dump_table, wait_for, PgOptions, Pipeline, Process, TempDir, ARRIVAL_TIMEOUT};
use tokio_postgres::Client;

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn replicator(
    p: &Pipeline,
    name: &str,
    group: &str,
    tables: &str,
    extra: &[&str],
) -> Process {
    let r = Pipeline::spawn(name, &with(p.replicator_args(group, tables), extra)).unwrap();
    r.wait_for_output("streaming changes", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", r.output_dump()));
    r
}

async fn jetstream(p: &Pipeline) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(p.nats.url()).await.unwrap())
}

async fn stream_messages(js: &async_nats::jetstream::Context, group: &str) -> u64 {
    match js.get_stream(pg_flo::config::stream_name(group)).await {
        Ok(mut s) => s.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

/// `(id, length, md5)` of every row of `table`, so 64 MiB values compare cheaply.
async fn digests(c: &Client, table: &str) -> Vec<(i32, i32, String)> {
    c.query(
        &format!("SELECT id, length(v), md5(v) FROM {table} ORDER BY id"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn md5_hex(c: &Client, s: &str) -> String {
    c.query_one("SELECT md5($1)", &[&s]).await.unwrap().get(0)
}

/// A value of `mib` MiB that PostgreSQL compresses well (the WAL stays small) but that
/// logical decoding hands over whole.
fn big(id: i32, mib: usize) -> String {
    format!("repeat('{id}abcdefgh', {} * 1024 * 1024 / 9)", mib)
}

#[tokio::test(flavor = "multi_thread")]
async fn values_larger_than_a_message_reach_the_postgres_and_file_sinks() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE big (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    // Copied: a 3 MiB and a 64 MiB value.
    src.batch_execute(&format!(
        "INSERT INTO big VALUES (1, {}), (2, {}), (3, 'small')",
        big(1, 3),
        big(2, 64)
    ))
    .await
    .unwrap();
    let out = TempDir::new("bigfile").unwrap();
    let r_pg = replicator(
        &p,
        "replicator-bigpg",
        "bigpg",
        "big",
        &["--copy-and-stream"],
    )
    .await;
    let r_file = replicator(
        &p,
        "replicator-bigfile",
        "bigfile",
        "big",
        &["--copy-and-stream"],
    )
    .await;
    let w_pg = p.start_pg_worker("bigpg").await.unwrap();
    let w_file =
        Pipeline::spawn("worker-bigfile", &p.file_worker_args("bigfile", out.path())).unwrap();
    let r_out = replicator(
        &p,
        "replicator-bigout",
        "bigout",
        "big",
        &["--copy-and-stream"],
    )
    .await;
    let w_out = Pipeline::spawn(
        "worker-bigout",
        &[
            "worker".to_string(),
            "stdout".into(),
            "--group".into(),
            "bigout".into(),
            "--nats-url".into(),
            p.nats.url(),
        ],
    )
    .unwrap();
    // Streamed: four ~300 KiB rows in one transaction (together over 1 MiB), then 3 MiB and
    // 64 MiB values between small rows of one transaction, an update keeping a large value
    // (unchanged TOAST) and one replacing it.
    src.batch_execute(
        "BEGIN; INSERT INTO big SELECT g, repeat(g::text || 'x', 300 * 1024 / 3) FROM generate_series(10, 13) g; COMMIT",
    )
    .await
    .unwrap();
    src.batch_execute(&format!(
        "BEGIN; INSERT INTO big VALUES (20, 'a'); INSERT INTO big VALUES (21, {}); \
         INSERT INTO big VALUES (22, {}); INSERT INTO big VALUES (23, 'b'); COMMIT",
        big(21, 3),
        big(22, 64)
    ))
    .await
    .unwrap();
    src.batch_execute(&format!(
        "UPDATE big SET v = v WHERE id = 2; UPDATE big SET v = {} WHERE id = 21; DELETE FROM big WHERE id = 1",
        big(5, 64)
    ))
    .await
    .unwrap();
    let want = digests(&src, "big").await;
    let target = p.target().await.unwrap();
    wait_for_eq_digests(&target, &want).await;

    // The file sink: every change with its whole value, in order.
    let expect: Vec<(&str, i64, Option<String>)> = vec![
        ("INSERT", 1, Some(big(1, 3))),
        ("INSERT", 2, Some(big(2, 64))),
        ("INSERT", 3, Some("'small'".into())),
        ("INSERT", 10, Some("repeat('10x', 300 * 1024 / 3)".into())),
        ("INSERT", 11, Some("repeat('11x', 300 * 1024 / 3)".into())),
        ("INSERT", 12, Some("repeat('12x', 300 * 1024 / 3)".into())),
        ("INSERT", 13, Some("repeat('13x', 300 * 1024 / 3)".into())),
        ("INSERT", 20, Some("'a'".into())),
        ("INSERT", 21, Some(big(21, 3))),
        ("INSERT", 22, Some(big(22, 64))),
        ("INSERT", 23, Some("'b'".into())),
        // Unchanged TOAST: no value.
        ("UPDATE", 2, None),
        ("UPDATE", 21, Some(big(5, 64))),
        ("DELETE", 1, None),
    ];
    let file_lines = wait_for("the file sink wrote every change", ARRIVAL_TIMEOUT, || {
        let lines = e2e::file_sink::json_lines(out.path()).unwrap_or_default();
        async move { (lines.len() >= 14).then_some(lines) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w_file.output_dump()));
    let stdout_lines = wait_for(
        "the stdout sink printed every change",
        ARRIVAL_TIMEOUT,
        || {
            let lines: Vec<serde_json::Value> = w_out
                .stdout()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            async move { (lines.len() >= 14).then_some(lines) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w_out.stderr()));
    for lines in [file_lines, stdout_lines] {
        assert_eq!(lines.len(), expect.len());
        for (line, (op, id, value)) in lines.iter().zip(&expect) {
            let tuple = line["NewTuple"]
                .as_object()
                .or_else(|| line["OldTuple"].as_object())
                .unwrap();
            assert_eq!(
                (
                    line["Type"].as_str().unwrap(),
                    tuple["id"].as_i64().unwrap()
                ),
                (*op, *id)
            );
            let got = line["NewTuple"].get("v").and_then(|v| v.as_str());
            match value {
                Some(expr) => {
                    let want: String = src
                        .query_one(&format!("SELECT md5({expr})"), &[])
                        .await
                        .unwrap()
                        .get(0);
                    let got = got.unwrap_or_else(|| panic!("{op} {id} has no value"));
                    assert_eq!(md5_hex(&src, got).await, want, "{op} {id}");
                }
                None => assert_eq!(got, None, "{op} {id}"),
            }
        }
    }
    eprintln!(
        "replicator peak RSS: {:?} KiB, {:?} KiB, {:?} KiB; workers {:?} KiB, {:?} KiB",
        r_pg.peak_rss_kib(),
        r_file.peak_rss_kib(),
        r_out.peak_rss_kib(),
        w_pg.peak_rss_kib(),
        w_file.peak_rss_kib()
    );
}

async fn wait_for_eq_digests(target: &Client, want: &[(i32, i32, String)]) {
    let want = want.to_vec();
    e2e::wait_for_eq(
        "target rows equal to source",
        ARRIVAL_TIMEOUT,
        want,
        || async { Ok::<_, anyhow::Error>(digests(target, "big").await) },
    )
    .await
    .unwrap();
}

/// A replicator killed while it publishes one large transaction (NATS frozen mid-way, so
/// only part of it is stored and nothing confirmed), then run again with other batch
/// settings: the worker applies every row exactly once (a keyless table shows duplicates).
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_recut_by_other_batch_settings_is_applied_exactly_once() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE k (v int); ALTER TABLE k REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let js = jetstream(&p).await;
    let mut r1 = replicator(
        &p,
        "replicator-run1",
        "recut",
        "k",
        &[
            "--max-batch-changes",
            "10",
            "--max-in-flight",
            "1",
            "--status-interval",
            "1h",
        ],
    )
    .await;
    let src = p.source().await.unwrap();
    src.batch_execute("INSERT INTO k SELECT g FROM generate_series(1, 100000) g")
        .await
        .unwrap();
    wait_for(
        "part of the transaction published",
        ARRIVAL_TIMEOUT,
        || async { (stream_messages(&js, "recut").await >= 1500).then_some(()) },
    )
    .await
    .unwrap();
    p.nats.pause().unwrap();
    r1.kill_9().unwrap();
    p.nats.resume().unwrap();
    let stored = stream_messages(&js, "recut").await;
    assert!(
        stored < 10_000,
        "the whole transaction was published ({stored}): not a partial run"
    );
    // Run 2 cuts 1000 changes per message: its first messages have the same seq numbers as
    // run 1's stored ones.
    let _r2 = replicator(
        &p,
        "replicator-run2",
        "recut",
        "k",
        &["--max-batch-changes", "1000"],
    )
    .await;
    src.batch_execute("INSERT INTO k SELECT g FROM generate_series(100001, 100010) g")
        .await
        .unwrap();
    let w = p.start_pg_worker("recut").await.unwrap();
    let target = p.target().await.unwrap();
    e2e::wait_for_eq(
        "every row once in the target",
        ARRIVAL_TIMEOUT,
        (100_010i64, 100_010i64),
        || async {
            let r = target
                .query_one("SELECT count(*), count(DISTINCT v) FROM k", &[])
                .await?;
            Ok::<_, tokio_postgres::Error>((r.get::<_, i64>(0), r.get::<_, i64>(1)))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
    // And nothing more comes: every message is consumed, and the rows are still each once.
    wait_for("the stream drained", ARRIVAL_TIMEOUT, || async {
        (stream_messages(&js, "recut").await == 0).then_some(())
    })
    .await
    .unwrap();
    let n: i64 = target
        .query_one("SELECT count(*) FROM k", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100_010);
}

/// A replicator killed while it publishes the parts of a 64 MiB value (NATS frozen, so part
/// of the set is stored, or all of it unconfirmed), then started again: the worker drops the
/// broken set, applies the value from the complete one once (a keyless table shows a
/// duplicate), and every part is consumed.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_whose_parts_were_cut_off_by_a_crash_is_applied_once() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE kb (id int, v text); ALTER TABLE kb REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let js = jetstream(&p).await;
    let args = ["--max-in-flight", "1", "--status-interval", "1h"];
    let mut r1 = replicator(&p, "replicator-parts1", "parts", "kb", &args).await;
    let src = p.source().await.unwrap();
    src.batch_execute(&format!(
        "INSERT INTO kb VALUES (1, {}), (2, 'small')",
        big(1, 64)
    ))
    .await
    .unwrap();
    wait_for("parts of the value published", ARRIVAL_TIMEOUT, || async {
        (stream_messages(&js, "parts").await >= 3).then_some(())
    })
    .await
    .unwrap();
    p.nats.pause().unwrap();
    r1.kill_9().unwrap();
    p.nats.resume().unwrap();
    let _r2 = replicator(&p, "replicator-parts2", "parts", "kb", &[]).await;
    src.batch_execute("INSERT INTO kb VALUES (3, 'after')")
        .await
        .unwrap();
    let w = p.start_pg_worker("parts").await.unwrap();
    let target = p.target().await.unwrap();
    let want: Vec<(i32, i32, String)> = src
        .query("SELECT id, length(v), md5(v) FROM kb ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    e2e::wait_for_eq(
        "every row once in the target",
        ARRIVAL_TIMEOUT,
        want,
        || async {
            let rows = target
                .query("SELECT id, length(v), md5(v) FROM kb ORDER BY id", &[])
                .await?;
            Ok::<_, tokio_postgres::Error>(
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect::<Vec<(i32, i32, String)>>(),
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
    wait_for("every part consumed", ARRIVAL_TIMEOUT, || async {
        (stream_messages(&js, "parts").await == 0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
}

/// A migration in one transaction, one statement per query (as migration tools and ORMs send
/// them).
const MIGRATION: [&str; 11] = [
    "BEGIN",
    "INSERT INTO mig VALUES (1, 'b1', 'c1')",
    "ALTER TABLE mig DROP COLUMN b",
    "INSERT INTO mig VALUES (2, 'c2')",
    "ALTER TABLE mig ADD COLUMN d text DEFAULT 'dd'",
    "INSERT INTO mig VALUES (3, 'c3', 'd3')",
    "ALTER TABLE mig RENAME COLUMN c TO cc",
    "UPDATE mig SET cc = 'c2x' WHERE id = 2",
    "ALTER TABLE mig ALTER COLUMN id TYPE bigint",
    "INSERT INTO mig VALUES (4, 'c4', 'd4')",
    "COMMIT",
];

/// Every change after a Relation message uses that relation: a transaction that drops, adds,
/// renames and retypes columns between its rows, into a postgres target (with the DDL) and a
/// file sink (with and without DDL tracking).
#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_inside_one_transaction() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE mig (id int PRIMARY KEY, b text, c text)")
        .await
        .unwrap();
    let out_ddl = TempDir::new("mig-ddl").unwrap();
    let out_plain = TempDir::new("mig-plain").unwrap();
    let _r1 = replicator(&p, "replicator-migpg", "migpg", "mig", &["--track-ddl"]).await;
    let _r2 = replicator(&p, "replicator-migfile", "migfile", "mig", &["--track-ddl"]).await;
    let _r3 = replicator(&p, "replicator-migplain", "migplain", "mig", &[]).await;
    let w = p.start_pg_worker("migpg").await.unwrap();
    let _w2 = Pipeline::spawn(
        "worker-migfile",
        &p.file_worker_args("migfile", out_ddl.path()),
    )
    .unwrap();
    let _w3 = Pipeline::spawn(
        "worker-migplain",
        &p.file_worker_args("migplain", out_plain.path()),
    )
    .unwrap();
    let src = p.source().await.unwrap();
    for statement in MIGRATION {
        src.batch_execute(statement).await.unwrap();
    }
    p.wait_equal("mig", "id")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
    let target = p.target().await.unwrap();
    assert_eq!(
        dump_table(&target, "mig", "id").await.unwrap(),
        dump_table(&src, "mig", "id").await.unwrap()
    );
    let cols: Vec<String> = target
        .query(
            "SELECT attname::text || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'mig'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(cols, ["id bigint", "cc text", "d text"]);
    // JSON sinks pair each value with its column as of the change.
    let want = vec![
        serde_json::json!({"id": 1, "b": "b1", "c": "c1"}),
        serde_json::json!({"id": 2, "c": "c2"}),
        serde_json::json!({"id": 3, "c": "c3", "d": "d3"}),
        serde_json::json!({"id": 2, "cc": "c2x", "d": "dd"}),
        serde_json::json!({"id": 4, "cc": "c4", "d": "d4"}),
    ];
    for dir in [out_ddl.path(), out_plain.path()] {
        let rows = wait_for(
            "the file sink wrote the transaction",
            ARRIVAL_TIMEOUT,
            || {
                let lines = e2e::file_sink::json_lines(dir).unwrap_or_default();
                let rows: Vec<serde_json::Value> = lines
                    .into_iter()
                    .filter(|l| l["Type"] != "DDL")
                    .map(|l| l["NewTuple"].clone())
                    .collect();
                async move { (rows.len() >= 5).then_some(rows) }
            },
        )
        .await
        .unwrap();
        assert_eq!(rows, want, "{}", dir.display());
    }
}

/// Keys come from the WAL: a table dropped before its changes are decoded does not stall
/// the replicator, and a primary key changed without DDL tracking still finds the rows.
#[tokio::test(flavor = "multi_thread")]
async fn keys_are_the_ones_in_force_at_each_change() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); \
         CREATE TABLE gone (id int PRIMARY KEY, v text)",
    )
    .await
    .unwrap();
    // Schema mode: every table of `public`.
    let mut r = replicator(&p, "replicator-keys", "keys", "", &[]).await;
    let w = p.start_pg_worker("keys").await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'); INSERT INTO gone VALUES (1, 'x')")
        .await
        .unwrap();
    p.wait_equal("t", "id").await.unwrap();
    // Changes of `gone`, then `gone` dropped, all while the replicator is down.
    r.terminate().unwrap();
    r.wait_exit(Duration::from_secs(60)).await.unwrap();
    src.batch_execute(
        "INSERT INTO gone VALUES (2, 'y'); UPDATE gone SET v = 'z' WHERE id = 1; DROP TABLE gone",
    )
    .await
    .unwrap();
    // The primary key moves from id to v, on both sides (no DDL tracking).
    p.both("ALTER TABLE t DROP CONSTRAINT t_pkey; ALTER TABLE t ADD PRIMARY KEY (v)")
        .await
        .unwrap();
    src.batch_execute("DELETE FROM t WHERE v = 'a'; UPDATE t SET id = 20 WHERE v = 'b'; INSERT INTO t VALUES (3, 'c')")
        .await
        .unwrap();
    let _r = replicator(&p, "replicator-keys2", "keys", "", &[]).await;
    p.wait_equal("t", "v")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
    let target = p.target().await.unwrap();
    let gone = dump_table(&target, "gone", "id").await.unwrap();
    assert_eq!(gone, "(1,z)\n(2,y)");
}

/// A slot dropped while the replicator was down: stream mode stops with the remedies instead
/// of going on from a new slot past a gap; `--accept-lost-slot` accepts the gap;
/// `--copy-and-stream` copies again.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_slot_is_never_a_silent_gap() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE items (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    let mut r = replicator(&p, "replicator-lost", "lost", "items", &[]).await;
    let w = p.start_pg_worker("lost").await.unwrap();
    src.batch_execute("INSERT INTO items SELECT g, 'before' FROM generate_series(1, 5) g")
        .await
        .unwrap();
    p.wait_equal("items", "id").await.unwrap();
    r.terminate().unwrap();
    r.wait_exit(Duration::from_secs(60)).await.unwrap();
    src.batch_execute("SELECT pg_drop_replication_slot('pg_flo_lost_publication')")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO items SELECT g, 'while lost' FROM generate_series(6, 15) g")
        .await
        .unwrap();
    let mut again =
        Pipeline::spawn("replicator-again", &p.replicator_args("lost", "items")).unwrap();
    let status = again
        .wait_exit(ARRIVAL_TIMEOUT)
        .await
        .expect("the replicator went on");
    assert!(!status.success());
    let err = again.stderr() + &again.stdout();
    for needle in [
        "replication slot pg_flo_lost_publication is gone",
        "--copy-and-stream",
        "--accept-lost-slot",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let slots: i64 = src
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "no new slot was created");

    // Accepting the gap: rows from now on arrive, the lost ones do not.
    let mut accept = replicator(
        &p,
        "replicator-accept",
        "lost",
        "items",
        &["--accept-lost-slot"],
    )
    .await;
    src.batch_execute("INSERT INTO items VALUES (16, 'after')")
        .await
        .unwrap();
    let target = p.target().await.unwrap();
    e2e::wait_for_eq("row 16 arrived", ARRIVAL_TIMEOUT, 6i64, || async {
        Ok::<_, tokio_postgres::Error>(
            target
                .query_one("SELECT count(*) FROM items", &[])
                .await?
                .get::<_, i64>(0),
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
    accept.terminate().unwrap();
    accept.wait_exit(Duration::from_secs(60)).await.unwrap();

    // Lost again, with --copy-and-stream: copied again, so nothing is missing.
    src.batch_execute("SELECT pg_drop_replication_slot('pg_flo_lost_publication')")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO items VALUES (17, 'lost again')")
        .await
        .unwrap();
    let _copy = replicator(
        &p,
        "replicator-recopy",
        "lost",
        "items",
        &["--copy-and-stream"],
    )
    .await;
    p.wait_equal("items", "id")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
}

/// A transaction larger than the stream's max_bytes could never be consumed (the worker acks
/// a transaction only whole): the replicator stops with the sizes and the fix instead of
/// waiting forever on a full stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_larger_than_the_stream_is_refused_with_the_fix() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE big (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut r = Pipeline::spawn(
        "replicator-full",
        &with(
            p.replicator_args("full", "big"),
            &["--nats-stream-max-bytes", "2MiB"],
        ),
    )
    .unwrap();
    r.wait_for_output("streaming changes", Duration::from_secs(60))
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 300 * 1024 / 32) FROM generate_series(1, 10) g",
    )
    .await
    .unwrap();
    let status = r
        .wait_exit(ARRIVAL_TIMEOUT)
        .await
        .expect("the replicator kept waiting");
    assert!(!status.success());
    let err = r.stderr() + &r.stdout();
    assert!(err.contains("is larger than the stream allows"), "{err}");
    assert!(err.contains("--nats-stream-max-bytes"), "{err}");
}
