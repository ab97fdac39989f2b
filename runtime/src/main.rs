//! The `pg_flo` binary: `replicator`, `worker <sink>` and `version`.

use std::process::ExitCode;

use tokio::sync::watch;

use pg_flo::cli::CommandLine;
use pg_flo::config::{self, LogFormat, Process, SinkConfig, WorkerConfig};
use pg_flo::http::Health;
use pg_flo::redact::error_chain;
use pg_flo::sink::{
    file::FileSink, postgres::PostgresSink, stdout::StdoutSink, webhook::WebhookSink, AnySink,
};

fn main() -> ExitCode {
    let cli = match CommandLine::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let worker = std::env::args().nth(1).as_deref() == Some("worker");
            if e.kind() == clap::error::ErrorKind::InvalidSubcommand && worker {
                eprintln!("{e}");
                eprintln!(
                    "pg_flo: unknown sink; the worker's sinks are: stdout, file, postgres, webhook"
                );
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    let loaded = match config::load(&cli) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pg_flo: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    if let Process::Version = loaded.process {
        println!("{}", pg_flo::cli::version_line());
        return ExitCode::SUCCESS;
    }
    init_logging(&loaded.log);
    if let Some(path) = &loaded.config_file {
        tracing::info!(path = %path.display(), "using config file");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    report_build_and_config(&loaded);
    // One thread runs every task (the replication stream, batching, publishing, the NATS and
    // PostgreSQL connections, the HTTP server): the pipeline is ordered, so more threads add
    // little but cross-thread wake-ups, which cost more CPU than the work itself (measured in
    // docs/benchmarks.md: the replicator's CPU per row halved, catch-up 1.2-1.3x faster).
    // Blocking file IO goes through tokio::fs / spawn_blocking, off this thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pg_flo: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(loaded.process));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "pg_flo stopped");
            ExitCode::from(1)
        }
    }
}

/// Sets `pg_flo_build_info` and `pg_flo_config_info` (the hash of the config, rules and
/// routing files read, by base name: see `pg_flo_config::files_hash`) and logs the hash.
fn report_build_and_config(loaded: &config::Loaded) {
    let mut paths: Vec<&std::path::Path> = loaded.config_file.iter().map(|p| p.as_path()).collect();
    if let Process::Worker(cfg) = &loaded.process {
        paths.extend(cfg.rules_config.as_deref());
        paths.extend(cfg.routing_config.as_deref());
    }
    let files: Vec<(String, Vec<u8>)> = paths
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, std::fs::read(p).ok()?))
        })
        .collect();
    let hash = pg_flo_config::files_hash(files.iter().map(|(n, c)| (n.as_str(), c.as_slice())));
    let m = pg_flo::metrics::get();
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    m.config_info.with_label_values(&[hash.as_str()]).set(1);
    tracing::info!(config_hash = %hash, files = files.len(), "configuration loaded");
}

fn init_logging(log: &config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
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
            _ = term => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

async fn run(process: Process) -> Result<(), String> {
    let shutdown = shutdown_signal();
    let health = Health::default();
    match process {
        Process::Version => Ok(()),
        Process::Replicator(cfg) => {
            if let Some(addr) = cfg.metrics_addr {
                let bound = pg_flo::http::serve(addr, health.clone())
                    .await
                    .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
                tracing::info!(%bound, "serving /metrics and /healthz");
            }
            pg_flo::source::replicator::run(*cfg, shutdown, health)
                .await
                .map_err(|e| error_chain(&e))
        }
        Process::Worker(cfg) => {
            if let Some(addr) = cfg.metrics_addr {
                let bound = pg_flo::http::serve(addr, health.clone())
                    .await
                    .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
                tracing::info!(%bound, "serving /metrics and /healthz");
            }
            let (transform, warnings) = pg_flo::worker::Transform::load(&cfg)?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            let sink = build_sink(&cfg, shutdown.clone()).await?;
            pg_flo::worker::run(*cfg, std::sync::Arc::new(transform), sink, shutdown, health)
                .await
                .map_err(|e| error_chain(&e))
        }
    }
}

async fn build_sink(
    cfg: &WorkerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<AnySink, String> {
    match &cfg.sink {
        SinkConfig::Stdout => Ok(AnySink::Stdout(StdoutSink::new())),
        SinkConfig::File { output_dir } => FileSink::new(output_dir.clone(), &cfg.group)
            .map(AnySink::File)
            .map_err(|e| error_chain(&e)),
        SinkConfig::Postgres(pg) => PostgresSink::connect(pg.clone())
            .await
            .map(|s| AnySink::Postgres(Box::new(s)))
            .map_err(|e| error_chain(&e)),
        SinkConfig::Webhook(webhook) => {
            let sink = WebhookSink::new(webhook, Some(shutdown))
                .map(|s| AnySink::Webhook(Box::new(s)))
                .map_err(|e| error_chain(&e))?;
            tracing::info!(
                url = %webhook.describe_url(),
                batch_size = webhook.batch_size,
                headers = ?webhook.headers.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
                "posting changes to the webhook"
            );
            Ok(sink)
        }
    }
}
