//! TLS towards PostgreSQL (stub until the config branch lands).

use crate::config::PgConnConfig;

#[derive(Debug, thiserror::Error)]
#[error("tls is not available yet")]
pub struct TlsError;

pub fn tls_connector(
    _cfg: &PgConnConfig,
) -> Result<
    Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    TlsError,
> {
    Ok(None)
}
