//! Pure tests of the postgres sink (no server): flush thresholds, replica mode, statement
//! merging. The tests against a real PostgreSQL are in `runtime/tests/postgres_sink.rs`.

use super::session::replica_mode;
use super::*;
use crate::config::{PgConnConfig, SslMode};
use crate::fixtures::{batch, del, ins, text as t, text_relation as relation, upd};
use crate::message::{Change, KeyKind, OldKind, Relation, Value};

fn by_id(schema: &str, table: &str, columns: &[&str]) -> Relation {
    relation(schema, table, columns, KeyKind::PrimaryKey, &["id"])
}

#[test]
fn flush_by_bytes_or_changes() {
    let rel = by_id("s", "t", &["id", "body"]);
    let b = batch(
        1,
        std::slice::from_ref(&rel),
        vec![
            ins(0, vec![t("1"), t(&"x".repeat(1000))]),
            upd(
                0,
                vec![t("1"), Value::UnchangedToast],
                Some((OldKind::Key, vec![t("22"), Value::Null])),
            ),
        ],
    );
    // Values' bytes, 8 per value, 64 per change.
    assert_eq!(
        approx_bytes(&b),
        (64 + 8 + 1 + 8 + 1000) + (64 + 8 + 1 + 8) + (8 + 2 + 8)
    );
    // (changes, bytes, limit) -> flush
    for (changes, bytes, limit, flush) in [
        (1, 0, FLUSH_BYTES, false),
        (FLUSH_CHANGES - 1, FLUSH_BYTES - 1, FLUSH_BYTES, false),
        (FLUSH_CHANGES, 0, FLUSH_BYTES, true),
        (1, FLUSH_BYTES, FLUSH_BYTES, true),
        (2, 5000, 4096, true),
    ] {
        assert_eq!(
            must_flush(changes, bytes, limit),
            flush,
            "{changes} {bytes} {limit}"
        );
    }
}

#[test]
fn replica_mode_unless_opted_out() {
    // (fire_triggers, disable_foreign_keys) -> replica
    for (fire, no_fk, replica) in [
        (false, false, true),
        (false, true, true),
        (true, true, true),
        (true, false, false),
    ] {
        let mut c = PostgresSinkConfig {
            target: PgConnConfig {
                host: "h".into(),
                port: 1,
                dbname: "d".into(),
                user: "u".into(),
                password: String::new().into(),
                sslmode: SslMode::Disable,
                sslrootcert: None,
            },
            source: None,
            sync_schema: false,
            disable_foreign_keys: no_fk,
            fire_triggers: fire,
            group: "g".into(),
        };
        assert_eq!(replica_mode(&c), replica, "fire={fire} no_fk={no_fk}");
        c.sync_schema = true;
        assert_eq!(replica_mode(&c), replica);
    }
}

#[test]
fn consecutive_upserts_merge_into_multi_row_statements_split_at_repeated_keys() {
    let rel = by_id("s", "u", &["id", "v"]);
    let other = by_id("s", "o", &["id"]);
    let mut changes: Vec<Change> = (0..5)
        .map(|i| ins(0, vec![t(&i.to_string()), t("x")]))
        .collect();
    // Key 2 again: must not share a statement with the first key 2 (and must come after it).
    changes.push(ins(0, vec![t("2"), t("y")]));
    changes.push(ins(1, vec![t("7")]));
    changes.push(del(0, OldKind::Key, vec![t("1"), Value::Null]));
    let b = batch(10, &[rel, other], changes);
    let mut planned = Vec::new();
    for c in &b.changes {
        sql::plan(&b, c, &mut planned).unwrap();
    }
    let merged = sql::coalesce(planned, usize::MAX, |_| true);
    let shapes: Vec<(usize, String)> = merged
        .iter()
        .map(|p| {
            (
                p.params.len(),
                p.sql
                    .split(" OVERRIDING SYSTEM VALUE VALUES ")
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (8, r#"INSERT INTO "s"."u" ("id", "v")"#.to_owned()),
            (2, r#"INSERT INTO "s"."u" ("id", "v")"#.to_owned()),
            (2, r#"INSERT INTO "s"."u" ("id", "v")"#.to_owned()),
            (1, r#"INSERT INTO "s"."o" ("id")"#.to_owned()),
            (1, r#"DELETE FROM "s"."u" WHERE "id" = $1"#.to_owned()),
        ]
    );
    assert_eq!(
        merged[0].sql,
        r#"INSERT INTO "s"."u" ("id", "v") OVERRIDING SYSTEM VALUE VALUES ($1, $2), ($3, $4), ($5, $6), ($7, $8) ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v""#
    );
    let values: Vec<Option<&[u8]>> = merged[0].params.iter().map(|p| p.0).collect();
    assert_eq!(
        values,
        vec![
            Some(&b"0"[..]),
            Some(b"x"),
            Some(b"1"),
            Some(b"x"),
            Some(b"2"),
            Some(b"x"),
            Some(b"3"),
            Some(b"x"),
        ]
    );
    // The fifth row (key 4) is its own power-of-two chunk; then the repeated key 2.
    assert_eq!(merged[1].params[0].0, Some(&b"4"[..]));
    assert_eq!(
        merged[2].params.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![Some(&b"2"[..]), Some(b"y")]
    );
}

#[test]
fn copy_text_rows_escape_exactly_the_four_special_bytes() {
    let p = |v: Option<&'static str>| TextParam(v.map(str::as_bytes));
    for (row, want) in [
        (vec![p(Some("1")), p(Some("x"))], "1\tx\n"),
        (vec![p(None), p(Some(""))], "\\N\t\n"),
        (vec![p(Some("\\N"))], "\\\\N\n"),
        (vec![p(Some("a\tb\nc\rd\\e"))], "a\\tb\\nc\\rd\\\\e\n"),
        (vec![p(Some("\\."))], "\\\\.\n"),
        (vec![p(Some("ünï\u{1F600}\t"))], "ünï\u{1F600}\\t\n"),
        (
            vec![p(Some("{\"a\tb\",NULL}")), p(None)],
            "{\"a\\tb\",NULL}\t\\N\n",
        ),
    ] {
        let mut out = Vec::new();
        sql::copy_text_row(&mut out, &row);
        assert_eq!(String::from_utf8(out).unwrap(), want, "{row:?}");
    }
}

#[test]
fn long_runs_of_source_inserts_become_one_copy() {
    let rel = by_id("s", "u", &["id", "v"]);
    let other = by_id("s", "o", &["id"]);
    let n = sql::COPY_MIN_ROWS;
    let mut changes: Vec<Change> = (0..n)
        .map(|i| ins(0, vec![t(&i.to_string()), t("x")]))
        .collect();
    // Too short a run: statements.
    changes.extend((0..n - 1).map(|i| ins(1, vec![t(&i.to_string())])));
    // An update applied as an upsert breaks a run of inserts: never copied.
    changes.extend((100..100 + n).map(|i| ins(0, vec![t(&i.to_string()), t("y")])));
    changes.push(upd(0, vec![t("500"), t("z")], None));
    let b = batch(10, &[rel, other], changes);
    let plan = |copy_ok: &dyn Fn(&str) -> bool| {
        let mut planned = Vec::new();
        for c in &b.changes {
            sql::plan(&b, c, &mut planned).unwrap();
        }
        sql::coalesce(planned, sql::COPY_MIN_ROWS, copy_ok)
            .into_iter()
            .map(|p| {
                let copy = p.action == sql::Action::Copy;
                let columns = p.row.as_ref().filter(|_| copy).map(|s| s.columns);
                (p.sql, p.params.len(), columns)
            })
            .collect::<Vec<_>>()
    };
    let copy = |cols| {
        (
            r#"COPY "s"."u" ("id", "v") FROM STDIN"#.to_owned(),
            n * 2,
            cols,
        )
    };
    let got = plan(&|_| true);
    assert_eq!(got[0], copy(Some(2)));
    assert_eq!(got.iter().filter(|p| p.2.is_some()).count(), 1, "{got:?}");
    assert_eq!(
        got.iter().map(|p| p.1).sum::<usize>(),
        n * 2 + (n - 1) + n * 2 + 2,
        "every value planned once: {got:?}"
    );
    // A table that met an existing row is upserted only.
    let got = plan(&|t| t != r#""s"."u""#);
    assert!(got.iter().all(|p| p.2.is_none()), "{got:?}");
}

#[test]
fn insert_statements_are_built_once_per_relation_across_messages() {
    let rel = by_id("s", "u", &["id", "v"]);
    let changed = by_id("s", "u", &["id", "v", "w"]);
    // Each message carries its own copy of its relations.
    let b1 = batch(
        10,
        std::slice::from_ref(&rel),
        vec![ins(0, vec![t("1"), t("a")])],
    );
    let b2 = batch(
        11,
        std::slice::from_ref(&rel),
        vec![ins(0, vec![t("2"), t("b")])],
    );
    let b3 = batch(12, &[changed], vec![ins(0, vec![t("3"), t("c"), t("d")])]);
    let mut shapes = sql::InsertShapes::default();
    let mut planned = Vec::new();
    for b in [&b1, &b2, &b3] {
        for c in &b.changes {
            sql::plan_with(b, c, &mut planned, &mut shapes).unwrap();
        }
    }
    let shape = |i: usize| planned[i].row.clone().unwrap();
    assert!(std::sync::Arc::ptr_eq(&shape(0), &shape(1)));
    assert!(!std::sync::Arc::ptr_eq(&shape(1), &shape(2)));
    assert_eq!(shape(2).columns, 3);
    assert_eq!(
        shape(2).copy_sql,
        r#"COPY "s"."u" ("id", "v", "w") FROM STDIN"#
    );
}
