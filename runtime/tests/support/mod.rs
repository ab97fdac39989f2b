//! Shared fixtures of the worker's integration tests: a group's stream on a real NATS
//! JetStream and the real `pg_flo worker` as a process. Hand-made change messages come from
//! `pg_flo::fixtures` (the `testing` feature).

#![allow(dead_code)] // each test binary uses its own part

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use e2e::{dump_table, wait_for, wait_for_eq, NatsServer, PgCluster, PgOptions, Process};
use pg_flo::message::{ChangeBatch, Position};
use tokio_postgres::Client;

/// A PostgreSQL target (database `target`), a NATS server and a group's stream on it.
pub struct Setup {
    pub pg: PgCluster,
    pub nats: NatsServer,
    pub group: Group,
}

impl Setup {
    /// Starts the servers; `target_ddl` runs in the target database.
    pub async fn start(group: &'static str, target_ddl: &str) -> Setup {
        let pg = PgCluster::start(PgOptions::default()).await.unwrap();
        pg.create_database("target").await.unwrap();
        pg.client("target")
            .await
            .unwrap()
            .batch_execute(target_ddl)
            .await
            .unwrap();
        let nats = NatsServer::start().await.unwrap();
        let group = Group::new(&nats, group).await;
        Setup { pg, nats, group }
    }

    /// A client of the target database.
    pub async fn target(&self) -> Client {
        self.pg.client("target").await.unwrap()
    }

    pub async fn publish(&self, b: &ChangeBatch) {
        self.group.publish(b).await;
    }

    /// The worker `name` of the group with `sink` (`postgres`: into the target database),
    /// `extra` after the flags.
    pub fn worker(&self, name: &str, sink: &str, extra: &[&str]) -> Process {
        let args = if sink == "postgres" {
            target_args(&self.pg, "target", extra)
        } else {
            extra.iter().map(|s| s.to_string()).collect()
        };
        self.group.worker(name, sink, &args)
    }
}

/// Waits until `table` of `target` holds `rows` (its rows as text, one a line, by `id`).
pub async fn wait_rows(target: &Client, table: &str, what: &str, rows: impl Into<String>) {
    wait_for_eq(what, Duration::from_secs(60), rows.into(), || {
        dump_table(target, table, "id")
    })
    .await
    .unwrap();
}

/// A group's stream on a real NATS server.
pub struct Group {
    pub name: &'static str,
    pub js: async_nats::jetstream::Context,
    url: String,
}

impl Group {
    pub async fn new(nats: &NatsServer, name: &'static str) -> Group {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        pg_flo::nats::ensure_stream(
            &js,
            &pg_flo::config::stream_name(name),
            &pg_flo::config::subject(name),
            None,
            None,
        )
        .await
        .unwrap();
        Group {
            name,
            js,
            url: nats.url(),
        }
    }

    /// Publishes without a message id: JetStream stores every copy, as it does for a replay
    /// after its duplicate window or a publish whose PubAck was lost.
    pub async fn publish(&self, b: &ChangeBatch) {
        self.js
            .publish(
                pg_flo::config::subject(self.name),
                b.encode().unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Messages in `stream` (0 when it does not exist).
    pub async fn messages_in(&self, stream: &str) -> u64 {
        match self.js.get_stream(stream).await {
            Ok(mut s) => s.info().await.unwrap().state.messages,
            Err(_) => 0,
        }
    }

    /// Messages not yet acked by a worker.
    pub async fn unacked(&self) -> u64 {
        self.messages_in(&pg_flo::config::stream_name(self.name))
            .await
    }

    /// Positions of the dead letters, in the order they were stored.
    pub async fn dead_letters(&self) -> Vec<Position> {
        let Ok(stream) = self
            .js
            .get_stream(pg_flo::nats::dead_letter_stream(self.name))
            .await
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(m) = stream.get_raw_message(seq).await {
            out.push(ChangeBatch::decode(&m.payload).unwrap().position());
            seq += 1;
        }
        out
    }

    /// The last message on the dead-letter subject, if any.
    pub async fn last_dead_letter(&self) -> Option<StreamMessage> {
        self.js
            .get_stream(pg_flo::nats::dead_letter_stream(self.name))
            .await
            .ok()?
            .get_last_raw_message_by_subject(&pg_flo::nats::dead_letter_subject(self.name))
            .await
            .ok()
    }

    /// Waits until a worker acked every message.
    pub async fn drained(&self) {
        wait_for(
            "the main stream drained",
            Duration::from_secs(60),
            || async { (self.unacked().await == 0).then_some(()) },
        )
        .await
        .unwrap();
    }

    /// `pg_flo worker <sink> --group <name> --nats-url <url>` with `args` after them.
    pub fn worker(&self, name: &str, sink: &str, args: &[String]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_flo"));
        cmd.args([
            "worker",
            sink,
            "--group",
            self.name,
            "--nats-url",
            &self.url,
        ])
        .args(args);
        Process::spawn(name, cmd).unwrap()
    }
}

/// The postgres sink's flags for database `db` of `pg`, followed by `extra`.
fn target_args(pg: &PgCluster, db: &str, extra: &[&str]) -> Vec<String> {
    [
        "--target-host",
        pg.host(),
        "--target-port",
        &pg.port().to_string(),
        "--target-dbname",
        db,
        "--target-user",
        pg.user(),
        "--target-password",
        pg.password(),
        "--target-sslmode",
        "disable",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}
