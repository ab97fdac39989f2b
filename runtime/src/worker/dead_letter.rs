//! The dead-letter subject (`--dead-letter`): where a message the sink rejects permanently is
//! set aside, unchanged, so the rest of the stream flows.
//!
//! Contract:
//! - A dead letter is the original payload on `pgflo.<group>.dlq` (stream `pgflo_<group>_dlq`,
//!   kept until removed) with headers `Pg-Flo-Error` (the rejection, one line, values redacted
//!   by the error renderer), `Pg-Flo-Position` and `Pg-Flo-Prev` (`X/Y#seq`; no `Pg-Flo-Prev` on
//!   a replicator run's first message) and `Pg-Flo-Last` (`true` on a transaction's final message). It is
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
        replicas: Option<usize>,
    ) -> Result<Target, NatsError> {
        let stream = nats_setup::ensure_dead_letter_stream(js, group, replicas).await?;
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
        ];
        if let Some(prev) = batch.prev {
            fixed.push(("Pg-Flo-Prev", prev.to_string()));
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

/// What a stored dead letter says of its message (from its headers; a part of a letter stored
/// in parts has them too).
fn read_letter(headers: &HeaderMap, payload: &[u8]) -> Option<(Position, DeadLetter)> {
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    // `Pg-Flo-Last` marks a letter of this version (earlier ones had only the position).
    let position = get("Pg-Flo-Position").and_then(|s| s.parse().ok());
    if let (Some(pos), Some(last)) = (position, get("Pg-Flo-Last")) {
        let letter = DeadLetter {
            prev: get("Pg-Flo-Prev").and_then(|s| s.parse().ok()),
            last: last == "true",
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
    fn a_letter_is_read_from_its_headers_or_an_older_ones_payload() {
        let batch = |seq, last, prev| ChangeBatch {
            seq,
            last,
            prev,
            ..crate::fixtures::sample()
        };
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.insert(*n, *v);
            }
            h
        };
        let at = |s: &str| s.parse::<Position>().ok();
        let old = batch(1, true, at("0/10#0"));
        let old_pos = old.position().to_string();
        let old = old.encode().unwrap();
        let cases = [
            (
                "this version, with predecessor",
                headers(&[
                    ("Pg-Flo-Position", "0/20#1"),
                    ("Pg-Flo-Prev", "0/20#0"),
                    ("Pg-Flo-Last", "false"),
                ]),
                Vec::new(),
                Some(("0/20#1", at("0/20#0"), false)),
            ),
            (
                "this version, first of a run",
                headers(&[("Pg-Flo-Position", "0/20#0"), ("Pg-Flo-Last", "true")]),
                Vec::new(),
                Some(("0/20#0", None, true)),
            ),
            (
                "an earlier version: only the position header",
                headers(&[("Pg-Flo-Position", "0/99#9")]),
                old.clone(),
                Some((old_pos.as_str(), at("0/10#0"), true)),
            ),
            ("garbage", headers(&[]), b"x".to_vec(), None),
        ];
        for (name, h, payload, want) in cases {
            let want = want.map(|(p, prev, last)| (at(p).unwrap(), DeadLetter { prev, last }));
            assert_eq!(read_letter(&h, &payload), want, "{name}");
        }
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
