//! The dead-letter subject (`--dead-letter`): where a message the sink rejects permanently is
//! set aside, unchanged, so the rest of the stream flows.
//!
//! Contract:
//! - A dead letter is the original payload on `pgflo.<group>.dlq` (stream `pgflo_<group>_dlq`,
//!   kept until removed) with headers `Pg-Flo-Error` (the rejection, one line, values redacted
//!   by the error renderer), `Pg-Flo-Position`, `Pg-Flo-Prev` (absent on a replicator run's
//!   first message) and `Pg-Flo-Last` (`true` on a transaction's final message). It is
//!   PubAck'ed before the original is acked.
//! - It always fits the server's `max_payload`: the error text is cut to fit; a payload too
//!   large even then is stored in parts, each with `Pg-Flo-Chunk: i/n` and the same headers
//!   (concatenate the parts in order to get the original payload).
//! - At start the worker reads the newest dead letters back ([`Target::recent`]), so that the
//!   successor of a message dead-lettered just before a restart does not wait for it.

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;

use super::ordering::DeadLetter;
use super::WorkerError;
use crate::message::{ChangeBatch, Position, FORMAT_HEADER, FORMAT_VERSION};
use crate::nats::{self as nats_setup, NatsError};
use crate::sink::SinkError;

/// How many of the newest dead letters are read back at start.
const READ_BACK: u64 = 100;
/// Room kept for the protocol's header framing.
const HEADER_FRAMING: usize = 64;

/// Where rejected messages go.
pub struct Target {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    max_payload: usize,
}

/// A position as `lsn:seq` in decimal (machine-readable header form).
fn encode_position(p: Position) -> String {
    format!("{}:{}", p.commit_lsn, p.seq)
}

fn decode_position(s: &str) -> Option<Position> {
    let (lsn, seq) = s.split_once(':')?;
    Some(Position {
        commit_lsn: lsn.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// Size of a header block on the wire, roughly (`Name: value\r\n` per header, plus framing).
fn header_bytes(headers: &[(&str, String)]) -> usize {
    HEADER_FRAMING
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
}

/// Cuts `error` so that `payload + headers` fit `max_payload`; splits the payload into parts
/// when even an empty error does not fit. Returns the error text to send and the part size
/// (`None`: one message).
fn fit(error: &str, fixed: usize, payload: usize, max_payload: usize) -> (String, Option<usize>) {
    const MARK: &str = " [cut]";
    let room = max_payload.saturating_sub(fixed + payload + "Pg-Flo-Error".len() + 4);
    if error.len() <= room {
        return (error.to_owned(), None);
    }
    if room > MARK.len() + 16 {
        let mut end = room - MARK.len();
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        return (format!("{}{MARK}", &error[..end]), None);
    }
    // Parts: keep up to 1 KiB of error text and split the payload around it.
    let mut end = error.len().min(1024);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    let error = error[..end].to_owned();
    let chunk_header = "Pg-Flo-Chunk".len() + 4 + 24;
    let part = max_payload.saturating_sub(fixed + error.len() + chunk_header + 32);
    (error, Some(part.max(1)))
}

impl Target {
    pub async fn open(
        js: &jetstream::Context,
        group: &str,
        max_payload: usize,
    ) -> Result<Target, NatsError> {
        let stream = nats_setup::ensure_dead_letter_stream(js, group).await?;
        Ok(Target {
            js: js.clone(),
            stream,
            subject: nats_setup::dead_letter_subject(group),
            max_payload,
        })
    }

    /// The newest dead letters, newest first.
    pub async fn recent(&self) -> Vec<(Position, DeadLetter)> {
        let mut out = Vec::new();
        let mut s = self.stream.clone();
        let Ok(info) = s.info().await else {
            return out;
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        if info.state.messages == 0 {
            return out;
        }
        let mut seq = last;
        while seq >= first && last - seq < READ_BACK {
            if let Ok(m) = self.stream.get_raw_message(seq).await {
                if let Some(found) = read_letter(&m.headers, &m.payload) {
                    if !out.iter().any(|(p, _)| *p == found.0) {
                        out.push(found);
                    }
                }
            }
            if seq == 0 {
                break;
            }
            seq -= 1;
        }
        out
    }

    /// Publishes a rejected message, unchanged, with the error in headers, and waits for the
    /// PubAck (only then may the original be acked). Returns what the letter says of the
    /// message.
    pub async fn publish(
        &self,
        raw: &bytes::Bytes,
        error: &SinkError,
    ) -> Result<(Position, DeadLetter), WorkerError> {
        // The payload was decoded before it was applied; decoded again here, on this rare path,
        // so that the hot path keeps no copy.
        let batch = ChangeBatch::decode(raw).map_err(|e| WorkerError::DeadLetter {
            position: "?".into(),
            message: e.to_string(),
        })?;
        let pos = batch.position();
        let tables: Vec<String> = batch
            .relations
            .iter()
            .map(|r| format!("{}.{}", r.schema, r.table))
            .collect();
        let why = crate::redact::error_chain(error).replace(['\r', '\n'], " ");
        tracing::error!(position = %pos, tables = ?tables, error = %why, "moving a rejected message to the dead-letter subject");
        let mut fixed = vec![
            ("Pg-Flo-Position", pos.to_string()),
            ("Pg-Flo-Last", batch.last.to_string()),
            (FORMAT_HEADER, FORMAT_VERSION.to_string()),
            ("Pg-Flo-Pos", encode_position(pos)),
        ];
        if let Some(prev) = batch.prev {
            fixed.push(("Pg-Flo-Prev", encode_position(prev)));
        }
        let (why, part) = fit(&why, header_bytes(&fixed), raw.len(), self.max_payload);
        let fail = |e: &dyn std::fmt::Display| WorkerError::DeadLetter {
            position: pos.to_string(),
            message: e.to_string(),
        };
        let headers = |chunk: Option<String>| {
            let mut h = HeaderMap::new();
            for (n, v) in &fixed {
                h.insert(*n, v.as_str());
            }
            h.insert("Pg-Flo-Error", why.as_str());
            if let Some(c) = chunk {
                h.insert("Pg-Flo-Chunk", c.as_str());
            }
            h
        };
        let parts: Vec<(Option<String>, bytes::Bytes)> = match part {
            None => vec![(None, raw.clone())],
            Some(size) => {
                let n = raw.len().div_ceil(size).max(1);
                (0..n)
                    .map(|i| {
                        let end = ((i + 1) * size).min(raw.len());
                        (Some(format!("{}/{n}", i + 1)), raw.slice(i * size..end))
                    })
                    .collect()
            }
        };
        for (chunk, body) in parts {
            self.js
                .publish_with_headers(self.subject.clone(), headers(chunk), body)
                .await
                .map_err(|e| fail(&e))?
                .await
                .map_err(|e| fail(&e))?;
        }
        Ok((
            pos,
            DeadLetter {
                prev: batch.prev,
                last: batch.last,
            },
        ))
    }
}

/// What a stored dead letter says of its message.
fn read_letter(headers: &HeaderMap, payload: &[u8]) -> Option<(Position, DeadLetter)> {
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    if let Some(pos) = get("Pg-Flo-Pos").and_then(|s| decode_position(&s)) {
        let letter = DeadLetter {
            prev: get("Pg-Flo-Prev").and_then(|s| decode_position(&s)),
            last: get("Pg-Flo-Last").is_some_and(|s| s == "true"),
        };
        return Some((pos, letter));
    }
    // Written by an earlier version: the payload says it all.
    let batch = ChangeBatch::decode(payload).ok()?;
    Some((
        batch.position(),
        DeadLetter {
            prev: batch.prev,
            last: batch.last,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_in_headers() {
        let p = Position {
            commit_lsn: 0x016B_3748,
            seq: 7,
        };
        assert_eq!(decode_position(&encode_position(p)), Some(p));
        assert_eq!(decode_position("1/2#3"), None);
        assert_eq!(decode_position(""), None);
    }

    #[test]
    fn the_error_is_cut_or_the_payload_split_to_fit() {
        let long = "e".repeat(5000);
        // (error, fixed headers, payload, max_payload) -> (error length, part size)
        let cases = [
            ("short", 100, 1000, 10_000, 5, None),
            ("long error, small payload", 100, 1000, 4000, 2_884, None),
            (
                "payload at the limit",
                100,
                9_990,
                10_000,
                1024,
                Some(8_804),
            ),
        ];
        for (name, fixed, payload, max, want_len, want_part) in cases {
            let err = if name == "short" { "short" } else { &long };
            let (e, part) = fit(err, fixed, payload, max);
            assert_eq!((e.len(), part), (want_len, want_part), "{name}");
            match part {
                None => assert!(fixed + payload + e.len() + 16 <= max, "{name}"),
                Some(size) => assert!(fixed + size + e.len() + 52 <= max, "{name}"),
            }
        }
    }
}
