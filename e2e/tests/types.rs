//! End-to-end type fidelity: a row of every PostgreSQL type (see `e2e::types`) streams through
//! the real replicator, NATS and workers, and arrives exactly: byte-identical rows in the
//! postgres sink, and the documented JSON rendering in the file sink.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use e2e::types::{
    assert_same_rows, columns, row_md5s, text_values, wait_same_rows, ALL_TYPES_CHANGES,
    ALL_TYPES_IDS, ALL_TYPES_ROWS, ALL_TYPES_SCHEMA, ALL_TYPES_TABLE,
};
use e2e::{count, wait_for, PgOptions, Pipeline, TempDir, ARRIVAL_TIMEOUT};
use pg_flo_source::oid::{
    BOOL, BYTEA, DATE, FLOAT4, FLOAT8, INT2, INT4, INT8, NUMERIC, OID, TIMESTAMP, TIMESTAMPTZ,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_streaming() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(ALL_TYPES_SCHEMA).await.unwrap();
    let _r = p.start_replicator("types", "all_types").await.unwrap();
    let _w = p.start_pg_worker("types").await.unwrap();
    let src = p.source().await.unwrap();
    let dst = p.target().await.unwrap();

    src.batch_execute(ALL_TYPES_ROWS).await.unwrap();
    assert_eq!(count(&src, ALL_TYPES_TABLE).await.unwrap(), 9);
    wait_same_rows(&src, &dst, ALL_TYPES_TABLE, ARRIVAL_TIMEOUT)
        .await
        .unwrap();

    // Updates of arrays, json, composite and hstore values, of a row whose large jsonb stays
    // unchanged (TOAST), of the key; and a delete.
    src.batch_execute(ALL_TYPES_CHANGES).await.unwrap();
    let expected_ids = vec![1, 2, 3, 4, 6, 8, 9, 50];
    let ids: Vec<i32> = row_md5s(&src, ALL_TYPES_TABLE)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, expected_ids);
    wait_for("target row count to match", ARRIVAL_TIMEOUT, || async {
        (count(&dst, ALL_TYPES_TABLE).await.ok()? == 8).then_some(())
    })
    .await
    .unwrap();
    wait_same_rows(&src, &dst, ALL_TYPES_TABLE, ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    assert_same_rows(&src, &dst, ALL_TYPES_TABLE).await.unwrap();
    // The TOASTed 10,000-element jsonb kept through the update of row 4.
    let n: i32 = dst
        .query_one(
            "SELECT jsonb_array_length(c_jsonb) FROM public.all_types WHERE id = 4",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10_000);
}

/// Every complete JSON line the file sink wrote so far (a line still being written is skipped),
/// parsed and raw (`serde_json` without its `float_roundtrip` feature may read a double one ULP
/// off, so numbers are checked on the raw text).
fn file_lines(dir: &Path) -> Vec<(Value, String)> {
    e2e::file_sink::whole_lines(dir)
        .into_iter()
        .map(|line| (serde_json::from_str(&line).unwrap(), line))
        .collect()
}

/// The raw JSON number token of column `name` in the `NewTuple` of the raw `line`.
fn raw_number<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let tuple = &line[line.find("\"NewTuple\":{")?..];
    let key = format!("\"{name}\":");
    let at = [format!("{{{key}"), format!(",{key}")]
        .iter()
        .filter_map(|k| tuple.find(k.as_str()).map(|i| i + k.len()))
        .min()?;
    let rest = &tuple[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Checks the JSON value of one non-null column against its source text output (`raw`: the
/// value's raw JSON token when it is a number); returns a description of the problem, if any.
fn check_value(
    type_oid: u32,
    text: &str,
    base64: Option<&str>,
    v: &Value,
    raw: Option<&str>,
) -> Option<String> {
    let ok = match type_oid {
        INT2 | INT4 | INT8 | OID => {
            text.parse::<i64>().is_ok_and(|i| *v == json!(i))
                || text.parse::<u64>().is_ok_and(|u| *v == json!(u))
        }
        BOOL => *v == json!(text == "t"),
        BYTEA => v.as_str() == base64,
        FLOAT4 | FLOAT8 | NUMERIC => {
            if ["NaN", "Infinity", "-Infinity"].contains(&text) {
                v.as_str() == Some(text)
            } else if v.is_number() {
                // A number holds the value of the text output (std's parse rounds exactly).
                let value = raw.and_then(|r| r.parse::<f64>().ok());
                value.is_some() && text.parse::<f64>().ok() == value
            } else {
                // numeric too precise for a double: the exact digits as a string.
                type_oid == NUMERIC && v.as_str() == Some(text)
            }
        }
        DATE | TIMESTAMP | TIMESTAMPTZ => {
            // RFC3339 in UTC; out of its range (infinities, BC, years past 9999) the text.
            let representable =
                !text.contains("infinity") && !text.ends_with(" BC") && text.find('-') == Some(4);
            let expected = if !representable {
                text.to_owned()
            } else if type_oid == DATE {
                format!("{text}T00:00:00Z")
            } else {
                let time = &text[11..];
                let time = if type_oid == TIMESTAMPTZ {
                    time.strip_suffix("+00").unwrap_or("not in UTC")
                } else {
                    time
                };
                format!("{}T{time}Z", &text[..10])
            };
            v.as_str() == Some(expected.as_str())
        }
        // Everything else: the text output, exactly.
        _ => v.as_str() == Some(text),
    };
    (!ok).then(|| format!("source text {text:?} rendered as {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_renders_in_json() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(ALL_TYPES_SCHEMA).await.unwrap();
    let _r = p.start_replicator("typesjson", "all_types").await.unwrap();
    let out = TempDir::new("pg-flo-types-json").unwrap();
    let w = Pipeline::spawn(
        "worker-typesjson",
        &p.file_worker_args("typesjson", out.path()),
    )
    .unwrap();
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap();

    let src = p.source().await.unwrap();
    src.batch_execute(ALL_TYPES_ROWS).await.unwrap();
    let inserts: HashMap<i64, (Value, String)> = wait_for(
        "file sink to hold every inserted row",
        ARRIVAL_TIMEOUT,
        || {
            let lines = file_lines(out.path());
            async move {
                let inserts: HashMap<i64, (Value, String)> = lines
                    .into_iter()
                    .filter(|(l, _)| l["Type"] == "INSERT")
                    .map(|(l, raw)| (l["NewTuple"]["id"].as_i64().unwrap(), (l, raw)))
                    .collect();
                (inserts.len() >= ALL_TYPES_IDS.len()).then_some(inserts)
            }
        },
    )
    .await
    .unwrap();
    let mut ids: Vec<i64> = inserts.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ALL_TYPES_IDS
            .iter()
            .map(|&i| i64::from(i))
            .collect::<Vec<_>>()
    );

    let cols = columns(&src, ALL_TYPES_TABLE).await.unwrap();
    let values = text_values(&src, ALL_TYPES_TABLE).await.unwrap();
    let base64: HashMap<i32, String> = src
        .query(
            "SELECT id, translate(encode(c_bytea, 'base64'), E'\\n', '') FROM public.all_types \
             WHERE c_bytea IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut problems = Vec::new();
    for (id, texts) in &values {
        let (line, raw_line) = &inserts[&i64::from(*id)];
        assert_eq!(line["Schema"], "public");
        assert_eq!(line["Table"], "all_types");
        assert!(line.get("UnchangedToastColumns").is_none(), "{line}");
        let tuple = line["NewTuple"].as_object().unwrap();
        let mut names: Vec<&str> = tuple.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(names, expected, "columns of row {id}");
        for ((name, type_oid), text) in cols.iter().zip(texts) {
            let v = &tuple[name];
            let problem = match text {
                None => (!v.is_null()).then(|| format!("NULL rendered as {v}")),
                Some(_) if v.is_null() => Some("non-null value rendered as null".to_owned()),
                Some(text) => check_value(
                    *type_oid,
                    text,
                    base64.get(id).map(String::as_str),
                    v,
                    raw_number(raw_line, name),
                ),
            };
            if let Some(problem) = problem {
                problems.push(format!(
                    "row {id} column {name} (type {type_oid}): {problem}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} values rendered wrongly:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Spot checks of the exact rendering.
    let row = |id: i64| &inserts[&id].0["NewTuple"];
    assert_eq!(row(1)["c_integer"], json!(123_456));
    assert_eq!(row(4)["c_bigint"], json!(i64::MIN));
    assert_eq!(row(5)["c_oid"], json!(0));
    assert_eq!(row(4)["c_oid"], json!(4_294_967_295u64));
    assert_eq!(row(1)["c_boolean"], json!(true));
    assert_eq!(row(4)["c_boolean"], json!(false));
    assert_eq!(row(3)["c_text"], json!(""));
    assert_eq!(row(3)["c_varchar"], json!(""));
    assert_eq!(row(3)["c_char"], json!("     "));
    assert_eq!(row(3)["c_bytea"], json!(""));
    assert_eq!(row(1)["c_bytea"], json!("3q2+7w=="));
    assert_eq!(row(1)["c_timestamptz"], json!("2024-03-20T08:11:12.5Z"));
    assert_eq!(row(1)["c_timestamp"], json!("2024-03-20T10:11:12.123456Z"));
    assert_eq!(row(1)["c_date"], json!("2024-03-20T00:00:00Z"));
    assert_eq!(row(6)["c_timestamptz"], json!("-infinity"));
    assert_eq!(row(5)["c_timestamptz"], json!("infinity"));
    assert_eq!(
        row(1)["c_json"],
        json!("{\"b\": 1,   \"a\": [1, 2 ,3],\n      \"b\": 2}")
    );
    assert_eq!(row(5)["c_json"], json!("null"));
    assert_eq!(
        row(1)["c_jsonb"],
        json!(r#"{"a": {"nested": [true, false, null]}, "b": 1, "num": 1.000000000000000000001}"#)
    );
    assert_eq!(row(5)["c_numeric"], json!("NaN"));
    assert_eq!(row(1)["c_numeric"], json!(12.5));
    assert_eq!(
        row(4)["c_numeric"],
        json!("-123456789012345678901234567890.123456789012345678901234567890")
    );
    assert_eq!(row(5)["c_double"], json!("NaN"));
    assert_eq!(row(6)["c_double"], json!("Infinity"));
    assert_eq!(row(7)["c_real"], json!("-Infinity"));
    assert_eq!(row(1)["c_double"], json!(std::f64::consts::PI));
    assert_eq!(raw_number(&inserts[&8].1, "c_numeric"), Some("-1e-24"));
    assert_eq!(
        raw_number(&inserts[&4].1, "c_double"),
        Some("1.7976931348623157e+308")
    );
    assert_eq!(
        row(1)["c_uuid"],
        json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(row(3)["c_int4range"], json!("empty"));
    assert_eq!(row(3)["c_text_array"], json!("{}"));
    assert_eq!(row(3)["c_composite"], json!("(,,)"));
    let big = row(4)["c_jsonb"].as_str().unwrap();
    let big: Value = serde_json::from_str(big).unwrap();
    assert_eq!(big.as_array().unwrap().len(), 10_000);
    assert!(row(2)
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| k == "id" || v.is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_the_copy() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both(ALL_TYPES_SCHEMA).await.unwrap();
    let src = p.source().await.unwrap();
    let dst = p.target().await.unwrap();
    // The rows exist before the replicator: they travel by COPY, not by the WAL.
    src.batch_execute(ALL_TYPES_ROWS).await.unwrap();
    let _w = p.start_pg_worker("typescopy").await.unwrap();
    let mut args = p.replicator_args("typescopy", "all_types");
    args.extend(["--copy-and-stream".into()]);
    let r = Pipeline::spawn("replicator", &args).unwrap();
    r.wait_streaming().await.unwrap();
    wait_same_rows(&src, &dst, ALL_TYPES_TABLE, ARRIVAL_TIMEOUT)
        .await
        .unwrap();
    assert_same_rows(&src, &dst, ALL_TYPES_TABLE).await.unwrap();
    // And the same rows changed afterwards, by streaming on top of the copy.
    src.batch_execute(ALL_TYPES_CHANGES).await.unwrap();
    wait_for("target row count to match", ARRIVAL_TIMEOUT, || async {
        (count(&dst, ALL_TYPES_TABLE).await.ok()? == 8).then_some(())
    })
    .await
    .unwrap();
    wait_same_rows(&src, &dst, ALL_TYPES_TABLE, ARRIVAL_TIMEOUT)
        .await
        .unwrap();
}
