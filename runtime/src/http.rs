//! The admin endpoint: `/metrics` (this process's Prometheus metrics, [`crate::metrics`]),
//! `/healthz` and `/readyz`, served by the shared `pg-flo-admin` crate.

use std::net::SocketAddr;

/// Shared readiness flag: set once the process streams / consumes.
pub use pg_flo_admin::Health;

/// Binds `addr` and serves until the process ends. Returns the bound address. Each `/metrics`
/// scrape first copies the readiness flag into `pg_flo_ready`, so the gauge and `/readyz` never
/// disagree.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<SocketAddr> {
    let flag = health.clone();
    pg_flo_admin::serve(addr, health, move || {
        crate::metrics::get().ready.set(i64::from(flag.is_ready()));
        crate::metrics::render()
    })
    .await
}
