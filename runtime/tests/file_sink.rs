//! The file sink across a worker restart: the real `pg_flo worker file` on a real NATS
//! JetStream, killed with SIGKILL after a commit, restarted while the stream holds copies of
//! messages it already wrote (published again by hand, as a replicator replay would). The
//! position stored in the output directory makes the new worker skip them: every change is in
//! the files exactly once, as whole lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::path::Path;

use e2e::{NatsServer, TempDir};
use pg_flo::fixtures::{insert_tx, public_table};
use pg_flo::message::ChangeBatch;
use pg_flo_source::oid::INT4;
use support::Group;

/// Inserts `id` into `public.t (id int PRIMARY KEY)`, after the transaction at `prev`.
fn insert(lsn: u64, prev: Option<u64>, id: &str) -> ChangeBatch {
    insert_tx(lsn, prev, public_table("t", &[("id", INT4)]), &[id])
}

const GROUP: &str = "filesink";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_does_not_write_redelivered_changes_twice() {
    let nats = NatsServer::start().await.unwrap();
    let group = Group::new(&nats, GROUP).await;
    let out = TempDir::new("file-sink").unwrap();
    let dir = out.path().join("out");
    let worker = || {
        let args = ["--file-output-dir".to_string(), dir.display().to_string()];
        group.worker("worker", "file", &args)
    };
    let m: Vec<ChangeBatch> = (1..=4u64)
        .map(|i| insert(i * 100, (i > 1).then(|| (i - 1) * 100), &i.to_string()))
        .collect();
    for b in &m[..3] {
        group.publish(b).await;
    }

    let mut w = worker();
    // Acked: committed, position stored.
    group.drained().await;
    assert_eq!(ids(&dir).unwrap(), vec![1, 2, 3], "{}", w.output_dump());
    w.kill_9().unwrap();

    // Changes 2 and 3 arrive again (a replay), then 4.
    for b in [&m[1], &m[2], &m[3]] {
        group.publish(b).await;
    }
    let w = worker();
    group.drained().await;
    // Acked only after the commit: the files are complete.
    assert_eq!(ids(&dir).unwrap(), vec![1, 2, 3, 4], "{}", w.output_dump());
    let stderr = w.stderr();
    assert!(
        stderr.contains("sink has applied changes up to this position"),
        "{stderr}"
    );
}
