//! End-to-end: `--track-ddl` carries schema changes of the group's tables to the sinks, in WAL
//! order with the data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use e2e::{wait_for, wait_for_eq, PgOptions, Pipeline, TempDir, ARRIVAL_TIMEOUT};
use tokio_postgres::Client;

/// Columns (name, type, default) and index definitions of a table, comparable across databases.
async fn shape(c: &Client, table: &str) -> String {
    let cols: Vec<String> = c
        .query(
            "SELECT column_name || ' ' || data_type || coalesce(' default ' || column_default, '')
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1
             ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let idx: Vec<String> = c
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1 ORDER BY indexname",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    format!("{}\n{}", cols.join("\n"), idx.join("\n"))
}

async fn wait_same_shape(p: &Pipeline, table: &str) {
    let src = p.source().await.unwrap();
    let dst = p.target().await.unwrap();
    let expected = shape(&src, table).await;
    wait_for_eq(
        &format!("{table} shape in the target"),
        ARRIVAL_TIMEOUT,
        expected,
        || async { Ok::<_, std::convert::Infallible>(shape(&dst, table).await) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_reach_the_target_in_order_with_the_data() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE tracked (id int PRIMARY KEY, name text); CREATE TABLE untracked (id int PRIMARY KEY);")
        .await
        .unwrap();
    // `untracked` is not one of the group's tables.
    let mut args = p.replicator_args("ddl", "tracked");
    args.push("--track-ddl".into());
    let r = Pipeline::spawn("replicator", &args).unwrap();
    r.wait_streaming().await.unwrap();
    let _w = p.start_pg_worker("ddl").await.unwrap();
    let src = p.source().await.unwrap();
    for sql in [
        "ALTER TABLE tracked ADD COLUMN age int",
        "INSERT INTO tracked VALUES (1, 'a', 30)",
        // DDL and the insert that needs it, in one transaction.
        "BEGIN; ALTER TABLE tracked ADD COLUMN email text; INSERT INTO tracked (id, name, email) VALUES (2, 'b', 'b@example.com'); COMMIT",
        // A multi-statement query: only its DDL is replayed, the insert streams as data.
        "ALTER TABLE tracked ADD COLUMN note text; INSERT INTO tracked (id, note) VALUES (3, 'n')",
        "ALTER TABLE tracked RENAME COLUMN name TO full_name",
        "ALTER TABLE tracked ALTER COLUMN age TYPE bigint",
        "ALTER TABLE tracked ALTER COLUMN email SET DEFAULT 'none'",
        "CREATE INDEX tracked_age_idx ON tracked (age)",
        "CREATE UNIQUE INDEX tracked_email_idx ON tracked (email)",
        "CREATE INDEX CONCURRENTLY tracked_name_idx ON tracked (full_name)",
        "INSERT INTO tracked (id, full_name) VALUES (4, 'd')",
        "DROP INDEX tracked_age_idx",
        "DROP INDEX CONCURRENTLY tracked_name_idx",
        "ALTER TABLE tracked DROP COLUMN note",
        "UPDATE tracked SET age = 31 WHERE id = 1",
        // Not the group's table: must not reach the target.
        "ALTER TABLE untracked ADD COLUMN z int",
        "CREATE INDEX untracked_idx ON untracked (id)",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    wait_same_shape(&p, "tracked").await;
    p.wait_equal("public.tracked", "id").await.unwrap();
    let dst = p.target().await.unwrap();
    assert_eq!(
        shape(&dst, "untracked").await,
        "id integer\nCREATE UNIQUE INDEX untracked_pkey ON public.untracked USING btree (id)"
    );
    assert_eq!(
        e2e::dump_table(&dst, "public.tracked", "id").await.unwrap(),
        "(1,a,31,)\n(2,b,,b@example.com)\n(3,,,)\n(4,d,,none)"
    );
    // A restart replays nothing twice and still works (capture objects are created idempotently).
    drop(r);
    let r2 = Pipeline::spawn("replicator-again", &args).unwrap();
    r2.wait_streaming().await.unwrap();
    src.batch_execute(
        "ALTER TABLE tracked ADD COLUMN later int; INSERT INTO tracked (id, email, later) VALUES (5, 'e5', 5)",
    )
    .await
    .unwrap();
    wait_same_shape(&p, "tracked").await;
    p.wait_equal("public.tracked", "id").await.unwrap();
}

fn ddl_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    e2e::file_sink::json_lines(dir)
        .unwrap()
        .into_iter()
        .filter(|v| v["Type"] == "DDL")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_keep_their_own_ddl_and_json_sinks_show_it() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE one (id int PRIMARY KEY); CREATE TABLE two (id int PRIMARY KEY);")
        .await
        .unwrap();
    let mut procs = Vec::new();
    let mut dirs = Vec::new();
    for (group, table) in [("g1", "one"), ("g2", "two")] {
        let r = p
            .start_replicator_with(group, table, &["--track-ddl"])
            .await
            .unwrap();
        let dir = TempDir::new("pg-flo-ddl-json").unwrap();
        let w = Pipeline::spawn(
            &format!("worker-{group}"),
            &p.file_worker_args(group, dir.path()),
        )
        .unwrap();
        w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
            .await
            .unwrap();
        procs.push((r, w));
        dirs.push(dir);
    }
    let src = p.source().await.unwrap();
    src.batch_execute("ALTER TABLE one ADD COLUMN a int")
        .await
        .unwrap();
    src.batch_execute("ALTER TABLE two ADD COLUMN b int")
        .await
        .unwrap();
    src.batch_execute("CREATE INDEX two_b ON two (b)")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO one VALUES (1, 1); INSERT INTO two VALUES (1, 1);")
        .await
        .unwrap();
    let one = wait_for("g1's DDL in its file", ARRIVAL_TIMEOUT, || {
        let lines = ddl_lines(dirs[0].path());
        async move { (!lines.is_empty()).then_some(lines) }
    })
    .await
    .unwrap();
    let two = wait_for("g2's DDL in its file", ARRIVAL_TIMEOUT, || {
        let lines = ddl_lines(dirs[1].path());
        async move { (lines.len() >= 2).then_some(lines) }
    })
    .await
    .unwrap();
    // Give a wrongly routed message time to show up: both workers are caught up once the
    // inserts (committed after the DDL) are in their files.
    wait_for("both inserts written", ARRIVAL_TIMEOUT, || {
        let d0 = dirs[0].path().to_owned();
        let d1 = dirs[1].path().to_owned();
        async move {
            let has_insert = |d: &std::path::Path| {
                e2e::file_sink::whole_lines(d)
                    .iter()
                    .any(|l| l.contains("\"INSERT\""))
            };
            (has_insert(&d0) && has_insert(&d1)).then_some(())
        }
    })
    .await
    .unwrap();
    let one = ddl_lines(dirs[0].path()).len().max(one.len());
    assert_eq!(one, 1);
    let two_now = ddl_lines(dirs[1].path());
    assert_eq!(two_now.len(), 2, "{two:?}");
    let first = &two_now[0];
    assert_eq!(first["Table"], "two");
    assert_eq!(
        first["NewTuple"]["ddl_command"],
        "ALTER TABLE two ADD COLUMN b int"
    );
    assert_eq!(first["NewTuple"]["event_type"], "ddl_command_end");
    assert_eq!(
        two_now[1]["NewTuple"]["ddl_command"],
        "CREATE INDEX two_b ON two (b)"
    );
    let triggers: Vec<String> = src
        .query("SELECT evtname::text FROM pg_event_trigger ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        triggers,
        vec![
            "pg_flo_ddl_drop_g1",
            "pg_flo_ddl_drop_g2",
            "pg_flo_ddl_end_g1",
            "pg_flo_ddl_end_g2"
        ]
    );
}

async fn names(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_only_the_groups_objects() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);")
        .await
        .unwrap();
    let _keep = p
        .start_replicator_with("keep", "b", &["--track-ddl"])
        .await
        .unwrap();
    let mut r = p
        .start_replicator_with("gone", "a", &["--track-ddl", "--copy-and-stream"])
        .await
        .unwrap();
    // A running replicator's slot is refused.
    let mut cleanup_args = p.replicator_args("gone", "a");
    cleanup_args.extend([
        "--track-ddl".into(),
        "--copy-and-stream".into(),
        "--cleanup".into(),
    ]);
    let mut busy = Pipeline::spawn("cleanup-busy", &cleanup_args).unwrap();
    let status = busy.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(!status.success());
    assert!(
        busy.stderr().contains("stop it before --cleanup"),
        "{}",
        busy.stderr()
    );
    r.terminate().unwrap();
    assert!(r.wait_exit(ARRIVAL_TIMEOUT).await.unwrap().success());
    let mut c = Pipeline::spawn("cleanup", &cleanup_args).unwrap();
    let status = c.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(status.success(), "{}", c.output_dump());
    let src = p.source().await.unwrap();
    assert_eq!(
        names(
            &src,
            "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1"
        )
        .await,
        vec!["pg_flo_keep_publication"]
    );
    assert_eq!(
        names(&src, "SELECT pubname::text FROM pg_publication ORDER BY 1").await,
        vec!["pg_flo_keep_publication"]
    );
    assert_eq!(
        names(
            &src,
            "SELECT evtname::text FROM pg_event_trigger ORDER BY 1"
        )
        .await,
        vec!["pg_flo_ddl_drop_keep", "pg_flo_ddl_end_keep"]
    );
    assert_eq!(
        names(
            &src,
            "SELECT group_name FROM internal_pg_flo.ddl_tracked ORDER BY 1"
        )
        .await,
        vec!["keep"]
    );
    let jsz = e2e::http_get(p.nats.monitor_port(), "/jsz?streams=true")
        .await
        .unwrap();
    assert!(jsz.contains("pgflo_keep_stream"), "{jsz}");
    assert!(!jsz.contains("pgflo_gone_stream"), "{jsz}");
    assert!(!jsz.contains("pgflo_gone_state"), "{jsz}");
    // Running it again is harmless.
    let mut again = Pipeline::spawn("cleanup-again", &cleanup_args).unwrap();
    assert!(
        again.wait_exit(ARRIVAL_TIMEOUT).await.unwrap().success(),
        "{}",
        again.output_dump()
    );
}

async fn columns(c: &Client, table: &str) -> Vec<String> {
    c.query(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Connects to the source as `role` (password = role name) over TCP.
async fn connect_as(p: &Pipeline, role: &str) -> Client {
    let mut config = tokio_postgres::Config::new();
    config
        .user(role)
        .password(role)
        .dbname(&p.source_db)
        .host(p.pg.host())
        .port(p.pg.port());
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Starts a `--track-ddl` replicator for `tables` (with `extra` flags) and a postgres worker.
async fn tracked_pipeline(
    p: &Pipeline,
    group: &str,
    tables: &str,
    extra: &[&str],
) -> (e2e::Process, e2e::Process) {
    let args: Vec<&str> = ["--track-ddl"].iter().chain(extra).copied().collect();
    let r = p.start_replicator_with(group, tables, &args).await.unwrap();
    let w = p.start_pg_worker(group).await.unwrap();
    (r, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_ddl_messages_are_dropped_and_genuine_ones_replayed() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(
        "CREATE TABLE tracked (id int PRIMARY KEY, name text); \
         CREATE TABLE victim (id int PRIMARY KEY); INSERT INTO victim VALUES (1), (2);",
    )
    .await
    .unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("CREATE ROLE mallory LOGIN PASSWORD 'mallory'")
        .await
        .unwrap();
    let port = e2e::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let (r, w) = tracked_pipeline(&p, "trust", "tracked", &["--metrics-addr", &addr]).await;

    let mallory = connect_as(&p, "mallory").await;
    let forged = r#"{"v":2,"event_type":"ddl_command_end","object_type":"table","object_identity":"public.tracked","command_tag":"DROP TABLE","tag":"DROP TABLE","table":"public.tracked","query":"DROP TABLE public.victim","stmt":1,"nested":false,"xid":"0"}"#;
    // The shape earlier versions emitted, and the signed shape with a made-up MAC.
    for content in [
        forged.replace(",\"stmt\":1,\"nested\":false,\"xid\":\"0\"", ""),
        format!("{}{forged}", "ab".repeat(32)),
    ] {
        mallory
            .execute(
                "SELECT pg_logical_emit_message(true, 'pg_flo_ddl:trust', $1::text)",
                &[&content],
            )
            .await
            .unwrap();
    }
    // A genuine change in the same run still replicates, after the forged ones.
    src.batch_execute(
        "ALTER TABLE tracked ADD COLUMN age int; INSERT INTO tracked VALUES (1, 'a', 30)",
    )
    .await
    .unwrap();
    wait_same_shape(&p, "tracked").await;
    p.wait_equal("public.tracked", "id").await.unwrap();
    let dst = p.target().await.unwrap();
    assert_eq!(
        e2e::dump_table(&dst, "public.victim", "id").await.unwrap(),
        "(1)\n(2)"
    );
    // Mallory can neither read the key nor write the capture tables.
    for sql in [
        "SELECT secret FROM internal_pg_flo.ddl_keys",
        "INSERT INTO internal_pg_flo.ddl_tracked VALUES ('trust', 'public.victim')",
    ] {
        let e = mallory.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {e}"
        );
    }
    // Nor can a role that reads all data (row level security hides the key).
    src.batch_execute(
        "CREATE ROLE reader LOGIN PASSWORD 'reader'; GRANT pg_read_all_data TO reader",
    )
    .await
    .unwrap();
    let reader = connect_as(&p, "reader").await;
    let keys = reader
        .query("SELECT secret FROM internal_pg_flo.ddl_keys", &[])
        .await
        .unwrap();
    assert!(keys.is_empty());

    let metrics = e2e::http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("pg_flo_errors_total{kind=\"ddl_forged\"} 2"),
        "{metrics}"
    );
    let log = r.output_dump();
    assert_eq!(
        log.matches("dropping a DDL message the capture trigger did not produce")
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("victim"), "{log}");
    assert!(!w.output_dump().contains("victim"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_with_ddl_for_two_tables_replays_both() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(
        "CREATE TABLE customers (id int PRIMARY KEY); CREATE TABLE orders (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    let (_r, _w) = tracked_pipeline(&p, "two", "customers,orders", &[]).await;
    let src = p.source().await.unwrap();
    // A migration file sent as one simple query (the data after the DDL: a Relation change
    // in the middle of a transaction is another matter).
    src.batch_execute(
        "ALTER TABLE customers ADD COLUMN x int;\nALTER TABLE orders ADD COLUMN y int;\n\
         ALTER TABLE orders ADD COLUMN z text; ALTER TABLE customers RENAME COLUMN x TO xx;\n\
         CREATE INDEX orders_y ON orders (y);\n\
         INSERT INTO customers VALUES (1, 10); INSERT INTO orders VALUES (2, 20, 'z');",
    )
    .await
    .unwrap();
    wait_same_shape(&p, "customers").await;
    wait_same_shape(&p, "orders").await;
    p.wait_equal("public.customers", "id").await.unwrap();
    p.wait_equal("public.orders", "id").await.unwrap();
}

/// The position of the refused DDL named in the worker's error.
fn refused_lsn(stderr: &str) -> String {
    let at = stderr
        .find("at source position ")
        .unwrap_or_else(|| panic!("no refusal in: {stderr}"));
    stderr[at + "at source position ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_captured_statement_is_replayed_never_do_blocks_calls_or_dml() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(
        "CREATE TABLE t (id int PRIMARY KEY, v int); CREATE TABLE audit (n int); \
         CREATE PROCEDURE note_it() LANGUAGE sql AS $$ INSERT INTO audit VALUES (100) $$;",
    )
    .await
    .unwrap();
    let (_r, mut w) = tracked_pipeline(&p, "only", "t", &[]).await;
    let src = p.source().await.unwrap();
    let dst = p.target().await.unwrap();
    // DDL of the group's table among DDL of another table, DML and a CALL.
    src.batch_execute(
        "ALTER TABLE t ADD COLUMN c int; ALTER TABLE audit ADD COLUMN note text; \
         INSERT INTO audit VALUES (1); CALL note_it(); DELETE FROM audit WHERE n = 1; \
         INSERT INTO t VALUES (1, 10, 11);",
    )
    .await
    .unwrap();
    wait_same_shape(&p, "t").await;
    p.wait_equal("public.t", "id").await.unwrap();
    assert_eq!(columns(&dst, "audit").await, ["n"]);
    assert_eq!(e2e::count(&dst, "audit").await.unwrap(), 0);

    // DDL inside a DO block: its statement is not in the query, so nothing is replayed and
    // the worker stops with what to do.
    src.batch_execute(
        "DO $$ BEGIN ALTER TABLE t ADD COLUMN d int; INSERT INTO audit VALUES (2); END $$",
    )
    .await
    .unwrap();
    src.batch_execute("INSERT INTO t VALUES (2, 20, 21, 22)")
        .await
        .unwrap();
    let status = w.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(!status.success());
    let err = w.stderr();
    assert!(err.contains("cannot be replayed"), "{err}");
    assert!(
        err.contains("inside a function, DO block or procedure"),
        "{err}"
    );
    assert!(err.contains("internal_pg_flo.ddl_applied_by_hand"), "{err}");
    assert!(!err.contains("INSERT INTO audit"), "{err}");
    assert_eq!(e2e::count(&dst, "audit").await.unwrap(), 0);
    assert_eq!(columns(&dst, "t").await, ["id", "v", "c"]);
    // The way out the error names: apply it by hand, record it, restart.
    let lsn = refused_lsn(&err);
    dst.batch_execute(&format!(
        "ALTER TABLE t ADD COLUMN d int; \
         INSERT INTO internal_pg_flo.ddl_applied_by_hand (group_name, ddl_lsn) VALUES ('only', '{lsn}')"
    ))
    .await
    .unwrap();
    let _w2 = p.start_pg_worker("only").await.unwrap();
    p.wait_equal("public.t", "id").await.unwrap();
    assert_eq!(e2e::count(&dst, "audit").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_that_fails_in_the_target_stops_the_worker() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, a int, gone int)")
        .await
        .unwrap();
    // The target has drifted: no `gone` (already dropped there), no `a`.
    p.target()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let (_r, mut w) = tracked_pipeline(&p, "fails", "t", &[]).await;
    let src = p.source().await.unwrap();
    let dst = p.target().await.unwrap();
    // Dropping what the target no longer has is "already applied".
    src.batch_execute(
        "ALTER TABLE t DROP COLUMN gone; ALTER TABLE t DROP COLUMN a; INSERT INTO t VALUES (1)",
    )
    .await
    .unwrap();
    p.wait_equal("public.t", "id").await.unwrap();
    src.batch_execute("ALTER TABLE t ADD COLUMN a int")
        .await
        .unwrap();
    wait_same_shape(&p, "t").await;
    // A rename of a column the target lacks did not apply: the worker stops, nothing after
    // it is applied.
    dst.batch_execute("ALTER TABLE t DROP COLUMN a")
        .await
        .unwrap();
    src.batch_execute("ALTER TABLE t RENAME COLUMN a TO b; INSERT INTO t VALUES (2, 2)")
        .await
        .unwrap();
    let status = w.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(!status.success());
    let err = w.stderr();
    assert!(err.contains("applying DDL to \"public\".\"t\""), "{err}");
    assert!(err.contains("42703"), "{err}");
    assert_eq!(
        e2e::dump_table(&dst, "public.t", "id").await.unwrap(),
        "(1)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_functions_of_an_earlier_version_are_replaced() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    // What an earlier version installed: unsigned messages.
    p.source()
        .await
        .unwrap()
        .batch_execute(
            "CREATE SCHEMA internal_pg_flo;
             CREATE TABLE internal_pg_flo.ddl_tracked (group_name text NOT NULL,
               table_name text NOT NULL, PRIMARY KEY (group_name, table_name));
             CREATE TABLE internal_pg_flo.ddl_indexes (group_name text NOT NULL,
               index_name text NOT NULL, table_name text NOT NULL,
               PRIMARY KEY (group_name, index_name));
             INSERT INTO internal_pg_flo.ddl_tracked VALUES ('up', 'public.t');
             CREATE FUNCTION internal_pg_flo.ddl_end_up() RETURNS event_trigger LANGUAGE plpgsql
             SECURITY DEFINER SET search_path = pg_catalog AS $f$ BEGIN
               PERFORM pg_logical_emit_message(true, 'pg_flo_ddl:up', json_build_object(
                 'event_type', 'ddl_command_end', 'object_type', 'table',
                 'object_identity', 'public.t', 'command_tag', 'ALTER TABLE',
                 'table', 'public.t', 'query', current_query())::text);
             END $f$;
             CREATE EVENT TRIGGER pg_flo_ddl_end_up ON ddl_command_end
               EXECUTE FUNCTION internal_pg_flo.ddl_end_up();",
        )
        .await
        .unwrap();
    let port = e2e::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let (_r, _w) = tracked_pipeline(&p, "up", "t", &["--metrics-addr", &addr]).await;
    let src = p.source().await.unwrap();
    src.batch_execute("ALTER TABLE t ADD COLUMN x int; INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    wait_same_shape(&p, "t").await;
    p.wait_equal("public.t", "id").await.unwrap();
    let metrics = e2e::http_get(port, "/metrics").await.unwrap();
    assert!(!metrics.contains("ddl_forged"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_objects_of_another_role_are_refused() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    // A role that is not a superuser got there first: it could read or replace the key.
    p.source()
        .await
        .unwrap()
        .batch_execute(
            "CREATE ROLE mallory LOGIN; CREATE SCHEMA internal_pg_flo AUTHORIZATION mallory",
        )
        .await
        .unwrap();
    let mut args = p.replicator_args("owned", "t");
    args.push("--track-ddl".into());
    let mut r = Pipeline::spawn("replicator", &args).unwrap();
    let status = r.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(!status.success());
    let err = r.stderr();
    assert!(
        err.contains("DDL tracking refused: schema internal_pg_flo (owner mallory) must belong to a superuser"),
        "{err}"
    );
    let triggers = names(
        &p.source().await.unwrap(),
        "SELECT evtname::text FROM pg_event_trigger",
    )
    .await;
    assert!(triggers.is_empty(), "{triggers:?}");
}
