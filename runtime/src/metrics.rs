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
    pub replicator_slot_retained_bytes: IntGauge,
    pub replicator_slot_retained_bytes_over_limit: IntGauge,
    pub replicator_slot_safe_wal_size_bytes: IntGauge,
    pub replicator_slot_wal_status: IntGaugeVec,
    pub replicator_bytes_published: IntCounter,
    pub replicator_in_flight: IntGauge,
    pub replicator_publish_duration: Histogram,
    pub worker_lag: Histogram,
    pub worker_held_messages: IntGauge,
    pub worker_consumer_pending: IntGauge,
    pub worker_consumer_ack_pending: IntGauge,
    pub webhook_requests: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub config_info: IntGaugeVec,
    /// 1 while `/readyz` answers 200 (set by [`crate::http::serve`] at each scrape).
    pub ready: IntGauge,
}

/// The values `pg_flo_replicator_slot_wal_status{status}` takes (PostgreSQL's
/// `pg_replication_slots.wal_status`); the slot's current one is 1, the others 0.
pub const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

/// The outcomes of `pg_flo_worker_messages_total{outcome}`. Each series exists from the start
/// at 0, so that `increase()` sees the first dead letter (a series born at 1 has no increase).
pub const WORKER_OUTCOMES: [&str; 5] = [
    "applied",
    "duplicate",
    "held",
    "dead_lettered",
    "broken_part",
];

/// Buckets of the latency histograms: 1 ms to 10 min.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    600.0,
];

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
    for outcome in WORKER_OUTCOMES {
        worker_messages.with_label_values(&[outcome]);
    }
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
    let histogram = |name: &str, help: &str| -> Result<Histogram, prometheus::Error> {
        let h =
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))?;
        registry.register(Box::new(h.clone()))?;
        Ok(h)
    };
    let gauge_vec =
        |name: &str, help: &str, label: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
    let webhook_requests = IntCounterVec::new(
        Opts::new(
            "pg_flo_webhook_requests_total",
            "Webhook requests by outcome: the HTTP status code, or `error` (no answer: \
             connection failed, timed out)",
        ),
        &["status"],
    )?;
    registry.register(Box::new(webhook_requests.clone()))?;
    Ok(Metrics {
        replicator_slot_retained_bytes: gauge(
            "pg_flo_replicator_slot_retained_bytes",
            "Source WAL the group's slot retains (current WAL position minus the slot's \
             restart_lsn); it cannot be recycled while the slot holds it",
        )?,
        replicator_slot_retained_bytes_over_limit: gauge(
            "pg_flo_replicator_slot_retained_bytes_over_limit",
            "1 while the slot retains more source WAL than --max-slot-retained-bytes, 0 otherwise \
             (and without the setting)",
        )?,
        replicator_slot_safe_wal_size_bytes: gauge(
            "pg_flo_replicator_slot_safe_wal_size_bytes",
            "WAL that can still be written before the slot is in danger of being lost \
             (pg_replication_slots.safe_wal_size; -1 when unlimited: no max_slot_wal_keep_size)",
        )?,
        replicator_slot_wal_status: gauge_vec(
            "pg_flo_replicator_slot_wal_status",
            "The slot's wal_status: 1 for the current one of reserved, extended, unreserved, lost",
            "status",
        )?,
        replicator_bytes_published: counter(
            "pg_flo_replicator_bytes_published_total",
            "Payload bytes of the NATS messages acknowledged by JetStream",
        )?,
        replicator_in_flight: gauge(
            "pg_flo_replicator_in_flight",
            "Published NATS messages awaiting their JetStream acknowledgement",
        )?,
        replicator_publish_duration: histogram(
            "pg_flo_replicator_publish_duration_seconds",
            "Time from publishing a NATS message to its JetStream acknowledgement",
        )?,
        worker_lag: histogram(
            "pg_flo_worker_lag_seconds",
            "End-to-end lag: from the source transaction's commit to the sink commit that made \
             it durable (observed per sink commit, for its newest transaction)",
        )?,
        worker_held_messages: gauge(
            "pg_flo_worker_held_messages",
            "NATS messages held back until their predecessor arrives",
        )?,
        worker_consumer_pending: gauge(
            "pg_flo_worker_consumer_pending",
            "Messages in the group's stream not yet delivered to the worker (JetStream \
             consumer num_pending)",
        )?,
        worker_consumer_ack_pending: gauge(
            "pg_flo_worker_consumer_ack_pending",
            "Messages delivered to the worker and not yet acknowledged (JetStream consumer \
             num_ack_pending)",
        )?,
        webhook_requests,
        build_info: gauge_vec(
            "pg_flo_build_info",
            "Always 1; the version of the running pg_flo",
            "version",
        )?,
        config_info: gauge_vec(
            "pg_flo_config_info",
            "Always 1; the hash of the configuration files the process loaded (config file, \
             rules, routing: pg_flo_config::files_hash, the operator's pgflo.io/config-hash)",
            "hash",
        )?,
        ready: gauge(
            "pg_flo_ready",
            "1 while the process streams (replicator) or consumes (worker), when /readyz answers \
             200; 0 before that and while it reconnects",
        )?,
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
