//! The JSON form of a change, shared by the stdout and file sinks (one object per line).
//!
//! Place in the pipeline: NATS message -> decode -> rules -> routing -> sink -> **json** ->
//! stdout / file.
//!
//! Shape (pg_flo's `buildDecodedMessage`). Keys come out sorted, as Go sorts map keys; objects
//! are built in sorted order so this holds even if `serde_json`'s `preserve_order` feature gets
//! enabled by some other crate:
//!
//! ```json
//! {"EmittedAt":"2024-03-20T10:00:00.123456Z","LSN":"0/16B3748","NewTuple":{"id":1,"name":"a"},
//!  "ReplicationKey":{"Columns":["id"],"Type":"PRIMARY KEY"},"Schema":"public","Table":"users",
//!  "Type":"INSERT"}
//! ```
//!
//! - `Type` is `INSERT`, `UPDATE`, `DELETE` or `TRUNCATE`; `LSN` is the change's own WAL
//!   position as `X/Y`; `EmittedAt` is when the replicator built the message, in UTC, formatted
//!   like Go's RFC3339Nano (fraction with trailing zeros trimmed, none when whole seconds).
//! - `NewTuple` is present only when the change carries a new row (insert, update), `OldTuple`
//!   only when it carries an old row or key (delete, update of the key or with `REPLICA IDENTITY
//!   FULL`). For an old key (default replica identity) the non-key columns are `null`, as in
//!   pg_flo.
//!
//! Value typing follows the column's type OID and PostgreSQL's text output (pg_flo decodes
//! through pgx the same way):
//! - int2, int4, int8, oid: JSON numbers.
//! - float4, float8: JSON numbers; `NaN`, `Infinity` and `-Infinity` stay strings.
//! - numeric: a JSON number when a double holds the exact value (`12.50` becomes `12.5`), else
//!   the exact digits as a string (pg_flo printed them as a number; `serde_json` cannot without
//!   its crate-wide `arbitrary_precision` feature); `NaN` and the infinities stay strings.
//! - bool: `true` / `false`.
//! - date: `YYYY-MM-DDT00:00:00Z`; timestamp (read as UTC) and timestamptz (converted to UTC):
//!   RFC3339 with `Z`. `infinity`, `-infinity`, BC dates and years past 9999 stay strings.
//! - bytea: base64 (standard alphabet, padded), like Go's `[]byte`.
//! - Everything else (text types, json, jsonb, arrays, ranges, interval, inet, enums, unknown
//!   OIDs...) is the text output as a string. Invalid UTF-8 is replaced (lossy).
//!
//! Differences from pg_flo, on purpose:
//! - `''` is `""`; pg_flo printed `null`, like NULL.
//! - An unchanged TOASTed column (an update that did not touch a large value) is left out of
//!   `NewTuple` and named in `UnchangedToastColumns` (present only when non-empty); pg_flo
//!   printed `null`, indistinguishable from a real NULL.
//! - A TRUNCATE carries `Tables` (`["schema.table", ...]`, every truncated table), `Cascade` and
//!   `RestartIdentity`; `Schema`, `Table` and `ReplicationKey` describe the first table.
//! - uuid is its canonical string; pg_flo printed a 16-element byte array.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Datelike as _, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike};
use pg_flo_source::oid::{
    BOOL, BYTEA, DATE, FLOAT4, FLOAT8, INT2, INT4, INT8, NUMERIC, OID, TIMESTAMP, TIMESTAMPTZ,
};
use serde_json::{Map, Number, Value as Json};

use crate::lsn::Lsn;
use crate::message::{Change, ChangeBatch, KeyKind, Relation, ReplicationKey, Value};

/// Stands in for a relation index a batch does not carry; [`ChangeBatch::decode`] rejects such
/// batches, so this only keeps rendering total.
static MISSING_RELATION: Relation = Relation {
    oid: 0,
    schema: String::new(),
    table: String::new(),
    columns: Vec::new(),
    key: ReplicationKey {
        kind: KeyKind::Full,
        columns: Vec::new(),
    },
};

fn relation(batch: &ChangeBatch, index: u16) -> &Relation {
    batch
        .relations
        .get(usize::from(index))
        .unwrap_or(&MISSING_RELATION)
}

/// The JSON object for one change of `batch` (see the module docs for the shape).
pub fn render(batch: &ChangeBatch, change: &Change) -> Json {
    let rel = relation(batch, change.relation);
    let mut obj = BTreeMap::<&str, Json>::new();
    obj.insert("Type", Json::from(change.op.as_pg_flo()));
    obj.insert("Schema", Json::from(rel.schema.as_str()));
    obj.insert("Table", Json::from(rel.table.as_str()));
    let mut key = Map::new();
    key.insert(
        "Columns".into(),
        Json::Array(
            rel.key
                .columns
                .iter()
                .map(|c| Json::from(c.as_str()))
                .collect(),
        ),
    );
    key.insert("Type".into(), Json::from(rel.key.kind.as_pg_flo()));
    obj.insert("ReplicationKey", Json::Object(key));
    // Copied rows have no WAL position: "" as pg_flo shows them.
    let lsn = if change.lsn == 0 {
        String::new()
    } else {
        Lsn(change.lsn).to_string()
    };
    obj.insert("LSN", Json::from(lsn));
    obj.insert("EmittedAt", emitted_at(batch.emitted_at_us));

    if let Some(new) = &change.new {
        let mut tuple = BTreeMap::new();
        let mut toasted = Vec::new();
        for (column, value) in rel.columns.iter().zip(new) {
            match value {
                Value::UnchangedToast => toasted.push(Json::from(column.name.as_str())),
                Value::Null => {
                    tuple.insert(column.name.as_str(), Json::Null);
                }
                Value::Text(text) => {
                    tuple.insert(column.name.as_str(), typed(column.type_oid, text));
                }
            }
        }
        obj.insert("NewTuple", object(tuple));
        if !toasted.is_empty() {
            obj.insert("UnchangedToastColumns", Json::Array(toasted));
        }
    }
    if let Some((_, old)) = &change.old {
        let tuple = rel
            .columns
            .iter()
            .zip(old)
            .map(|(column, value)| {
                let json = match value {
                    Value::Text(text) => typed(column.type_oid, text),
                    // An old row never holds unchanged-TOAST values; null if one ever did.
                    Value::Null | Value::UnchangedToast => Json::Null,
                };
                (column.name.as_str(), json)
            })
            .collect();
        obj.insert("OldTuple", object(tuple));
    }
    if let Some(truncate) = &change.truncate {
        let tables = truncate
            .relations
            .iter()
            .map(|&i| {
                let r = relation(batch, i);
                Json::from(format!("{}.{}", r.schema, r.table))
            })
            .collect();
        obj.insert("Tables", Json::Array(tables));
        obj.insert("Cascade", Json::Bool(truncate.cascade));
        obj.insert("RestartIdentity", Json::Bool(truncate.restart_identity));
    }
    object(obj)
}

/// A JSON object with its keys inserted in sorted order.
fn object(sorted: BTreeMap<&str, Json>) -> Json {
    Json::Object(sorted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// [`render`] as compact JSON followed by `\n` (one JSON Lines record).
pub fn render_line(batch: &ChangeBatch, change: &Change) -> Vec<u8> {
    let mut line = render(batch, change).to_string().into_bytes();
    line.push(b'\n');
    line
}

fn emitted_at(us: i64) -> Json {
    DateTime::from_timestamp_micros(us)
        .and_then(|t| rfc3339_utc(t.naive_utc()))
        .map_or(Json::Null, Json::from)
}

/// One column value, typed by its source type OID from PostgreSQL's text output.
fn typed(type_oid: u32, text: &[u8]) -> Json {
    if type_oid == BYTEA {
        if let Some(bytes) = bytea(text) {
            return Json::from(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    let s = String::from_utf8_lossy(text);
    let typed = match type_oid {
        INT2 | INT4 | INT8 | OID => integer(&s),
        FLOAT4 | FLOAT8 => s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Json::Number),
        NUMERIC => numeric(&s),
        BOOL => match &*s {
            "t" => Some(Json::Bool(true)),
            "f" => Some(Json::Bool(false)),
            _ => None,
        },
        DATE => parse_date(&s)
            .and_then(|d| rfc3339_utc(d.and_time(NaiveTime::MIN)))
            .map(Json::from),
        TIMESTAMP => parse_timestamp(&s, false)
            .and_then(rfc3339_utc)
            .map(Json::from),
        TIMESTAMPTZ => parse_timestamp(&s, true)
            .and_then(rfc3339_utc)
            .map(Json::from),
        _ => None,
    };
    typed.unwrap_or_else(|| Json::from(s.into_owned()))
}

fn integer(s: &str) -> Option<Json> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Json::from(i));
    }
    s.parse::<u64>().ok().map(Json::from)
}

/// A number when it holds the exact value of `s`, else `None` (the caller keeps the string).
fn numeric(s: &str) -> Option<Json> {
    if let Some(n) = integer(s) {
        return Some(n);
    }
    let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
    let exact = decimal_key(s).is_some() && decimal_key(s) == decimal_key(&format!("{f:e}"));
    if !exact {
        return None;
    }
    Number::from_f64(f).map(Json::Number)
}

/// The value of a decimal literal as (negative, significant digits, power of ten), so that
/// equal values compare equal whatever their notation (`12.50`, `1.25e1`).
fn decimal_key(s: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let trailing = i64::try_from(digits.len() - significant.len()).ok()?;
    let frac_len = i64::try_from(frac.len()).ok()?;
    Some((
        negative,
        significant.to_owned(),
        exponent - frac_len + trailing,
    ))
}

/// bytea text output: hex (`\x0a0b`, the default) or the old escape format.
fn bytea(text: &[u8]) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        return hex
            .chunks_exact(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            out.push(text[i]);
            i += 1;
        } else if text.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = text.get(i + 1..i + 4)?;
            let mut byte: u16 = 0;
            for &d in octal {
                if !(b'0'..=b'7').contains(&d) {
                    return None;
                }
                byte = byte * 8 + u16::from(d - b'0');
            }
            out.push(u8::try_from(byte).ok()?);
            i += 4;
        }
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `YYYY-MM-DD` (ISO DateStyle, years 0001-9999 AD).
fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(
        i32::try_from(digits(&b[0..4])?).ok()?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, followed for timestamptz by an offset `+HH[:MM[:SS]]`;
/// the result is in UTC.
fn parse_timestamp(s: &str, with_zone: bool) -> Option<NaiveDateTime> {
    let (date, rest) = s.split_once(' ')?;
    let date = parse_date(date)?;
    let b = rest.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    let mut rest = &b[8..];
    let mut nanos = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let len = frac.iter().take_while(|d| d.is_ascii_digit()).count();
        if len == 0 || len > 9 {
            return None;
        }
        nanos = digits(&frac[..len])? * 10u32.pow(9 - u32::try_from(len).ok()?);
        rest = &frac[len..];
    }
    let local = date.and_time(NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?);
    if !with_zone {
        return rest.is_empty().then_some(local);
    }
    let (sign, offset) = match rest.split_first()? {
        (b'+', offset) => (1, offset),
        (b'-', offset) => (-1, offset),
        _ => return None,
    };
    let mut parts = offset.split(|&c| c == b':');
    let mut seconds = 0i64;
    for (i, unit) in [3600i64, 60, 1].into_iter().enumerate() {
        match parts.next() {
            Some(part) if part.len() == 2 => seconds += i64::from(digits(part)?) * unit,
            None if i > 0 => break,
            _ => return None,
        }
    }
    if parts.next().is_some() {
        return None;
    }
    local.checked_sub_signed(TimeDelta::seconds(sign * seconds))
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// RFC3339 in UTC like Go's `time.RFC3339Nano` (what `json.Marshal(time.Time)` prints): the
/// fraction has its trailing zeros trimmed and is left out for whole seconds. `None` outside
/// years 0000-9999, which Go refuses to marshal.
fn rfc3339_utc(t: NaiveDateTime) -> Option<String> {
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, relation, text};
    use crate::message::{OldKind, Op, Truncate};
    use pg_flo_source::oid::TEXT;

    fn batch(changes: Vec<Change>) -> ChangeBatch {
        let users = fixtures::users();
        let events = Relation {
            oid: 16390,
            ..relation("app", "events", &[("id", INT8)], KeyKind::Full, &["id"])
        };
        ChangeBatch {
            commit_time_us: 1_710_928_800_000_000,
            xid: 42,
            // 2024-03-20T10:00:00.123456Z
            emitted_at_us: 1_710_928_800_123_456,
            ..fixtures::batch(0x16_B374_D848, &[users, events], changes)
        }
    }

    fn change(op: Op, new: Option<Vec<Value>>, old: Option<(OldKind, Vec<Value>)>) -> Change {
        Change {
            lsn: 0x16_B374_D000,
            ..fixtures::change(op, 0, new, old)
        }
    }

    fn json_of(c: Change) -> String {
        let b = batch(vec![c]);
        serde_json::to_string(&render(&b, &b.changes[0])).unwrap()
    }

    const HEAD: &str = r#""EmittedAt":"2024-03-20T10:00:00.123456Z","LSN":"16/B374D000""#;
    const TAIL: &str = r#""ReplicationKey":{"Columns":["id"],"Type":"PRIMARY KEY"},"Schema":"public","Table":"users""#;

    #[test]
    fn insert() {
        let json = json_of(change(Op::Insert, Some(vec![text("1"), text("")]), None));
        assert_eq!(
            json,
            format!(r#"{{{HEAD},"NewTuple":{{"bio":"","id":1}},{TAIL},"Type":"INSERT"}}"#)
        );
    }

    #[test]
    fn insert_line_ends_with_newline() {
        let b = batch(vec![change(
            Op::Insert,
            Some(vec![text("1"), Value::Null]),
            None,
        )]);
        let line = render_line(&b, &b.changes[0]);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            format!(r#"{{{HEAD},"NewTuple":{{"bio":null,"id":1}},{TAIL},"Type":"INSERT"}}"#) + "\n"
        );
    }

    #[test]
    fn update_with_old_key_and_unchanged_toast() {
        let json = json_of(change(
            Op::Update,
            Some(vec![text("2"), Value::UnchangedToast]),
            Some((OldKind::Key, vec![text("1"), Value::Null])),
        ));
        assert_eq!(
            json,
            format!(
                r#"{{{HEAD},"NewTuple":{{"id":2}},"OldTuple":{{"bio":null,"id":1}},{TAIL},"Type":"UPDATE","UnchangedToastColumns":["bio"]}}"#
            )
        );
    }

    #[test]
    fn delete_with_old_key() {
        let json = json_of(change(
            Op::Delete,
            None,
            Some((OldKind::Key, vec![text("7"), Value::Null])),
        ));
        assert_eq!(
            json,
            format!(r#"{{{HEAD},"OldTuple":{{"bio":null,"id":7}},{TAIL},"Type":"DELETE"}}"#)
        );
    }

    #[test]
    fn delete_with_full_old_row() {
        let json = json_of(change(
            Op::Delete,
            None,
            Some((OldKind::Full, vec![text("7"), text("hi")])),
        ));
        assert_eq!(
            json,
            format!(r#"{{{HEAD},"OldTuple":{{"bio":"hi","id":7}},{TAIL},"Type":"DELETE"}}"#)
        );
    }

    #[test]
    fn truncate_lists_every_table() {
        let mut c = change(Op::Truncate, None, None);
        c.truncate = Some(Truncate {
            relations: vec![0, 1],
            cascade: true,
            restart_identity: false,
        });
        assert_eq!(
            json_of(c),
            format!(
                r#"{{"Cascade":true,{HEAD},{TAIL_PLUS},"Type":"TRUNCATE"}}"#,
                TAIL_PLUS = r#""ReplicationKey":{"Columns":["id"],"Type":"PRIMARY KEY"},"RestartIdentity":false,"Schema":"public","Table":"users","Tables":["public.users","app.events"]"#
            )
        );
    }

    fn t(type_oid: u32, s: &str) -> String {
        serde_json::to_string(&typed(type_oid, s.as_bytes())).unwrap()
    }

    #[test]
    fn integers() {
        assert_eq!(t(INT2, "-32768"), "-32768");
        assert_eq!(t(INT4, "42"), "42");
        assert_eq!(t(INT8, "9223372036854775807"), "9223372036854775807");
        assert_eq!(t(OID, "4294967295"), "4294967295");
        assert_eq!(t(INT4, "oops"), r#""oops""#);
    }

    #[test]
    fn floats() {
        assert_eq!(t(FLOAT8, "1.5"), "1.5");
        assert_eq!(t(FLOAT4, "0.1"), "0.1");
        assert_eq!(t(FLOAT8, "1e+300"), "1e+300");
        assert_eq!(t(FLOAT8, "-0"), "-0.0");
        assert_eq!(t(FLOAT8, "NaN"), r#""NaN""#);
        assert_eq!(t(FLOAT4, "Infinity"), r#""Infinity""#);
        assert_eq!(t(FLOAT8, "-Infinity"), r#""-Infinity""#);
    }

    #[test]
    fn numerics() {
        assert_eq!(t(NUMERIC, "12.50"), "12.5");
        assert_eq!(t(NUMERIC, "-0.001"), "-0.001");
        assert_eq!(t(NUMERIC, "12345678901234567890"), "12345678901234567890");
        assert_eq!(t(NUMERIC, "0.00"), "0.0");
        assert_eq!(t(NUMERIC, "100.00"), "100.0");
        // More digits than a double holds: kept exact as a string.
        assert_eq!(
            t(NUMERIC, "0.1234567890123456789"),
            r#""0.1234567890123456789""#
        );
        assert_eq!(
            t(NUMERIC, "123456789012345678901234567890.5"),
            r#""123456789012345678901234567890.5""#
        );
        assert_eq!(t(NUMERIC, "NaN"), r#""NaN""#);
        assert_eq!(t(NUMERIC, "Infinity"), r#""Infinity""#);
        assert_eq!(t(NUMERIC, "-Infinity"), r#""-Infinity""#);
    }

    #[test]
    fn booleans_and_text() {
        assert_eq!(t(BOOL, "t"), "true");
        assert_eq!(t(BOOL, "f"), "false");
        assert_eq!(t(TEXT, ""), r#""""#);
        assert_eq!(t(1043, "a\"b"), r#""a\"b""#);
        assert_eq!(t(1042, "x  "), r#""x  ""#);
        assert_eq!(t(19, "pg_class"), r#""pg_class""#);
        assert_eq!(
            serde_json::to_string(&typed(TEXT, b"a\xffb")).unwrap(),
            "\"a\u{fffd}b\""
        );
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(t(DATE, "2024-03-20"), r#""2024-03-20T00:00:00Z""#);
        assert_eq!(t(DATE, "infinity"), r#""infinity""#);
        assert_eq!(t(DATE, "-infinity"), r#""-infinity""#);
        assert_eq!(t(DATE, "0044-03-15 BC"), r#""0044-03-15 BC""#);
        assert_eq!(
            t(TIMESTAMP, "2024-03-20 10:00:00"),
            r#""2024-03-20T10:00:00Z""#
        );
        assert_eq!(
            t(TIMESTAMP, "2024-03-20 10:00:00.123450"),
            r#""2024-03-20T10:00:00.12345Z""#
        );
        assert_eq!(t(TIMESTAMP, "infinity"), r#""infinity""#);
        assert_eq!(
            t(TIMESTAMPTZ, "2024-03-20 10:00:00.5+00"),
            r#""2024-03-20T10:00:00.5Z""#
        );
        assert_eq!(
            t(TIMESTAMPTZ, "2024-03-20 10:00:00+05:30"),
            r#""2024-03-20T04:30:00Z""#
        );
        assert_eq!(
            t(TIMESTAMPTZ, "2024-03-20 23:00:00-02"),
            r#""2024-03-21T01:00:00Z""#
        );
        assert_eq!(
            t(TIMESTAMPTZ, "1900-01-01 00:00:00+00:09:21"),
            r#""1899-12-31T23:50:39Z""#
        );
        assert_eq!(t(TIMESTAMPTZ, "-infinity"), r#""-infinity""#);
        assert_eq!(
            t(TIMESTAMPTZ, "2024-03-20 10:00:00"),
            r#""2024-03-20 10:00:00""#
        );
    }

    #[test]
    fn bytea_is_base64() {
        assert_eq!(t(BYTEA, "\\x"), r#""""#);
        assert_eq!(t(BYTEA, "\\xdeadbeef"), r#""3q2+7w==""#);
        assert_eq!(t(BYTEA, "\\xDEADBEEF"), r#""3q2+7w==""#);
        assert_eq!(t(BYTEA, "ab\\\\\\001"), r#""YWJcAQ==""#);
        assert_eq!(t(BYTEA, "\\xzz"), r#""\\xzz""#);
    }

    #[test]
    fn other_types_are_raw_text() {
        let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(t(2950, uuid), format!("\"{uuid}\""));
        assert_eq!(t(3802, r#"{"a": 1}"#), r#""{\"a\": 1}""#);
        assert_eq!(t(114, "[1, 2]"), r#""[1, 2]""#);
        assert_eq!(t(1007, "{1,2}"), r#""{1,2}""#);
        assert_eq!(t(1186, "1 day 02:00:00"), r#""1 day 02:00:00""#);
        assert_eq!(t(869, "10.0.0.1"), r#""10.0.0.1""#);
        assert_eq!(t(99999, "custom"), r#""custom""#);
    }

    #[test]
    fn null_and_empty_differ() {
        let json = json_of(change(Op::Insert, Some(vec![text("1"), Value::Null]), None));
        assert!(json.contains(r#""bio":null"#), "{json}");
        let json = json_of(change(Op::Insert, Some(vec![text("1"), text("")]), None));
        assert!(json.contains(r#""bio":"""#), "{json}");
    }

    #[test]
    fn emitted_at_like_go_rfc3339nano() {
        assert_eq!(emitted_at(1_710_928_800_000_000), "2024-03-20T10:00:00Z");
        assert_eq!(emitted_at(1_710_928_800_500_000), "2024-03-20T10:00:00.5Z");
        assert_eq!(
            emitted_at(1_710_928_800_000_001),
            "2024-03-20T10:00:00.000001Z"
        );
    }
}
