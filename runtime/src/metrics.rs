//! Prometheus metrics of both processes, served on `/metrics` by [`crate::http`].
//!
//! Names follow `pg_flo_<subsystem>_<name>_<unit>[_total]`; labels are bounded (error kind,
//! outcome; table names on per-table counters), never LSNs or row keys.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    pub replicator_changes_read: IntCounter,
    pub replicator_transactions: IntCounter,
    pub replicator_messages_published: IntCounter,
    pub replicator_changes_published: IntCounter,
    pub replicator_confirmed_lsn: IntGauge,
    pub replicator_lag_bytes: IntGauge,
    pub worker_messages: IntCounterVec,
    pub worker_changes_applied: IntCounter,
    pub worker_commits: IntCounter,
    pub worker_applied_lsn: IntGauge,
    pub worker_conflicts: IntCounterVec,
    pub sink_commit_duration: Histogram,
    pub errors: IntCounterVec,
    pub copy_rows: IntCounterVec,
    pub copy_ranges_done: IntCounterVec,
    pub copy_ranges_total: IntGaugeVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
        let c = IntCounter::new(name, help)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
        let g = IntGauge::new(name, help)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let worker_messages = IntCounterVec::new(
        Opts::new(
            "pg_flo_worker_messages_total",
            "NATS messages handled by the worker, by outcome (applied, duplicate, held)",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(worker_messages.clone()))?;
    let errors = IntCounterVec::new(
        Opts::new("pg_flo_errors_total", "Errors by kind"),
        &["kind"],
    )?;
    registry.register(Box::new(errors.clone()))?;
    let worker_conflicts = IntCounterVec::new(
        Opts::new(
            "pg_flo_worker_conflicts_total",
            "Committed UPDATEs / DELETEs whose row the postgres sink's target did not have, by \
             table and kind (update_missing, delete_missing)",
        ),
        &["table", "kind"],
    )?;
    registry.register(Box::new(worker_conflicts.clone()))?;
    let sink_commit_duration = Histogram::with_opts(HistogramOpts::new(
        "pg_flo_sink_commit_duration_seconds",
        "Time to make a batch durable at the sink",
    ))?;
    registry.register(Box::new(sink_commit_duration.clone()))?;
    let copy_rows = IntCounterVec::new(
        Opts::new(
            "pg_flo_copy_rows_total",
            "Rows copied by the initial load, by table",
        ),
        &["table"],
    )?;
    registry.register(Box::new(copy_rows.clone()))?;
    let copy_ranges_done = IntCounterVec::new(
        Opts::new(
            "pg_flo_copy_ranges_done_total",
            "Copy ranges finished, by table",
        ),
        &["table"],
    )?;
    registry.register(Box::new(copy_ranges_done.clone()))?;
    let copy_ranges_total = IntGaugeVec::new(
        Opts::new("pg_flo_copy_ranges", "Copy ranges planned, by table"),
        &["table"],
    )?;
    registry.register(Box::new(copy_ranges_total.clone()))?;
    Ok(Metrics {
        copy_rows,
        copy_ranges_done,
        copy_ranges_total,
        replicator_changes_read: counter(
            "pg_flo_replicator_changes_read_total",
            "Row changes decoded from the replication slot",
        )?,
        replicator_transactions: counter(
            "pg_flo_replicator_transactions_total",
            "Source transactions read",
        )?,
        replicator_messages_published: counter(
            "pg_flo_replicator_messages_published_total",
            "NATS messages acknowledged by JetStream",
        )?,
        replicator_changes_published: counter(
            "pg_flo_replicator_changes_published_total",
            "Row changes acknowledged by JetStream",
        )?,
        replicator_confirmed_lsn: gauge(
            "pg_flo_replicator_confirmed_lsn",
            "Last LSN confirmed to the source slot (as a number)",
        )?,
        replicator_lag_bytes: gauge(
            "pg_flo_replicator_lag_bytes",
            "Source WAL bytes not yet confirmed by the replicator",
        )?,
        worker_messages,
        worker_changes_applied: counter(
            "pg_flo_worker_changes_applied_total",
            "Row changes made durable by the sink",
        )?,
        worker_commits: counter("pg_flo_worker_commits_total", "Sink commits (batches)")?,
        worker_applied_lsn: gauge(
            "pg_flo_worker_applied_lsn",
            "Commit LSN of the last source transaction made durable by the sink (as a number)",
        )?,
        worker_conflicts,
        sink_commit_duration,
        errors,
        registry,
    })
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| match build() {
        Ok(m) => m,
        // Only a programming error (a duplicate name) can get here.
        #[allow(clippy::panic)]
        Err(e) => panic!("metric registration failed: {e}"),
    })
}

/// Counts an error of `kind`.
pub fn error(kind: &str) {
    get().errors.with_label_values(&[kind]).inc();
}

/// Text exposition of every metric.
pub fn render() -> String {
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&get().registry.gather())
        .unwrap_or_default()
}
