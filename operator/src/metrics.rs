//! Prometheus metrics of the operator and its admin endpoint (`/metrics`, `/healthz`,
//! `/readyz`).
//!
//! Names follow `pg_flo_operator_<name>_<unit>[_total]`; labels are bounded: the resource kind
//! and the error category (see `controller::Error::category`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until the process ends.
/// Returns the bound address. (Three fixed GET routes: a few lines on a tokio listener rather
/// than an HTTP framework.)
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let ready = health.ready.load(Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let Ok(n) = sock.read(&mut buf).await else {
                    return;
                };
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.render()),
                    "/healthz" => ("200 OK", "ok\n".to_owned()),
                    "/readyz" if ready => ("200 OK", "ready\n".to_owned()),
                    "/readyz" => ("503 Service Unavailable", "not ready\n".to_owned()),
                    _ => ("404 Not Found", "not found\n".to_owned()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(local)
}
