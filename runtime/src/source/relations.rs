//! The shape and key of the tables a change refers to, from pgoutput's Relation message.
//!
//! Contract: a change's key is the one in force at its place in the WAL. PostgreSQL sends a
//! Relation message before the first change of a table in a session and again after any
//! change of its shape or replica identity, with the key columns flagged; the key is taken
//! from there, so no catalog lookup happens while decoding (a dropped table or partition, or
//! a primary key changed since, cannot stall or mislead the replicator):
//! - `REPLICA IDENTITY DEFAULT` -> the flagged columns are the primary key;
//! - `USING INDEX` -> the flagged columns are that unique index;
//! - `FULL` -> every column is flagged, so the primary key read from the catalog at start is
//!   used when all its columns are still there (sinks can then upsert by it), else the whole
//!   row ([`KeyKind::Full`]);
//! - `NOTHING`, or no flagged column -> [`KeyKind::Full`] (such a table has no updates or
//!   deletes to replicate; the replicator refuses it at start).
//!
//! When the catalog knew the same key columns, its order (the index's) is kept.

use crate::message::{Column, KeyKind, Relation, ReplicationKey};
use crate::source::pgoutput::RelationInfo;

/// The relation of a Relation message; `known` is the key the catalog gave at start.
pub fn relation(info: RelationInfo, known: Option<&ReplicationKey>) -> Relation {
    let key = key(info.replica_identity, &info, known);
    Relation {
        oid: info.oid,
        schema: info.schema,
        table: info.table,
        columns: info
            .columns
            .into_iter()
            .map(|c| Column {
                name: c.name,
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                identity: c.identity,
            })
            .collect(),
        key,
    }
}

fn key(identity: u8, info: &RelationInfo, known: Option<&ReplicationKey>) -> ReplicationKey {
    let flagged: Vec<String> = info
        .columns
        .iter()
        .filter(|c| c.identity)
        .map(|c| c.name.clone())
        .collect();
    let has = |name: &String| info.columns.iter().any(|c| &c.name == name);
    let full = ReplicationKey {
        kind: KeyKind::Full,
        columns: Vec::new(),
    };
    let kind = match identity {
        b'd' => KeyKind::PrimaryKey,
        b'i' => KeyKind::Unique,
        b'f' => {
            return match known {
                Some(k)
                    if k.kind == KeyKind::PrimaryKey
                        && !k.columns.is_empty()
                        && k.columns.iter().all(has) =>
                {
                    k.clone()
                }
                _ => full,
            };
        }
        _ => return full,
    };
    if flagged.is_empty() {
        return full;
    }
    let same_set = |k: &&ReplicationKey| {
        k.columns.len() == flagged.len() && k.columns.iter().all(|c| flagged.contains(c))
    };
    let columns = known
        .filter(same_set)
        .map_or(flagged.clone(), |k| k.columns.clone());
    ReplicationKey { kind, columns }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::pgoutput::RelationColumn;

    fn info(identity: u8, cols: &[(&str, bool)]) -> RelationInfo {
        RelationInfo {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            replica_identity: identity,
            columns: cols
                .iter()
                .map(|(n, k)| RelationColumn {
                    identity: *k,
                    name: (*n).into(),
                    type_oid: pg_flo_source::oid::INT4,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn k(kind: KeyKind, cols: &[&str]) -> ReplicationKey {
        ReplicationKey {
            kind,
            columns: cols.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn key_from_the_relation_message() {
        use KeyKind::*;
        let ab = [("a", true), ("b", true), ("c", false)];
        // (identity, columns, catalog key at start, key)
        type Row<'a> = (
            u8,
            Vec<(&'a str, bool)>,
            Option<ReplicationKey>,
            ReplicationKey,
        );
        let table: Vec<Row> = vec![
            (b'd', ab.to_vec(), None, k(PrimaryKey, &["a", "b"])),
            // The catalog's order when it is the same key.
            (
                b'd',
                ab.to_vec(),
                Some(k(PrimaryKey, &["b", "a"])),
                k(PrimaryKey, &["b", "a"]),
            ),
            // A primary key changed since start: the WAL's flags win.
            (
                b'd',
                vec![("a", false), ("b", false), ("c", true)],
                Some(k(PrimaryKey, &["a"])),
                k(PrimaryKey, &["c"]),
            ),
            (
                b'i',
                vec![("a", false), ("u", true)],
                Some(k(PrimaryKey, &["a"])),
                k(Unique, &["u"]),
            ),
            // Identity changed to FULL since start: the primary key known at start.
            (
                b'f',
                vec![("a", true), ("b", true)],
                Some(k(PrimaryKey, &["a"])),
                k(PrimaryKey, &["a"]),
            ),
            // ... unless a key column is gone.
            (
                b'f',
                vec![("b", true)],
                Some(k(PrimaryKey, &["a"])),
                k(Full, &[]),
            ),
            (b'f', vec![("a", true)], None, k(Full, &[])),
            (
                b'f',
                vec![("a", true)],
                Some(k(Unique, &["a"])),
                k(Full, &[]),
            ),
            // No key at all.
            (
                b'd',
                vec![("a", false)],
                Some(k(PrimaryKey, &["a"])),
                k(Full, &[]),
            ),
            (b'n', vec![("a", false)], None, k(Full, &[])),
        ];
        for (identity, cols, known, want) in table {
            let got = relation(info(identity, &cols), known.as_ref());
            assert_eq!(got.key, want, "{} {cols:?} {known:?}", identity as char);
            assert_eq!(got.columns.len(), cols.len());
        }
    }
}
