//! The worker's durable JetStream consumer as NATS reports it, for `status.consumer`: how many
//! changes are still to be delivered (`pending`) and delivered but not yet acknowledged, i.e.
//! not yet applied to the sink (`ackPending`).
//!
//! `lagSeconds`: the age of the oldest change the worker has not acknowledged, read from the
//! stream itself: the first message on the group's subject after the consumer's ack floor
//! (`ack_floor.stream_seq + 1`, one `STREAM.MSG.GET`), whose payload starts with the source
//! commit time ([`commit_time_us`]). Why there: the operator cannot scrape the worker (tests
//! and NetworkPolicies), the worker writes no status, and the stream is the one place that
//! holds both what was applied (the ack floor) and when what follows was committed.
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
            Ok(info) => {
                let lag = oldest_pending_commit(&handle, &info, group).await;
                Ok(Some((info, lag)))
            }
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
            let read_at = crate::crd::time_now();
            if let Some((info, oldest)) = info {
                status.lag_seconds = if info.num_pending == 0 && info.num_ack_pending == 0 {
                    Some(0)
                } else {
                    oldest.map(|commit_us| lag_seconds(commit_us, read_at.0.as_microsecond()))
                };
                status.pending = Some(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                status.ack_pending = Some(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
                status.redelivered = Some(i64::try_from(info.num_redelivered).unwrap_or(i64::MAX));
            }
            status.read_at = Some(read_at);
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

/// Header of the parts of a change too large for one message (`i/n`, 1-based): only part 1
/// starts with the encoded message.
const CHUNK_HEADER: &str = "Pg-Flo-Chunk";

/// The source commit time (microseconds since the Unix epoch) of the first message of `group`
/// after the consumer's ack floor: the oldest change the worker has not acknowledged. `None`
/// when it cannot be read (gone, not permitted): `lagSeconds` is then unset.
async fn oldest_pending_commit(
    stream: &async_nats::jetstream::stream::Stream<()>,
    info: &async_nats::jetstream::consumer::Info,
    group: &str,
) -> Option<i64> {
    if info.num_pending == 0 && info.num_ack_pending == 0 {
        return None;
    }
    let from = info.ack_floor.stream_sequence.saturating_add(1);
    let subject = pg_flo_config::names::subject(group);
    let msg = match stream
        .get_first_raw_message_by_subject(&subject, from)
        .await
    {
        Ok(msg) => msg,
        Err(e) => {
            tracing::debug!(error = %error_chain(&e), "cannot read the oldest pending message");
            return None;
        }
    };
    let first_part = msg
        .headers
        .get(CHUNK_HEADER)
        .is_none_or(|v| v.as_str().starts_with("1/"));
    first_part
        .then(|| commit_time_us(&msg.payload))
        .flatten()
        .or_else(|| i64::try_from(msg.time.unix_timestamp_nanos() / 1000).ok())
}

/// Whole seconds from `commit_us` to `now_us` (microseconds since the Unix epoch), never
/// negative (a source clock ahead of the operator's reads as no lag).
pub fn lag_seconds(commit_us: i64, now_us: i64) -> i64 {
    now_us.saturating_sub(commit_us).max(0) / 1_000_000
}

/// `commit_time_us` (field 2) of an encoded change message (docs/message-format.md: a
/// MessagePack array `[version, commit_lsn, commit_time_us, ...]`), without decoding the rest;
/// `None` when `payload` does not start like one.
pub fn commit_time_us(payload: &[u8]) -> Option<i64> {
    let mut at = match *payload.first()? {
        0x90..=0x9f => 1,
        0xdc => 3,
        0xdd => 5,
        _ => return None,
    };
    let _version = msgpack_int(payload, &mut at)?;
    // The commit LSN may exceed i64: skipped as a u64.
    if payload.get(at) == Some(&0xcf) {
        at += 9;
    } else {
        msgpack_int(payload, &mut at)?;
    }
    msgpack_int(payload, &mut at)
}

/// The MessagePack integer at `*at` (advancing past it); `None` for anything else or a u64
/// beyond `i64`.
fn msgpack_int(payload: &[u8], at: &mut usize) -> Option<i64> {
    let b = *payload.get(*at)?;
    let (len, v) = match b {
        0x00..=0x7f => (1, i64::from(b)),
        0xe0..=0xff => (1, i64::from(i8::from_be_bytes([b]))),
        0xcc..=0xd3 => {
            let n = 1usize << (b & 0x03);
            let raw = payload.get(*at + 1..*at + 1 + n)?;
            let mut be = [0u8; 8];
            be[8 - n..].copy_from_slice(raw);
            let v = if b >= 0xd0 {
                // Sign-extend an n-byte two's complement value.
                if raw[0] & 0x80 != 0 {
                    be[..8 - n].fill(0xff);
                }
                i64::from_be_bytes(be)
            } else {
                i64::try_from(u64::from_be_bytes(be)).ok()?
            };
            (1 + n, v)
        }
        _ => return None,
    };
    *at += len;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every integer encoding MessagePack allows for field 2, after a version and an LSN of
    /// each width; payloads that are not change messages give `None`.
    #[test]
    fn the_commit_time_is_read_from_the_payload_prefix() {
        let table: [(&str, &[u8], Option<i64>); 11] = [
            ("fixint", &[0x9c, 0x02, 0x05, 0x07, 0xc0], Some(7)),
            ("negative fixint", &[0x9c, 0x02, 0x05, 0xff], Some(-1)),
            ("u8", &[0x9c, 0x02, 0xcc, 0xff, 0xcc, 0xc8], Some(200)),
            (
                "u16 lsn, i16",
                &[0x9c, 0x02, 0xcd, 0x01, 0x00, 0xd1, 0xff, 0x00],
                Some(-256),
            ),
            (
                "u64 lsn above i64, u32",
                &[
                    0x9c, 0x02, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xce, 0x00,
                    0x01, 0x00, 0x00,
                ],
                Some(65536),
            ),
            (
                "array16, u64",
                &[
                    0xdc, 0x00, 0x0c, 0x02, 0x01, 0xcf, 0x00, 0x06, 0x3f, 0x5c, 0x1a, 0x2b, 0x3c,
                    0x4d,
                ],
                Some(0x0006_3f5c_1a2b_3c4d),
            ),
            (
                "i64",
                &[
                    0x9c, 0x02, 0x01, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
                ],
                Some(-2),
            ),
            (
                "u64 above i64",
                &[0x9c, 0x02, 0x01, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0],
                None,
            ),
            ("not an array", &[0x82, 0x02, 0x01, 0x03], None),
            ("cut short", &[0x9c, 0x02, 0x01, 0xd3, 0xff], None),
            ("empty", &[], None),
        ];
        for (what, payload, want) in table {
            assert_eq!(commit_time_us(payload), want, "{what}");
        }
    }

    #[test]
    fn lag_is_whole_seconds_and_never_negative() {
        for (commit, now, want) in [
            (0, 0, 0),
            (1_000_000, 3_999_999, 2),
            (1_000_000, 4_000_000, 3),
            (5_000_000, 1_000_000, 0),
            (i64::MIN, i64::MAX, i64::MAX / 1_000_000),
        ] {
            assert_eq!(lag_seconds(commit, now), want, "{commit} {now}");
        }
    }

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
