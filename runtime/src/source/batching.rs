//! Cutting source transactions into NATS messages, without IO.
//!
//! Place in the pipeline: pgoutput change (or copied row) -> **batching** -> publish. The
//! replicator and the initial copy feed every change to a [`Batcher`] and publish what it
//! closes, in order.
//!
//! Contract:
//! - A message's payload (the encoded [`ChangeBatch`](crate::message::ChangeBatch)) never exceeds
//!   [`Limits::max_payload`]: the size is the exact encoded size, checked *before* a change is
//!   added; a change that does not fit closes the open message first.
//! - `--max-batch-changes` and `--max-batch-bytes` ([`Limits::max_changes`],
//!   [`Limits::max_bytes`]) cut earlier; a single change above `max_bytes` still goes alone
//!   in one message when it fits `max_payload`.
//! - A change that does not fit `max_payload` alone is encoded as a one-change message and
//!   split into [`Body::Parts`] of at most `max_payload - HEADER_ROOM` bytes; the worker
//!   concatenates them back (see `message::CHUNK_HEADER`). All parts but the final one are
//!   closed as soon as the change is read, so they leave memory before the next change comes;
//!   the final part (a copy of at most one message) waits for the transaction's end and
//!   carries `last` (`message::CHUNK_LAST_HEADER`).
//! - Every message's `seq` is the seq the caller gave its last change (the change's WAL
//!   position when streaming, a row counter in a copy), so positions do not depend on the
//!   limits; `prev` chains the messages of one `Batcher` (one replicator session).
//! - No message is empty: a transaction without changes closes nothing, and the final message
//!   of a transaction is the one holding its last change (`last = true`).
//! - Each change is encoded once, straight into the message being filled, and its decoded
//!   values are dropped then; a change larger than `max_payload` by its values alone is
//!   encoded around them ([`Rope`]): its parts are slices of the WAL message its values came
//!   in, so a large value is held once, not copied.

use std::collections::HashMap;
use std::io::Write;

use bytes::Bytes;
use rmp::encode as mp;

use crate::message::{Change, Position, Relation, SourceId, Value, FORMAT_VERSION};
use crate::source::encoded::Rope;

/// Fields of a [`ChangeBatch`](crate::message::ChangeBatch).
const FIELDS: u32 = 12;

/// An upper bound of a message's encoded size without its relations and changes.
pub const ENVELOPE_MAX: usize = 128;

/// Room left in each NATS message for its headers (message id, format, part headers).
pub const HEADER_ROOM: usize = 512;

/// How large messages may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most changes in one message.
    pub max_changes: usize,
    /// Most payload bytes in one message holding more than one change.
    pub max_bytes: usize,
    /// Most payload bytes in one message of any kind: the connected server's `max_payload`
    /// (and the stream's `max_msg_size`) less [`HEADER_ROOM`].
    pub max_payload: usize,
}

impl Limits {
    /// The limits for `--max-batch-changes`, `--max-batch-bytes` and a server that accepts
    /// messages of `server_max` bytes (headers included).
    pub fn new(max_changes: usize, max_bytes: usize, server_max: usize) -> Limits {
        let max_payload = server_max.saturating_sub(HEADER_ROOM).max(ENVELOPE_MAX * 4);
        Limits {
            max_changes: max_changes.max(1),
            max_bytes: max_bytes.clamp(1, max_payload),
            max_payload,
        }
    }
}

/// What every message of one transaction (or of one copy) shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub commit_lsn: u64,
    pub commit_time_us: i64,
    pub xid: u32,
    pub source: Option<SourceId>,
    /// Copy messages: each one is `last` (a copy has no transaction to keep together).
    pub copy: bool,
}

/// A message ready to publish.
#[derive(Debug)]
pub struct Closed {
    pub position: Position,
    /// The seq of its first change (with `position.seq`, the range its message id names).
    pub first: u64,
    pub prev: Option<Position>,
    pub last: bool,
    pub changes: usize,
    pub body: Body,
}

impl Closed {
    /// Payload bytes of the whole message (all parts).
    pub fn bytes(&self) -> usize {
        match &self.body {
            Body::Whole(b) => b.len(),
            Body::Parts { parts, .. } => parts.iter().map(Bytes::len).sum(),
        }
    }
}

#[derive(Debug)]
pub enum Body {
    /// One NATS message.
    Whole(Bytes),
    /// Parts `first..` (1-based, in order) of a change too large for a message: its one-change
    /// message cut in `count` parts. The parts before the last go out as soon as the change is
    /// read (a [`Closed`] with no changes), the final one when the transaction's end is known:
    /// it carries `last` (its message's own `last` field is written `false`).
    Parts {
        parts: Vec<Bytes>,
        first: u32,
        count: u32,
        last: Option<bool>,
    },
}

/// What is kept of a large change until its transaction's end is known.
enum Big {
    Whole(Vec<u8>, usize),
    Tail(Bytes, u32),
}

/// The message being filled.
#[derive(Default)]
struct Open {
    /// Encoded relations, concatenated, and how many.
    relations: Vec<u8>,
    relation_count: u16,
    /// Relation OID -> index in this message (OID 0, a DDL change's relation, is never shared).
    index: HashMap<u32, u16>,
    /// Encoded changes, concatenated, and how many.
    changes: Vec<u8>,
    count: usize,
    first: u64,
    seq: u64,
    /// A change too large for one message: its whole one-change message with the offset of
    /// its `last` flag (when it fits one NATS message after all), or the final part of it
    /// (copied out, so the rest is freed once published) and the number of parts.
    big: Option<Big>,
}

impl Open {
    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn size(&self) -> usize {
        ENVELOPE_MAX + self.relations.len() + self.changes.len()
    }
}

/// Where a change's relations go in the open message.
struct Plan {
    /// Index of each relation of the change.
    idx: Vec<u16>,
    /// Relations new to the message: OID and encoding.
    new: Vec<(u32, Vec<u8>)>,
    bytes: usize,
}

/// Cuts the transactions of one replicator session (or one copy) into messages.
pub struct Batcher {
    limits: Limits,
    /// Position of the last message closed.
    prev: Option<Position>,
    env: Option<Envelope>,
    open: Open,
    /// Reused for encoding a change before it is known where it goes.
    scratch: Vec<u8>,
}

impl Batcher {
    pub fn new(limits: Limits) -> Batcher {
        Batcher {
            limits,
            prev: None,
            env: None,
            open: Open::default(),
            scratch: Vec::new(),
        }
    }

    /// Starts a transaction (a copy: one `begin` for all of it). An unfinished previous one
    /// is dropped.
    pub fn begin(&mut self, env: Envelope) {
        self.env = Some(env);
        self.open = Open::default();
    }

    /// A new Relation message for `oid`: changes from now on carry the new shape.
    pub fn relation_changed(&mut self, oid: u32) {
        self.open.index.remove(&oid);
    }

    /// Adds `change` of the relations `rels` (the first is the change's own; a truncate lists
    /// every truncated table), `seq` being its position; returns the messages this closes.
    /// The change's relation indexes are set here.
    pub fn push(
        &mut self,
        mut change: Change,
        rels: &[&Relation],
        seq: u64,
    ) -> Result<Vec<Closed>, rmp_serde::encode::Error> {
        let Some(env) = self.env else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if self.open.big.is_some() {
            out.extend(self.close(false));
        }
        if !self.open.is_empty() && self.open.count >= self.limits.max_changes {
            out.extend(self.close(false));
        }
        // Its values alone are larger than any message: straight into its own buffer.
        if values_len(&change) > self.limits.max_payload {
            if !self.open.is_empty() {
                out.extend(self.close(false));
            }
            let plan = self.plan(rels)?;
            set_indexes(&mut change, &plan.idx);
            // Encoded around its values: they stay in the WAL message they came in.
            let big = self.one_change(env, &plan, seq, texts(&change).cloned(), |rope| {
                rmp_serde::encode::write(rope, &change)
            })?;
            drop(change);
            out.extend(self.open_big(env, big, seq));
            return Ok(out);
        }
        let mut plan = self.plan(rels)?;
        set_indexes(&mut change, &plan.idx);
        self.scratch.clear();
        rmp_serde::encode::write(&mut self.scratch, &change)?;
        if !self.open.is_empty()
            && self.open.size() + plan.bytes + self.scratch.len() > self.limits.max_bytes
        {
            out.extend(self.close(false));
            plan = self.plan(rels)?;
            set_indexes(&mut change, &plan.idx);
            self.scratch.clear();
            rmp_serde::encode::write(&mut self.scratch, &change)?;
        }
        if self.open.is_empty()
            && ENVELOPE_MAX + plan.bytes + self.scratch.len() > self.limits.max_payload
        {
            let scratch = std::mem::take(&mut self.scratch);
            let big = self.one_change(env, &plan, seq, [], |rope| {
                rope.write_all(&scratch).map_err(io_err)
            })?;
            out.extend(self.open_big(env, big, seq));
            return Ok(out);
        }
        for (oid, bytes) in plan.new {
            if oid != 0 {
                self.open.index.insert(oid, self.open.relation_count);
            }
            self.open.relations.extend_from_slice(&bytes);
            self.open.relation_count += 1;
        }
        if self.open.is_empty() {
            self.open.first = seq;
        }
        self.open.changes.extend_from_slice(&self.scratch);
        self.open.count += 1;
        self.open.seq = seq;
        Ok(out)
    }

    /// Ends the transaction: closes its final message (none when it had no changes).
    pub fn commit(&mut self) -> Option<Closed> {
        let closed = self.close(true);
        self.env = None;
        self.open = Open::default();
        closed
    }

    /// Closes the open message now (a copy closes the message holding its reset alone).
    pub fn cut(&mut self) -> Option<Closed> {
        self.close(false)
    }

    /// Opens a message holding one large change; returns the parts that can go out now.
    fn open_big(
        &mut self,
        env: Envelope,
        (body, last_at): (Rope, usize),
        seq: u64,
    ) -> Option<Closed> {
        let (big, early) = if body.len() <= self.limits.max_payload {
            (Big::Whole(body.into_vec(), last_at), None)
        } else {
            let mut parts = body.into_parts(self.limits.max_payload);
            let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
            let tail = parts
                .pop()
                .map(|t| Bytes::copy_from_slice(&t))
                .unwrap_or_default();
            let early = Closed {
                position: Position {
                    commit_lsn: env.commit_lsn,
                    seq,
                },
                first: seq,
                prev: self.prev,
                last: false,
                changes: 0,
                body: Body::Parts {
                    parts,
                    first: 1,
                    count,
                    last: None,
                },
            };
            (Big::Tail(tail, count), Some(early))
        };
        self.open = Open {
            big: Some(big),
            count: 1,
            first: seq,
            seq,
            ..Open::default()
        };
        early
    }

    fn plan(&self, rels: &[&Relation]) -> Result<Plan, rmp_serde::encode::Error> {
        let mut plan = Plan {
            idx: Vec::with_capacity(rels.len()),
            new: Vec::new(),
            bytes: 0,
        };
        for rel in rels {
            let known = (rel.oid != 0)
                .then(|| self.open.index.get(&rel.oid).copied())
                .flatten()
                .or_else(|| {
                    plan.new
                        .iter()
                        .position(|(oid, _)| *oid != 0 && *oid == rel.oid)
                        .map(|i| self.open.relation_count + i as u16)
                });
            match known {
                Some(i) => plan.idx.push(i),
                None => {
                    let bytes = rmp_serde::to_vec(rel)?;
                    plan.bytes += bytes.len();
                    plan.idx
                        .push(self.open.relation_count + plan.new.len() as u16);
                    plan.new.push((rel.oid, bytes));
                }
            }
        }
        Ok(plan)
    }

    /// A one-change message (the change written by `write`, borrowing `values`, see
    /// [`Rope`]) with the `last` flag's offset.
    fn one_change(
        &self,
        env: Envelope,
        plan: &Plan,
        seq: u64,
        values: impl IntoIterator<Item = Bytes>,
        write: impl FnOnce(&mut Rope) -> Result<(), rmp_serde::encode::Error>,
    ) -> Result<(Rope, usize), rmp_serde::encode::Error> {
        let mut buf = Vec::new();
        let last_at = head(&mut buf, env, seq, false, self.prev)?;
        write_len(&mut buf, plan.new.len())?;
        for (_, rel) in &plan.new {
            buf.extend_from_slice(rel);
        }
        write_len(&mut buf, 1)?;
        let mut rope = Rope::new(buf, values);
        write(&mut rope)?;
        let mut end = Vec::new();
        tail(&mut end, env)?;
        rope.write_all(&end).map_err(io_err)?;
        Ok((rope, last_at))
    }

    fn close(&mut self, last: bool) -> Option<Closed> {
        let env = self.env?;
        if self.open.is_empty() {
            return None;
        }
        let open = std::mem::take(&mut self.open);
        let last = last || env.copy;
        let position = Position {
            commit_lsn: env.commit_lsn,
            seq: open.seq,
        };
        let body = match open.big {
            // The envelope's bound was pessimistic: it fits one message after all.
            Some(Big::Whole(mut buf, last_at)) => {
                buf[last_at] = if last { 0xc3 } else { 0xc2 };
                Body::Whole(Bytes::from(buf))
            }
            Some(Big::Tail(part, count)) => Body::Parts {
                parts: vec![part],
                first: count,
                count,
                last: Some(last),
            },
            None => {
                let mut buf = Vec::with_capacity(open.size());
                // Writing to a Vec cannot fail.
                let _ = head(&mut buf, env, open.seq, last, self.prev);
                let _ = write_len(&mut buf, usize::from(open.relation_count));
                buf.extend_from_slice(&open.relations);
                let _ = write_len(&mut buf, open.count);
                buf.extend_from_slice(&open.changes);
                let _ = tail(&mut buf, env);
                Body::Whole(Bytes::from(buf))
            }
        };
        let closed = Closed {
            position,
            first: open.first,
            prev: self.prev,
            last,
            changes: open.count,
            body,
        };
        self.prev = Some(position);
        Some(closed)
    }
}

/// Writes fields 0 to 7 of a [`ChangeBatch`](crate::message::ChangeBatch) (after its array header); returns the offset of
/// the `last` flag.
fn head(
    buf: &mut Vec<u8>,
    env: Envelope,
    seq: u64,
    last: bool,
    prev: Option<Position>,
) -> Result<usize, rmp_serde::encode::Error> {
    use rmp_serde::encode::write;
    mp::write_array_len(buf, FIELDS).map_err(value_err)?;
    write(buf, &FORMAT_VERSION)?;
    write(buf, &env.commit_lsn)?;
    write(buf, &env.commit_time_us)?;
    write(buf, &env.xid)?;
    write(buf, &seq)?;
    let at = buf.len();
    write(buf, &last)?;
    write(buf, &prev)?;
    write(buf, &chrono::Utc::now().timestamp_micros())?;
    Ok(at)
}

/// Writes fields 10 and 11.
fn tail(buf: &mut Vec<u8>, env: Envelope) -> Result<(), rmp_serde::encode::Error> {
    rmp_serde::encode::write(buf, &env.source)?;
    rmp_serde::encode::write(buf, &env.copy)
}

fn write_len(buf: &mut Vec<u8>, n: usize) -> Result<(), rmp_serde::encode::Error> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    mp::write_array_len(buf, n).map(|_| ()).map_err(value_err)
}

fn value_err(e: mp::ValueWriteError) -> rmp_serde::encode::Error {
    rmp_serde::encode::Error::InvalidValueWrite(e)
}

fn io_err(e: std::io::Error) -> rmp_serde::encode::Error {
    value_err(mp::ValueWriteError::InvalidDataWrite(e))
}

fn set_indexes(change: &mut Change, idx: &[u16]) {
    if let Some(&first) = idx.first() {
        change.relation = first;
    }
    if let Some(t) = change.truncate.as_mut() {
        t.relations = idx.to_vec();
    }
}

/// The text values of a change, new row then old.
fn texts(change: &Change) -> impl Iterator<Item = &Bytes> {
    change
        .new
        .iter()
        .flatten()
        .chain(change.old.iter().flat_map(|(_, v)| v))
        .filter_map(|v| match v {
            Value::Text(b) => Some(b),
            _ => None,
        })
}

/// The bytes of a change's values: a lower bound of its encoded size.
fn values_len(change: &Change) -> usize {
    texts(change).map(Bytes::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::text_relation;
    use crate::message::{ChangeBatch, KeyKind, Op, Truncate, Value};

    fn rel(oid: u32, name: &str) -> Relation {
        Relation {
            oid,
            ..text_relation("public", name, &["v"], KeyKind::PrimaryKey, &["v"])
        }
    }

    fn insert(lsn: u64, len: usize) -> Change {
        Change {
            op: Op::Insert,
            lsn,
            relation: 0,
            new: Some(vec![Value::Text(vec![b'x'; len].into())]),
            old: None,
            truncate: None,
        }
    }

    fn env(copy: bool) -> Envelope {
        Envelope {
            commit_lsn: 0x900,
            commit_time_us: 5,
            xid: if copy { 0 } else { 7 },
            source: Some(SourceId {
                system_identifier: 1,
                slot_origin: 2,
            }),
            copy,
        }
    }

    /// Feeds `values` (lengths) as inserts at lsn 0x100, 0x110, ... of one transaction, with
    /// the Relation of table `a` changing before change `relation_change_at`.
    fn cut(limits: Limits, values: &[usize], copy: bool) -> Vec<Closed> {
        let (a, b) = (rel(10, "a"), rel(11, "b"));
        let mut batcher = Batcher::new(limits);
        batcher.begin(env(copy));
        let mut out = Vec::new();
        for (i, len) in values.iter().enumerate() {
            let r = if i % 3 == 2 { &b } else { &a };
            out.extend(
                batcher
                    .push(
                        insert(0x100 + 16 * i as u64, *len),
                        &[r],
                        0x100 + 16 * i as u64,
                    )
                    .unwrap(),
            );
        }
        out.extend(batcher.commit());
        out
    }

    /// The messages of `closed` decoded, parts put back together (their `last` from the final
    /// part), each with the index of the [`Closed`] that completed it; for tests.
    fn decode_all(closed: &[Closed]) -> Vec<(usize, ChangeBatch)> {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for (i, c) in closed.iter().enumerate() {
            match &c.body {
                Body::Whole(b) => out.push((i, ChangeBatch::decode(b).unwrap())),
                Body::Parts { parts, last, .. } => {
                    for p in parts {
                        pending.extend_from_slice(p);
                    }
                    if let Some(last) = last {
                        let mut b = ChangeBatch::decode(&std::mem::take(&mut pending)).unwrap();
                        b.last = *last;
                        out.push((i, b));
                    }
                }
            }
        }
        out
    }

    /// A whole message decoded.
    fn decode(body: &Body) -> Result<ChangeBatch, crate::message::DecodeError> {
        match body {
            Body::Whole(b) => ChangeBatch::decode(b),
            Body::Parts { .. } => panic!("a message in parts"),
        }
    }

    fn whole(c: &Closed) -> usize {
        match &c.body {
            Body::Whole(b) => b.len(),
            Body::Parts { .. } => usize::MAX,
        }
    }

    #[test]
    fn encoding_is_the_change_batch_encoding() {
        let out = cut(Limits::new(1000, 1 << 20, 1 << 20), &[3, 0, 5, 7], false);
        assert_eq!(out.len(), 1);
        let got = decode(&out[0].body).unwrap();
        let (a, b) = (rel(10, "a"), rel(11, "b"));
        let mut want = ChangeBatch {
            version: FORMAT_VERSION,
            commit_lsn: 0x900,
            commit_time_us: 5,
            xid: 7,
            seq: 0x130,
            last: true,
            prev: None,
            emitted_at_us: got.emitted_at_us,
            relations: vec![a, b],
            changes: vec![
                insert(0x100, 3),
                insert(0x110, 0),
                insert(0x120, 5),
                insert(0x130, 7),
            ],
            source: env(false).source,
            copy: false,
        };
        want.changes[2].relation = 1;
        assert_eq!(got, want);
        // Byte for byte what rmp_serde writes for the struct.
        let Body::Whole(bytes) = &out[0].body else {
            panic!("one message")
        };
        assert_eq!(bytes.as_ref(), want.encode().unwrap().as_slice());
    }

    #[test]
    fn cuts_before_the_change_that_would_overflow() {
        // (limits, value lengths, expected (first, seq, changes, last) per message)
        type Row = (Limits, Vec<usize>, Vec<(u64, u64, usize, bool)>);
        let table: Vec<Row> = vec![
            (
                Limits::new(2, 1 << 20, 1 << 20),
                vec![1, 1, 1, 1, 1],
                vec![
                    (0x100, 0x110, 2, false),
                    (0x120, 0x130, 2, false),
                    (0x140, 0x140, 1, true),
                ],
            ),
            (
                Limits::new(1000, 1 << 20, 1 << 20),
                vec![1; 5],
                vec![(0x100, 0x140, 5, true)],
            ),
            // 1000-byte messages: two 600-byte values never share one.
            (
                Limits::new(1000, 1000, 1 << 20),
                vec![600, 600, 10, 10],
                vec![(0x100, 0x100, 1, false), (0x110, 0x130, 3, true)],
            ),
            (
                Limits::new(1000, 1000, 1 << 20),
                vec![400, 300, 600],
                vec![(0x100, 0x110, 2, false), (0x120, 0x120, 1, true)],
            ),
            // Above max_bytes but within max_payload: alone, whole.
            (
                Limits::new(1000, 1000, 1 << 20),
                vec![10, 5000, 10],
                vec![
                    (0x100, 0x100, 1, false),
                    (0x110, 0x110, 1, false),
                    (0x120, 0x120, 1, true),
                ],
            ),
        ];
        for (limits, values, want) in table {
            let out = cut(limits, &values, false);
            let got: Vec<_> = out
                .iter()
                .map(|c| (c.first, c.position.seq, c.changes, c.last))
                .collect();
            assert_eq!(got, want, "{limits:?} {values:?}");
            for (i, c) in out.iter().enumerate() {
                assert!(
                    whole(c) <= limits.max_payload,
                    "message {i} is {} bytes",
                    whole(c)
                );
                assert!(c.changes == 1 || whole(c) <= limits.max_bytes);
                let b = decode(&c.body).unwrap();
                assert_eq!(
                    (b.seq, b.last, b.changes.len()),
                    (c.position.seq, c.last, c.changes)
                );
                assert_eq!(b.prev, (i > 0).then(|| out[i - 1].position));
                // Every relation index points at the right table.
                for ch in &b.changes {
                    let want = if (ch.lsn - 0x100) / 16 % 3 == 2 {
                        "b"
                    } else {
                        "a"
                    };
                    assert_eq!(b.relation(ch).table, want);
                }
            }
        }
    }

    #[test]
    fn a_large_value_is_published_from_the_memory_it_arrived_in() {
        let size = crate::source::encoded::BORROW_AT;
        let limits = Limits::new(1000, size, size + HEADER_ROOM);
        let value: Bytes = (0..5 * size + 3).map(|i| i as u8).collect();
        let inside = |p: &Bytes| {
            let (v, p0) = (value.as_ptr().addr(), p.as_ptr().addr());
            p0 >= v && p0 + p.len() <= v + value.len()
        };
        let mut change = insert(0x100, 0);
        change.new = Some(vec![Value::Text(value.clone()), Value::Null]);
        let mut batcher = Batcher::new(limits);
        batcher.begin(env(false));
        let early = batcher.push(change, &[&rel(10, "a")], 0x100).unwrap();
        let last = batcher.commit().unwrap();
        match (&early[..], &last.body) {
            (
                [Closed {
                    body: Body::Parts { parts, .. },
                    ..
                }],
                Body::Parts { parts: tail, .. },
            ) => {
                // The first part starts with the envelope (a copy); the next ones are slices
                // of the value; the final one is a copy, so the value is freed before commit.
                assert_eq!(parts.len(), 5);
                assert!(!inside(&parts[0]));
                assert!(parts[1..].iter().all(inside));
                assert!(!inside(&tail[0]));
                let whole: Vec<u8> = parts.iter().chain(tail).flatten().copied().collect();
                let batch = ChangeBatch::decode(&whole).unwrap();
                assert_eq!(
                    batch.changes[0].new.as_ref().unwrap()[0],
                    Value::Text(value.clone())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_change_larger_than_a_message_goes_in_parts() {
        let limits = Limits::new(1000, 4096, 4096 + HEADER_ROOM);
        for (values, big_at) in [
            (vec![10, 20_000, 10], 1usize),
            (vec![9000], 0),
            (vec![10, 9000], 1),
        ] {
            let out = cut(limits, &values, false);
            let messages = decode_all(&out);
            assert_eq!(messages.len(), values.len(), "{values:?}");
            for (i, (_, b)) in messages.iter().enumerate() {
                assert_eq!(
                    b.changes,
                    vec![{
                        let mut ch = insert(0x100 + 16 * i as u64, values[i]);
                        ch.relation = 0;
                        ch
                    }]
                );
                assert_eq!(b.last, i + 1 == values.len());
            }
            // The large change: its first parts go out as soon as it is read (before the
            // next change), the final one with `last` when the next change or the end came.
            let parts: Vec<&Closed> = out
                .iter()
                .filter(|c| matches!(c.body, Body::Parts { .. }))
                .collect();
            assert_eq!(parts.len(), 2, "{values:?}");
            match (&parts[0].body, &parts[1].body) {
                (
                    Body::Parts {
                        parts: head,
                        first: 1,
                        count,
                        last: None,
                    },
                    Body::Parts {
                        parts: tail,
                        first,
                        count: count2,
                        last: Some(last),
                    },
                ) => {
                    assert_eq!(
                        (head.len() as u32 + 1, *first, count),
                        (*count, *count, count2)
                    );
                    assert!(*count >= 2);
                    assert_eq!(*last, big_at + 1 == values.len());
                    assert!(head
                        .iter()
                        .chain(tail)
                        .all(|p| p.len() <= limits.max_payload));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!((parts[0].changes, parts[1].changes), (0, 1));
            for c in &out {
                if let Body::Whole(w) = &c.body {
                    assert!(w.len() <= limits.max_payload);
                }
            }
        }
    }

    #[test]
    fn positions_do_not_depend_on_the_limits() {
        let values = [5, 700, 3, 9000, 1, 1, 1, 1];
        let mut ends = Vec::new();
        for limits in [
            Limits::new(1, 1 << 20, 1 << 20),
            Limits::new(3, 1 << 20, 1 << 20),
            Limits::new(1000, 800, 4096 + HEADER_ROOM),
        ] {
            let out = cut(limits, &values, false);
            // Every change is in exactly one message, in order, and each message's seq is
            // its last change's WAL position.
            let mut lsns = Vec::new();
            for (i, b) in decode_all(&out) {
                assert_eq!(b.changes.last().map(|ch| ch.lsn), Some(out[i].position.seq));
                lsns.extend(b.changes.iter().map(|ch| ch.lsn));
            }
            assert_eq!(
                lsns,
                (0..values.len() as u64)
                    .map(|i| 0x100 + 16 * i)
                    .collect::<Vec<_>>()
            );
            ends.push(out.last().map(|c| c.position));
        }
        assert!(ends.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_relation_changed_mid_transaction_is_carried_again() {
        let mut changed = rel(10, "a");
        changed.columns[0].name = "w".into();
        let mut batcher = Batcher::new(Limits::new(1000, 1 << 20, 1 << 20));
        batcher.begin(env(false));
        assert!(batcher
            .push(insert(0x100, 1), &[&rel(10, "a")], 0x100)
            .unwrap()
            .is_empty());
        batcher.relation_changed(10);
        assert!(batcher
            .push(insert(0x110, 1), &[&changed], 0x110)
            .unwrap()
            .is_empty());
        let b = decode(&batcher.commit().unwrap().body).unwrap();
        assert_eq!(b.relations.len(), 2);
        assert_eq!(b.relation(&b.changes[0]).columns[0].name, "v");
        assert_eq!(b.relation(&b.changes[1]).columns[0].name, "w");
    }

    #[test]
    fn a_truncate_refers_to_every_table_and_copies_are_all_last() {
        let (a, b) = (rel(10, "a"), rel(11, "b"));
        let mut batcher = Batcher::new(Limits::new(2, 1 << 20, 1 << 20));
        batcher.begin(env(true));
        let truncate = Change {
            op: Op::Truncate,
            lsn: 0,
            relation: 0,
            new: None,
            old: None,
            truncate: Some(Truncate {
                relations: vec![],
                cascade: false,
                restart_identity: false,
            }),
        };
        let mut out: Vec<Closed> = batcher.push(insert(0, 1), &[&b], 0).unwrap();
        out.extend(batcher.push(truncate, &[&a, &b], 1).unwrap());
        out.extend(batcher.cut());
        out.extend(batcher.push(insert(0, 1), &[&a], 2).unwrap());
        out.extend(batcher.commit());
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|c| c.last));
        let first = decode(&out[0].body).unwrap();
        assert_eq!(
            first
                .relations
                .iter()
                .map(|r| r.table.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(
            first.changes[1].truncate.as_ref().unwrap().relations,
            vec![1, 0]
        );
        assert_eq!(first.changes[1].relation, 1);
        assert_eq!(
            (out[1].first, out[1].position.seq, out[1].prev),
            (2, 2, Some(out[0].position))
        );
        assert!(decode(&out[1].body).unwrap().copy);
    }

    #[test]
    fn a_transaction_without_changes_closes_nothing() {
        let mut batcher = Batcher::new(Limits::new(2, 1 << 20, 1 << 20));
        batcher.begin(env(false));
        assert!(batcher.commit().is_none());
        // Nothing is open after it: a change without a Begin closes nothing either.
        assert!(batcher
            .push(insert(0x100, 1), &[&rel(10, "a")], 0x100)
            .unwrap()
            .is_empty());
        assert!(batcher.commit().is_none());
    }
}
