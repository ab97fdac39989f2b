//! The file sink across a worker restart: the real `pg_flo worker file` on a real NATS
//! JetStream, killed with SIGKILL after a commit, restarted while the stream holds copies of
//! messages it already wrote (published again by hand, as a replicator replay would). The
//! position stored in the output directory makes the new worker skip them: every change is in
//! the files exactly once, as whole lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{wait_for, NatsServer, Process, TempDir};
use pg_flo::message::{
    Change, ChangeBatch, Column, KeyKind, Op, Position, Relation, ReplicationKey, Value,
    FORMAT_VERSION,
};

const GROUP: &str = "filesink";

fn insert(lsn: u64, prev: Option<u64>, id: &str) -> ChangeBatch {
    ChangeBatch {
        version: FORMAT_VERSION,
        commit_lsn: lsn,
        commit_time_us: 0,
        xid: lsn as u32,
        seq: 0,
        last: true,
        prev: prev.map(|p| Position {
            commit_lsn: p,
            seq: 0,
        }),
        emitted_at_us: 0,
        relations: vec![Relation {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            columns: vec![Column {
                name: "id".into(),
                type_oid: 23,
                type_modifier: -1,
                identity: true,
            }],
            key: ReplicationKey {
                kind: KeyKind::PrimaryKey,
                columns: vec!["id".into()],
            },
        }],
        changes: vec![Change {
            op: Op::Insert,
            lsn,
            relation: 0,
            new: Some(vec![Value::Text(id.as_bytes().to_vec())]),
            old: None,
            truncate: None,
        }],
        source: None,
        copy: false,
    }
}

async fn publish(js: &async_nats::jetstream::Context, b: &ChangeBatch) {
    // No Nats-Msg-Id: JetStream stores every copy, as it does for a replay after its
    // duplicate window.
    js.publish(pg_flo::config::subject(GROUP), b.encode().unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn stream_messages(js: &async_nats::jetstream::Context) -> u64 {
    let mut s = js
        .get_stream(pg_flo::config::stream_name(GROUP))
        .await
        .unwrap();
    s.info().await.unwrap().state.messages
}

/// The `id` of every line of every log file, in file and line order; panics on a line that is
/// not whole JSON.
fn ids(dir: &Path) -> Result<Vec<i64>, String> {
    let mut ids = Vec::new();
    for path in e2e::file_sink::log_files(dir) {
        let name = path.display();
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        assert!(text.is_empty() || text.ends_with('\n'), "{name}: {text:?}");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not a whole JSON line ({e}): {line:?}"));
            ids.push(v["NewTuple"]["id"].as_i64().unwrap());
        }
    }
    Ok(ids)
}

fn worker(nats: &NatsServer, dir: &Path) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg_flo"));
    cmd.args([
        "worker",
        "file",
        "--group",
        GROUP,
        "--nats-url",
        &nats.url(),
        "--file-output-dir",
    ]);
    cmd.arg(dir);
    Process::spawn("worker", cmd).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_does_not_write_redelivered_changes_twice() {
    let nats = NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    pg_flo::nats::ensure_stream(
        &js,
        &pg_flo::config::stream_name(GROUP),
        &pg_flo::config::subject(GROUP),
        None,
    )
    .await
    .unwrap();
    let out = TempDir::new("file-sink").unwrap();
    let dir = out.path().join("out");
    let m: Vec<ChangeBatch> = (1..=4u64)
        .map(|i| insert(i * 100, (i > 1).then(|| (i - 1) * 100), &i.to_string()))
        .collect();
    for b in &m[..3] {
        publish(&js, b).await;
    }

    let mut w = worker(&nats, &dir);
    // Acked: committed, position stored.
    wait_for("the stream drained", Duration::from_secs(60), || async {
        (stream_messages(&js).await == 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(ids(&dir).unwrap(), vec![1, 2, 3], "{}", w.output_dump());
    w.kill_9().unwrap();

    // Changes 2 and 3 arrive again (a replay), then 4.
    for b in [&m[1], &m[2], &m[3]] {
        publish(&js, b).await;
    }
    let w = worker(&nats, &dir);
    wait_for("the stream drained", Duration::from_secs(60), || async {
        (stream_messages(&js).await == 0).then_some(())
    })
    .await
    .unwrap();
    // Acked only after the commit: the files are complete.
    assert_eq!(ids(&dir).unwrap(), vec![1, 2, 3, 4], "{}", w.output_dump());
    let stderr = w.stderr();
    assert!(
        stderr.contains("sink has applied changes up to this position"),
        "{stderr}"
    );
}
