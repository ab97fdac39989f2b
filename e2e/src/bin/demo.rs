//! `demo`: the main job on local defaults, end to end, on throw-away servers.
//!
//! Starts a PostgreSQL cluster (databases `source` and `target`) and a NATS JetStream server
//! with the e2e harness, creates `public.users` in both databases and runs:
//! - `pg_flo replicator --group demo --tables users` and `pg_flo worker postgres --group demo`
//!   (source -> NATS -> target);
//! - `pg_flo replicator --group demo_json --tables users` and `pg_flo worker stdout --group
//!   demo_json`, whose JSON lines the demo prints.
//!
//! Then it runs a small scripted workload on the source (inserts, updates and deletes, each in
//! its own transaction, a few per second for `DEMO_SECONDS` seconds, default 10; `0` runs until
//! Ctrl-C), prints each step and the target row as it arrives, and finally checks that the
//! target equals the source: `demo ok: target matches source (N rows)` and exit 0, or exit 1.
//!
//! Needs the `pg_flo` binary of the same cargo profile (`cargo build --bins`; `scripts/demo.sh`
//! does it all). Ctrl-C in a terminal reaches the whole foreground process group, which would
//! stop the servers and pg_flo processes under the demo's feet, so the demo re-runs itself in
//! a process group of its own and tells it to stop by closing its stdin.

use std::collections::VecDeque;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use e2e::{count, dump_table, free_port, wait_for_ok, PgOptions, Pipeline, Process};
use tokio::sync::watch;
use tokio_postgres::Client;

/// Set in the re-run child that does the actual work.
const CHILD_ENV: &str = "PG_FLO_DEMO_CHILD";
/// How long the workload runs (seconds; 0 = until Ctrl-C).
const SECONDS_ENV: &str = "DEMO_SECONDS";
const DEFAULT_SECONDS: u64 = 10;
const TABLE: &str = "public.users";
const SCHEMA: &str = "CREATE TABLE public.users (
    id serial PRIMARY KEY,
    name text,
    email text,
    created_at timestamptz DEFAULT now()
);";
/// Pause between workload steps (pacing only; arrival is polled, never assumed).
const STEP_INTERVAL: Duration = Duration::from_millis(300);
/// How long one change may take to reach the target before the demo gives up.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a pg_flo process may take to start streaming / consuming.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
];

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os(CHILD_ENV).is_some() {
        match runtime.block_on(run_demo()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("\ndemo FAILED: {e:#}");
                ExitCode::FAILURE
            }
        }
    } else {
        match runtime.block_on(supervise()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("demo: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs the demo as a child in its own process group; Ctrl-C (or SIGTERM) closes the child's
/// stdin, which makes it stop the workload, verify and clean up.
async fn supervise() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locate the demo executable")?;
    let mut child = tokio::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("start the demo child process")?;
    let mut stdin = child.stdin.take();
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.context("wait for the demo child process")?;
                let code = status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1);
                return Ok(ExitCode::from(code));
            }
            () = interrupted() => {
                if stdin.take().is_some() {
                    eprintln!("\ninterrupted: stopping the workload, then checking the target ...");
                } else {
                    eprintln!("still shutting down (stopping pg_flo and the servers); please wait");
                }
            }
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Becomes true when stdin reaches end of file (the supervisor asked us to stop, or died).
fn stop_on_stdin_eof() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(true);
    });
    rx
}

fn demo_seconds() -> anyhow::Result<u64> {
    match std::env::var(SECONDS_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().with_context(|| {
            format!("{SECONDS_ENV} must be a whole number of seconds (0 = until Ctrl-C), got {v:?}")
        }),
        _ => Ok(DEFAULT_SECONDS),
    }
}

/// `args` as a shell-like command line, with password values hidden.
fn show_command(args: &[String]) -> String {
    let mut out = String::from("pg_flo");
    let mut hide_next = false;
    for arg in args {
        out.push(' ');
        if hide_next {
            out.push_str("<hidden>");
        } else if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
            out.push_str(&format!("'{}'", arg.replace('\'', r"'\''")));
        } else {
            out.push_str(arg);
        }
        hide_next = !hide_next && arg.starts_with("--") && arg.ends_with("password");
    }
    out
}

/// Spawns `pg_flo` with `args` and waits until it logs `ready_line`.
async fn start_pg_flo(name: &str, args: &[String], ready_line: &str) -> anyhow::Result<Process> {
    let p = Pipeline::spawn(name, args)?;
    if let Err(e) = p.wait_for_output(ready_line, START_TIMEOUT).await {
        anyhow::bail!("{name} did not start: {e:#}\n{}", p.output_dump());
    }
    Ok(p)
}

/// Prints the stdout worker's JSON lines that arrived since the last call.
struct JsonTail {
    offset: usize,
    lines: usize,
}

impl JsonTail {
    fn print_new(&mut self, worker: &Process) {
        let out = worker.stdout();
        let Some(new) = out.get(self.offset..) else {
            return;
        };
        let Some(end) = new.rfind('\n') else {
            return;
        };
        for line in new[..end].lines() {
            println!("      json> {line}");
            self.lines += 1;
        }
        self.offset += end + 1;
    }
}

/// The row `id` of `public.users` as text, if it exists.
async fn row_text(client: &Client, id: i32) -> anyhow::Result<Option<String>> {
    let row = client
        .query_opt("SELECT t::text FROM public.users t WHERE id = $1", &[&id])
        .await
        .context("read a row")?;
    Ok(row.map(|r| r.get(0)))
}

/// Waits until row `id` of the target reads `expected`, polling every millisecond (not the
/// tests' 50 ms), so the time the demo shows is the pipeline's, not the poll's.
async fn arrival(target: &Client, id: i32, expected: &Option<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_DEADLINE;
    while row_text(target, id).await? != *expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "row id={id} did not reach the target within {STEP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The sample lines of `names` in a Prometheus text exposition.
fn metric_lines<'a>(text: &'a str, names: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && names.iter().any(|n| l.starts_with(n)))
        .collect()
}

fn rows_text(n: i64) -> String {
    if n == 1 {
        "1 row,".to_owned()
    } else {
        format!("{n} rows,")
    }
}

/// The next scripted change, and what it did.
enum Step {
    Insert { id: i32, name: String },
    Update { id: i32, email: String },
    Delete { id: i32 },
}

impl Step {
    fn id(&self) -> i32 {
        match self {
            Step::Insert { id, .. } | Step::Update { id, .. } | Step::Delete { id } => *id,
        }
    }

    fn describe(&self) -> String {
        match self {
            Step::Insert { id, name } => format!("INSERT users id={id} name={name:?}"),
            Step::Update { id, email } => format!("UPDATE users SET email={email:?} WHERE id={id}"),
            Step::Delete { id } => format!("DELETE FROM users WHERE id={id}"),
        }
    }
}

/// Runs step `n` of the workload on the source, one statement = one transaction.
async fn run_step(source: &Client, n: u64, live: &mut VecDeque<i32>) -> anyhow::Result<Step> {
    let name_of = |n: u64| {
        let base = NAMES[(n as usize) % NAMES.len()];
        match n as usize / NAMES.len() {
            0 => base.to_owned(),
            round => format!("{base}{round}"),
        }
    };
    match (n % 5, live.len()) {
        (2, 1..) => {
            let id = *live.back().context("no live row")?;
            let row = source
                .query_one(
                    "UPDATE public.users SET email = name || '@example.org' WHERE id = $1 \
                     RETURNING email",
                    &[&id],
                )
                .await
                .context("update")?;
            Ok(Step::Update {
                id,
                email: row.get(0),
            })
        }
        (4, 2..) => {
            let id = live.pop_front().context("no live row")?;
            source
                .execute("DELETE FROM public.users WHERE id = $1", &[&id])
                .await
                .context("delete")?;
            Ok(Step::Delete { id })
        }
        _ => {
            let name = name_of(n);
            let email = format!("{name}@example.com");
            let row = source
                .query_one(
                    "INSERT INTO public.users (name, email) VALUES ($1, $2) RETURNING id",
                    &[&name, &email],
                )
                .await
                .context("insert")?;
            let id: i32 = row.get(0);
            live.push_back(id);
            Ok(Step::Insert { id, name })
        }
    }
}

async fn run_demo() -> anyhow::Result<()> {
    let mut stop = stop_on_stdin_eof();
    let seconds = demo_seconds()?;

    println!("pg_flo demo: PostgreSQL -> pg_flo replicator -> NATS JetStream -> pg_flo worker");
    println!("starting a throw-away PostgreSQL and NATS (temp dirs, removed at exit) ...");
    let p = Pipeline::start(PgOptions::default()).await?;
    p.both(SCHEMA).await.context("create the demo table")?;
    let source = p.source().await?;
    let target = p.target().await?;

    let rep_metrics = free_port()?;
    let worker_metrics = free_port()?;
    let mut rep_args = p.replicator_args("demo", "users");
    rep_args.extend(["--metrics-addr".into(), format!("127.0.0.1:{rep_metrics}")]);
    let mut worker_args = p.pg_worker_args("demo");
    worker_args.extend([
        "--metrics-addr".into(),
        format!("127.0.0.1:{worker_metrics}"),
    ]);
    let json_rep_args = p.replicator_args("demo_json", "users");
    let json_worker_args: Vec<String> = [
        "worker",
        "stdout",
        "--group",
        "demo_json",
        "--nats-url",
        &p.nats.url(),
    ]
    .map(String::from)
    .to_vec();

    let mut procs = vec![
        start_pg_flo("replicator-demo", &rep_args, "streaming changes").await?,
        start_pg_flo("worker-demo", &worker_args, "worker consuming").await?,
        start_pg_flo("replicator-demo_json", &json_rep_args, "streaming changes").await?,
        start_pg_flo("worker-demo_json", &json_worker_args, "worker consuming").await?,
    ];

    let port = p.pg.port();
    println!();
    println!("servers (they live as long as the demo runs):");
    println!(
        "  PostgreSQL  127.0.0.1:{port}, user {}, databases `source` and `target`",
        p.pg.user()
    );
    println!(
        "              psql -h {} -p {port} -U {} -d target   (unix socket, no password)",
        p.pg.socket_dir().display(),
        p.pg.user()
    );
    println!(
        "  NATS        {} (JetStream), monitoring http://127.0.0.1:{}/jsz?streams=true",
        p.nats.url(),
        p.nats.monitor_port()
    );
    println!("              streams pgflo_demo_stream, pgflo_demo_json_stream");
    println!("  metrics     replicator http://127.0.0.1:{rep_metrics}/metrics, worker http://127.0.0.1:{worker_metrics}/metrics (also /healthz, /readyz)");
    println!();
    println!("pg_flo processes started (password values hidden):");
    for (proc, args) in
        procs
            .iter()
            .zip([&rep_args, &worker_args, &json_rep_args, &json_worker_args])
    {
        println!("  [{}] {}", proc.name(), show_command(args));
        println!("      log: {}", proc.stderr_path().display());
    }
    println!();
    match seconds {
        0 => println!("workload on source.public.users until Ctrl-C; each step is one transaction"),
        s => println!("workload on source.public.users for {s}s; each step is one transaction"),
    }

    let json_worker = procs.get(3).context("stdout worker missing")?;
    let mut json = JsonTail {
        offset: 0,
        lines: 0,
    };
    let started = Instant::now();
    let deadline = (seconds > 0).then(|| started + Duration::from_secs(seconds));
    let mut interval = tokio::time::interval(STEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live = VecDeque::new();
    let mut steps = 0u64;
    while !*stop.borrow() && deadline.is_none_or(|d| Instant::now() < d) {
        let step = run_step(&source, steps, &mut live).await?;
        steps += 1;
        let applied = Instant::now();
        println!("[{steps:>3}] source: {}", step.describe());
        let id = step.id();
        let expected = row_text(&source, id).await?;
        arrival(&target, id, &expected).await?;
        let rows = count(&target, TABLE).await?;
        let took = applied.elapsed().as_millis();
        match &expected {
            Some(row) => println!("      target: {} after {took} ms: {row}", rows_text(rows)),
            None => println!(
                "      target: {} after {took} ms: id={id} is gone",
                rows_text(rows)
            ),
        }
        json.print_new(json_worker);
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => {}
        }
    }

    println!();
    println!("workload done: {steps} transactions; waiting for the target to match the source ...");
    if let Err(e) = p.wait_equal(TABLE, "id").await {
        let src = dump_table(&source, TABLE, "id").await.unwrap_or_default();
        let tgt = dump_table(&target, TABLE, "id").await.unwrap_or_default();
        anyhow::bail!("target does not match source: {e:#}\nsource:\n{src}\ntarget:\n{tgt}");
    }
    let rows = count(&target, TABLE).await?;

    // Every step is one change, so the stdout worker prints one JSON line per step.
    let expected_lines = usize::try_from(steps).unwrap_or(usize::MAX);
    let json_done = wait_for_ok(
        "the stdout worker to print every change",
        STEP_DEADLINE,
        || {
            json.print_new(json_worker);
            let seen = json.lines;
            async move {
                if seen >= expected_lines {
                    Ok(())
                } else {
                    Err(format!("{seen} of {expected_lines} JSON lines"))
                }
            }
        },
    )
    .await;
    if let Err(e) = json_done {
        println!("note: {e:#}");
    }

    for (name, port, names) in [
        (
            "replicator",
            rep_metrics,
            &[
                "pg_flo_replicator_transactions_total",
                "pg_flo_replicator_changes_published_total",
            ][..],
        ),
        (
            "worker",
            worker_metrics,
            &[
                "pg_flo_worker_changes_applied_total",
                "pg_flo_worker_commits_total",
                "pg_flo_worker_messages_total",
            ][..],
        ),
    ] {
        match e2e::http_get(port, "/metrics").await {
            Ok(text) => {
                for line in metric_lines(&text, names) {
                    println!("metrics ({name}): {line}");
                }
            }
            Err(e) => println!("metrics ({name}): unavailable: {e:#}"),
        }
    }

    // Graceful stop: SIGTERM, then wait (dropping a Process kills it otherwise).
    for proc in &mut procs {
        proc.terminate()?;
    }
    for proc in &mut procs {
        if proc.wait_exit(Duration::from_secs(30)).await.is_none() {
            println!("note: {} did not stop within 30s; killing it", proc.name());
        }
    }

    println!("demo ok: target matches source ({rows} rows)");
    Ok(())
}
