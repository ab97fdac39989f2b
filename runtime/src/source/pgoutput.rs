//! Decoder for the pgoutput logical-decoding plugin, protocol version 1.
//!
//! Place in the pipeline: replication stream XLogData payload -> [`decode`] -> [`PgOutput`]
//! -> the replicator's transaction batcher. Decoding never panics on malformed input: every
//! read is bounds-checked and reported as a [`DecodeError`].

use bytes::{Buf, Bytes};

use crate::lsn::Lsn;
use crate::message::{OldKind, Value};

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum PgOutput {
    Begin {
        final_lsn: Lsn,
        /// PostgreSQL-epoch microseconds.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Origin,
    Relation(RelationInfo),
    Type,
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    Update {
        relation: u32,
        old: Option<(OldKind, Vec<Value>)>,
        new: Vec<Value>,
    },
    Delete {
        relation: u32,
        old: (OldKind, Vec<Value>),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// A `pg_logical_emit_message` message.
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

/// A Relation message: the shape of a table as of the following changes.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationInfo {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub identity: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// Malformed pgoutput data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("pgoutput message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown pgoutput message type {0:?}")]
    UnknownMessage(char),
    #[error("unknown pgoutput tuple column kind {0:?}")]
    UnknownColumnKind(char),
    #[error("unexpected pgoutput tuple marker {0:?}")]
    UnexpectedMarker(char),
    #[error("binary tuple data is not supported (pgoutput must run with binary off)")]
    Binary,
}

struct Cursor {
    buf: Bytes,
}

impl Cursor {
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(what))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.advance(end + 1);
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, DecodeError> {
        let n = self.i16("tuple column count")?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated("tuple column count"))?;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = self.u8("tuple column kind")?;
            values.push(match kind {
                b'n' => Value::Null,
                b'u' => Value::UnchangedToast,
                b't' => {
                    let len = self.i32("text value length")?;
                    let len =
                        usize::try_from(len).map_err(|_| DecodeError::Truncated("text value"))?;
                    Value::Text(self.bytes(len, "text value")?)
                }
                b'b' => return Err(DecodeError::Binary),
                other => return Err(DecodeError::UnknownColumnKind(char::from(other))),
            });
        }
        Ok(values)
    }
}

/// Decodes one pgoutput message.
pub fn decode(data: Bytes) -> Result<PgOutput, DecodeError> {
    let mut c = Cursor { buf: data };
    let tag = c.u8("message type")?;
    Ok(match tag {
        b'B' => PgOutput::Begin {
            final_lsn: Lsn(c.u64("begin final lsn")?),
            commit_time: c.i64("begin commit time")?,
            xid: c.u32("begin xid")?,
        },
        b'C' => {
            let _flags = c.u8("commit flags")?;
            PgOutput::Commit {
                commit_lsn: Lsn(c.u64("commit lsn")?),
                end_lsn: Lsn(c.u64("commit end lsn")?),
                commit_time: c.i64("commit time")?,
            }
        }
        b'O' => PgOutput::Origin,
        b'Y' => PgOutput::Type,
        b'R' => {
            let oid = c.u32("relation oid")?;
            let schema = c.cstr("relation namespace")?;
            let table = c.cstr("relation name")?;
            let replica_identity = c.u8("replica identity")?;
            let n = c.i16("relation column count")?;
            let n = usize::try_from(n).map_err(|_| DecodeError::Truncated("relation columns"))?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = c.u8("column flags")?;
                let name = c.cstr("column name")?;
                let type_oid = c.u32("column type")?;
                let type_modifier = c.i32("column type modifier")?;
                columns.push(RelationColumn {
                    identity: flags & 1 == 1,
                    name,
                    type_oid,
                    type_modifier,
                });
            }
            PgOutput::Relation(RelationInfo {
                oid,
                schema: if schema.is_empty() {
                    "pg_catalog".into()
                } else {
                    schema
                },
                table,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = c.u32("insert relation")?;
            match c.u8("insert marker")? {
                b'N' => PgOutput::Insert {
                    relation,
                    new: c.tuple()?,
                },
                m => return Err(DecodeError::UnexpectedMarker(char::from(m))),
            }
        }
        b'U' => {
            let relation = c.u32("update relation")?;
            let mut old = None;
            let mut marker = c.u8("update marker")?;
            if marker == b'K' || marker == b'O' {
                let kind = if marker == b'K' {
                    OldKind::Key
                } else {
                    OldKind::Full
                };
                old = Some((kind, c.tuple()?));
                marker = c.u8("update new marker")?;
            }
            if marker != b'N' {
                return Err(DecodeError::UnexpectedMarker(char::from(marker)));
            }
            PgOutput::Update {
                relation,
                old,
                new: c.tuple()?,
            }
        }
        b'D' => {
            let relation = c.u32("delete relation")?;
            let kind = match c.u8("delete marker")? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                m => return Err(DecodeError::UnexpectedMarker(char::from(m))),
            };
            PgOutput::Delete {
                relation,
                old: (kind, c.tuple()?),
            }
        }
        b'T' => {
            let n = c.u32("truncate relation count")?;
            let options = c.u8("truncate options")?;
            let mut relations = Vec::new();
            for _ in 0..n {
                relations.push(c.u32("truncate relation")?);
            }
            PgOutput::Truncate {
                relations,
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
            }
        }
        b'M' => {
            let flags = c.u8("message flags")?;
            let lsn = Lsn(c.u64("message lsn")?);
            let prefix = c.cstr("message prefix")?;
            let len = c.u32("message length")? as usize;
            PgOutput::Message {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: c.bytes(len, "message content")?,
            }
        }
        other => return Err(DecodeError::UnknownMessage(char::from(other))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn relation_bytes() -> Vec<u8> {
        let mut b = vec![b'R'];
        b.put_u32(16384);
        b.extend_from_slice(b"public\0users\0");
        b.put_u8(b'd');
        b.put_i16(2);
        b.put_u8(1);
        b.extend_from_slice(b"id\0");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        b.extend_from_slice(b"bio\0");
        b.put_u32(25);
        b.put_i32(-1);
        b
    }

    #[test]
    fn decodes_relation() {
        let msg = decode(Bytes::from(relation_bytes())).unwrap();
        let PgOutput::Relation(rel) = msg else {
            panic!("not a relation")
        };
        assert_eq!(rel.oid, 16384);
        assert_eq!(
            (rel.schema.as_str(), rel.table.as_str()),
            ("public", "users")
        );
        assert_eq!(rel.replica_identity, b'd');
        assert_eq!(rel.columns.len(), 2);
        assert!(rel.columns[0].identity && !rel.columns[1].identity);
        assert_eq!(rel.columns[1].name, "bio");
        assert_eq!(rel.columns[1].type_oid, 25);
    }

    #[test]
    fn decodes_update_with_old_key_null_empty_and_toast() {
        let mut b = vec![b'U'];
        b.put_u32(16384);
        b.put_u8(b'K');
        b.put_i16(2);
        b.put_u8(b't');
        b.put_i32(1);
        b.put_u8(b'1');
        b.put_u8(b'n');
        b.put_u8(b'N');
        b.put_i16(3);
        b.put_u8(b't');
        b.put_i32(0);
        b.put_u8(b'n');
        b.put_u8(b'u');
        let msg = decode(Bytes::from(b)).unwrap();
        assert_eq!(
            msg,
            PgOutput::Update {
                relation: 16384,
                old: Some((
                    OldKind::Key,
                    vec![Value::Text(b"1".to_vec().into()), Value::Null]
                )),
                new: vec![
                    Value::Text(bytes::Bytes::new()),
                    Value::Null,
                    Value::UnchangedToast
                ],
            }
        );
    }

    #[test]
    fn decodes_begin_commit_truncate_message() {
        let mut b = vec![b'B'];
        b.put_u64(0x100);
        b.put_i64(5);
        b.put_u32(77);
        assert_eq!(
            decode(Bytes::from(b)).unwrap(),
            PgOutput::Begin {
                final_lsn: Lsn(0x100),
                commit_time: 5,
                xid: 77
            }
        );
        let mut b = vec![b'C', 0];
        b.put_u64(0x100);
        b.put_u64(0x128);
        b.put_i64(5);
        assert_eq!(
            decode(Bytes::from(b)).unwrap(),
            PgOutput::Commit {
                commit_lsn: Lsn(0x100),
                end_lsn: Lsn(0x128),
                commit_time: 5
            }
        );
        let mut b = vec![b'T'];
        b.put_u32(2);
        b.put_u8(3);
        b.put_u32(1);
        b.put_u32(2);
        assert_eq!(
            decode(Bytes::from(b)).unwrap(),
            PgOutput::Truncate {
                relations: vec![1, 2],
                cascade: true,
                restart_identity: true
            }
        );
        let mut b = vec![b'M', 1];
        b.put_u64(9);
        b.extend_from_slice(b"pg_flo\0");
        b.put_u32(2);
        b.extend_from_slice(b"hi");
        assert_eq!(
            decode(Bytes::from(b)).unwrap(),
            PgOutput::Message {
                transactional: true,
                lsn: Lsn(9),
                prefix: "pg_flo".into(),
                content: Bytes::from_static(b"hi")
            }
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let full = relation_bytes();
        for cut in 0..full.len() {
            assert!(
                decode(Bytes::copy_from_slice(&full[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(
            decode(Bytes::from_static(b"Z")),
            Err(DecodeError::UnknownMessage('Z'))
        );
        // Negative lengths and counts.
        let mut b = vec![b'I'];
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b't');
        b.put_i32(-5);
        assert!(decode(Bytes::from(b)).is_err());
        let mut b = vec![b'I'];
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(-1);
        assert!(decode(Bytes::from(b)).is_err());
        // Pseudo-random garbage never panics.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let len = (x % 40) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                v.push((x >> 16) as u8);
            }
            let _ = decode(Bytes::from(v));
        }
    }
}
