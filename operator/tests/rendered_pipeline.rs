//! The ConfigMap and pod specs the operator renders for a group, run as local processes: the
//! real `pg_flo` binary with the rendered arguments, environment (secrets resolved from a map
//! standing in for the Secrets) and config files, against real PostgreSQL and NATS, must
//! replicate real changes, rules and routing included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod rendered;

use std::collections::HashMap;
use std::time::Duration;

use e2e::{dump_table, wait_for_eq, NatsServer, PgCluster, PgOptions, TempDir};
use pg_flo_operator::crd::{ReplicationGroup, Route, Rule};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_group_replicates_with_rules_and_routing() {
    let pg = PgCluster::start(PgOptions::default()).await.unwrap();
    pg.create_database("shop").await.unwrap();
    pg.create_database("dw").await.unwrap();
    let src = pg.client("shop").await.unwrap();
    src.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, email text, total numeric)")
        .await
        .unwrap();
    let dst = pg.client("dw").await.unwrap();
    dst.batch_execute(
        "CREATE TABLE orders_archive (order_id int PRIMARY KEY, email text, total numeric)",
    )
    .await
    .unwrap();
    let nats = NatsServer::start().await.unwrap();

    let rg: ReplicationGroup = serde_yaml::from_str(&format!(
        "apiVersion: pgflo.io/v1alpha1
kind: ReplicationGroup
metadata: {{name: orders, namespace: cdc, uid: 8e3c7a7e-0000-4000-8000-000000000001}}
spec:
  source:
    host: 127.0.0.1
    port: {port}
    database: shop
    tables: [orders]
    user: {{name: shop-replication, key: username}}
    password: {{name: shop-replication, key: password}}
    sslMode: disable
  sink:
    postgres:
      host: 127.0.0.1
      port: {port}
      database: dw
      user: {{name: dw, key: user}}
      password: {{name: dw, key: password}}
      sslMode: disable
  nats:
    external: {{url: '{nats}'}}
",
        port = pg.port(),
        nats = nats.url()
    ))
    .unwrap();
    let rule: Rule = serde_yaml::from_str(
        "apiVersion: pgflo.io/v1alpha1
kind: Rule
metadata: {name: mask-email, namespace: cdc}
spec:
  groupRef: {name: orders}
  table: orders
  rules:
    - type: transform
      column: email
      transform: {type: mask, maskChar: '*'}
",
    )
    .unwrap();
    let route: Route = serde_yaml::from_str(
        "apiVersion: pgflo.io/v1alpha1
kind: Route
metadata: {name: archive, namespace: cdc}
spec:
  groupRef: {name: orders}
  sourceTable: orders
  destinationTable: orders_archive
  columnMappings: [{source: id, destination: order_id}]
",
    )
    .unwrap();
    let desired =
        pg_flo_operator::resources::build(&rg, &[rule], &[route], "pg-flo:test", &[]).unwrap();

    let dir = TempDir::new("pg-flo-rendered").unwrap();
    for (file, content) in desired.config_map.data.clone().unwrap() {
        std::fs::write(
            dir.path().join(&file),
            content.replace("/etc/pg-flo/", &format!("{}/", dir.path().display())),
        )
        .unwrap();
    }
    let secrets: HashMap<String, String> = [
        ("shop-replication/username", pg.user()),
        ("shop-replication/password", pg.password()),
        ("dw/user", pg.user()),
        ("dw/password", pg.password()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let r = rendered::spawn_runtime("replicator", &desired.replicator, dir.path(), &secrets);
    r.wait_for_output("streaming changes", Duration::from_secs(60))
        .await
        .unwrap();
    let w = rendered::spawn_runtime("worker", &desired.worker, dir.path(), &secrets);
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();

    src.batch_execute(
        "INSERT INTO orders VALUES (1, 'ann@example.com', 9.50), (2, 'bob@example.com', 3)",
    )
    .await
    .unwrap();
    src.batch_execute("UPDATE orders SET total = 10 WHERE id = 1")
        .await
        .unwrap();
    src.batch_execute("DELETE FROM orders WHERE id = 2")
        .await
        .unwrap();
    wait_for_eq(
        "masked, routed rows in the target",
        Duration::from_secs(60),
        "(1,a*************m,10)".to_owned(),
        || dump_table(&dst, "orders_archive", "order_id"),
    )
    .await
    .unwrap();
}
