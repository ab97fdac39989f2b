//! Deleting a group's JetStream streams on an external NATS server when the group is deleted
//! with `reclaimPolicy: delete` (a managed NATS's data goes with its volumes instead).
//!
//! The stream names are the runtime's (`pg_flo_source::names::group_streams`): changes, state,
//! dead letters.
//! A stream already gone counts as deleted.

use std::time::Duration;

use async_nats::jetstream::context::DeleteStreamErrorKind;
use async_nats::jetstream::ErrorCode;

use pg_flo_source::names::group_streams;
use secrecy::ExposeSecret;

use super::validate::NatsAccess;
use super::Error;

fn nats_error(stream: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Nats {
        stream: stream.to_owned(),
        source: Box::new(e),
    }
}

/// A client of the NATS server `access` describes (one attempt, at most 10 s to connect).
pub(super) async fn connect(
    access: &NatsAccess,
) -> Result<async_nats::Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("pg-flo-operator")
        .connection_timeout(Duration::from_secs(10))
        .max_reconnects(Some(1));
    if let Some(creds) = &access.credentials {
        opts = opts.credentials(creds)?;
    }
    if let Some((user, password)) = &access.user {
        opts = opts.user_and_password(user.clone(), password.expose_secret().to_owned());
    }
    if let Some(token) = &access.token {
        opts = opts.token(token.expose_secret().to_owned());
    }
    if let Some(pem) = &access.ca_pem {
        // Chain and host name verified against the CA, as libpq's verify-full.
        let mode = pg_flo_source::tls::SslMode::VerifyFull;
        let tls = match &access.client_cert {
            Some((cert, key)) => {
                pg_flo_source::tls::client_config_with_cert(mode, Some(pem), cert, key)
            }
            None => pg_flo_source::tls::client_config(mode, Some(pem)),
        }?;
        if let Some(tls) = tls {
            opts = opts.tls_client_config((*tls).clone()).require_tls(true);
        }
    }
    Ok(opts.connect(access.url.as_str()).await?)
}

/// Deletes the group's streams on the NATS server `access` describes.
pub async fn delete_group_streams(access: &NatsAccess, group: &str) -> Result<(), Error> {
    let [first, ..] = group_streams(group);
    let client = connect(access).await.map_err(|source| Error::Nats {
        stream: first.clone(),
        source,
    })?;
    let js = async_nats::jetstream::new(client);
    for stream in group_streams(group) {
        match js.delete_stream(&stream).await {
            Ok(_) => tracing::info!(stream, "deleted NATS stream"),
            Err(e)
                if matches!(e.kind(), DeleteStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {}
            Err(e) => return Err(nats_error(&stream, e)),
        }
    }
    Ok(())
}
