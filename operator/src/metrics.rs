//! Prometheus metrics of the operator and its admin endpoint (`/metrics`, `/healthz`,
//! `/readyz`).
//!
//! Names follow `pg_flo_operator_<name>_<unit>[_total]`; labels are bounded: the resource kind
//! and the error category (see `controller::Error::category`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "pg_flo_operator_reconciles_total",
                "Reconciles run, by kind",
            ),
            &["kind"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "pg_flo_operator_reconcile_errors_total",
                "Reconciles that failed, by kind and error category",
            ),
            &["kind", "category"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "pg_flo_operator_reconcile_duration_seconds",
                "Duration of a reconcile, by kind",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "pg_flo_operator_leader",
            "1 while this replica holds the leader Lease",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        })
    }

    /// Counts one reconcile of `kind` that took `took` and failed with `error` (a category).
    pub fn observe_reconcile(&self, kind: &str, took: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[kind]).inc();
        self.duration
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
        if let Some(category) = error {
            self.errors.with_label_values(&[kind, category]).inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// Readiness of the process: ready once the controllers run (as leader or standby).
pub use pg_flo_admin::Health;

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until the process ends.
/// Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
) -> std::io::Result<SocketAddr> {
    pg_flo_admin::serve(addr, health, move || metrics.render()).await
}
