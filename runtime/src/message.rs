//! The change-message format carried on NATS JetStream, version 1 (documented field by field
//! in `docs/message-format.md`).
//!
//! Place in the pipeline: the replicator turns pgoutput changes into [`ChangeBatch`]es and
//! publishes each as one NATS message; the worker decodes them and hands the changes to rules,
//! routing and the sink.
//!
//! Contract:
//! - One message holds changes of exactly one source transaction; a transaction larger than
//!   one message (`--max-batch-changes`, `--max-batch-bytes`, the server's `max_payload`)
//!   spans several, the final one has `last = true`. A single change larger than a message is
//!   sent in parts ([`CHUNK_HEADER`]) that the worker puts back together.
//! - Messages of a group are published in WAL commit order. [`Position`] `(commit_lsn, seq)`
//!   strictly increases along the stream. `seq` is the WAL position of the message's last
//!   change (format 2), so a position names a point in the WAL whatever the batch settings: a
//!   transaction re-published with other settings (different cuts) is recognised change by
//!   change, and the worker skips the changes it applied already.
//! - `prev` names the position of the message the same replicator run published before this
//!   one, so a consumer can tell a gap (a message lost while NATS restarted and re-published
//!   later) from a normal successor.
//! - `source` names the source the message came from ([`SourceId`]: the cluster's system
//!   identifier and the incarnation of the group's slot). Positions are comparable only
//!   between messages of the same source: a sink that stores its position stores the source
//!   with it (see `sink::postgres`). `copy` marks the rows of an initial copy.
//! - Values are PostgreSQL's text output (pgoutput text format), as raw bytes: `NULL`, `''`
//!   and an unchanged TOASTed value are three different [`Value`]s.
//!
//! The encoding is MessagePack with structs as arrays (fields in declaration order), so new
//! fields may only be appended, with `#[serde(default)]`.

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::lsn::Lsn;

/// Version written in every message; a worker refuses versions it does not know.
/// Version 2 made `seq` the WAL position of the message's last change (version 1: the index of
/// the message within its transaction); a worker reads both.
pub const FORMAT_VERSION: u8 = 2;

/// The oldest version a worker reads.
pub const OLDEST_FORMAT_VERSION: u8 = 1;

/// Header of one part of a change too large for one message: `i/n` (1-based). The parts'
/// payloads, concatenated in order, are one message of this format holding that change.
pub const CHUNK_HEADER: &str = "Pg-Flo-Chunk";

/// Header of a set's final part: `true` when the change ends its transaction. It stands for
/// the `last` field of the message the parts make up (written `false` there, because the
/// first parts go out before the transaction's end is known).
pub const CHUNK_LAST_HEADER: &str = "Pg-Flo-Chunk-Last";

/// Header naming the set a part belongs to (`<run>:<commit LSN>:<change LSN>`): parts of one
/// set come from one replicator run; a set that breaks off is published again whole.
pub const CHUNK_SET_HEADER: &str = "Pg-Flo-Chunk-Set";

/// Header naming the format version of a payload.
pub const FORMAT_HEADER: &str = "Pg-Flo-Format";

/// Where a message stands in a group's stream: ordered by commit LSN, then by `seq` (see
/// [`ChangeBatch::seq`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub commit_lsn: u64,
    pub seq: u64,
}

impl Position {
    /// The position that stands for "every message of the transaction committed at `lsn`"
    /// (its seq is above every WAL position and still fits a PostgreSQL `bigint`).
    pub fn end_of(commit_lsn: Lsn) -> Self {
        Position {
            commit_lsn: commit_lsn.0,
            seq: i64::MAX as u64,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", Lsn(self.commit_lsn), self.seq)
    }
}

/// Parses [`Position`]'s display form, `X/Y#seq` (as in the `Pg-Flo-Position` header).
impl std::str::FromStr for Position {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a position (X/Y#seq): {s:?}");
        let (lsn, seq) = s.split_once('#').ok_or_else(bad)?;
        Ok(Position {
            commit_lsn: lsn.parse::<Lsn>().map_err(|_| bad())?.0,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One NATS message: a slice of one source transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// [`FORMAT_VERSION`].
    pub version: u8,
    /// LSN of the source transaction's commit record.
    pub commit_lsn: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_us: i64,
    /// Source transaction id.
    pub xid: u32,
    /// Where the message ends within its transaction. Format 2: the WAL position of its last
    /// change (streamed messages), or the index of its last row in the copy, from 0 (copy
    /// messages). Format 1: the index of the message within its transaction.
    pub seq: u64,
    /// True on the transaction's final message.
    pub last: bool,
    /// Position of the message published before this one by the same replicator run; `None`
    /// on the first message of a run.
    pub prev: Option<Position>,
    /// When the replicator built this message, microseconds since the Unix epoch.
    pub emitted_at_us: i64,
    /// The relations that `changes` refer to by index.
    pub relations: Vec<Relation>,
    /// The changes, in WAL order.
    pub changes: Vec<Change>,
    /// The source the message came from; `None` from a replicator older than this field.
    #[serde(default)]
    pub source: Option<SourceId>,
    /// True on the messages of an initial copy (`--copy`, `--copy-and-stream`).
    #[serde(default)]
    pub copy: bool,
}

/// Which source a group's messages come from: positions of one source mean nothing to
/// another. `system_identifier` is the cluster's (`IDENTIFY_SYSTEM`; a new `initdb` gets a new
/// one, a physical restore or replica keeps it); `slot_origin` is the LSN the group's slot was
/// created at (its consistent point), which tells one incarnation of the slot from the next:
/// a slot dropped and re-created (after `--cleanup`, a lost slot, a restore without the slot)
/// gets a new one. Encoded as `[system_identifier u64, slot_origin u64]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceId {
    pub system_identifier: u64,
    pub slot_origin: u64,
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "system identifier {}, slot created at {}",
            self.system_identifier,
            Lsn(self.slot_origin)
        )
    }
}

impl ChangeBatch {
    pub fn position(&self) -> Position {
        Position {
            commit_lsn: self.commit_lsn,
            seq: self.seq,
        }
    }

    /// A message of the initial copy (`--copy`, `--copy-and-stream`): copy messages carry xid
    /// 0, which no source transaction has. A TRUNCATE in one is the reset of a restarted copy.
    pub fn is_copy(&self) -> bool {
        self.xid == 0
    }

    /// The NATS `Nats-Msg-Id` of this message, `{slot}:{commit lsn}:{first}-{last}`: the
    /// range of the transaction it covers (change WAL positions; row indexes in a copy). The
    /// same range is the same changes, so JetStream may drop a re-published one; a range cut
    /// differently (other batch settings) is a new message, and the worker skips what it
    /// applied already ([`ChangeBatch::applied_through`]).
    pub fn message_id(&self, slot: &str) -> String {
        let first = if self.copy || self.is_copy() {
            self.seq
                .saturating_add(1)
                .saturating_sub(self.changes.len() as u64)
        } else {
            self.changes.first().map_or(self.seq, |c| c.lsn)
        };
        message_id(slot, self.commit_lsn, first, self.seq)
    }

    /// Positions name single changes (format 2, streamed): a message re-cut by another
    /// replicator run can be applied from the change after `applied` on.
    pub fn change_granular(&self) -> bool {
        self.version >= 2
            && !self.copy
            && !self.is_copy()
            && self.changes.last().map(|c| c.lsn) == Some(self.seq)
    }

    /// Drops the changes at or before the WAL position `applied` (they were applied from an
    /// earlier message of the same transaction); returns how many were dropped.
    pub fn applied_through(&mut self, applied: u64) -> usize {
        let before = self.changes.len();
        self.changes.retain(|c| c.lsn > applied);
        before - self.changes.len()
    }

    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec(self)
    }

    /// [`ChangeBatch::decode`], with the values as slices of `payload` instead of copies (a
    /// large value is then held once while the worker applies it).
    pub fn decode_shared(payload: &Bytes) -> Result<Self, DecodeError> {
        DECODING.with(|d| *d.borrow_mut() = Some(payload.clone()));
        let batch = Self::decode(payload);
        DECODING.with(|d| *d.borrow_mut() = None);
        batch
    }

    /// Decodes a payload; a version other than [`FORMAT_VERSION`] is an error.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let batch: ChangeBatch = rmp_serde::from_slice(payload).map_err(DecodeError::Malformed)?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&batch.version) {
            return Err(DecodeError::Version(batch.version));
        }
        for change in &batch.changes {
            let rels = std::iter::once(change.relation).chain(
                change
                    .truncate
                    .iter()
                    .flat_map(|t| t.relations.iter().copied()),
            );
            for rel in rels {
                if usize::from(rel) >= batch.relations.len() {
                    return Err(DecodeError::RelationIndex(rel));
                }
            }
        }
        Ok(batch)
    }

    pub fn relation(&self, change: &Change) -> &Relation {
        // `decode` and the replicator guarantee the index is in range.
        &self.relations[usize::from(change.relation)]
    }
}

/// Sets the `last` field of an encoded [`ChangeBatch`] in place (a message put back together
/// from parts takes `last` from its final part's [`CHUNK_LAST_HEADER`]); so the payload that is
/// held, dead-lettered or decoded again says the same.
pub fn patch_last(payload: &mut [u8], last: bool) -> Result<(), String> {
    use rmp::Marker;
    let bad = || "not a change message".to_owned();
    let mut at = 0usize;
    let marker = |at: usize| payload.get(at).map(|&b| Marker::from_u8(b)).ok_or_else(bad);
    if !matches!(
        marker(at)?,
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32
    ) {
        return Err(bad());
    }
    at += match marker(at)? {
        Marker::Array16 => 3,
        Marker::Array32 => 5,
        _ => 1,
    };
    // version, commit_lsn, commit_time_us, xid, seq: integers.
    for _ in 0..5 {
        at += match marker(at)? {
            Marker::FixPos(_) | Marker::FixNeg(_) => 1,
            Marker::U8 | Marker::I8 => 2,
            Marker::U16 | Marker::I16 => 3,
            Marker::U32 | Marker::I32 => 5,
            Marker::U64 | Marker::I64 => 9,
            _ => return Err(bad()),
        };
    }
    match payload.get_mut(at) {
        Some(b) if *b == 0xc2 || *b == 0xc3 => {
            *b = if last { 0xc3 } else { 0xc2 };
            Ok(())
        }
        _ => Err(bad()),
    }
}

/// `Nats-Msg-Id` of the message covering `first..=last` of the transaction committed at
/// `commit_lsn` (see [`ChangeBatch::message_id`]).
pub fn message_id(slot: &str, commit_lsn: u64, first: u64, last: u64) -> String {
    format!("{slot}:{}:{first}-{last}", Lsn(commit_lsn))
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed change message")]
    Malformed(#[source] rmp_serde::decode::Error),
    #[error("change message format version {0} is not supported by this pg_flo (it reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); upgrade the worker")]
    Version(u8),
    #[error("change message refers to relation index {0} that it does not carry")]
    RelationIndex(u16),
}

/// A source table as the changes saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relation {
    /// Source relation OID.
    pub oid: u32,
    pub schema: String,
    pub table: String,
    pub columns: Vec<Column>,
    /// The key a sink uses to find a row: primary key, else the replica-identity index, else
    /// all columns (`REPLICA IDENTITY FULL`).
    pub key: ReplicationKey,
}

impl Relation {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// Source type OID (built-in OIDs are the same on every server).
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (pgoutput's key flag).
    pub identity: bool,
}

/// pg_flo's `ReplicationKey`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicationKey {
    pub kind: KeyKind,
    pub columns: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    PrimaryKey,
    Unique,
    Full,
}

impl KeyKind {
    /// The name pg_flo shows in JSON output.
    pub fn as_pg_flo(self) -> &'static str {
        match self {
            KeyKind::PrimaryKey => "PRIMARY KEY",
            KeyKind::Unique => "UNIQUE",
            KeyKind::Full => "FULL",
        }
    }
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    /// A schema change of a tracked table (`--track-ddl`), in WAL order with the data. Its
    /// relation names the affected table and has the text columns [`DDL_COLUMNS`]; `new`
    /// holds their values (pg_flo's DDL message shape).
    Ddl,
}

impl Op {
    /// The name pg_flo uses (`Type` in JSON, `operations` in rules and routing).
    pub fn as_pg_flo(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Truncate => "TRUNCATE",
            Op::Ddl => "DDL",
        }
    }
}

/// Columns of a DDL change's relation, in order: the event (`ddl_command_end` or `sql_drop`),
/// the object type (`table`, `index`, ...), the object's identity, and the SQL to replay (NULL
/// when refused; a refused change has a fifth column, [`DDL_REFUSED_COLUMN`], the reason).
pub const DDL_COLUMNS: [&str; 4] = [
    "event_type",
    "object_type",
    "object_identity",
    "ddl_command",
];

/// The extra column of a refused DDL change (after [`DDL_COLUMNS`]): why it cannot be
/// replayed.
pub const DDL_REFUSED_COLUMN: &str = "ddl_refused";

/// What a DDL change asks the sink to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdlReplay {
    /// Run this statement.
    Run(String),
    /// Refused at the source: stop, unless the target says it was applied by hand.
    Refused(String),
    /// Nothing (an empty command).
    Nothing,
}

/// Reads a DDL change's columns (by name, so older messages read the same).
pub fn ddl_replay(relation: &Relation, change: &Change) -> DdlReplay {
    let value = |name: &str| {
        let i = relation.columns.iter().position(|c| c.name == name)?;
        let v = change.new.as_ref()?.get(i)?.as_bytes()?;
        Some(String::from_utf8_lossy(v).into_owned())
    };
    if let Some(reason) = value(DDL_REFUSED_COLUMN) {
        return DdlReplay::Refused(reason);
    }
    match value("ddl_command") {
        Some(c) if !c.trim().is_empty() => DdlReplay::Run(c),
        _ => DdlReplay::Nothing,
    }
}

/// Which old values an update or delete carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OldKind {
    /// Replica-identity columns only; the other columns are [`Value::Null`].
    Key,
    /// The whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub op: Op,
    /// WAL position of the change itself.
    pub lsn: u64,
    /// Index into [`ChangeBatch::relations`]; for a truncate, the first truncated relation.
    pub relation: u16,
    /// New row (insert, update), one value per column of the relation.
    pub new: Option<Vec<Value>>,
    /// Old row or key (update when the key changed or identity is FULL; delete).
    pub old: Option<(OldKind, Vec<Value>)>,
    /// Truncate only.
    pub truncate: Option<Truncate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truncate {
    /// Indexes into [`ChangeBatch::relations`] of every truncated table.
    pub relations: Vec<u16>,
    pub cascade: bool,
    pub restart_identity: bool,
}

/// A column value in PostgreSQL text form.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch; the sink must keep what it has.
    UnchangedToast,
    /// The text output of the value (may be empty: `''` is not `NULL`). Shared bytes: a value
    /// decoded from the replication stream is a slice of the message it came in, not a copy.
    Text(bytes::Bytes),
}

impl Value {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Text(b) => Some(b),
            _ => None,
        }
    }
}

impl fmt::Debug for Value {
    // Never print row values (they may hold personal data); only their shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::UnchangedToast => f.write_str("UnchangedToast"),
            Value::Text(b) => write!(f, "Text({} bytes)", b.len()),
        }
    }
}

// Encoded as MessagePack nil (NULL), `false` (unchanged TOAST) or bin (text bytes).
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::UnchangedToast => s.serialize_bool(false),
            Value::Text(b) => s.serialize_bytes(b),
        }
    }
}

thread_local! {
    /// The payload [`ChangeBatch::decode_shared`] is decoding on this thread (decoding is
    /// synchronous: nothing else runs on the thread meanwhile).
    static DECODING: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// `v` as a slice of the payload being decoded by [`ChangeBatch::decode_shared`], or a copy.
fn shared_or_copied(v: &[u8]) -> Bytes {
    DECODING
        .with(|d| {
            d.borrow()
                .as_ref()
                .filter(|p| {
                    let (p0, v0) = (p.as_ptr().addr(), v.as_ptr().addr());
                    !v.is_empty() && v0 >= p0 && v0 + v.len() <= p0 + p.len()
                })
                .map(|p| p.slice_ref(v))
        })
        .unwrap_or_else(|| Bytes::copy_from_slice(v))
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("nil, false or bytes")
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
                Ok(Value::UnchangedToast)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value::Text(v.to_vec().into()))
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Value, E> {
                Ok(Value::Text(shared_or_copied(v)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
                Ok(Value::Text(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.as_bytes().to_vec().into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Microseconds since the Unix epoch now (0 for a clock before 1970): the unit of the
/// messages' times (`commit_time_us`, `emitted_at_us`).
pub fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample;

    /// The message as a replicator without `source` and `copy` (fields 10 and 11) encoded it.
    #[derive(Serialize)]
    struct OldChangeBatch<'a> {
        version: u8,
        commit_lsn: u64,
        commit_time_us: i64,
        xid: u32,
        seq: u64,
        last: bool,
        prev: Option<Position>,
        emitted_at_us: i64,
        relations: &'a [Relation],
        changes: &'a [Change],
    }

    #[test]
    fn a_message_without_source_and_copy_decodes_as_none_and_false() {
        let b = sample();
        let old = OldChangeBatch {
            version: b.version,
            commit_lsn: b.commit_lsn,
            commit_time_us: b.commit_time_us,
            xid: b.xid,
            seq: b.seq,
            last: b.last,
            prev: b.prev,
            emitted_at_us: b.emitted_at_us,
            relations: &b.relations,
            changes: &b.changes,
        };
        let back = ChangeBatch::decode(&rmp_serde::to_vec(&old).unwrap()).unwrap();
        assert_eq!(back.source, None);
        assert!(!back.copy);
        assert_eq!(
            back,
            ChangeBatch {
                source: None,
                ..b.clone()
            }
        );
        // And the new fields survive a round trip.
        let copy = ChangeBatch { copy: true, ..b };
        assert_eq!(ChangeBatch::decode(&copy.encode().unwrap()).unwrap(), copy);
    }

    #[test]
    fn encode_decode_keeps_null_empty_and_unchanged_toast_apart() {
        let batch = sample();
        let bytes = batch.encode().unwrap();
        let back = ChangeBatch::decode(&bytes).unwrap();
        assert_eq!(back, batch);
        assert_eq!(
            back.changes[0].new.as_ref().unwrap()[1],
            Value::Text(bytes::Bytes::new())
        );
        assert_eq!(
            back.changes[1].new.as_ref().unwrap()[1],
            Value::UnchangedToast
        );
        assert_eq!(back.changes[1].old.as_ref().unwrap().1[1], Value::Null);
        assert_eq!(
            batch.message_id("pg_flo_g_publication"),
            "pg_flo_g_publication:16/B374D848:97500057600-97500057856"
        );
    }

    #[test]
    fn shared_decoding_slices_the_values_out_of_the_payload() {
        let mut b = sample();
        let big = vec![b'v'; 100_000];
        b.changes[0].new = Some(vec![Value::Text(big.clone().into()), Value::Null]);
        let payload = Bytes::from(b.encode().unwrap());
        let shared = ChangeBatch::decode_shared(&payload).unwrap();
        assert_eq!(shared, ChangeBatch::decode(&payload).unwrap());
        assert_eq!(shared, b);
        let inside = |v: &Value| {
            let t = v.as_bytes().unwrap();
            let (p, t0) = (payload.as_ptr().addr(), t.as_ptr().addr());
            t0 >= p && t0 + t.len() <= p + payload.len()
        };
        let new = shared.changes[0].new.as_ref().unwrap();
        assert!(inside(&new[0]), "the value was copied");
        // Plain decoding (and decoding after a shared one) copies.
        let plain = ChangeBatch::decode(&payload).unwrap();
        assert!(!inside(&plain.changes[0].new.as_ref().unwrap()[0]));
    }

    #[test]
    fn decode_rejects_other_versions_and_garbage() {
        let mut batch = sample();
        batch.version = 9;
        let err = ChangeBatch::decode(&batch.encode().unwrap()).unwrap_err();
        assert!(matches!(err, DecodeError::Version(9)), "{err}");
        assert!(matches!(
            ChangeBatch::decode(b"\xc1garbage"),
            Err(DecodeError::Malformed(_))
        ));
        let mut batch = sample();
        batch.changes[0].relation = 3;
        assert!(matches!(
            ChangeBatch::decode(&batch.encode().unwrap()),
            Err(DecodeError::RelationIndex(3))
        ));
    }

    #[test]
    fn last_is_set_in_place() {
        for (commit_time_us, xid) in [(1_700_000_000_000_000, 42), (-5, 0), (0, u32::MAX)] {
            let b = ChangeBatch {
                commit_time_us,
                xid,
                last: false,
                ..sample()
            };
            let mut bytes = b.encode().unwrap();
            patch_last(&mut bytes, true).unwrap();
            assert_eq!(
                ChangeBatch::decode(&bytes).unwrap(),
                ChangeBatch {
                    last: true,
                    ..b.clone()
                }
            );
            patch_last(&mut bytes, false).unwrap();
            assert_eq!(ChangeBatch::decode(&bytes).unwrap(), b);
        }
        assert!(patch_last(&mut [0x93, 1, 2], true).is_err());
        assert!(patch_last(&mut [], true).is_err());
    }

    #[test]
    fn positions_parse_from_their_display_form() {
        let p = Position {
            commit_lsn: 0x1_0000_0064,
            seq: 7,
        };
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        for bad in ["", "1/2", "1/2#", "x/2#3", "1/2#-1", "100:0"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }

    #[test]
    fn positions_order_by_lsn_then_seq() {
        let a = Position {
            commit_lsn: 5,
            seq: 7,
        };
        let b = Position {
            commit_lsn: 6,
            seq: 0,
        };
        assert!(a < b);
        assert!(Position::end_of(Lsn(5)) > a);
        assert!(Position::end_of(Lsn(5)) < b);
    }
}
