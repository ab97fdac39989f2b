//! The admin endpoint: `/metrics` (this process's Prometheus metrics, [`crate::metrics`]),
//! `/healthz` and `/readyz`, served by the shared `pg-flo-admin` crate.

use std::net::SocketAddr;

/// Shared readiness flag: set once the process streams / consumes.
pub use pg_flo_admin::Health;

/// Binds `addr` and serves until the process ends. Returns the bound address.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<SocketAddr> {
    pg_flo_admin::serve(addr, health, crate::metrics::render).await
}
