//! The system a chaos run breaks: a source and a target PostgreSQL cluster, one NATS server, a
//! fault-injecting proxy on every link, a webhook receiver, and three pipelines (replicator and
//! worker each) whose processes a supervisor starts again when they exit, as Kubernetes
//! would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::plan::{Action, Link, Pipe, Proc};
use super::workload;
use crate::webhook::{Receiver, Reply};
use crate::{FaultProxy, NatsServer, PgCluster, PgOptions, Process, TempDir};

/// How long the supervisor waits before starting an exited process again.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);

/// The test-decoding slot that records what the source committed.
pub const TRUTH_SLOT: &str = "chaos_truth";

/// A pg_flo process and what the supervisor knows of it.
struct Supervised {
    args: Vec<String>,
    process: Option<Process>,
    /// Killed by a fault: stays down until released.
    held: bool,
    paused: bool,
    restart_at: Option<Instant>,
    starts: u32,
    /// Exits nobody asked for (status and the last lines of stderr), newest last.
    exits: Vec<String>,
}

pub struct Rig {
    pub source: PgCluster,
    pub target: PgCluster,
    pub nats: NatsServer,
    links: BTreeMap<Link, FaultProxy>,
    pub receiver: Receiver,
    procs: BTreeMap<Proc, Supervised>,
    nats_paused: bool,
    target_paused: bool,
    /// The file sink's output directory and the rules and routing files.
    dir: TempDir,
}

const RULES: &str = "tables:
  t_routed:
    - type: transform
      column: secret
      parameters: {type: mask, mask_char: \"*\"}
";

const ROUTING: &str = "t_routed:
  destination_table: t_routed_copy
  column_mappings:
    - {source: id, destination: rid}
";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Rig {
    /// Starts everything and waits until every pipeline streams.
    pub async fn start() -> anyhow::Result<Rig> {
        let source = PgCluster::start(PgOptions::default()).await?;
        let target = PgCluster::start(PgOptions::default()).await?;
        let nats = NatsServer::start().await?;
        source.create_database("source").await?;
        target.create_database("target").await?;
        source
            .client("source")
            .await?
            .batch_execute(&workload::schema_sql(false))
            .await
            .context("create the source schema")?;
        target
            .client("target")
            .await?
            .batch_execute(&workload::schema_sql(true))
            .await
            .context("create the target schema")?;
        let receiver = Receiver::start(&[], Reply::Status(200)).await?;
        let mut links = BTreeMap::new();
        for (link, upstream) in [
            (Link::Source, source.port()),
            (Link::Publish, nats.port()),
            (Link::Consume, nats.port()),
            (Link::Target, target.port()),
            (Link::Webhook, receiver.port()),
        ] {
            links.insert(link, FaultProxy::start(loopback(upstream)).await?);
        }
        let dir = TempDir::new("chaos")?;
        std::fs::write(dir.path().join("rules.yaml"), RULES)?;
        std::fs::write(dir.path().join("routing.yaml"), ROUTING)?;
        let mut rig = Rig {
            source,
            target,
            nats,
            links,
            receiver,
            procs: BTreeMap::new(),
            nats_paused: false,
            target_paused: false,
            dir,
        };
        for proc in Proc::ALL {
            let args = rig.args(proc);
            rig.procs.insert(
                proc,
                Supervised {
                    args,
                    process: None,
                    held: false,
                    paused: false,
                    restart_at: None,
                    starts: 0,
                    exits: Vec::new(),
                },
            );
        }
        // Replicators first: a worker waits for its stream.
        for pipe in Pipe::ALL {
            rig.spawn(Proc::Replicator(pipe))?;
            rig.process(Proc::Replicator(pipe))?
                .wait_streaming()
                .await?;
        }
        for pipe in Pipe::ALL {
            rig.spawn(Proc::Worker(pipe))?;
            rig.process(Proc::Worker(pipe))?
                .wait_for_output("worker consuming", Duration::from_secs(60))
                .await?;
        }
        rig.source
            .client("source")
            .await?
            .batch_execute(&format!(
                "SELECT pg_create_logical_replication_slot('{TRUTH_SLOT}', 'test_decoding')"
            ))
            .await
            .context("create the truth slot")?;
        Ok(rig)
    }

    fn port(&self, link: Link) -> u16 {
        self.links.get(&link).map_or(0, FaultProxy::port)
    }

    /// The file sink's output directory.
    pub fn file_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn args(&self, proc: Proc) -> Vec<String> {
        let nats = |link| format!("nats://127.0.0.1:{}", self.port(link));
        let args: Vec<String> = match proc {
            Proc::Replicator(pipe) => vec![
                "replicator".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                self.port(Link::Source).to_string(),
                "--dbname".into(),
                "source".into(),
                "--user".into(),
                self.source.user().into(),
                "--password".into(),
                self.source.password().into(),
                "--sslmode".into(),
                "disable".into(),
                "--group".into(),
                pipe.group().into(),
                "--nats-url".into(),
                nats(Link::Publish),
                "--tables".into(),
                workload::TABLES.join(","),
                "--track-ddl".into(),
                // A transaction of a few hundred changes spans several messages.
                "--max-batch-changes".into(),
                "100".into(),
            ],
            Proc::Worker(pipe) => {
                let mut a: Vec<String> = vec![
                    "worker".into(),
                    match pipe {
                        Pipe::Postgres => "postgres",
                        Pipe::File => "file",
                        Pipe::Webhook => "webhook",
                    }
                    .into(),
                    "--group".into(),
                    pipe.group().into(),
                    "--nats-url".into(),
                    nats(Link::Consume),
                ];
                let dir = self.dir.path().display().to_string();
                let extra: Vec<String> = match pipe {
                    Pipe::Postgres => vec![
                        "--target-host".into(),
                        "127.0.0.1".into(),
                        "--target-port".into(),
                        self.port(Link::Target).to_string(),
                        "--target-dbname".into(),
                        "target".into(),
                        "--target-user".into(),
                        self.target.user().into(),
                        "--target-password".into(),
                        self.target.password().into(),
                        "--target-sslmode".into(),
                        "disable".into(),
                        "--rules-config".into(),
                        format!("{dir}/rules.yaml"),
                        "--routing-config".into(),
                        format!("{dir}/routing.yaml"),
                        "--dead-letter".into(),
                    ],
                    Pipe::File => vec![
                        "--file-output-dir".into(),
                        self.file_dir().display().to_string(),
                    ],
                    Pipe::Webhook => vec![
                        "--webhook-url".into(),
                        format!("http://127.0.0.1:{}/hook", self.port(Link::Webhook)),
                        "--webhook-batch-size".into(),
                        "10".into(),
                        "--webhook-timeout".into(),
                        "2s".into(),
                        "--webhook-retry-initial-wait".into(),
                        "100ms".into(),
                        "--webhook-retry-max-wait".into(),
                        "1s".into(),
                        "--dead-letter".into(),
                    ],
                };
                a.extend(extra);
                a
            }
        };
        args
    }

    fn supervised(&mut self, proc: Proc) -> anyhow::Result<&mut Supervised> {
        self.procs
            .get_mut(&proc)
            .with_context(|| format!("{proc} is not supervised"))
    }

    fn process(&self, proc: Proc) -> anyhow::Result<&Process> {
        self.procs
            .get(&proc)
            .and_then(|s| s.process.as_ref())
            .with_context(|| format!("{proc} is not running"))
    }

    fn spawn(&mut self, proc: Proc) -> anyhow::Result<()> {
        let s = self.supervised(proc)?;
        let process =
            Process::spawn_pg_flo(&proc.to_string(), &s.args, [("PG_FLO_LOG_LEVEL", "info")])?;
        s.process = Some(process);
        s.starts += 1;
        s.restart_at = None;
        Ok(())
    }

    /// Notices exited processes and starts them again after a backoff (unless a fault holds
    /// them down).
    pub fn supervise(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (proc, s) in &mut self.procs {
            if s.held {
                continue;
            }
            if let Some(p) = s.process.as_mut() {
                if let Some(status) = p.try_status()? {
                    let tail: Vec<String> = p
                        .stderr()
                        .lines()
                        .rev()
                        .take(6)
                        .map(str::to_owned)
                        .collect();
                    s.exits.push(format!(
                        "{proc} exited ({status}); last lines:\n    {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
                    ));
                    s.process = None;
                    s.restart_at = Some(now + RESTART_BACKOFF);
                }
            }
            if s.process.is_none() && s.restart_at.is_none_or(|at| at <= now) {
                due.push(*proc);
            }
        }
        for proc in due {
            self.spawn(proc)?;
        }
        Ok(())
    }

    /// Performs one step of a round's timeline.
    pub async fn apply(&mut self, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Kill(proc) => {
                let s = self.supervised(proc)?;
                s.held = true;
                s.paused = false;
                if let Some(mut p) = s.process.take() {
                    p.kill_9()?;
                }
            }
            Action::Release(proc) => {
                let s = self.supervised(proc)?;
                s.held = false;
                s.restart_at = None;
            }
            Action::Stop(proc) => {
                let s = self.supervised(proc)?;
                if let Some(p) = &s.process {
                    p.pause()?;
                    s.paused = true;
                }
            }
            Action::Cont(proc) => {
                let s = self.supervised(proc)?;
                if let Some(p) = &s.process {
                    if s.paused {
                        p.resume()?;
                    }
                }
                s.paused = false;
            }
            Action::KillNats => self.nats.kill()?,
            Action::StartNats => {
                if !self.nats.is_running() {
                    self.nats.start_again().await?;
                }
            }
            Action::StopNats => {
                self.nats.pause()?;
                self.nats_paused = true;
            }
            Action::ContNats => {
                if self.nats_paused {
                    self.nats.resume()?;
                    self.nats_paused = false;
                }
            }
            Action::CrashTarget => self.target.crash()?,
            Action::StartTarget => {
                if !self.target.is_running() {
                    self.target.start_again().await?;
                }
            }
            Action::StopTarget => {
                self.target.pause()?;
                self.target_paused = true;
            }
            Action::ContTarget => {
                if self.target_paused {
                    self.target.resume()?;
                    self.target_paused = false;
                }
            }
            Action::RestartSource { crash } => {
                if crash {
                    self.source.crash()?;
                } else {
                    self.source.stop().await?;
                }
                self.source.start_again().await?;
            }
            Action::Cut(link) => self.link(link)?.cut(),
            Action::CutAfter(link, bytes) => self.link(link)?.cut_after(bytes),
            Action::Freeze(link) => self.link(link)?.freeze(),
            Action::Thaw(link) => self.link(link)?.thaw(),
            Action::Delay(link, by) => self.link(link)?.delay(by),
        }
        Ok(())
    }

    fn link(&self, link: Link) -> anyhow::Result<&FaultProxy> {
        self.links
            .get(&link)
            .with_context(|| format!("no proxy for {link:?}"))
    }

    /// Ends every fault: links thawed, undelayed and without a pending cut, servers running, processes resumed and
    /// released.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        for proxy in self.links.values() {
            proxy.heal();
        }
        self.apply(Action::ContNats).await?;
        self.apply(Action::StartNats).await?;
        self.apply(Action::ContTarget).await?;
        self.apply(Action::StartTarget).await?;
        if !self.source.is_running() {
            self.source.start_again().await?;
        }
        for proc in Proc::ALL {
            self.apply(Action::Cont(proc)).await?;
            self.apply(Action::Release(proc)).await?;
        }
        self.supervise()
    }

    /// Starts and exits of each process so far (the initial start included).
    pub fn process_counts(&self) -> BTreeMap<String, (u32, usize)> {
        self.procs
            .iter()
            .map(|(p, s)| (p.to_string(), (s.starts, s.exits.len())))
            .collect()
    }

    /// The unrequested exits of each process since the last call, for the log.
    pub fn take_exit_notes(&mut self, since: &mut BTreeMap<Proc, usize>) -> Vec<String> {
        let mut notes = Vec::new();
        for (proc, s) in &self.procs {
            let seen = since.entry(*proc).or_default();
            notes.extend(s.exits[*seen..].iter().cloned());
            *seen = s.exits.len();
        }
        notes
    }

    /// The output of every running process and the servers' log tails, for a failed round.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        for (proc, s) in &self.procs {
            for exit in &s.exits {
                out.push_str(&format!("{exit}\n"));
            }
            if let Some(p) = &s.process {
                out.push_str(&format!(
                    "--- {proc} stdout (tail) ---\n{}\n--- {proc} stderr (tail) ---\n{}\n",
                    tail(p.stdout()),
                    tail(p.stderr())
                ));
            }
        }
        for (what, path) in [
            ("source postgres", self.source.log_path()),
            ("target postgres", self.target.log_path()),
            ("nats", self.nats.log_path()),
        ] {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.push_str(&format!("--- {what} log (tail) ---\n{}\n", tail(text)));
        }
        out
    }
}
