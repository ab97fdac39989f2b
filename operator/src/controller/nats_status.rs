//! The worker's durable JetStream consumer as NATS reports it, for `status.consumer`: how many
//! changes are still to be delivered (`pending`) and delivered but not yet acknowledged, i.e.
//! not yet applied to the sink (`ackPending`).
//!
//! Names are the runtime's (`pg_flo_config::names`): consumer `pgflo_<group>_consumer` on the
//! stream `pgflo_<group>_stream`. A reading that fails (NATS unreachable, credentials refused, no
//! answer within [`READ_TIMEOUT`]) is returned with `error` set; it never fails the reconcile.

use std::time::Duration;

use async_nats::jetstream::context::ConsumerInfoErrorKind;

use super::error_chain;
use super::validate::NatsAccess;
use crate::crd::ConsumerStatus;

/// How long one reading (connect and the consumer info request) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `url` without the user information (`nats://user:password@host` -> `nats://***@host`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme + 3 => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// Reads the consumer of `group` on the NATS server `access` describes.
///
/// `name` and `stream` are always set, `readAt` once NATS answered. A consumer (or stream) that
/// does not exist yet, because the worker has not started, is a reading without counts and
/// without error.
pub async fn read_consumer(access: &NatsAccess, group: &str) -> ConsumerStatus {
    let name = pg_flo_config::names::consumer_name(group);
    let stream = pg_flo_config::names::stream_name(group);
    let mut status = ConsumerStatus {
        name: Some(name.clone()),
        stream: Some(stream.clone()),
        ..ConsumerStatus::default()
    };
    let url = redact_url(&access.url);
    let read = async {
        let client = super::nats_cleanup::connect(access)
            .await
            .map_err(|e| format!("cannot connect to NATS at {url}: {}", error_chain(&*e)))?;
        let js = async_nats::jetstream::new(client);
        let handle = js
            .get_stream_no_info(&stream)
            .await
            .map_err(|e| format!("invalid stream name {stream}: {}", error_chain(&e)))?;
        match handle.consumer_info(&name).await {
            Ok(info) => Ok(Some(info)),
            Err(e)
                if matches!(
                    e.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!(
                "cannot read consumer {name} of stream {stream} from NATS at {url}: {}",
                error_chain(&e)
            )),
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(info)) => {
            status.read_at = Some(crate::crd::time_now());
            if let Some(info) = info {
                status.pending = Some(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                status.ack_pending = Some(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
                status.redelivered = Some(i64::try_from(info.num_redelivered).unwrap_or(i64::MAX));
            }
        }
        Ok(Err(e)) => status.error = Some(e),
        Err(_) => {
            status.error = Some(format!(
                "no answer from NATS at {url} within {}s",
                READ_TIMEOUT.as_secs()
            ))
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_user_information() {
        for (url, want) in [
            ("nats://h:4222", "nats://h:4222"),
            ("nats://u:p@h:4222", "nats://***@h:4222"),
            ("tls://token@h", "tls://***@h"),
            ("u:p@h:4222", "***@h:4222"),
            ("nats://a:b@c@h", "nats://***@h"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
