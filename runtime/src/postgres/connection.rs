//! Ordinary (non-replication) PostgreSQL connections with TLS per `sslmode`.

use crate::config::PgConnConfig;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("postgres error")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Connects and spawns the connection task.
pub async fn connect(
    _cfg: &PgConnConfig,
    _application_name: &str,
) -> Result<tokio_postgres::Client, ConnectError> {
    unimplemented!()
}

impl ConnectError {
    pub fn is_transient(&self) -> bool {
        true
    }
}
