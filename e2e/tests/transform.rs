//! End-to-end: rules and routing between the stream and the sink.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use e2e::{dump_table, wait_for_eq, PgOptions, Pipeline, TempDir, ARRIVAL_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_renames_tables_and_columns_in_the_target() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text, email text);
             CREATE TABLE orders (id int PRIMARY KEY, user_id int, total numeric);
             CREATE TABLE audit (id int PRIMARY KEY, what text);",
        )
        .await
        .unwrap();
    // A pre-created target schema with the routed names.
    p.target()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE customers (customer_id int PRIMARY KEY, full_name text, email text);
             CREATE TABLE purchases (id int PRIMARY KEY, customer int, amount numeric);
             CREATE TABLE audit (id int PRIMARY KEY, what text);",
        )
        .await
        .unwrap();
    let dir = TempDir::new("pg-flo-routing").unwrap();
    let routes = dir.path().join("routing.yaml");
    std::fs::write(
        &routes,
        "users:\n  source_table: users\n  destination_table: customers\n  column_mappings:\n    - source: id\n      destination: customer_id\n    - source: name\n      destination: full_name\n\
         orders:\n  destination_table: purchases\n  column_mappings:\n    - {source: user_id, destination: customer}\n    - {source: total, destination: amount}\n  operations: [INSERT, UPDATE]\n\
         audit:\n  operations: [INSERT]\n",
    )
    .unwrap();
    let _r = p
        .start_replicator("routed", "users,orders,audit")
        .await
        .unwrap();
    let mut args = p.pg_worker_args("routed");
    args.extend(["--routing-config".into(), routes.display().to_string()]);
    let w = Pipeline::spawn("worker", &args).unwrap();
    w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    for sql in [
        "INSERT INTO users VALUES (1, 'Ann', 'ann@example.com'), (2, 'Bob', 'bob@example.com'), (3, 'Cy', NULL)",
        "UPDATE users SET name = 'Ann B' WHERE id = 1",
        "UPDATE users SET id = 20 WHERE id = 2",
        "DELETE FROM users WHERE id = 3",
        "INSERT INTO orders VALUES (1, 1, 9.99), (2, 20, 5)",
        "UPDATE orders SET total = 10.50 WHERE id = 1",
        // Routes for orders and audit exclude DELETE: these never reach the target.
        "DELETE FROM orders WHERE id = 2",
        "INSERT INTO audit VALUES (1, 'a'), (2, 'b')",
        "UPDATE audit SET what = 'changed' WHERE id = 1",
        "DELETE FROM audit WHERE id = 2",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    let dst = p.target().await.unwrap();
    wait_for_eq(
        "audit rows (insert only)",
        ARRIVAL_TIMEOUT,
        "(1,a)\n(2,b)".to_owned(),
        || dump_table(&dst, "public.audit", "id"),
    )
    .await
    .unwrap();
    assert_eq!(
        dump_table(&dst, "public.customers", "customer_id")
            .await
            .unwrap(),
        "(1,\"Ann B\",ann@example.com)\n(20,Bob,bob@example.com)"
    );
    assert_eq!(
        dump_table(&dst, "public.purchases", "id").await.unwrap(),
        "(1,1,10.50)\n(2,20,5)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_routing_file_stops_the_worker_with_every_problem() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    let dir = TempDir::new("pg-flo-routing-bad").unwrap();
    let routes = dir.path().join("routing.yaml");
    std::fs::write(
        &routes,
        "users:\n  operations: [INSERT, UPSERT]\n  column_mappings:\n    - {source: a}\n",
    )
    .unwrap();
    let mut args = p.pg_worker_args("bad");
    args.extend(["--routing-config".into(), routes.display().to_string()]);
    let mut w = Pipeline::spawn("worker", &args).unwrap();
    let status = w.wait_exit(ARRIVAL_TIMEOUT).await.unwrap();
    assert!(!status.success());
    let err = w.stderr();
    assert!(err.contains(&routes.display().to_string()), "{err}");
    assert!(err.contains("UPSERT"), "{err}");
    assert!(err.contains("destination"), "{err}");
}

fn json_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    e2e::file_sink::json_lines(dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_mask_rewrite_filter_and_exclude_before_the_sink() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.source()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE people (id int PRIMARY KEY, name text, phone text, secret text);
             CREATE TABLE orders (id int PRIMARY KEY, amount numeric, placed timestamptz, vip boolean);",
        )
        .await
        .unwrap();
    let dir = TempDir::new("pg-flo-rules").unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        r#"tables:
  people:
    - type: transform
      column: name
      parameters: {type: mask, mask_char: "*"}
    - type: transform
      column: phone
      parameters: {type: regex, pattern: '(\d{3})-(\d{4})', replace: 'XXX-$2'}
    - type: exclude_column
      column: secret
  orders:
    - type: filter
      column: amount
      parameters: {operator: gte, value: 100}
      operations: [INSERT]
    - type: filter
      column: placed
      parameters: {operator: lt, value: "2024-06-01T00:00:00+02:00"}
      operations: [INSERT]
unknown_top_level: 1
"#,
    )
    .unwrap();
    let _r = p.start_replicator("ruled", "people,orders").await.unwrap();
    let out = TempDir::new("pg-flo-rules-out").unwrap();
    let mut args = p.file_worker_args("ruled", out.path());
    args.extend(["--rules-config".into(), rules.display().to_string()]);
    let w = Pipeline::spawn("worker", &args).unwrap();
    w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    assert!(w.stderr().contains("unknown_top_level"), "{}", w.stderr());
    let src = p.source().await.unwrap();
    for sql in [
        "INSERT INTO people VALUES (1, 'Zoë Ångström', '555-1234', 'hunter2')",
        "UPDATE people SET phone = '555-9876' WHERE id = 1",
        "DELETE FROM people WHERE id = 1",
        // Kept: amount >= 100 and placed before 2024-05-31 22:00 UTC.
        "INSERT INTO orders VALUES (1, 100.00, '2024-05-31 21:59:59+00', true)",
        // Dropped: amount too small.
        "INSERT INTO orders VALUES (2, 99.99, '2024-01-01 00:00:00+00', false)",
        // Dropped: placed at 2024-05-31 22:00 UTC = 2024-06-01 00:00+02, not before it.
        "INSERT INTO orders VALUES (3, 500, '2024-06-01 00:00:00+02', false)",
        // The filters only apply to INSERT: this update of a dropped row still flows.
        "UPDATE orders SET amount = 1 WHERE id = 2",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    let lines = e2e::wait_for("6 changes in the file sink", ARRIVAL_TIMEOUT, || {
        let lines = json_lines(out.path());
        async move { (lines.len() >= 5).then_some(lines) }
    })
    .await
    .unwrap();
    let summary: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {}",
                l["Type"],
                l["Table"],
                l["NewTuple"].to_string() + &l["OldTuple"].to_string()
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            r#""INSERT" "people" {"id":1,"name":"Z**********m","phone":"XXX-1234"}null"#,
            r#""UPDATE" "people" {"id":1,"name":"Z**********m","phone":"XXX-9876"}null"#,
            r#""DELETE" "people" null{"id":1,"name":null,"phone":null}"#,
            r#""INSERT" "orders" {"amount":100.0,"id":1,"placed":"2024-05-31T21:59:59Z","vip":true}null"#,
            r#""UPDATE" "orders" {"amount":1,"id":2,"placed":"2024-01-01T00:00:00Z","vip":false}null"#,
        ]
    );
}
