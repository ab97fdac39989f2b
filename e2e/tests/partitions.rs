//! End-to-end: partitioned tables. The group's publication publishes partitions via their root
//! (`publish_via_partition_root`), so copied and streamed rows of a partitioned table carry the
//! root's name, and its rules and routes apply to every row, whichever partition holds it,
//! including partitions created or attached while the replicator streams. A partition named on
//! its own is published under its own name; naming it next to its root is refused; a
//! publication of an earlier version is switched over and its backlog (WAL that still names the
//! partitions) renamed to the root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::PathBuf;

use e2e::{dump_table, wait_for_eq, PgOptions, Pipeline, TempDir, ARRIVAL_TIMEOUT};
use tokio_postgres::Client;

/// `customers`, partitioned by LIST (region); `us` is itself partitioned by RANGE (id).
const CUSTOMERS: &str = "
    CREATE TABLE customers (id int, region text, name text, email text, ssn text,
                            PRIMARY KEY (id, region)) PARTITION BY LIST (region);
    CREATE TABLE customers_eu PARTITION OF customers FOR VALUES IN ('eu');
    CREATE TABLE customers_us PARTITION OF customers FOR VALUES IN ('us') PARTITION BY RANGE (id);
    CREATE TABLE customers_us_low PARTITION OF customers_us FOR VALUES FROM (0) TO (1000);";

/// Mask `email`, drop `ssn`.
const RULES: &str = r#"tables:
  customers:
    - type: transform
      column: email
      parameters: {type: mask, mask_char: "*"}
    - type: exclude_column
      column: ssn
"#;

/// `customers` -> `clients`, `name` -> `full_name`.
const ROUTES: &str = "customers:
  destination_table: clients
  column_mappings:
    - {source: name, destination: full_name}
";

/// The rules' mask: first and last character kept, every other one `*`.
fn masked(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    out.push(chars[0]);
    out.push_str(&"*".repeat(chars.len() - 2));
    out.push(chars[chars.len() - 1]);
    out
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn run_all(c: &Client, statements: &[&str]) {
    for sql in statements {
        c.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn publication_members(c: &Client, publication: &str) -> Vec<String> {
    c.query(
        "SELECT c.relname::text FROM pg_publication_rel pr
         JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid
         WHERE p.pubname = $1 ORDER BY 1",
        &[&publication],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The observed case: a mask and an excluded column on a partitioned table, plus a route.
/// Copied rows, streamed rows of partitions that existed at start, of a partition created and
/// of one attached while streaming, a row moving between partitions, updates and deletes: the
/// target holds exactly the masked rows, no SSN, under the routed names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_routes_apply_to_every_partition_in_copy_and_stream() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(CUSTOMERS).await.unwrap();
    src.batch_execute(
        "INSERT INTO customers VALUES
           (1, 'eu', 'Ann', 'ann@example.com', '111-11-1111'),
           (2, 'us', 'Bob', 'bob@example.com', '222-22-2222'),
           (6, 'eu', 'Gus', 'gus@example.com', '777-77-7777'),
           (7, 'us', 'Hal', 'hal@example.com', '888-88-8888')",
    )
    .await
    .unwrap();
    p.target()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE clients (id int, region text, full_name text, email text, ssn text,
                                   PRIMARY KEY (id, region))",
        )
        .await
        .unwrap();
    let dir = TempDir::new("pg-flo-partitions").unwrap();
    let rules = write(&dir, "rules.yaml", RULES);
    let routes = write(&dir, "routing.yaml", ROUTES);
    let mut wargs = p.pg_worker_args("parts");
    wargs.extend([
        "--rules-config".into(),
        rules.display().to_string(),
        "--routing-config".into(),
        routes.display().to_string(),
    ]);
    let w = Pipeline::spawn("worker", &wargs).unwrap();
    w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    let _r = p
        .start_replicator_with(
            "parts",
            "customers",
            &["--copy-and-stream", "--max-copy-workers-per-table", "2"],
        )
        .await
        .unwrap();
    let dst = p.target().await.unwrap();
    let row = |id: i32, region: &str, name: &str, email: &str| {
        format!("({id},{region},{name},{},)", masked(email))
    };
    // The copy: every row masked, no SSN.
    wait_for_eq(
        "copied rows",
        ARRIVAL_TIMEOUT,
        [
            row(1, "eu", "Ann", "ann@example.com"),
            row(2, "us", "Bob", "bob@example.com"),
            row(6, "eu", "Gus", "gus@example.com"),
            row(7, "us", "Hal", "hal@example.com"),
        ]
        .join("\n"),
        || dump_table(&dst, "public.clients", "id"),
    )
    .await
    .unwrap();
    run_all(
        &src,
        &[
            "INSERT INTO customers VALUES (3, 'eu', 'Cy', 'cy@example.com', '333-33-3333'),
                                          (4, 'us', 'Di', 'di@example.com', '444-44-4444')",
            // A partition created while streaming.
            "CREATE TABLE customers_us_high PARTITION OF customers_us FOR VALUES FROM (1000) TO (MAXVALUE)",
            "INSERT INTO customers VALUES (1001, 'us', 'Ed', 'ed@example.com', '555-55-5555')",
            // A table attached as a partition while streaming.
            "CREATE TABLE customers_apac (LIKE customers INCLUDING ALL)",
            "ALTER TABLE customers ATTACH PARTITION customers_apac FOR VALUES IN ('apac')",
            "INSERT INTO customers VALUES (5, 'apac', 'Fay', 'fay@example.com', '666-66-6666')",
            // Writes straight into partitions.
            "INSERT INTO customers_eu VALUES (8, 'eu', 'Ida', 'ida@example.com', '999-99-9999')",
            "UPDATE customers_us_low SET ssn = '000-00-0000', email = 'hal@new.example' WHERE id = 7",
            "UPDATE customers SET email = 'ann@new.example' WHERE id = 1",
            // A row moving between partitions (a delete and an insert under the root).
            "UPDATE customers SET region = 'us' WHERE id = 3",
            "DELETE FROM customers WHERE id = 2",
            "UPDATE customers SET name = 'Fay B' WHERE id = 5",
        ],
    )
    .await;
    let expected = [
        row(1, "eu", "Ann", "ann@new.example"),
        row(3, "us", "Cy", "cy@example.com"),
        row(4, "us", "Di", "di@example.com"),
        row(5, "apac", "\"Fay B\"", "fay@example.com"),
        row(6, "eu", "Gus", "gus@example.com"),
        row(7, "us", "Hal", "hal@new.example"),
        row(8, "eu", "Ida", "ida@example.com"),
        row(1001, "us", "Ed", "ed@example.com"),
    ]
    .join("\n");
    wait_for_eq("streamed rows", ARRIVAL_TIMEOUT, expected, || {
        dump_table(&dst, "public.clients", "id")
    })
    .await
    .unwrap();
    // Nothing landed under a partition's name, and no value of `ssn` anywhere.
    let stray: i64 = dst
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'customers%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stray, 0);
    assert!(!w.stderr().contains("ERROR"), "{}", w.stderr());
    // The publication publishes via the root and lists only the root.
    let src = p.source().await.unwrap();
    let via_root: bool = src
        .query_one(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = 'pg_flo_parts_publication'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(via_root);
    assert_eq!(
        publication_members(&src, "pg_flo_parts_publication").await,
        ["customers"]
    );
}

/// A partition named alone is published (and copied) under its own name and carries only its
/// rows; naming it next to its root is refused; `--schema` publishes the root, not its
/// partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_alone_its_root_with_it_and_a_whole_schema() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(CUSTOMERS).await.unwrap();
    src.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO customers VALUES (1, 'eu', 'Ann', 'a@x', 's1'), (2, 'us', 'Bob', 'b@x', 's2');
         INSERT INTO notes VALUES (1, 'first')",
    )
    .await
    .unwrap();

    // Root and partition together: refused before anything is created.
    let mut r = Pipeline::spawn(
        "replicator-both",
        &p.replicator_args("both", "customers,customers_eu"),
    )
    .unwrap();
    r.expect_failure(&[
        "table public.customers_eu is a partition of public.customers, which is listed too",
        "list only public.customers (all its partitions) or only public.customers_eu",
    ])
    .await
    .unwrap();
    let leftovers: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'pg_flo_both_publication'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);

    // A partition alone, under its own name (copy and stream).
    p.target()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE customers_eu (id int, region text, name text, email text, ssn text,
                                        PRIMARY KEY (id, region));
             CREATE TABLE customers (id int, region text, name text, email text, ssn text,
                                     PRIMARY KEY (id, region));
             CREATE TABLE notes (id int PRIMARY KEY, body text);",
        )
        .await
        .unwrap();
    let _wl = p.start_pg_worker("leaf").await.unwrap();
    let _rl = p
        .start_replicator_with("leaf", "customers_eu", &["--copy-and-stream"])
        .await
        .unwrap();
    src.batch_execute(
        "INSERT INTO customers VALUES (3, 'eu', 'Cy', 'c@x', 's3'), (4, 'us', 'Di', 'd@x', 's4')",
    )
    .await
    .unwrap();
    let dst = p.target().await.unwrap();
    wait_for_eq(
        "the partition's rows only",
        ARRIVAL_TIMEOUT,
        "(1,eu,Ann,a@x,s1)\n(3,eu,Cy,c@x,s3)".to_owned(),
        || dump_table(&dst, "public.customers_eu", "id"),
    )
    .await
    .unwrap();
    assert_eq!(
        publication_members(&src, "pg_flo_leaf_publication").await,
        ["customers_eu"]
    );

    // A whole schema: the root (not its partitions) and the plain table.
    let _ws = p.start_pg_worker("schema").await.unwrap();
    let _rs = p
        .start_replicator_with("schema", "", &["--copy-and-stream"])
        .await
        .unwrap();
    assert_eq!(
        publication_members(&src, "pg_flo_schema_publication").await,
        ["customers", "notes"]
    );
    src.batch_execute(
        "INSERT INTO customers VALUES (5, 'us', 'Ed', 'e@x', 's5');
         UPDATE customers SET name = 'Ann B' WHERE id = 1;
         INSERT INTO notes VALUES (2, 'second')",
    )
    .await
    .unwrap();
    wait_for_eq(
        "the schema's rows, each once, under the root",
        ARRIVAL_TIMEOUT,
        "(1,eu,\"Ann B\",a@x,s1)\n(2,us,Bob,b@x,s2)\n(3,eu,Cy,c@x,s3)\n(4,us,Di,d@x,s4)\n(5,us,Ed,e@x,s5)"
            .to_owned(),
        || dump_table(&dst, "public.customers", "id"),
    )
    .await
    .unwrap();
    p.wait_equal("public.notes", "id").await.unwrap();
    // The leaf group saw the update of its partition, under its own name.
    wait_for_eq(
        "the partition's update",
        ARRIVAL_TIMEOUT,
        "(1,eu,\"Ann B\",a@x,s1)\n(3,eu,Cy,c@x,s3)".to_owned(),
        || dump_table(&dst, "public.customers_eu", "id"),
    )
    .await
    .unwrap();
}

/// A group whose publication an earlier version created (without
/// `publish_via_partition_root`, without the owner mark), with a backlog of changes in its slot
/// that PostgreSQL decodes under the partitions' names: the replicator switches the
/// publication to the root, marks it, and renames the backlog to the root, so the mask applies
/// to every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_of_an_earlier_version_is_switched_to_the_root_backlog_included() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    let src = p.source().await.unwrap();
    src.batch_execute(CUSTOMERS).await.unwrap();
    run_all(
        &src,
        &[
            "CREATE PUBLICATION pg_flo_up_publication FOR TABLE customers",
            "SELECT pg_create_logical_replication_slot('pg_flo_up_publication', 'pgoutput')",
            "INSERT INTO customers VALUES (1, 'eu', 'Ann', 'ann@example.com', 's1'),
                                          (2, 'us', 'Bob', 'bob@example.com', 's2')",
            "UPDATE customers SET email = 'bob@new.example' WHERE id = 2",
        ],
    )
    .await;
    p.target()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE customers (id int, region text, name text, email text, ssn text,
                                     PRIMARY KEY (id, region))",
        )
        .await
        .unwrap();
    let dir = TempDir::new("pg-flo-partitions-up").unwrap();
    let rules = write(&dir, "rules.yaml", RULES);
    let mut wargs = p.pg_worker_args("up");
    wargs.extend(["--rules-config".into(), rules.display().to_string()]);
    let w = Pipeline::spawn("worker", &wargs).unwrap();
    w.wait_for_output("worker consuming", ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    let _r = p.start_replicator("up", "customers").await.unwrap();
    src.batch_execute("INSERT INTO customers VALUES (3, 'us', 'Cy', 'cy@example.com', 's3')")
        .await
        .unwrap();
    let dst = p.target().await.unwrap();
    wait_for_eq(
        "backlog and new rows, masked, under the root",
        ARRIVAL_TIMEOUT,
        format!(
            "(1,eu,Ann,{},)\n(2,us,Bob,{},)\n(3,us,Cy,{},)",
            masked("ann@example.com"),
            masked("bob@new.example"),
            masked("cy@example.com")
        ),
        || dump_table(&dst, "public.customers", "id"),
    )
    .await
    .unwrap();
    let row = src
        .query_one(
            "SELECT pubviaroot, obj_description(oid, 'pg_publication')
             FROM pg_publication WHERE pubname = 'pg_flo_up_publication'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("pg_flo group up")
    );
}
