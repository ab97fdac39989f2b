//! The managed NATS the operator renders, run for real: three local `nats-server` processes
//! from the rendered `nats.conf` and StatefulSet environment (the generated passwords resolved
//! as the kubelet would, cluster routes and ports rewritten to loopback), and the real
//! `pg_flo` replicator and worker from the rendered pods and config files, replicating a real
//! PostgreSQL table through them.
//!
//! Checked: the streams have three copies and the rendered size limit, JetStream's file store
//! is 90% of the volume; a server killed (the stream leader) loses nothing; a client without
//! the group's credentials, or with a wrong password, is refused; the group's user cannot
//! touch streams other than the group's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod rendered;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use e2e::{
    count, free_port, http_get, wait_for, wait_for_eq, NatsServer, PgCluster, PgOptions, Process,
    TempDir, TlsFiles,
};
use k8s_openapi::api::core::v1::Container;
use pg_flo_operator::crd::ReplicationGroup;
use pg_flo_operator::resources::{build, NatsAuth};

const NS: &str = "cdc";
const SERVERS: usize = 3;
/// The volume size the group asks for, and what follows from it.
const STORAGE: &str = "64Mi";
const STORAGE_BYTES: u64 = 64 << 20;

/// Ports of one local server.
#[derive(Clone, Copy, Debug)]
struct Ports {
    client: u16,
    monitor: u16,
    route: u16,
}

/// Replaces `from` (which must occur) by `to`.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in:\n{text}");
    text.replace(from, to)
}

/// Starts server `i` of the rendered StatefulSet of `group`.
fn spawn_server(
    group: &str,
    i: usize,
    conf: &str,
    c: &Container,
    ports: &[Ports],
    secrets: &HashMap<String, String>,
) -> NatsServer {
    let p = ports[i];
    let mut env = rendered::pod_env(c, &format!("{group}-nats-{i}"), secrets);
    for (name, value) in &mut env {
        if name.starts_with("NATS_ROUTE_") && name != "NATS_ROUTE_PASSWORD" {
            for (j, q) in ports.iter().enumerate() {
                *value = value.replace(
                    &format!("{group}-nats-{j}.{group}-nats-headless.{NS}.svc:6222"),
                    &format!("127.0.0.1:{}", q.route),
                );
            }
            assert!(value.contains("127.0.0.1"), "{name}={value}");
        }
    }
    // The container's arguments: the config file (written by the harness), then the rest with
    // `$(VAR)` expanded from the environment, as the kubelet does.
    let args = c.args.clone().unwrap();
    assert_eq!(args[..2], ["--config", "/etc/nats-config/nats.conf"]);
    let args: Vec<String> = args[2..]
        .iter()
        .map(|a| {
            env.iter()
                .fold(a.clone(), |a, (k, v)| a.replace(&format!("$({k})"), v))
        })
        .collect();
    let conf = conf.to_owned();
    NatsServer::spawn_config(
        move |dir: &Path| {
            let c = rewrite(
                &conf,
                "\nport: 4222\n",
                &format!("\nlisten: \"127.0.0.1:{}\"\n", p.client),
            );
            let c = rewrite(
                &c,
                "\nhttp_port: 8222\n",
                &format!("\nhttp: \"127.0.0.1:{}\"\n", p.monitor),
            );
            let c = rewrite(
                &c,
                "\"/var/run/nats/nats.pid\"",
                &format!("{:?}", dir.join("nats.pid").display().to_string()),
            );
            let c = rewrite(
                &c,
                "store_dir: \"/data\"",
                &format!("store_dir: {:?}", dir.join("js").display().to_string()),
            );
            rewrite(
                &c,
                "\n  port: 6222\n",
                &format!("\n  listen: \"127.0.0.1:{}\"\n", p.route),
            )
        },
        env,
        args,
        p.client,
        p.monitor,
    )
    .unwrap()
}

/// Waits for the server's permissions violation `what` among the connection's events.
async fn expect_violation(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: String) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if e.contains(&what) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no permissions violation for {what}"));
}

async fn connect(
    urls: &[String],
    auth: Option<(&str, &str)>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(Some(1));
    if let Some((u, p)) = auth {
        opts = opts.user_and_password(u.into(), p.into());
    }
    let servers: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::connect(opts, servers),
    )
    .await
    .unwrap_or_else(|_| panic!("connect to {urls:?} hung"))
}

/// PostgreSQL source and target, the three rendered servers, the rendered replicator and
/// worker streaming table `orders`.
struct Rig {
    group: String,
    _pg: PgCluster,
    src: tokio_postgres::Client,
    dst: tokio_postgres::Client,
    servers: Vec<NatsServer>,
    ports: Vec<Ports>,
    urls: Vec<String>,
    auth: NatsAuth,
    r: Process,
    w: Process,
    _dir: TempDir,
}

impl Rig {
    /// `tls`: the group names the TLS Secret `nats-tls`, whose files are these.
    async fn start(group: &str, tls: Option<&TlsFiles>) -> Rig {
        let pg = PgCluster::start(PgOptions::default()).await.unwrap();
        pg.create_database("shop").await.unwrap();
        pg.create_database("dw").await.unwrap();
        let src = pg.client("shop").await.unwrap();
        let dst = pg.client("dw").await.unwrap();
        for c in [&src, &dst] {
            c.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
                .await
                .unwrap();
        }
        let tls_spec = if tls.is_some() {
            ", tls: {secretName: nats-tls}"
        } else {
            ""
        };
        let rg: ReplicationGroup = serde_yaml::from_str(&format!(
            "apiVersion: pgflo.io/v1alpha1
kind: ReplicationGroup
metadata: {{name: '{group}', namespace: {NS}, uid: 8e3c7a7e-0000-4000-8000-000000000003}}
spec:
  # The runtime group name as pg_flo spells it (the default is namespace-qualified).
  groupName: '{group}'
  source:
    host: 127.0.0.1
    port: {port}
    database: shop
    tables: [orders]
    user: {{name: src, key: user}}
    password: {{name: src, key: password}}
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
    managed: {{replicas: 3, storageSize: {STORAGE}{tls_spec}}}
",
            port = pg.port()
        ))
        .unwrap();
        let desired = build(&rg, &[], &[], "pg-flo:test", &[]).unwrap();
        let auth = NatsAuth::generate().unwrap();
        let secrets: HashMap<String, String> = [
            ("src/user", pg.user()),
            ("src/password", pg.password()),
            ("dw/user", pg.user()),
            ("dw/password", pg.password()),
            ("nats-auth/password", auth.password.as_str()),
            ("nats-auth/route-password", auth.route_password.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| {
            let k = k.replace("nats-auth/", &format!("{group}-nats-auth/"));
            (k, v.to_owned())
        })
        .collect();
        // The files of the TLS Secret where the pods mount them.
        let tls_paths = |text: String| match tls {
            None => text,
            Some(t) => text
                .replace(
                    "/etc/nats-tls/tls.crt",
                    &t.server_cert.display().to_string(),
                )
                .replace("/etc/nats-tls/tls.key", &t.server_key.display().to_string())
                .replace("/etc/nats-tls/ca.crt", &t.ca_cert.display().to_string())
                .replace(
                    "/var/run/pg-flo/nats-ca/ca.crt",
                    &t.ca_cert.display().to_string(),
                ),
        };

        // The three servers, as the StatefulSet's pods.
        let nats = desired.nats.as_ref().unwrap();
        let conf = tls_paths(nats.config_map.data.as_ref().unwrap()["nats.conf"].clone());
        assert_eq!(conf.contains("tls {"), tls.is_some(), "{conf}");
        let sts_spec = nats.stateful_set.spec.as_ref().unwrap();
        assert_eq!(sts_spec.replicas, Some(3));
        let container = sts_spec.template.spec.as_ref().unwrap().containers[0].clone();
        let ports: Vec<Ports> = (0..SERVERS)
            .map(|_| Ports {
                client: free_port().unwrap(),
                monitor: free_port().unwrap(),
                route: free_port().unwrap(),
            })
            .collect();
        let mut servers: Vec<NatsServer> = (0..SERVERS)
            .map(|i| spawn_server(group, i, &conf, &container, &ports, &secrets))
            .collect();
        for s in &mut servers {
            s.wait_ready().await.unwrap();
        }
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{}", p.client))
            .collect();

        // The replicator and worker, from the rendered pods, on the three servers.
        let dir = TempDir::new("pg-flo-nats-cluster").unwrap();
        for (file, content) in desired.config_map.data.clone().unwrap() {
            let content = tls_paths(content)
                .replace("/etc/pg-flo/", &format!("{}/", dir.path().display()))
                .replace(
                    &format!("nats://{group}-nats.{NS}.svc:4222"),
                    &urls.join(","),
                );
            std::fs::write(dir.path().join(&file), content).unwrap();
        }
        let r = rendered::spawn_runtime("replicator", &desired.replicator, dir.path(), &secrets);
        r.wait_for_output("streaming changes", Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", r.output_dump()));
        let w = rendered::spawn_runtime("worker", &desired.worker, dir.path(), &secrets);
        w.wait_for_output("worker consuming", Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", w.output_dump()));
        Rig {
            group: group.to_owned(),
            _pg: pg,
            src,
            dst,
            servers,
            ports,
            urls,
            auth,
            r,
            w,
            _dir: dir,
        }
    }

    /// Inserts rows `from..=to` in one transaction.
    async fn insert(&self, from: i32, to: i32) {
        self.src
            .batch_execute(&format!(
                "INSERT INTO orders SELECT g, 'n' || g FROM generate_series({from}, {to}) g"
            ))
            .await
            .unwrap();
    }

    /// Waits until the target holds `n` rows.
    async fn arrived(&self, n: i64, what: &str) {
        wait_for_eq(what, Duration::from_secs(90), n, || {
            count(&self.dst, "orders")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", self.r.output_dump(), self.w.output_dump()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_rendered_servers_keep_every_change_and_admit_only_the_group() {
    let mut rig = Box::pin(Rig::start("orders", None)).await;
    let (urls, auth, ports) = (rig.urls.clone(), rig.auth.clone(), rig.ports.clone());
    rig.insert(1, 100).await;
    rig.arrived(100, "100 rows in the target").await;
    // Three copies of each stream, the rendered size limit, 90% of the volume for JetStream.
    let client = connect(&urls, Some(("pg-flo", &auth.password)))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("pgflo_orders_stream").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(info.config.max_bytes, 53_687_091, "80% of {STORAGE}");
    assert_eq!(
        info.config.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    let cluster = info.cluster.clone().unwrap();
    assert_eq!(cluster.replicas.len(), 2, "{cluster:?}");
    let mut state = js.get_stream("pgflo_orders_state").await.unwrap();
    assert_eq!(state.info().await.unwrap().config.num_replicas, 3);
    for p in &ports {
        let varz = http_get(p.monitor, "/varz").await.unwrap();
        let body = &varz[varz.find('{').unwrap()..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["jetstream"]["config"]["max_storage"],
            serde_json::json!(STORAGE_BYTES * 9 / 10)
        );
    }

    // The stream leader dies (SIGKILL): nothing is lost, replication goes on.
    let leader = cluster.leader.unwrap();
    let dead = (0..SERVERS)
        .find(|i| leader == format!("orders-nats-{i}"))
        .unwrap_or_else(|| panic!("leader {leader}"));
    rig.servers[dead].kill().unwrap();
    for k in 0..10 {
        rig.insert(101 + k * 10, 110 + k * 10).await;
    }
    rig.arrived(200, "200 rows in the target with a server down")
        .await;
    let ids: i64 = rig
        .dst
        .query_one(
            "SELECT count(DISTINCT id) FROM orders WHERE note = 'n' || id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ids, 200);
    // It comes back and catches up with the others.
    rig.servers[dead].start_again().await.unwrap();
    let alive: Vec<String> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, u)| u.clone())
        .collect();
    let js2 = async_nats::jetstream::new(
        connect(&alive, Some(("pg-flo", &auth.password)))
            .await
            .unwrap(),
    );
    wait_for(
        "three current copies of the stream",
        Duration::from_secs(60),
        || {
            let js2 = js2.clone();
            async move {
                let mut s = js2.get_stream("pgflo_orders_stream").await.ok()?;
                let c = s.info().await.ok()?.cluster.clone()?;
                (c.replicas.len() == 2 && c.replicas.iter().all(|p| p.current)).then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Only the group's credentials get in.
    assert!(connect(&urls, None).await.is_err(), "no credentials");
    assert!(
        connect(&urls, Some(("pg-flo", "wrong-password")))
            .await
            .is_err(),
        "a wrong password"
    );
    assert!(
        connect(&urls, Some(("route", &auth.route_password)))
            .await
            .is_err(),
        "the route user is no client"
    );
    // The group's user cannot reach other streams, nor read or write outside its subjects:
    // the server answers with a permissions violation.
    let (tx, mut violations) = tokio::sync::mpsc::unbounded_channel::<String>();
    let probe =
        async_nats::ConnectOptions::with_user_and_password("pg-flo".into(), auth.password.clone())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event.to_string());
                }
            })
            .connect(urls.as_slice())
            .await
            .unwrap();
    probe.publish("pgflo.other", "x".into()).await.unwrap();
    probe.flush().await.unwrap();
    expect_violation(
        &mut violations,
        "Permissions Violation for Publish to \"pgflo.other\"".into(),
    )
    .await;
    let _sub = probe.subscribe("pgflo.orders").await.unwrap();
    probe.flush().await.unwrap();
    expect_violation(
        &mut violations,
        "Permissions Violation for Subscription to \"pgflo.orders\"".into(),
    )
    .await;
    let strict = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(probe.clone());
    // No answer (not "stream not found"): the request never reached JetStream.
    let err = strict.get_stream("pgflo_other_stream").await.unwrap_err();
    assert_eq!(
        err.kind(),
        async_nats::jetstream::context::GetStreamErrorKind::Request,
        "{err:?}"
    );
    expect_violation(
        &mut violations,
        "Permissions Violation for Publish to \"$JS.API.STREAM.INFO.pgflo_other_stream\"".into(),
    )
    .await;
    assert!(strict
        .create_stream(async_nats::jetstream::stream::Config {
            name: "intruder".into(),
            subjects: vec!["intruder".into()],
            ..Default::default()
        })
        .await
        .is_err());
    expect_violation(
        &mut violations,
        "Permissions Violation for Publish to \"$JS.API.STREAM.CREATE.intruder\"".into(),
    )
    .await;
}

/// With `tls.secretName`, clients and routes use TLS from the Secret's files (cert-manager's
/// `tls.crt`, `tls.key`, `ca.crt`; the certificate has both server and client usages, since
/// routes authenticate each other with it): the pods verify the servers with `ca.crt`, and a
/// client without TLS is refused even with the right password. The group's name, `1g2shop`,
/// would not survive as a `$VARIABLE` in `nats.conf` (the server reads `1g2...` as a size and
/// stops): the server name comes as a flag and arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_from_the_secret_guards_clients_and_routes() {
    let certs = TempDir::new("nats-tls").unwrap();
    let tls = e2e::generate_tls(certs.path()).unwrap();
    let rig = Box::pin(Rig::start("1g2shop", Some(&tls))).await;
    rig.insert(1, 20).await;
    rig.arrived(20, "20 rows through TLS").await;
    // The routes formed over TLS: every server sees the two others; each has its pod's name.
    for (i, p) in rig.ports.iter().enumerate() {
        let routez = http_get(p.monitor, "/routez").await.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&routez[routez.find('{').unwrap()..]).unwrap();
        assert_eq!(v["num_routes"], 2, "{routez}");
        let varz = http_get(p.monitor, "/varz").await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&varz[varz.find('{').unwrap()..]).unwrap();
        assert_eq!(v["server_name"], format!("1g2shop-nats-{i}"));
    }
    let plain = async_nats::ConnectOptions::with_user_and_password(
        "pg-flo".into(),
        rig.auth.password.clone(),
    )
    .connection_timeout(Duration::from_secs(3))
    .connect(rig.urls.as_slice())
    .await;
    assert!(plain.is_err(), "a client without TLS got in");
    let secure = async_nats::ConnectOptions::with_user_and_password(
        "pg-flo".into(),
        rig.auth.password.clone(),
    )
    .add_root_certificates(tls.ca_cert.clone())
    .require_tls(true)
    .connection_timeout(Duration::from_secs(3))
    .connect(rig.urls.as_slice())
    .await
    .unwrap();
    let mut stream = async_nats::jetstream::new(secure)
        .get_stream(format!("pgflo_{}_stream", rig.group))
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);
}
