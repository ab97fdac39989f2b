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
    r.wait_for_output("streaming changes", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
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
    r2.wait_for_output("streaming changes", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
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
        let mut args = p.replicator_args(group, table);
        args.push("--track-ddl".into());
        let r = Pipeline::spawn(&format!("replicator-{group}"), &args).unwrap();
        r.wait_for_output("streaming changes", ARRIVAL_TIMEOUT)
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
    let mut keep_args = p.replicator_args("keep", "b");
    keep_args.push("--track-ddl".into());
    let _keep = Pipeline::spawn("replicator-keep", &keep_args).unwrap();
    let mut args = p.replicator_args("gone", "a");
    args.extend(["--track-ddl".into(), "--copy-and-stream".into()]);
    let mut r = Pipeline::spawn("replicator-gone", &args).unwrap();
    r.wait_for_output("streaming changes", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    _keep
        .wait_for_output("streaming changes", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    // A running replicator's slot is refused.
    let mut cleanup_args = args.clone();
    cleanup_args.push("--cleanup".into());
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
