//! The rules, loaded from YAML and applied to batches.

use std::path::Path;

use pg_flo_source::oid::{
    BOOL, BPCHAR, DATE, FLOAT4, FLOAT8, INT2, INT4, INT8, NAME, NUMERIC, OID, TEXT, TIMESTAMP,
    TIMESTAMPTZ, UUID, VARCHAR,
};

use super::*;
use crate::fixtures::{self, change, public_table, relation, text as t};
use crate::message::{
    Change, ChangeBatch, KeyKind, OldKind, Op, Relation, ReplicationKey, Truncate, Value,
};

/// `public.users (id int4 PRIMARY KEY, name text, email varchar)`, oid 16384.
fn users() -> Relation {
    Relation {
        oid: 16384,
        ..relation(
            "public",
            "users",
            &[("id", INT4), ("name", TEXT), ("email", VARCHAR)],
            KeyKind::PrimaryKey,
            &["id"],
        )
    }
}

/// The whole message of a transaction (committed at 10) of `changes` to [`users`].
fn users_batch(changes: Vec<Change>) -> ChangeBatch {
    fixtures::batch(10, &[users()], changes)
}

fn insert(values: Vec<Value>) -> Change {
    change(Op::Insert, 0, Some(values), None)
}

fn load(yaml: &str) -> Rules {
    let (rules, _) = Rules::from_yaml("rules.yaml", yaml).unwrap();
    rules
}

fn applied(yaml: &str, mut b: ChangeBatch) -> ChangeBatch {
    load(yaml).apply(&mut b);
    b
}

fn text(v: &Value) -> &str {
    std::str::from_utf8(v.as_bytes().unwrap()).unwrap()
}

/// Whether an INSERT whose column `v` (of type `oid`) holds `value` passes
/// `v <op> <rule_value>` (`rule_value` is YAML, so `18` is a number, `"18"` a string).
fn passes(oid: u32, value: Value, op: &str, rule_value: &str) -> bool {
    let rel = public_table("t", &[("id", INT4), ("v", oid)]);
    let yaml = format!(
            "tables:\n  t:\n    - type: filter\n      column: v\n      parameters: {{operator: {op}, value: {rule_value}}}\n"
        );
    let b = applied(
        &yaml,
        fixtures::batch(10, &[rel], vec![insert(vec![t("1"), value])]),
    );
    b.changes.len() == 1
}

fn p(oid: u32, value: &str, op: &str, rule_value: &str) -> bool {
    passes(oid, t(value), op, rule_value)
}

#[test]
fn mask_keeps_first_and_last_character() {
    let yaml = "tables:\n  users:\n    - type: transform\n      column: name\n      parameters: {type: mask, mask_char: '*'}\n";
    let b = applied(
        yaml,
        users_batch(vec![
            insert(vec![t("1"), t("alice"), t("a@x")]),
            insert(vec![t("2"), t("ab"), t("a@x")]),
            insert(vec![t("3"), t("Zoë Ångström"), t("a@x")]),
            insert(vec![t("4"), Value::Null, t("a@x")]),
            insert(vec![t("5"), t(""), t("a@x")]),
        ]),
    );
    let names: Vec<&Value> = b
        .changes
        .iter()
        .map(|c| &c.new.as_ref().unwrap()[1])
        .collect();
    assert_eq!(text(names[0]), "a***e");
    assert_eq!(text(names[1]), "ab");
    let masked = text(names[2]);
    assert_eq!(masked, "Z**********m");
    assert_eq!(masked.chars().count(), "Zoë Ångström".chars().count());
    assert_eq!(*names[3], Value::Null);
    assert_eq!(text(names[4]), "");
    // The id column (int4) and other columns are untouched.
    assert_eq!(text(&b.changes[0].new.as_ref().unwrap()[0]), "1");
    assert_eq!(text(&b.changes[0].new.as_ref().unwrap()[2]), "a@x");
}

#[test]
fn mask_with_multibyte_mask_char_and_on_old_tuple() {
    let yaml = "tables:\n  users:\n    - type: transform\n      column: name\n      parameters: {type: mask, mask_char: '•'}\n";
    let b = applied(
        yaml,
        users_batch(vec![change(
            Op::Update,
            0,
            Some(vec![t("1"), t("Ørjan"), Value::UnchangedToast]),
            Some((OldKind::Full, vec![t("1"), t("émile"), t("x")])),
        )]),
    );
    let c = &b.changes[0];
    assert_eq!(text(&c.new.as_ref().unwrap()[1]), "Ø•••n");
    assert_eq!(text(&c.old.as_ref().unwrap().1[1]), "é•••e");
    assert_eq!(c.new.as_ref().unwrap()[2], Value::UnchangedToast);
}

#[test]
fn regex_expands_groups_names_and_dollar() {
    let yaml = r#"
tables:
  users:
    - type: transform
      column: email
      parameters:
        type: regex
        pattern: '^(?P<user>[^@]+)@(.+)$'
        replace: '${user}_at_$2 costs $$1'
    - type: transform
      column: id
      parameters: {type: regex, pattern: '1', replace: 'x'}
"#;
    let b = applied(
        yaml,
        users_batch(vec![
            insert(vec![t("1"), t("a"), t("bob@example.com")]),
            insert(vec![t("2"), t("b"), t("no-at-sign")]),
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Full, vec![t("3"), t("c"), t("eve@x.org")])),
            ),
        ]),
    );
    assert_eq!(
        text(&b.changes[0].new.as_ref().unwrap()[2]),
        "bob_at_example.com costs $1"
    );
    assert_eq!(text(&b.changes[1].new.as_ref().unwrap()[2]), "no-at-sign");
    assert_eq!(
        text(&b.changes[2].old.as_ref().unwrap().1[2]),
        "eve_at_x.org costs $1"
    );
    // A regex on an int4 column does nothing.
    assert_eq!(text(&b.changes[0].new.as_ref().unwrap()[0]), "1");
}

#[test]
fn filter_integers_compare_exactly() {
    for (value, op, rule, want) in [
        ("10", "gt", "5", true),
        ("10", "gt", "'5'", true),
        ("5", "gt", "10", false),
        ("5", "lt", "10", true),
        ("10", "lt", "5", false),
        ("10", "gte", "10", true),
        ("9", "gte", "10", false),
        ("10", "lte", "10", true),
        ("11", "lte", "10", false),
        ("10", "eq", "10", true),
        ("10", "eq", "10.0", true),
        ("10", "eq", "11", false),
        ("10", "ne", "11", true),
        ("10", "ne", "10", false),
        ("-3", "lt", "-2", true),
        ("-3", "gt", "-20", true),
        ("0", "eq", "-0", true),
        ("9007199254740993", "gt", "9007199254740992", true),
        ("9007199254740993", "eq", "9007199254740992", false),
        ("-9223372036854775808", "lt", "-9223372036854775807", true),
        ("10", "gt", "abc", false),
        ("abc", "gt", "5", false),
        ("10", "ne", "abc", false),
        ("10", "eq", "true", false),
        ("0", "ne", "false", false),
    ] {
        for oid in [INT2, INT4, INT8, OID] {
            assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
        }
    }
}

#[test]
fn filter_numeric_and_floats() {
    for (oid, value, op, rule, want) in [
        (NUMERIC, "100.00", "gte", "'99.99'", true),
        (NUMERIC, "100.00", "eq", "100", true),
        (NUMERIC, "100.00", "eq", "100.0", true),
        (NUMERIC, "999.99", "lt", "1000.0", true),
        (NUMERIC, "0.001", "lt", "0.01", true),
        (NUMERIC, "0.0100", "eq", "0.01", true),
        (NUMERIC, "-0.5", "lt", "0", true),
        (NUMERIC, "-0.5", "gt", "-0.6", true),
        (
            NUMERIC,
            "123456789012345678901234567890.000000000000000000001",
            "gt",
            "'123456789012345678901234567890'",
            true,
        ),
        (
            NUMERIC,
            "123456789012345678901234567890",
            "eq",
            "'123456789012345678901234567890.0'",
            true,
        ),
        (NUMERIC, "NaN", "gt", "1e300", true),
        (NUMERIC, "NaN", "eq", "NaN", true),
        (NUMERIC, "Infinity", "gt", "1e300", true),
        (NUMERIC, "-Infinity", "lt", "-1e300", true),
        (FLOAT8, "1e+100", "gt", "1e99", true),
        (FLOAT8, "1.5e-05", "lt", "0.0001", true),
        (FLOAT8, "1.5e-05", "eq", "0.000015", true),
        (FLOAT4, "0.1", "eq", "0.1", true),
        (FLOAT8, "3.14", "gt", "3", true),
        (FLOAT8, "-Infinity", "lt", "0", true),
        (FLOAT8, "Infinity", "eq", ".inf", true),
    ] {
        assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
    }
}

#[test]
fn filter_bool() {
    for (value, op, rule, want) in [
        ("t", "eq", "true", true),
        ("t", "eq", "false", false),
        ("f", "eq", "false", true),
        ("f", "ne", "true", true),
        ("t", "ne", "true", false),
        ("t", "eq", "'t'", true),
        ("f", "eq", "'f'", true),
        ("t", "eq", "'TRUE'", true),
        ("t", "gt", "false", false),
        ("t", "gte", "true", false),
        ("t", "eq", "maybe", false),
        ("t", "contains", "t", true),
    ] {
        assert_eq!(p(BOOL, value, op, rule), want, "{value} {op} {rule}");
    }
}

#[test]
fn filter_text_is_bytewise_and_case_sensitive() {
    for oid in [TEXT, VARCHAR, BPCHAR, NAME, UUID] {
        for (value, op, rule, want) in [
            ("Electronics", "eq", "electronics", false),
            ("Electronics", "eq", "Electronics", true),
            ("Electronics", "ne", "electronics", true),
            ("999.99", "lt", "1000.0", false),
            ("b", "gt", "a", true),
            ("B", "gt", "a", false),
            ("abc", "gte", "abc", true),
            ("abc", "lte", "abd", true),
            ("abc", "lt", "ab", false),
            ("true", "eq", "true", true),
            ("", "eq", "''", true),
            ("", "lt", "a", true),
        ] {
            assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
        }
    }
}

#[test]
fn filter_contains_on_any_type() {
    assert!(p(TEXT, "hello world", "contains", "lo w"));
    assert!(!p(TEXT, "hello world", "contains", "Lo W"));
    assert!(p(INT4, "12345", "contains", "234"));
    assert!(p(DATE, "2024-03-20", "contains", "-03-"));
    assert!(p(TEXT, "anything", "contains", "''"));
    assert!(!p(TEXT, "", "contains", "x"));
    assert!(p(TEXT, "Zoë", "contains", "ë"));
}

#[test]
fn filter_dates_and_timestamps() {
    for (oid, value, op, rule, want) in [
        (DATE, "2024-03-20", "eq", "2024-03-20", true),
        (DATE, "2024-03-20", "gt", "2024-03-19", true),
        (DATE, "2024-03-20", "lt", "'2024-12-01'", true),
        (DATE, "2024-03-20", "gte", "2024-03-21", false),
        (DATE, "0044-03-15 BC", "lt", "0001-01-01", true),
        (DATE, "infinity", "gt", "9999-12-31", true),
        (DATE, "-infinity", "lt", "0001-01-01", true),
        (DATE, "2024-03-20", "eq", "not-a-date", false),
        (DATE, "garbage", "ne", "2024-03-20", false),
        (
            TIMESTAMP,
            "2024-03-20 10:00:00",
            "eq",
            "'2024-03-20T10:00:00'",
            true,
        ),
        (
            TIMESTAMP,
            "2024-03-20 10:00:00.5",
            "gt",
            "'2024-03-20 10:00:00'",
            true,
        ),
        (TIMESTAMP, "2024-03-20 00:00:00", "eq", "2024-03-20", true),
        (
            TIMESTAMP,
            "2024-03-20 10:00:00",
            "lt",
            "'2024-03-20 09:00:00'",
            false,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "eq",
            "'2024-03-20T10:00:00Z'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "eq",
            "'2024-03-20 15:30:00+05:30'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 15:30:00+05:30",
            "eq",
            "'2024-03-20T10:00:00+00:00'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00-02",
            "gt",
            "'2024-03-20 11:00:00+00'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+05:30",
            "lt",
            "'2024-03-20T05:00:00Z'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00.123456+00",
            "gt",
            "'2024-03-20T10:00:00.123Z'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "ne",
            "'2024-03-20 10:00:00+01'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "eq",
            "'2024-03-20 10:00:00'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 00:00:00+00",
            "eq",
            "2024-03-20",
            true,
        ),
        (
            TIMESTAMPTZ,
            "1900-01-01 00:00:00+00:19:32",
            "lt",
            "'1900-01-01T00:00:00Z'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "infinity",
            "gt",
            "'2999-01-01T00:00:00Z'",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "gt",
            "yesterday",
            false,
        ),
    ] {
        assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
    }
}

/// Cases `runtime/tests/filter_order.rs` (filter vs PostgreSQL's own comparison) found wrong.
#[test]
fn filter_time_values_as_postgres_reads_them() {
    for (oid, value, op, rule, want) in [
        // The whole of PostgreSQL's range: dates to 5874897 AD, timestamps to 294276 AD.
        (DATE, "1900-01-01", "lt", "262143-01-01", true),
        (DATE, "5874897-12-31", "gt", "5874897-12-30", true),
        (DATE, "5874897-12-31", "lt", "infinity", true),
        (DATE, "4714-11-24 BC", "gt", "-infinity", true),
        (
            TIMESTAMP,
            "294276-12-31 23:59:59.999999",
            "gt",
            "294276-12-31",
            true,
        ),
        // Fractions beyond microseconds are rounded (as PostgreSQL: rint(fraction * 1e6)).
        (
            TIMESTAMPTZ,
            "1900-01-01 00:00:00+00",
            "eq",
            "1900-01-01T00:00:00.0000004",
            true,
        ),
        (
            TIMESTAMP,
            "2024-03-20 10:00:01",
            "eq",
            "2024-03-20 10:00:00.9999999",
            true,
        ),
        (
            TIMESTAMP,
            "2024-03-20 10:00:00.000001",
            "eq",
            "2024-03-20 10:00:00.0000005",
            false,
        ),
        // 24:00:00 and second 60 are the next midnight / minute.
        (
            TIMESTAMP,
            "1900-01-02 00:00:00",
            "eq",
            "1900-01-01 24:00:00",
            true,
        ),
        (
            TIMESTAMP,
            "2024-03-21 00:00:00",
            "eq",
            "2024-03-20 23:59:60",
            true,
        ),
        (
            TIMESTAMP,
            "2024-03-20 10:01:00.5",
            "eq",
            "2024-03-20 10:00:60.5",
            true,
        ),
        // Offsets: one-digit hours, hours and minutes run together.
        (
            TIMESTAMPTZ,
            "2024-03-20 05:00:00+00",
            "eq",
            "2024-03-20 10:00:00+5",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 04:30:00+00",
            "eq",
            "2024-03-20 10:00:00+530",
            true,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-19 18:00:01+00",
            "eq",
            "2024-03-20 10:00:00+15:59:59",
            true,
        ),
        // Values PostgreSQL refuses fail closed: out of range, year 0, `+infinity`, offsets
        // beyond 15:59:59, times past 24:00:00.
        (DATE, "1900-06-02", "lt", "+infinity", false),
        (DATE, "2024-03-20", "gt", "0000-01-01", false),
        (DATE, "2024-03-20", "lt", "5874898-01-01", false),
        (DATE, "2024-03-20", "gt", "4714-11-23 BC", false),
        (DATE, "2024-03-20", "lt", "2024-02-30", false),
        (DATE, "2024-03-20", "ne", "24-03-20", false),
        (
            TIMESTAMP,
            "2024-03-20 00:00:00",
            "lt",
            "294277-01-01",
            false,
        ),
        (
            TIMESTAMP,
            "1900-01-02 00:00:00",
            "gt",
            "4714-11-23 23:59:59 BC",
            false,
        ),
        (
            TIMESTAMP,
            "2024-03-20 00:00:00",
            "lt",
            "2024-03-20 24:00:00.000001",
            false,
        ),
        (
            TIMESTAMP,
            "2024-03-20 00:00:00",
            "lt",
            "2024-03-20 23:59:60.000001",
            false,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "ne",
            "2024-03-20 10:00:00+16",
            false,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "ne",
            "2024-03-20 10:00:00+05:60",
            false,
        ),
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "gt",
            "4714-11-24 00:30:00+01 BC",
            false,
        ),
        // Text output of instants at the ends of the range, in zones that move the date.
        (
            TIMESTAMPTZ,
            "294277-01-01 03:30:00+05:30",
            "eq",
            "294276-12-31 22:00:00Z",
            true,
        ),
        (
            TIMESTAMPTZ,
            "4714-11-23 16:07:02-07:52:58 BC",
            "eq",
            "4714-11-24 00:00:00+00 BC",
            true,
        ),
        // ... and are judged on the instant: 4714-11-24 00:30 BC UTC is in range.
        (
            TIMESTAMPTZ,
            "2024-03-20 10:00:00+00",
            "gt",
            "4714-11-23 23:30:00-01 BC",
            true,
        ),
    ] {
        assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
    }
}

#[test]
fn filter_floats_round_the_rule_value_to_the_column_type() {
    // (Quoted where YAML would round or convert the number itself.)
    for (oid, value, op, rule, want) in [
        (FLOAT4, "0.1", "eq", "0.100000001", true),
        (FLOAT4, "0.1", "eq", "0.1000001", false),
        (FLOAT8, "0.1", "eq", "'0.10000000000000001'", true),
        (FLOAT8, "0.1", "lt", "0.1000000000000001", true),
        (FLOAT8, "-0", "eq", "0", true),
        (FLOAT8, "NaN", "gt", "Infinity", true),
        (FLOAT8, "NaN", "eq", ".nan", true),
        (FLOAT8, "-Infinity", "lt", "-1e308", true),
        (FLOAT8, "1e-310", "gt", "0", true),
        // Out of the type's range: refused, as PostgreSQL refuses it.
        (FLOAT8, "0", "lt", "1e400", false),
        (FLOAT8, "0", "gt", "'1e-400'", false),
        (FLOAT4, "1", "lt", "1e39", false),
        (FLOAT4, "1", "gt", "'1e-50'", false),
        (FLOAT8, "1", "gt", "'0x1'", false),
    ] {
        assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
    }
}

#[test]
fn null_drops_and_unchanged_toast_keeps() {
    for op in ["eq", "ne", "gt", "lt", "gte", "lte", "contains"] {
        assert!(!passes(TEXT, Value::Null, op, "x"), "{op}");
        assert!(!passes(INT4, Value::Null, op, "1"), "{op}");
    }
    // An UPDATE whose filtered column is an unchanged TOASTed value is kept.
    let yaml = "tables:\n  users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: keep}\n";
    let b = applied(
        yaml,
        users_batch(vec![
            change(
                Op::Update,
                0,
                Some(vec![t("1"), Value::UnchangedToast, t("e")]),
                None,
            ),
            change(Op::Update, 0, Some(vec![t("2"), t("other"), t("e")]), None),
            change(
                Op::Update,
                0,
                Some(vec![t("3"), t("keep"), t("e")]),
                Some((OldKind::Full, vec![t("3"), t("other"), t("e")])),
            ),
        ]),
    );
    let ids: Vec<&str> = b
        .changes
        .iter()
        .map(|c| text(&c.new.as_ref().unwrap()[0]))
        .collect();
    // Update judged on the NEW value.
    assert_eq!(ids, ["1", "3"]);
}

#[test]
fn deletes_are_judged_on_the_old_tuple_and_never_dropped_for_lack_of_data() {
    let yaml = "tables:\n  users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: keep}\n    - type: filter\n      column: id\n      parameters: {operator: lt, value: 100}\n";
    let b = applied(
        yaml,
        users_batch(vec![
            // key-only old tuple: name was not sent -> kept; id judged -> 1 < 100.
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Key, vec![t("1"), Value::Null, Value::Null])),
            ),
            // key-only, key fails the id filter -> dropped.
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Key, vec![t("200"), Value::Null, Value::Null])),
            ),
            // full old tuple: judged.
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Full, vec![t("3"), t("other"), t("e")])),
            ),
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Full, vec![t("4"), t("keep"), t("e")])),
            ),
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Full, vec![t("5"), Value::Null, t("e")])),
            ),
        ]),
    );
    let ids: Vec<&str> = b
        .changes
        .iter()
        .map(|c| text(&c.old.as_ref().unwrap().1[0]))
        .collect();
    assert_eq!(ids, ["1", "4"]);
}

#[test]
fn operations_limit_a_rule_at_rule_level_and_in_parameters() {
    let rows = || {
        users_batch(vec![
            insert(vec![t("1"), t("x"), t("e")]),
            change(Op::Update, 0, Some(vec![t("2"), t("x"), t("e")]), None),
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Full, vec![t("3"), t("x"), t("e")])),
            ),
        ])
    };
    let ops = |b: &ChangeBatch| -> Vec<Op> { b.changes.iter().map(|c| c.op).collect() };
    let rule_level = "tables:\n  users:\n    - type: filter\n      column: name\n      operations: [INSERT]\n      parameters: {operator: eq, value: 'y'}\n";
    assert_eq!(ops(&applied(rule_level, rows())), [Op::Update, Op::Delete]);
    let in_params = "tables:\n  users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: 'y', operations: [update, Delete]}\n";
    assert_eq!(ops(&applied(in_params, rows())), [Op::Insert]);
    let both = "tables:\n  users:\n    - type: filter\n      column: name\n      operations: [DELETE]\n      parameters: {operator: eq, value: 'y', operations: [DELETE]}\n";
    assert_eq!(ops(&applied(both, rows())), [Op::Insert, Op::Update]);
    let absent = "tables:\n  users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: 'y'}\n";
    assert!(applied(absent, rows()).changes.is_empty());
    // A transform limited to INSERT leaves updates alone.
    let mask = "tables:\n  users:\n    - type: transform\n      column: name\n      operations: [INSERT]\n      parameters: {type: mask, mask_char: '*'}\n";
    let mut b = rows();
    b.changes[0].new.as_mut().unwrap()[1] = t("alice");
    b.changes[1].new.as_mut().unwrap()[1] = t("alice");
    let b = applied(mask, b);
    assert_eq!(text(&b.changes[0].new.as_ref().unwrap()[1]), "a***e");
    assert_eq!(text(&b.changes[1].new.as_ref().unwrap()[1]), "alice");
}

#[test]
fn allow_empty_deletes_at_both_levels_skips_deletes() {
    let rows = || {
        users_batch(vec![
            insert(vec![t("1"), t("x"), t("e")]),
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Full, vec![t("3"), t("x"), t("e")])),
            ),
        ])
    };
    for yaml in [
            "tables:\n  users:\n    - type: filter\n      column: name\n      allow_empty_deletes: true\n      parameters: {operator: eq, value: 'y'}\n",
            "tables:\n  users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: 'y', allow_empty_deletes: true}\n",
        ] {
            let b = applied(yaml, rows());
            assert_eq!(b.changes.len(), 1, "{yaml}");
            assert_eq!(b.changes[0].op, Op::Delete);
        }
    let off = "tables:\n  users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: 'y', allow_empty_deletes: false}\n";
    assert!(applied(off, rows()).changes.is_empty());
}

#[test]
fn truncate_is_never_touched() {
    let yaml = "tables:\n  users:\n    - type: filter\n      column: name\n      operations: [TRUNCATE, INSERT]\n      parameters: {operator: eq, value: 'y'}\n    - type: exclude_column\n      column: email\n";
    let mut tr = change(Op::Truncate, 0, None, None);
    tr.truncate = Some(Truncate {
        relations: vec![0],
        cascade: false,
        restart_identity: false,
    });
    let b = applied(yaml, users_batch(vec![tr.clone()]));
    assert_eq!(b.changes, [tr]);
    assert_eq!(b.relations, [users()]);
}

#[test]
fn exclude_column_prunes_every_tuple_and_relation() {
    let yaml = "tables:\n  users:\n    - type: exclude_column\n      column: name\n    - type: exclude_column\n      column: missing\n";
    let b = applied(
        yaml,
        users_batch(vec![
            insert(vec![t("1"), t("n"), t("e")]),
            change(
                Op::Update,
                0,
                Some(vec![t("2"), t("n"), t("e")]),
                Some((OldKind::Full, vec![t("1"), t("o"), t("f")])),
            ),
            change(
                Op::Delete,
                0,
                None,
                Some((OldKind::Key, vec![t("2"), Value::Null, Value::Null])),
            ),
        ]),
    );
    assert_eq!(b.relations.len(), 1);
    let rel = &b.relations[0];
    assert_eq!(
        rel.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "email"]
    );
    assert_eq!(rel.key, users().key);
    assert!(b.changes.iter().all(|c| c.relation == 0));
    assert_eq!(b.changes[0].new, Some(vec![t("1"), t("e")]));
    assert_eq!(b.changes[1].new, Some(vec![t("2"), t("e")]));
    assert_eq!(
        b.changes[1].old,
        Some((OldKind::Full, vec![t("1"), t("f")]))
    );
    assert_eq!(
        b.changes[2].old,
        Some((OldKind::Key, vec![t("2"), Value::Null]))
    );
}

#[test]
fn exclude_column_per_operation_gets_its_own_relation_and_other_tables_keep_theirs() {
    let mut orders = users();
    orders.oid = 2;
    orders.table = "orders".into();
    let yaml = "tables:\n  users:\n    - type: exclude_column\n      column: email\n      operations: [INSERT]\n";
    let b = applied(
        yaml,
        fixtures::batch(
            10,
            &[orders.clone(), users()],
            vec![
                change(Op::Insert, 0, Some(vec![t("1"), t("n"), t("e")]), None),
                change(Op::Insert, 1, Some(vec![t("1"), t("n"), t("e")]), None),
                change(Op::Update, 1, Some(vec![t("1"), t("n"), t("e")]), None),
                change(Op::Insert, 1, Some(vec![t("2"), t("n"), t("e")]), None),
            ],
        ),
    );
    assert_eq!(b.relations.len(), 3);
    assert_eq!(b.relation(&b.changes[0]), &orders);
    assert_eq!(b.changes[0].new.as_ref().unwrap().len(), 3);
    assert_eq!(b.relation(&b.changes[1]).columns.len(), 2);
    assert_eq!(b.changes[1].new, Some(vec![t("1"), t("n")]));
    assert_eq!(b.relation(&b.changes[2]), &users());
    assert_eq!(b.changes[2].new.as_ref().unwrap().len(), 3);
    assert_eq!(b.changes[1].relation, b.changes[3].relation);
}

#[test]
fn exclude_key_column_makes_the_key_full_and_last_column_drops() {
    let yaml = "tables:\n  users:\n    - type: exclude_column\n      column: id\n";
    let b = applied(
        yaml,
        users_batch(vec![insert(vec![t("1"), t("n"), t("e")])]),
    );
    assert_eq!(b.relations.len(), 1);
    assert_eq!(
        b.relations[0].key,
        ReplicationKey {
            kind: KeyKind::Full,
            columns: vec![]
        }
    );
    assert_eq!(b.changes[0].new, Some(vec![t("n"), t("e")]));

    let all = "tables:\n  users:\n    - {type: exclude_column, column: id}\n    - {type: exclude_column, column: name}\n    - {type: exclude_column, column: email}\n";
    let b = applied(all, users_batch(vec![insert(vec![t("1"), t("n"), t("e")])]));
    assert!(b.changes.is_empty());
    assert!(b.relations.is_empty());
}

#[test]
fn filter_on_excluded_or_missing_column_drops() {
    let yaml = "tables:\n  users:\n    - {type: exclude_column, column: name}\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: n}\n";
    let b = applied(
        yaml,
        users_batch(vec![insert(vec![t("1"), t("n"), t("e")])]),
    );
    assert!(b.changes.is_empty());
    let yaml = "tables:\n  users:\n    - type: filter\n      column: nope\n      parameters: {operator: ne, value: n}\n";
    let b = applied(
        yaml,
        users_batch(vec![insert(vec![t("1"), t("n"), t("e")])]),
    );
    assert!(b.changes.is_empty());
}

#[test]
fn rules_run_in_order_and_schema_qualified_keys_match() {
    // The filter sees the masked value.
    let yaml = "tables:\n  users:\n    - type: transform\n      column: name\n      parameters: {type: mask, mask_char: '*'}\n  public.users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: 'a***e'}\n  other.users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: never}\n";
    let b = applied(
        yaml,
        users_batch(vec![
            insert(vec![t("1"), t("alice"), t("e")]),
            insert(vec![t("2"), t("bobby"), t("e")]),
        ]),
    );
    assert_eq!(b.changes.len(), 1);
    assert_eq!(text(&b.changes[0].new.as_ref().unwrap()[1]), "a***e");
}

#[test]
fn tables_without_rules_are_untouched() {
    let yaml = "tables:\n  orders:\n    - {type: exclude_column, column: id}\n";
    let original = users_batch(vec![insert(vec![t("1"), t("n"), t("e")])]);
    assert_eq!(applied(yaml, original.clone()), original);
    let rules = load(yaml);
    assert!(!rules.is_empty());
    assert!(load("tables: {}\n").is_empty());
}

#[test]
fn warnings_for_unknown_keys_and_missing_tables() {
    let (rules, warnings) = Rules::from_yaml("r.yaml", "routes: {}\nverbose: true\n").unwrap();
    assert!(rules.is_empty());
    assert_eq!(
        warnings,
        [
            "r.yaml: unknown key \"routes\" ignored",
            "r.yaml: unknown key \"verbose\" ignored",
            "r.yaml: no `tables` key; no rules are applied",
        ]
    );
    let (_, warnings) = Rules::from_yaml("r.yaml", "").unwrap();
    assert_eq!(warnings, ["r.yaml: no `tables` key; no rules are applied"]);
    let yaml = "tables:\n  users:\n    - type: filter\n      column: name\n      comment: hi\n      parameters: {operator: eq, value: 1, pattern: x}\n    - type: exclude_column\n      column: name\n      operations: []\n";
    let (_, warnings) = Rules::from_yaml("r.yaml", yaml).unwrap();
    assert_eq!(
            warnings,
            [
                "r.yaml: table users, rule #1: unknown key \"comment\" ignored",
                "r.yaml: table users, rule #1: unknown parameter \"pattern\" ignored",
                "r.yaml: table users, rule #2: the rule applies to no operation (INSERT, UPDATE or DELETE); it never does anything",
            ]
        );
}

#[test]
#[allow(clippy::invalid_regex)] // the invalid pattern is the point
fn every_problem_is_reported_at_once() {
    let yaml = r#"
tables:
  users:
    - type: rename
      column: a
    - type: transform
      column: b
      parameters: {type: upper}
    - type: filter
      column: c
      parameters: {operator: like, value: x}
    - type: transform
      column: d
      parameters: {type: regex, pattern: '(unclosed', replace: x}
    - type: transform
      column: e
      parameters: {type: regex}
    - type: transform
      column: f
      parameters: {type: mask}
    - type: filter
      parameters: {}
    - type: exclude_column
      columns: [g]
    - type: filter
      column: h
      operations: [INSERT, UPSERT]
      parameters: {operator: eq, value: [1], allow_empty_deletes: "yes"}
  orders:
    - type: transform
      column: x
    - column: y
    - type: filter
      column: z
      operations: [INSERT]
      parameters: {operator: eq, value: 1, operations: [UPDATE]}
"#;
    let err = Rules::from_yaml("rules.yaml", yaml).unwrap_err();
    let RulesError::Invalid { path, problems } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(path, "rules.yaml");
    let regex_error = regex::bytes::Regex::new("(unclosed").unwrap_err();
    let want = [
            "rules.yaml: table users, rule #1: unknown rule type \"rename\" (expected transform, filter or exclude_column)".to_string(),
            "rules.yaml: table users, rule #2: unknown transform type \"upper\" (expected regex or mask)".into(),
            "rules.yaml: table users, rule #3: unknown filter operator \"like\" (expected eq, ne, gt, lt, gte, lte or contains)".into(),
            format!("rules.yaml: table users, rule #4: invalid regex pattern: {regex_error}"),
            "rules.yaml: table users, rule #5: missing parameter `pattern`".into(),
            "rules.yaml: table users, rule #5: missing parameter `replace`".into(),
            "rules.yaml: table users, rule #6: missing parameter `mask_char`".into(),
            "rules.yaml: table users, rule #7: missing `column`".into(),
            "rules.yaml: table users, rule #7: missing parameter `operator`".into(),
            "rules.yaml: table users, rule #7: missing parameter `value`".into(),
            "rules.yaml: table users, rule #8: missing `column`".into(),
            "rules.yaml: table users, rule #9: unknown operation \"UPSERT\" (expected INSERT, UPDATE, DELETE or TRUNCATE)".into(),
            "rules.yaml: table users, rule #9: `allow_empty_deletes` must be true or false".into(),
            "rules.yaml: table users, rule #9: parameter `value` must be a string, number or boolean".into(),
            "rules.yaml: table orders, rule #1: missing parameter `type` (regex or mask)".into(),
            "rules.yaml: table orders, rule #2: missing `type` (transform, filter or exclude_column)".into(),
            "rules.yaml: table orders, rule #3: `operations` is given both at rule level and in `parameters`, with different values".into(),
        ];
    assert_eq!(problems, &want);
    assert_eq!(err.category(), "rules_invalid");
    assert!(err
        .to_string()
        .starts_with("rules file rules.yaml has 17 problem(s):\n"));
}

#[test]
fn load_errors_for_io_and_yaml() {
    let err = Rules::from_file(Path::new("/nonexistent/rules.yaml")).unwrap_err();
    assert!(matches!(err, RulesError::Read { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot read rules file /nonexistent/rules.yaml"
    );
    let err = Rules::from_yaml("r.yaml", "tables: [").unwrap_err();
    assert!(matches!(err, RulesError::Yaml { .. }), "{err:?}");
    let err = Rules::from_yaml("r.yaml", "- a\n").unwrap_err();
    assert!(matches!(err, RulesError::Invalid { .. }), "{err:?}");
    let err = Rules::from_yaml("r.yaml", "tables:\n  users: 3\n").unwrap_err();
    let RulesError::Invalid { problems, .. } = err else {
        panic!()
    };
    assert_eq!(problems, ["r.yaml: table users: rules must be a list"]);
}

#[test]
fn from_file_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("pg_flo_rules_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.yaml");
    std::fs::write(
        &path,
        "tables:\n  users:\n    - {type: exclude_column, column: name}\n",
    )
    .unwrap();
    let (rules, warnings) = Rules::from_file(&path).unwrap();
    assert!(!rules.is_empty());
    assert!(warnings.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
