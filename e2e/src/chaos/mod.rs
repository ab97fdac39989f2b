//! Chaos runs: the real pipelines under a continuous workload while processes, servers and
//! links fail at random times, then a check that nothing was lost, reordered, forged or
//! applied twice.
//!
//! One long-lived system ([`rig`]) runs three pipelines from one source: a postgres sink with
//! a rule and a route, a file sink, and a webhook sink whose receiver fails at random. Each
//! round ([`plan`]) runs the workload ([`workload`]) for a window while one to three faults
//! happen; then every fault heals and, within a bounded time (else the round is a stall):
//! - the postgres target equals the source, table by table (ordered md5, the rule and route
//!   applied in SQL to the source side);
//! - the file and webhook outputs hold every change the source committed ([`truth`]: read
//!   with `test_decoding` from a slot of its own), in commit order ([`check`]); the file sink
//!   without a single duplicate, the webhook with the duplicates at-least-once allows
//!   (counted);
//! - the dead-letter streams are empty.
//!
//! The seed and each round's faults are printed; `scripts/chaos.sh 1 <seed> <round>` replays
//! a round's faults and workload choices (not the exact interleaving: the processes are real).

pub mod check;
mod outputs;
pub mod plan;
mod rig;
pub mod truth;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_postgres::Client;

use check::{check_sequence, Verdict};
use outputs::{FileOutput, WebhookOutput};
use plan::{plan_round, timeline};
use rig::{Rig, TRUTH_SLOT};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: u32,
    pub seed: u64,
    /// The number of the first round (a replay runs one round from the middle of a run).
    pub first_round: u32,
    /// How long the workload runs while a round's faults happen.
    pub window: Duration,
    /// How long a healed pipeline may take to deliver everything before the round is a stall.
    pub settle_timeout: Duration,
    /// Workload clients.
    pub clients: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 50,
            seed: 1,
            first_round: 0,
            window: Duration::from_secs(8),
            settle_timeout: Duration::from_secs(180),
            clients: 3,
        }
    }
}

/// What a run found (written as `bench/chaos-report.json`).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub rounds_planned: u32,
    pub rounds_passed: u32,
    pub faults_by_kind: BTreeMap<String, u32>,
    /// Changes the source committed to the chaos tables (each checked in both JSON outputs).
    pub changes_checked: usize,
    /// Rows compared in the postgres target at the last check.
    pub rows_compared: i64,
    pub transactions_committed: u64,
    pub transactions_failed: u64,
    pub lost: usize,
    pub diverged: usize,
    pub diverged_tables: usize,
    pub dead_letters: u64,
    pub stalls: u32,
    pub file_duplicates: usize,
    pub webhook_duplicates: usize,
    /// Per process: starts, unrequested exits.
    pub processes: BTreeMap<String, (u32, usize)>,
    pub slowest_settle_secs: f64,
    pub duration_secs: f64,
    /// Why the run stopped early, with the failing round's plan.
    pub failure: Option<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.rounds_passed == self.rounds_planned
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seed": self.seed,
            "rounds": self.rounds_planned,
            "rounds_passed": self.rounds_passed,
            "faults_by_kind": self.faults_by_kind,
            "faults": self.faults_by_kind.values().sum::<u32>(),
            "changes_checked": self.changes_checked,
            "target_rows_compared": self.rows_compared,
            "workload_transactions": {
                "committed": self.transactions_committed,
                "failed_or_unknown": self.transactions_failed,
            },
            "lost": self.lost,
            "diverged": self.diverged,
            "diverged_tables": self.diverged_tables,
            "dead_letters": self.dead_letters,
            "stalls": self.stalls,
            "duplicates": {
                "file": self.file_duplicates,
                "webhook": self.webhook_duplicates,
            },
            "processes": self.processes.iter().map(|(p, (starts, exits))| {
                (p.clone(), serde_json::json!({"starts": starts, "exits": exits}))
            }).collect::<serde_json::Map<_, _>>(),
            "slowest_settle_secs": (self.slowest_settle_secs * 10.0).round() / 10.0,
            "duration_secs": self.duration_secs.round(),
            "failure": self.failure,
        })
    }
}

/// The source's committed changes so far, in commit order.
#[derive(Default)]
struct Truth {
    changes: Vec<String>,
    /// The last transaction read: after a crash of the source the slot may hand out
    /// transactions again from its last checkpoint.
    last_commit: u64,
}

impl Truth {
    async fn read(&mut self, source: &Client) -> anyhow::Result<()> {
        let rows = source
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_get_changes($1, NULL, NULL, \
                 'include-xids', '0', 'skip-empty-xacts', '1')",
                &[&TRUTH_SLOT],
            )
            .await
            .context("read the truth slot")?;
        let rows: Vec<(u64, String)> = rows
            .iter()
            .map(|r| {
                let lsn: String = r.get(0);
                (truth::parse_lsn(&lsn).unwrap_or(0), r.get(1))
            })
            .collect();
        let txs = truth::transactions(&rows, workload::root_of, workload::is_chaos_table)
            .map_err(|e| anyhow::anyhow!("test_decoding output: {e}"))?;
        for tx in txs {
            if tx.commit_lsn > self.last_commit {
                self.last_commit = tx.commit_lsn;
                self.changes.extend(tx.changes);
            }
        }
        Ok(())
    }
}

/// The masked, routed table as the target should hold it, and each table's digest query.
fn digest_sql(table: &str, target: bool) -> String {
    let rows = match (table, target) {
        ("t_routed", false) => "(SELECT id, uid, ver, owner, CASE WHEN char_length(secret) <= 2 \
             THEN secret ELSE left(secret, 1) || repeat('*', char_length(secret) - 2) \
             || right(secret, 1) END AS secret, note FROM t_routed)"
            .to_owned(),
        ("t_routed", true) => {
            "(SELECT rid, uid, ver, owner, secret, note FROM t_routed_copy)".to_owned()
        }
        (t, _) => t.to_owned(),
    };
    format!(
        "SELECT count(*), coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x.uid)), '') \
         FROM {rows} x"
    )
}

async fn digests(client: &Client, target: bool) -> anyhow::Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for table in workload::TABLES {
        let row = client.query_one(&digest_sql(table, target), &[]).await?;
        out.push((row.get(0), row.get(1)));
    }
    Ok(out)
}

/// Messages in the dead-letter streams (`pgflo_*_dlq`), from the NATS monitor.
async fn dead_letters(monitor_port: u16) -> anyhow::Result<u64> {
    let answer = crate::http_get(monitor_port, "/jsz?streams=true").await?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let jsz: serde_json::Value = serde_json::from_str(body).context("parse /jsz")?;
    let mut total = 0;
    for account in jsz["account_details"].as_array().into_iter().flatten() {
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            if stream["name"].as_str().is_some_and(|n| n.ends_with("_dlq")) {
                total += stream["state"]["messages"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// The state of the outputs after a round.
#[derive(Debug, Default)]
struct Outcome {
    file: Verdict,
    webhook: Verdict,
    /// Tables whose target differs from the source: (table, source digest, target digest).
    unequal: Vec<(String, String, String)>,
    rows: i64,
    dead_letters: u64,
    /// What could not be observed (a server still recovering).
    unobserved: Option<String>,
}

impl Outcome {
    fn settled(&self) -> bool {
        self.unobserved.is_none()
            && self.file.complete()
            && self.webhook.complete()
            && self.unequal.is_empty()
    }

    /// Diverged output cannot heal: no point waiting.
    fn hopeless(&self) -> bool {
        self.file.diverged_count > 0 || self.webhook.diverged_count > 0 || self.file.duplicates > 0
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for (name, v) in [("file", &self.file), ("webhook", &self.webhook)] {
            out.push_str(&format!(
                "{name}: {} of {} changes delivered in order, {} missing, {} duplicates, {} diverged\n",
                v.delivered,
                v.expected,
                v.missing(),
                v.duplicates,
                v.diverged_count
            ));
            for d in &v.diverged {
                out.push_str(&format!("  {d}\n"));
            }
        }
        for (table, s, t) in &self.unequal {
            out.push_str(&format!(
                "postgres target: {table} differs (source {s}, target {t})\n"
            ));
        }
        if self.dead_letters > 0 {
            out.push_str(&format!("{} dead letters\n", self.dead_letters));
        }
        if let Some(u) = &self.unobserved {
            out.push_str(&format!("not observable: {u}\n"));
        }
        out
    }
}

struct Observer {
    file: FileOutput,
    webhook: WebhookOutput,
}

impl Observer {
    async fn observe(&mut self, rig: &Rig, truth: &Truth) -> Outcome {
        let mut outcome = Outcome::default();
        match self.file.read(&rig.file_dir()) {
            Ok(sigs) => outcome.file = check_sequence(&truth.changes, &sigs),
            Err(e) => outcome.unobserved = Some(format!("file output: {e:#}")),
        }
        match self.webhook.read(&rig.receiver) {
            Ok(sigs) => outcome.webhook = check_sequence(&truth.changes, sigs),
            Err(e) => outcome.unobserved = Some(format!("webhook output: {e:#}")),
        }
        let compared = async {
            let source = digests(&rig.source.client("source").await?, false).await?;
            let target = digests(&rig.target.client("target").await?, true).await?;
            anyhow::Ok((source, target))
        }
        .await;
        match compared {
            Ok((source, target)) => {
                outcome.rows = source.iter().map(|(n, _)| n).sum();
                for ((table, s), t) in workload::TABLES.iter().zip(source).zip(target) {
                    if s != t {
                        outcome.unequal.push((
                            (*table).to_owned(),
                            format!("{} rows {}", s.0, s.1),
                            format!("{} rows {}", t.0, t.1),
                        ));
                    }
                }
            }
            Err(e) => outcome.unobserved = Some(format!("postgres: {e:#}")),
        }
        match dead_letters(rig.nats.monitor_port()).await {
            Ok(n) => outcome.dead_letters = n,
            Err(e) => outcome.unobserved = Some(format!("nats monitor: {e:#}")),
        }
        outcome
    }
}

/// Runs the chaos rounds; the report says what was found (a failing round stops the run and
/// is described in [`Report::failure`] with the diagnostics). `Err` only when the harness
/// itself fails (a server that does not start).
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut rig = Rig::start().await?;
    let mut report = Report {
        seed: opts.seed,
        rounds_planned: opts.rounds,
        ..Report::default()
    };
    let mut truth = Truth::default();
    let mut observer = Observer {
        file: FileOutput::default(),
        webhook: WebhookOutput::default(),
    };
    let mut exit_notes = BTreeMap::new();
    let conn = rig.source.conn_string("source");
    println!(
        "chaos: seed {}, {} rounds from round {}",
        opts.seed, opts.rounds, opts.first_round
    );
    for round in opts.first_round..opts.first_round + opts.rounds {
        let plan = plan_round(opts.seed, round, opts.window);
        println!("{plan}");
        for s in &plan.faults {
            *report
                .faults_by_kind
                .entry(s.fault.kind().to_owned())
                .or_default() += 1;
        }
        rig.receiver.set_flaky(plan.workload_seed, 0.15);
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(workload::Counts::default());
        let clients = tokio::spawn(workload::run(
            conn.clone(),
            opts.clients,
            plan.workload_seed,
            stop.clone(),
            counts.clone(),
        ));
        let t0 = Instant::now();
        for (at, action) in timeline(&plan) {
            supervise_until(&mut rig, t0 + at).await?;
            rig.apply(action)
                .await
                .with_context(|| format!("round {round}: {action:?}"))?;
        }
        supervise_until(&mut rig, t0 + opts.window).await?;
        stop.store(true, Ordering::Relaxed);
        // The clients stop within one transaction; a source that is still down stops them
        // too (they only retry connecting).
        rig.heal().await?;
        rig.receiver.set_reliable();
        clients.await??;
        report.transactions_committed += counts.committed.load(Ordering::Relaxed);
        report.transactions_failed += counts.failed.load(Ordering::Relaxed);
        truth.read(&rig.source.client("source").await?).await?;

        let settle_start = Instant::now();
        let outcome = loop {
            rig.supervise()?;
            let outcome = observer.observe(&rig, &truth).await;
            let timed_out = settle_start.elapsed() > opts.settle_timeout;
            if outcome.settled() || outcome.hopeless() || timed_out {
                break outcome;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let settle = settle_start.elapsed().as_secs_f64();
        report.slowest_settle_secs = report.slowest_settle_secs.max(settle);
        report.changes_checked = truth.changes.len();
        report.rows_compared = outcome.rows;
        report.file_duplicates = outcome.file.duplicates;
        report.webhook_duplicates = outcome.webhook.duplicates;
        report.dead_letters = outcome.dead_letters;
        report.processes = rig.process_counts();
        for note in rig.take_exit_notes(&mut exit_notes) {
            println!("  {note}");
        }
        let ok = outcome.settled() && outcome.dead_letters == 0 && outcome.file.duplicates == 0;
        println!(
            "  settled in {settle:.1} s: {} changes checked, {} target rows, webhook duplicates {}",
            truth.changes.len(),
            outcome.rows,
            outcome.webhook.duplicates
        );
        if !ok {
            report.lost = outcome.file.missing().max(outcome.webhook.missing());
            report.diverged = outcome.file.diverged_count + outcome.webhook.diverged_count;
            report.diverged_tables = outcome.unequal.len();
            if !outcome.hopeless() && !outcome.settled() {
                report.stalls += 1;
            }
            println!("{}", rig.diagnostics());
            report.failure = Some(format!("{plan}\n{}", outcome.describe()));
            break;
        }
        report.rounds_passed += 1;
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Keeps supervising the processes until `deadline`.
async fn supervise_until(rig: &mut Rig, deadline: Instant) -> anyhow::Result<()> {
    loop {
        rig.supervise()?;
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
    }
}
