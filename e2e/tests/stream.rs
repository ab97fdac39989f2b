//! End-to-end: the real `pg_flo` binaries stream changes from a real PostgreSQL through a real
//! NATS JetStream into the postgres and file sinks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashMap;
use std::time::Duration;

use e2e::{
    count, dump_table, wait_for, wait_for_eq, PgOptions, Pipeline, TempDir, ARRIVAL_TIMEOUT,
};

const USERS: &str = "CREATE TABLE public.users (
    id serial PRIMARY KEY, name text, email text, score int, bio text
)";

/// Reads every JSON line the file sink wrote.
fn file_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    e2e::file_sink::json_lines(dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_updates_deletes_reach_file_and_postgres_sinks_exactly() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(USERS).await.unwrap();
    // Two groups on the same table: one feeds the file sink, one the postgres sink.
    let _rf = p.start_replicator("files", "users").await.unwrap();
    let _rp = p.start_replicator("rows", "users").await.unwrap();
    let out = TempDir::new("pg-flo-file-sink").unwrap();
    let _wf = Pipeline::spawn("worker-files", &p.file_worker_args("files", out.path())).unwrap();
    let _wp = p.start_pg_worker("rows").await.unwrap();

    let src = p.source().await.unwrap();
    for i in 1..=1000 {
        src.execute(
            "INSERT INTO users (name, email, score) VALUES ($1, $2, $3)",
            &[&format!("user{i}"), &format!("user{i}@example.com"), &i],
        )
        .await
        .unwrap();
    }
    for i in 1..=500 {
        src.execute("UPDATE users SET score = score + 1000 WHERE id = $1", &[&i])
            .await
            .unwrap();
    }
    for i in 751..=1000 {
        src.execute("DELETE FROM users WHERE id = $1", &[&i])
            .await
            .unwrap();
    }

    p.wait_equal("public.users", "id").await.unwrap();
    assert_eq!(
        count(&p.target().await.unwrap(), "public.users")
            .await
            .unwrap(),
        750
    );

    let counts = wait_for("file sink to hold 1750 changes", ARRIVAL_TIMEOUT, || {
        let lines = file_lines(out.path());
        async move {
            let mut c: HashMap<String, usize> = HashMap::new();
            for l in &lines {
                *c.entry(l["Type"].as_str().unwrap().to_owned()).or_default() += 1;
            }
            (lines.len() >= 1750).then_some(c)
        }
    })
    .await
    .unwrap();
    assert_eq!(counts.get("INSERT"), Some(&1000));
    assert_eq!(counts.get("UPDATE"), Some(&500));
    assert_eq!(counts.get("DELETE"), Some(&250));
    assert_eq!(counts.len(), 3);

    let lines = file_lines(out.path());
    let first = &lines[0];
    assert_eq!(first["Schema"], "public");
    assert_eq!(first["Table"], "users");
    assert_eq!(first["NewTuple"]["id"], 1);
    assert_eq!(first["NewTuple"]["name"], "user1");
    assert_eq!(first["NewTuple"]["bio"], serde_json::Value::Null);
    assert_eq!(first["ReplicationKey"]["Type"], "PRIMARY KEY");
    assert_eq!(
        first["ReplicationKey"]["Columns"],
        serde_json::json!(["id"])
    );
    let delete = lines.iter().find(|l| l["Type"] == "DELETE").unwrap();
    assert_eq!(delete["OldTuple"]["id"], 751);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_transaction_is_applied_atomically() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        .await
        .unwrap();
    let _r = p.start_replicator("bank", "accounts").await.unwrap();
    let _w = p.start_pg_worker("bank").await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 20) g")
        .await
        .unwrap();
    p.wait_equal("public.accounts", "id").await.unwrap();

    // A reader on the target checks the invariant while transfers run on the source.
    let target = p.target().await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = tokio::spawn(async move {
        let mut checks = 0u64;
        let mut bad = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let row = target
                .query_one("SELECT sum(balance)::bigint, count(*) FROM accounts", &[])
                .await
                .unwrap();
            let (sum, n): (i64, i64) = (row.get(0), row.get(1));
            if sum != 20_000 || n != 20 {
                bad.push((sum, n));
            }
            checks += 1;
        }
        (checks, bad)
    });
    for i in 0..300 {
        let from = i % 20 + 1;
        let to = (i * 7) % 20 + 1;
        src.batch_execute(&format!(
            "BEGIN; UPDATE accounts SET balance = balance - 7 WHERE id = {from};
             UPDATE accounts SET balance = balance + 7 WHERE id = {to}; COMMIT;"
        ))
        .await
        .unwrap();
    }
    p.wait_equal("public.accounts", "id").await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checks, bad) = reader.await.unwrap();
    assert!(checks > 10, "the reader ran only {checks} checks");
    assert_eq!(
        bad,
        Vec::<(i64, i64)>::new(),
        "reader saw a half-applied transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_empty_strings_toast_key_changes_identities_and_truncate() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, note text);
         CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
         CREATE TABLE uniq (code text NOT NULL, v text);
         CREATE UNIQUE INDEX uniq_code ON uniq (code);
         ALTER TABLE uniq REPLICA IDENTITY USING INDEX uniq_code;
         CREATE TABLE fullrows (x int, y text, z jsonb);
         ALTER TABLE fullrows REPLICA IDENTITY FULL;
         CREATE TABLE gone (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    let _r = p
        .start_replicator("kinds", "docs,pairs,uniq,fullrows,gone")
        .await
        .unwrap();
    let _w = p.start_pg_worker("kinds").await.unwrap();
    let src = p.source().await.unwrap();
    // A value far beyond the TOAST threshold, not compressible to inline size.
    src.batch_execute(
        "INSERT INTO docs SELECT g, 'title' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 4000) i), 'n'
           FROM generate_series(1, 3) g;
         UPDATE docs SET note = NULL WHERE id = 1;
         UPDATE docs SET note = '' WHERE id = 2;
         UPDATE docs SET title = 'still toasted' WHERE id = 3;
         UPDATE docs SET body = 'short now' WHERE id = 2;
         UPDATE docs SET id = 30 WHERE id = 3;
         INSERT INTO pairs VALUES (1, 'a', 'x'), (1, 'b', 'y'), (2, 'a', 'z');
         UPDATE pairs SET v = 'changed' WHERE a = 1 AND b = 'b';
         DELETE FROM pairs WHERE a = 1 AND b = 'a';
         UPDATE pairs SET b = 'c' WHERE a = 2;
         INSERT INTO uniq VALUES ('k1', 'one'), ('k2', 'two');
         UPDATE uniq SET v = 'uno' WHERE code = 'k1';
         DELETE FROM uniq WHERE code = 'k2';
         INSERT INTO fullrows VALUES (1, 'same', '{\"a\": 1}'), (1, 'same', '{\"a\": 1}'), (2, NULL, NULL);
         DELETE FROM fullrows WHERE x = 1 AND ctid = (SELECT min(ctid) FROM fullrows WHERE x = 1);
         UPDATE fullrows SET y = 'was null' WHERE x = 2;
         INSERT INTO gone SELECT generate_series(1, 10);",
    )
    .await
    .unwrap();
    for (table, order) in [
        ("public.docs", "id"),
        ("public.pairs", "a, b"),
        ("public.uniq", "code"),
        ("public.fullrows", "x, y"),
        ("public.gone", "id"),
    ] {
        p.wait_equal(table, order).await.unwrap();
    }
    let t = p.target().await.unwrap();
    let row = t
        .query_one(
            "SELECT note IS NULL, length(body) FROM docs WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i32>(1), 128_000);
    let row = t
        .query_one("SELECT note, body FROM docs WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), Some(String::new()));
    assert_eq!(row.get::<_, String>(1), "short now");
    let row = t
        .query_one("SELECT title, length(body) FROM docs WHERE id = 30", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "still toasted");
    assert_eq!(row.get::<_, i32>(1), 128_000);

    src.batch_execute("TRUNCATE gone").await.unwrap();
    p.wait_equal("public.gone", "id").await.unwrap();
    assert_eq!(count(&t, "public.gone").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_on_one_database_replicate_their_own_tables() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE orders (id int PRIMARY KEY, v text); CREATE TABLE items (id int PRIMARY KEY, v text);")
        .await
        .unwrap();
    let _ro = p.start_replicator("orders-group", "orders").await.unwrap();
    let _wo = p.start_pg_worker("orders-group").await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute("INSERT INTO orders VALUES (1, 'o1'); INSERT INTO items VALUES (1, 'i1');")
        .await
        .unwrap();
    p.wait_equal("public.orders", "id").await.unwrap();
    let t = p.target().await.unwrap();
    // The items group is not running: its table stays empty in the target.
    assert_eq!(count(&t, "public.items").await.unwrap(), 0);
    let _ri = p.start_replicator("items-group", "items").await.unwrap();
    let _wi = p.start_pg_worker("items-group").await.unwrap();
    src.batch_execute("INSERT INTO items VALUES (2, 'i2'); INSERT INTO orders VALUES (2, 'o2');")
        .await
        .unwrap();
    p.wait_equal("public.orders", "id").await.unwrap();
    // The items slot was created after the first insert, so only row 2 streams.
    wait_for_eq("items row 2", ARRIVAL_TIMEOUT, "(2,i2)".to_owned(), || {
        dump_table(&t, "public.items", "id")
    })
    .await
    .unwrap();
    let slots = src
        .query(
            "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = slots.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        vec![
            "pg_flo_items_group_publication".to_owned(),
            "pg_flo_orders_group_publication".to_owned()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_to_source_and_target() {
    let p = Pipeline::start(PgOptions::tls()).await.unwrap();
    p.both(USERS).await.unwrap();
    let _r = p.start_replicator("secure", "users").await.unwrap();
    let _w = p.start_pg_worker("secure").await.unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO users (name) VALUES ('over tls'), ('twice')")
        .await
        .unwrap();
    p.wait_equal("public.users", "id").await.unwrap();
    assert_eq!(
        count(&p.target().await.unwrap(), "public.users")
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_sync_schema_and_metrics_endpoints() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    // Only the source has the table: --target-sync-schema creates it in the target.
    p.source()
        .await
        .unwrap()
        .batch_execute(USERS)
        .await
        .unwrap();
    let (rport, wport) = (e2e::free_port().unwrap(), e2e::free_port().unwrap());
    let mut rargs = p.replicator_args("synced", "users");
    rargs.extend(["--metrics-addr".into(), format!("127.0.0.1:{rport}")]);
    let r = Pipeline::spawn("replicator", &rargs).unwrap();
    r.wait_streaming().await.unwrap();
    let mut wargs = p.pg_worker_args("synced");
    wargs.extend([
        "--target-sync-schema".into(),
        "--source-host".into(),
        p.pg.host().into(),
        "--source-port".into(),
        p.pg.port().to_string(),
        "--source-dbname".into(),
        p.source_db.clone(),
        "--source-user".into(),
        p.pg.user().into(),
        "--source-password".into(),
        p.pg.password().into(),
        "--source-sslmode".into(),
        "disable".into(),
        "--metrics-addr".into(),
        format!("127.0.0.1:{wport}"),
    ]);
    let w = Pipeline::spawn("worker", &wargs).unwrap();
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    // Two source transactions (a multi-statement simple query is one transaction).
    src.batch_execute("INSERT INTO users (name) VALUES ('a'), ('b')")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO users (name) VALUES ('c')")
        .await
        .unwrap();
    p.wait_equal("public.users", "id").await.unwrap();

    let metrics = wait_for(
        "worker metrics to count 3 applied changes",
        ARRIVAL_TIMEOUT,
        || async {
            let m = e2e::http_get(wport, "/metrics").await.unwrap();
            m.contains("pg_flo_worker_changes_applied_total 3")
                .then_some(m)
        },
    )
    .await
    .unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("pg_flo_worker_messages_total{outcome=\"applied\"} 2"),
        "{metrics}"
    );
    let rmetrics = e2e::http_get(rport, "/metrics").await.unwrap();
    assert!(
        rmetrics.contains("pg_flo_replicator_changes_published_total 3"),
        "{rmetrics}"
    );
    assert!(
        rmetrics.contains("pg_flo_replicator_transactions_total 2"),
        "{rmetrics}"
    );
    // Publish bookkeeping: two messages, their bytes and acknowledgement times, none in flight.
    assert!(
        rmetrics.contains("pg_flo_replicator_publish_duration_seconds_count 2"),
        "{rmetrics}"
    );
    assert!(metric(&rmetrics, "pg_flo_replicator_bytes_published_total") > 100.0);
    assert_eq!(metric(&rmetrics, "pg_flo_replicator_in_flight"), 0.0);
    // The slot's health is read every 5 s: retained WAL, wal_status, no WAL size limit.
    let rmetrics = wait_for("the slot reading", ARRIVAL_TIMEOUT, || async {
        let m = e2e::http_get(rport, "/metrics").await.unwrap();
        m.contains("pg_flo_replicator_slot_wal_status{status=\"reserved\"} 1")
            .then_some(m)
    })
    .await
    .unwrap();
    assert!(metric(&rmetrics, "pg_flo_replicator_slot_retained_bytes") > 0.0);
    assert_eq!(
        metric(&rmetrics, "pg_flo_replicator_slot_safe_wal_size_bytes"),
        -1.0
    );
    assert!(
        rmetrics.contains("pg_flo_replicator_slot_wal_status{status=\"lost\"} 0"),
        "{rmetrics}"
    );
    // End-to-end lag: observed at each sink commit of streamed transactions.
    assert!(
        metric(&metrics, "pg_flo_worker_lag_seconds_count") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "pg_flo_worker_lag_seconds_sum") < 60.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "pg_flo_worker_held_messages"), 0.0);
    // Every outcome exists from the start, so that increase() sees the first dead letter.
    assert!(
        metrics.contains("pg_flo_worker_messages_total{outcome=\"dead_lettered\"} 0"),
        "{metrics}"
    );
    // Readiness as a gauge, the same as /readyz.
    assert_eq!(metric(&metrics, "pg_flo_ready"), 1.0);
    assert_eq!(metric(&rmetrics, "pg_flo_ready"), 1.0);
    for (m, what) in [(&metrics, "worker"), (&rmetrics, "replicator")] {
        assert!(
            m.contains(&format!(
                "pg_flo_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{what}: {m}"
        );
        let hash = m
            .lines()
            .find_map(|l| l.strip_prefix("pg_flo_config_info{hash=\""))
            .unwrap_or_else(|| panic!("{what}: no pg_flo_config_info in {m}"));
        assert!(hash.ends_with("\"} 1") && hash.len() == 16 + 4, "{hash}");
    }
    assert!(e2e::http_get(rport, "/healthz")
        .await
        .unwrap()
        .ends_with("ok\n"));
    assert!(e2e::http_get(wport, "/readyz")
        .await
        .unwrap()
        .ends_with("ready\n"));
    assert!(e2e::http_get(wport, "/nope")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_advances_with_traffic_and_while_the_group_is_idle() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY);")
        .await
        .unwrap();
    let _r = p.start_replicator("slot", "watched").await.unwrap();
    let _w = p.start_pg_worker("slot").await.unwrap();
    let src = p.source().await.unwrap();
    let confirmed_reaches = |target: String| {
        let src = &src;
        async move {
            wait_for(
                &format!("confirmed_flush_lsn to reach {target}"),
                ARRIVAL_TIMEOUT,
                || {
                    let target = target.clone();
                    async move {
                        let row = src
                            .query_one(
                                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots
                                 WHERE slot_name = 'pg_flo_slot_publication'",
                                &[&target],
                            )
                            .await
                            .unwrap();
                        row.get::<_, bool>(0).then_some(())
                    }
                },
            )
            .await
            .unwrap();
        }
    };
    // Traffic for the group: confirmed once published (and, here, applied).
    src.batch_execute("INSERT INTO watched SELECT generate_series(1, 100)")
        .await
        .unwrap();
    let after_insert: String = src
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    p.wait_equal("public.watched", "id").await.unwrap();
    confirmed_reaches(after_insert).await;
    // WAL the group does not publish (another table): the slot still moves on, from the
    // server's keepalives, so an idle group does not hold back WAL.
    for i in 0..50 {
        src.execute("INSERT INTO other VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let after_other: String = src
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    confirmed_reaches(after_other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_a_ca_file() {
    let mut p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.nats = e2e::NatsServer::start_tls().await.unwrap();
    let ca = p.nats.ca_cert_path().unwrap().display().to_string();
    p.both(USERS).await.unwrap();
    // Without the CA the server's certificate cannot be verified: a clear error, not a hang.
    let mut args = p.replicator_args("tls", "users");
    args.extend(["--nats-connect-timeout".into(), "2s".into()]);
    let mut refused = Pipeline::spawn("replicator-no-ca", &args).unwrap();
    let status = refused.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(!status.success());
    assert!(
        refused.stderr().contains("could not connect to NATS"),
        "{}",
        refused.stderr()
    );

    let mut args = p.replicator_args("tls", "users");
    args.extend(["--nats-ca-file".into(), ca.clone()]);
    let r = Pipeline::spawn("replicator", &args).unwrap();
    r.wait_streaming().await.unwrap();
    let mut wargs = p.pg_worker_args("tls");
    wargs.extend(["--nats-ca-file".into(), ca]);
    let w = Pipeline::spawn("worker", &wargs).unwrap();
    w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute("INSERT INTO users (name) VALUES ('over tls')")
        .await
        .unwrap();
    p.wait_equal("public.users", "id").await.unwrap();
}

/// The worker commits as soon as nothing more is ready to read, not after `--flush-interval`
/// (an hour here: with the old policy no change would arrive within the test), and never
/// inside a source transaction, even when it goes idle between that transaction's messages
/// (one change per NATS message here): a reader on the target never sees part of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_commits_at_once_but_never_part_of_a_transaction() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE batches (id int PRIMARY KEY, tx int NOT NULL)")
        .await
        .unwrap();
    let _r = p
        .start_replicator_with("idle", "batches", &["--max-batch-changes", "1"])
        .await
        .unwrap();
    let mut args = p.pg_worker_args("idle");
    args.extend(["--flush-interval".into(), "1h".into()]);
    let w = Pipeline::spawn("worker-idle", &args).unwrap();
    w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    let target = p.target().await.unwrap();

    // A lone change arrives although the flush interval is an hour.
    src.batch_execute("INSERT INTO batches VALUES (0, 0)")
        .await
        .unwrap();
    wait_for_eq("the lone change", ARRIVAL_TIMEOUT, 1, || {
        count(&target, "public.batches")
    })
    .await
    .unwrap();

    // Transactions of 200 rows, one NATS message per row: counts seen are whole transactions.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader_target = p.target().await.unwrap();
    let reader = tokio::spawn(async move {
        let (mut checks, mut partial) = (0u64, Vec::new());
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let n = count(&reader_target, "public.batches").await.unwrap();
            if (n - 1) % 200 != 0 {
                partial.push(n);
            }
            checks += 1;
        }
        (checks, partial)
    });
    for tx in 1..=5 {
        src.batch_execute(&format!(
            "INSERT INTO batches SELECT g, {tx} FROM generate_series({}, {}) g",
            (tx - 1) * 200 + 1,
            tx * 200
        ))
        .await
        .unwrap();
    }
    wait_for_eq("five transactions", ARRIVAL_TIMEOUT, 1001, || {
        count(&target, "public.batches")
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checks, partial) = reader.await.unwrap();
    assert!(checks > 10, "the reader ran only {checks} checks");
    assert_eq!(
        partial,
        Vec::<i64>::new(),
        "reader saw part of a transaction"
    );
    p.wait_equal("public.batches", "id").await.unwrap();
}

/// The value of the sample `name` (without labels) in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    e2e::metric_sample(text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
}
