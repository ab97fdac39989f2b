//! Shared fixtures of the worker's integration tests: a group's stream on a real NATS
//! JetStream and the real `pg_flo worker` as a process. Hand-made change messages come from
//! `pg_flo::fixtures` (the `testing` feature).

#![allow(dead_code)] // each test binary uses its own part

use std::process::Command;
use std::time::Duration;

use e2e::{wait_for, NatsServer, PgCluster, Process};
use pg_flo::message::ChangeBatch;

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
pub fn target_args(pg: &PgCluster, db: &str, extra: &[&str]) -> Vec<String> {
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
