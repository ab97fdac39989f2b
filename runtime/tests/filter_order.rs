//! Property: the worker's rule filter (`<column value> <operator> <rule value>`, see
//! `pg_flo::worker::rules::Rules`) gives PostgreSQL's own answer, checked against a real
//! server.
//!
//! For each generated case (a column value and a rule value of one type), the server gives:
//! - the column value in its text output form (`SELECT $1::text::<type>::text`, in the session
//!   time zone of the case for `timestamptz`): what pgoutput delivers and the filter reads;
//! - its verdict for every ordering operator: `SELECT c = r, c <> r, c > r, ...` with
//!   `c = <column text>::<type>` and `r = <rule>::<type>` (integers are compared as `numeric`:
//!   `int_col > 2.5` is a numeric comparison in SQL too). The rule is read in a session whose
//!   `TimeZone` is UTC, as the filter reads a `timestamptz` rule value without an offset;
//! - for `contains`, `strpos(<column text>, <rule text>) > 0`.
//!
//! The filter runs as the worker runs it: a rules file (the rule value written in YAML as a
//! user would write it, plain or quoted) loaded with `Rules::from_yaml` and applied to an
//! INSERT carrying the column text. Where the filter intentionally differs, the property says
//! so:
//! - a rule value the server rejects for the type (`'2024-02-30'::date`, `'1e400'::float8`,
//!   `'abc'::numeric`) makes every ordering operator false (the filter fails closed);
//! - `bool`: only `eq` and `ne` can hold (`t > f` holds in SQL);
//! - `date` column with a rule value carrying a time of day: false (SQL would drop the time);
//! - `contains` compares with the text YAML delivers: an unquoted number is YAML's number
//!   (`1.50` is read as `1.5`).
//!
//! Generated rule values are in the forms the filter documents (ISO dates and times, decimal
//! numbers; not `now`, `epoch`, named time zones or two-digit years). A number with more
//! significant digits than a 64-bit float holds is written quoted: unquoted, YAML itself
//! rounds it (`value: 0.1234567890123456789` reaches the worker as `0.12345678901234568`).
//!
//! Bounded (256 cases per type, about 5 s for the file); one throw-away cluster per test. The
//! cases the property found failing are kept in [`regressions`] and checked first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use e2e::{PgCluster, PgOptions};
use pg_flo::fixtures::{batch, ins, public_table, text};
use pg_flo::worker::rules::Rules;
use pg_flo_source::oid;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// Cases per type (`FILTER_ORDER_CASES` overrides it, for a longer run).
const CASES: u32 = 256;

const OPS: [&str; 7] = ["eq", "ne", "gt", "lt", "gte", "lte", "contains"];

/// Session time zones a `timestamptz` column is printed in (offsets with minutes, with
/// seconds for local mean time before standard time, daylight saving time).
const ZONES: [&str; 7] = [
    "UTC",
    "Asia/Kolkata",
    "America/St_Johns",
    "Europe/Amsterdam",
    "Pacific/Chatham",
    "America/Los_Angeles",
    "Asia/Kathmandu",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int2 => "int2",
            Ty::Int4 => "int4",
            Ty::Int8 => "int8",
            Ty::Numeric => "numeric",
            Ty::Float4 => "float4",
            Ty::Float8 => "float8",
            Ty::Bool => "bool",
            Ty::Date => "date",
            Ty::Timestamp => "timestamp",
            Ty::Timestamptz => "timestamptz",
        }
    }

    fn oid(self) -> u32 {
        match self {
            Ty::Int2 => oid::INT2,
            Ty::Int4 => oid::INT4,
            Ty::Int8 => oid::INT8,
            Ty::Numeric => oid::NUMERIC,
            Ty::Float4 => oid::FLOAT4,
            Ty::Float8 => oid::FLOAT8,
            Ty::Bool => oid::BOOL,
            Ty::Date => oid::DATE,
            Ty::Timestamp => oid::TIMESTAMP,
            Ty::Timestamptz => oid::TIMESTAMPTZ,
        }
    }

    /// The type PostgreSQL compares a column value and the rule value in.
    fn compared_as(self) -> &'static str {
        match self {
            Ty::Int2 | Ty::Int4 | Ty::Int8 => "numeric",
            other => other.name(),
        }
    }
}

/// One generated comparison.
#[derive(Clone, Debug)]
struct Case {
    ty: Ty,
    /// The column value as given to PostgreSQL; the filter sees the server's text output of it.
    column: String,
    /// The rule value as PostgreSQL reads it (`$2::<type>`).
    rule: String,
    /// The rule value as written in the YAML file (the scalar after `value: `).
    yaml: String,
    /// Index into [`ZONES`] of the session that prints the column.
    zone: usize,
}

impl Case {
    fn new(ty: Ty, column: impl Into<String>, rule: impl Into<String>, quote: bool) -> Case {
        let rule = rule.into();
        Case {
            ty,
            column: column.into(),
            yaml: yaml_scalar(&rule, quote),
            rule,
            zone: 0,
        }
    }
}

/// `rule` as a YAML scalar: plain unless `quote`, or unless YAML would not read it back as the
/// same value (a float with more than 15 significant digits or outside the normal range, an
/// integer too large for 64 bits, leading or trailing blanks, null).
fn yaml_scalar(rule: &str, quote: bool) -> String {
    let plain_ok = !rule.is_empty()
        && rule.trim() == rule
        && !rule.contains([
            '\'', '"', '#', '[', '{', ',', '&', '*', '!', '|', '>', '%', '@',
        ])
        && match serde_yaml::from_str::<serde_yaml::Value>(rule) {
            Ok(serde_yaml::Value::String(s)) => s == rule,
            Ok(serde_yaml::Value::Number(n)) => !n.is_f64() || exact_f64(rule),
            Ok(serde_yaml::Value::Bool(_)) => true,
            _ => false,
        };
    if quote || !plain_ok {
        format!("'{}'", rule.replace('\'', "''"))
    } else {
        rule.to_owned()
    }
}

/// Whether a decimal literal survives YAML's f64: at most 15 significant digits (DBL_DIG), and
/// zero or within the normal range.
fn exact_f64(s: &str) -> bool {
    let body = s.trim_start_matches(['+', '-']);
    let mantissa = body.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    let v: f64 = s.parse().unwrap_or(f64::NAN);
    significant <= 15 && (significant == 0 || (v.is_finite() && v.abs() >= f64::MIN_POSITIVE))
}

/// The text the filter receives for a YAML scalar (the config reads any scalar as text).
fn delivered(yaml: &str) -> String {
    let v: serde_yaml::Value = serde_yaml::from_str(&format!("v: {yaml}")).unwrap();
    pg_flo_config::value::scalar_text(&v["v"]).unwrap()
}

/// Whether the worker keeps an INSERT whose column `v` (of `ty`) holds `column_text`, under
/// `v <op> <yaml>`.
fn filter_keeps(ty: Ty, column_text: &str, op: &str, yaml: &str) -> bool {
    let file = format!(
        "tables:\n  t:\n    - type: filter\n      column: v\n      parameters:\n        operator: {op}\n        value: {yaml}\n"
    );
    let (rules, warnings) = Rules::from_yaml("filter_order.yaml", &file).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut b = batch(
        1,
        &[public_table("t", &[("v", ty.oid())])],
        vec![ins(0, vec![text(column_text)])],
    );
    rules.apply(&mut b);
    b.changes.len() == 1
}

/// A server and its sessions: one per zone of [`ZONES`], the first (UTC) reads rule values.
struct Oracle {
    rt: Runtime,
    sessions: Vec<Client>,
    // Last: dropped after the clients, stops the server.
    _pg: PgCluster,
}

/// What PostgreSQL says about a value: its answer, or that it rejects the value (a data
/// exception, SQLSTATE class 22).
fn answer<T>(r: Result<T, tokio_postgres::Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.code().is_some_and(|c| c.code().starts_with("22")) => None,
        Err(e) => panic!("{e}"),
    }
}

impl Oracle {
    fn start(zones: usize) -> Oracle {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (pg, sessions) = rt.block_on(async {
            let pg = PgCluster::start(PgOptions::default()).await.unwrap();
            let mut sessions = Vec::new();
            for zone in &ZONES[..zones] {
                let c = pg.client("postgres").await.unwrap();
                c.batch_execute(&format!(
                    "SET TimeZone = '{zone}'; SET DateStyle = 'ISO, MDY'; SET extra_float_digits = 1"
                ))
                .await
                .unwrap();
                sessions.push(c);
            }
            (pg, sessions)
        });
        Oracle {
            rt,
            sessions,
            _pg: pg,
        }
    }

    /// The column's text output (None: the server rejects the input) and whether it contains
    /// `needle`.
    fn column(&self, case: &Case, needle: &str) -> Option<(String, bool)> {
        let sql = format!(
            "SELECT t, strpos(t, $2) > 0 FROM (SELECT $1::text::{}::text AS t) s",
            case.ty.name()
        );
        let params: [&(dyn ToSql + Sync); 2] = [&case.column, &needle];
        let row = self
            .rt
            .block_on(self.sessions[case.zone].query_one(&sql, &params));
        answer(row).map(|r| (r.get(0), r.get(1)))
    }

    /// PostgreSQL's verdict for eq, ne, gt, lt, gte, lte (None: it rejects the rule value).
    fn compare(&self, ty: Ty, column_text: &str, rule: &str) -> Option<[bool; 6]> {
        let t = ty.compared_as();
        let sql = format!(
            "SELECT c = r, c <> r, c > r, c < r, c >= r, c <= r \
             FROM (SELECT $1::text::{t} AS c, $2::text::{t} AS r) s"
        );
        let row = self
            .rt
            .block_on(self.sessions[0].query_one(&sql, &[&column_text, &rule]));
        answer(row).map(|r| std::array::from_fn(|i| r.get(i)))
    }

    /// Checks every operator of one case.
    fn check(&self, case: &Case) -> Result<(), TestCaseError> {
        let delivered = delivered(&case.yaml);
        let Some((column_text, contains)) = self.column(case, &delivered) else {
            return Err(TestCaseError::reject("the server rejects the column value"));
        };
        let pg = self.compare(case.ty, &column_text, &case.rule);
        let mut wrong = Vec::new();
        for (i, op) in OPS.into_iter().enumerate() {
            let want = match (op, pg) {
                ("contains", _) => contains,
                (_, None) => false,
                (_, Some(_)) if intentionally_false(case, op) => false,
                (_, Some(v)) => v[i],
            };
            if filter_keeps(case.ty, &column_text, op, &case.yaml) != want {
                wrong.push(format!("{op} (want {want})"));
            }
        }
        prop_assert!(
            wrong.is_empty(),
            "{}: column {:?} (input {:?}), rule {:?} (yaml {}, delivered {:?}): filter disagrees on {}; PostgreSQL eq,ne,gt,lt,gte,lte = {:?}",
            case.ty.name(),
            column_text,
            case.column,
            case.rule,
            case.yaml,
            delivered,
            wrong.join(", "),
            pg
        );
        Ok(())
    }

    /// For each type: its regressions, then [`CASES`] generated cases. Every type runs; the
    /// failures of all are reported at the end.
    fn run(&self, types: Vec<(Ty, BoxedStrategy<Case>)>) {
        let mut failed = Vec::new();
        for (ty, strategy) in types {
            failed.extend(
                regressions()
                    .into_iter()
                    .filter(|c| c.ty == ty)
                    .filter_map(|c| {
                        self.check(&c)
                            .err()
                            .map(|e| format!("regression {c:?}: {e}"))
                    }),
            );
            let mut runner = TestRunner::new(Config {
                cases: std::env::var("FILTER_ORDER_CASES")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(CASES),
                failure_persistence: None,
                ..Config::default()
            });
            if let Err(e) = runner.run(&strategy, |case| self.check(&case)) {
                failed.push(format!("{}: {e}", ty.name()));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    }
}

/// The operators the filter answers false on purpose where PostgreSQL may say true (see the
/// module docs).
fn intentionally_false(case: &Case, op: &str) -> bool {
    match case.ty {
        Ty::Bool => op != "eq" && op != "ne",
        Ty::Date => case.rule.contains(':'),
        _ => false,
    }
}

/// Cases checked before the generated ones: those the property found failing (before the
/// filter was fixed), by defect, and edges random cases rarely reach.
fn regressions() -> Vec<Case> {
    let tz = |column: &str, rule: &str| Case::new(Ty::Timestamptz, column, rule, false);
    let zoned = |zone: usize, column: &str, rule: &str| Case {
        zone,
        ..tz(column, rule)
    };
    vec![
        // Edges: an instant at an end of the range printed in a zone that moves its date
        // past the end (`294277-01-01 03:30:00+05:30`, `4714-11-23 16:07:02-07:52:58 BC`).
        zoned(1, "294276-12-31 22:00:00+00", "294276-12-31 22:00:00Z"),
        zoned(4, "294276-12-31 23:59:59.999999+00", "infinity"),
        zoned(5, "4714-11-24 00:00:00+00 BC", "4714-11-24 00:00:00+00 BC"),
        // Dates and timestamps after year 262142 (the end of chrono's calendar) were refused.
        Case::new(Ty::Date, "1900-01-01", "262143-01-01", false),
        Case::new(Ty::Date, "5874897-12-31", "5874897-12-30", false),
        Case::new(
            Ty::Timestamp,
            "294276-12-31 23:59:59.999999",
            "294276-12-31",
            false,
        ),
        // Fractions of a second beyond microseconds were truncated, PostgreSQL rounds them.
        tz("1900-01-01 00:00:00", "1900-01-01T00:00:00.0000004"),
        Case::new(
            Ty::Timestamp,
            "2024-03-20 10:00:01",
            "2024-03-20 10:00:00.9999999",
            false,
        ),
        // 24:00:00 and second 60 were refused.
        Case::new(
            Ty::Timestamp,
            "1900-01-01 24:00:00",
            "1900-01-01 24:00:00",
            false,
        ),
        Case::new(
            Ty::Timestamp,
            "2024-03-21 00:00:00",
            "2024-03-20 23:59:60",
            false,
        ),
        // Offsets of one digit or run together without a colon were refused.
        tz("1900-01-01 00:00:00", "1900-01-01 00:00:06.0943-1"),
        tz("2024-03-20 05:00:00+00", "2024-03-20 10:00:00+5"),
        tz("2024-03-20 04:30:00+00", "2024-03-20 10:00:00+530"),
        // Rule values PostgreSQL refuses were compared instead of failing closed.
        Case::new(Ty::Float8, "0e0", "1e400", false),
        Case::new(Ty::Float4, "1", "1e39", false),
        Case::new(Ty::Date, "1900-06-02", "+infinity", false),
        Case::new(Ty::Date, "2024-03-20", "0000-01-01", false),
        Case::new(
            Ty::Timestamp,
            "1900-01-02 00:00:00",
            "4714-11-23 23:59:59 BC",
            false,
        ),
        tz("2024-03-20 10:00:00+00", "2024-03-20 10:00:00+16"),
        tz("1936-06-23 09:55:59", "4714-04-30 17:13:08+05:45 BC"),
        // A float rule value was compared exactly, PostgreSQL rounds it to the column's type.
        Case::new(Ty::Float4, "0.1", "0.100000001", false),
        Case::new(Ty::Float8, "0.1", "0.10000000000000001", false),
    ]
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A decimal number as written: sign, integer digits, fraction digits.
#[derive(Clone, Debug)]
struct Dec {
    neg: bool,
    int: String,
    frac: String,
}

impl Dec {
    fn text(&self) -> String {
        let int = if self.int.is_empty() { "0" } else { &self.int };
        let sign = if self.neg { "-" } else { "" };
        if self.frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{}", self.frac)
        }
    }

    /// The same value written with its point moved into an exponent (`12.5` -> `125e-1`).
    fn with_exponent(&self, at: usize) -> String {
        let digits = format!("{}{}", self.int, self.frac);
        if digits.is_empty() {
            return "0e5".into();
        }
        let at = at % (digits.len() + 1);
        let exp = self.int.len() as i64 - at as i64;
        let sign = if self.neg { "-" } else { "" };
        let (a, b) = digits.split_at(at);
        if b.is_empty() {
            format!("{sign}{a}e{exp}")
        } else {
            format!("{sign}{a}.{b}e{exp}")
        }
    }

    /// The number one unit of its last digit away (`12.5` -> `12.6` or `12.4`), toward zero
    /// when `down` (never crossing zero).
    fn nudged(&self, down: bool) -> Option<Dec> {
        let mut digits: Vec<u8> = format!("{}{}", self.int, self.frac).into_bytes();
        let last = digits.iter().rposition(|_| true)?;
        if down {
            let i = digits.iter().rposition(|d| *d != b'0')?;
            if i != last {
                return None;
            }
            digits[i] -= 1;
        } else {
            let i = digits.iter().rposition(|d| *d != b'9')?;
            digits[i] += 1;
            for d in &mut digits[i + 1..] {
                *d = b'0';
            }
        }
        let (int, frac) = digits.split_at(self.int.len());
        Some(Dec {
            neg: self.neg,
            int: String::from_utf8(int.to_vec()).unwrap(),
            frac: String::from_utf8(frac.to_vec()).unwrap(),
        })
    }
}

fn dec(max_digits: usize) -> impl Strategy<Value = Dec> {
    let digits = format!("[0-9]{{0,{max_digits}}}");
    (
        any::<bool>(),
        prop_oneof![
            2 => proptest::string::string_regex(&digits).unwrap(),
            1 => proptest::string::string_regex("[0-9]{0,3}").unwrap(),
        ],
        prop_oneof![
            2 => proptest::string::string_regex(&digits).unwrap(),
            1 => Just(String::new()),
            1 => proptest::string::string_regex("[0-9]{0,3}").unwrap(),
        ],
    )
        .prop_map(|(neg, int, frac)| Dec { neg, int, frac })
}

/// Rule values equal or close to `d`, written in the ways a user would.
fn near_dec(d: Dec) -> BoxedStrategy<String> {
    let text = d.text();
    let mut near = vec![text.clone()];
    if let Some(up) = d.nudged(false) {
        near.push(up.text());
    }
    if let Some(down) = d.nudged(true) {
        near.push(down.text());
    }
    near.push(format!(
        "{text}{}1",
        if d.frac.is_empty() { "." } else { "" }
    ));
    near.push(format!(
        "{text}{}000",
        if d.frac.is_empty() { "." } else { "" }
    ));
    near.push(
        Dec {
            neg: !d.neg,
            ..d.clone()
        }
        .text(),
    );
    near.push(format!("00{}", text.trim_start_matches('-')));
    near.push(format!("+{}", text.trim_start_matches('-')));
    near.push(format!(" {text} "));
    prop_oneof![
        3 => proptest::sample::select(near),
        2 => any::<usize>().prop_map(move |at| d.with_exponent(at)),
    ]
    .boxed()
}

/// Infinities and NaN, as PostgreSQL spells them for `numeric` and `float8`.
fn special_number() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "NaN",
        "nan",
        "-NaN",
        "+NaN",
        "Infinity",
        "-Infinity",
        "+Infinity",
        "inf",
        "-inf",
        "infinity",
        " inf",
    ])
    .prop_map(String::from)
}

/// Rule values the server rejects for every number type.
fn not_a_number() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "",
        "abc",
        "1.2.3",
        "12a",
        "--1",
        "1e",
        "e5",
        ".",
        "-",
        "1 2",
        "0x",
        "true",
        "1,5",
        ".e5",
        "1e5.5",
        "Infinityx",
        "NaN1",
    ])
    .prop_map(String::from)
}

/// YAML's own spellings of infinity and NaN (`value: .inf` is a YAML float), with the value
/// PostgreSQL would call it.
fn yaml_special(ty: Ty) -> impl Strategy<Value = Case> {
    proptest::sample::select(vec![
        (".inf", "Infinity"),
        ("-.inf", "-Infinity"),
        (".nan", "NaN"),
    ])
    .prop_map(move |(yaml, rule)| Case {
        ty,
        column: String::new(),
        rule: rule.into(),
        yaml: yaml.into(),
        zone: 0,
    })
}

fn int_cases(ty: Ty, min: i64, max: i64) -> impl Strategy<Value = Case> {
    let column = prop_oneof![
        4 => min..=max,
        1 => Just(min),
        1 => Just(max),
        2 => -3i64..=3,
    ];
    (column, any::<bool>()).prop_flat_map(move |(c, quote)| {
        let wide = i128::from(c);
        let as_dec = Dec {
            neg: c < 0,
            int: c.unsigned_abs().to_string(),
            frac: String::new(),
        };
        let rule = prop_oneof![
            2 => Just(c.to_string()),
            2 => (-2i128..=2).prop_map(move |d| (wide + d).to_string()),
            3 => near_dec(as_dec),
            1 => (min..=max).prop_map(|v| v.to_string()),
            1 => any::<i64>().prop_map(|v| v.to_string()),
            1 => any::<i128>().prop_map(|v| v.to_string()),
            1 => dec(30).prop_map(|d| d.text()),
            1 => special_number(),
            1 => not_a_number(),
        ];
        let plain = rule.prop_map(move |r| Case::new(ty, c.to_string(), r, quote));
        let special = yaml_special(ty).prop_map(move |s| Case {
            column: c.to_string(),
            ..s
        });
        prop_oneof![12 => plain, 1 => special]
    })
}

fn numeric_cases() -> impl Strategy<Value = Case> {
    let column = prop_oneof![
        6 => dec(40),
        1 => Just(Dec { neg: false, int: "0".into(), frac: String::new() }),
    ];
    let special_column = proptest::sample::select(vec!["NaN", "Infinity", "-Infinity"]);
    let regular = (column, any::<bool>()).prop_flat_map(|(d, quote)| {
        let c = d.text();
        let rule = prop_oneof![
            6 => near_dec(d),
            1 => dec(40).prop_map(|d| d.text()),
            1 => special_number(),
            1 => not_a_number(),
        ];
        let c2 = c.clone();
        let plain = rule.prop_map(move |r| Case::new(Ty::Numeric, c.clone(), r, quote));
        let special = yaml_special(Ty::Numeric).prop_map(move |s| Case {
            column: c2.clone(),
            ..s
        });
        prop_oneof![12 => plain, 1 => special]
    });
    let specials = (special_column, any::<bool>()).prop_flat_map(|(c, quote)| {
        prop_oneof![
            special_number(),
            dec(20).prop_map(|d| d.text()),
            not_a_number()
        ]
        .prop_map(move |r| Case::new(Ty::Numeric, c, r, quote))
    });
    prop_oneof![8 => regular, 1 => specials]
}

/// Rule values equal or close to the float `v` of a column, in both widths: the shortest
/// spelling, longer exact expansions, the neighbouring floats, and decimals that round to `v`.
fn near_float(ty: Ty, input: &str) -> BoxedStrategy<String> {
    let mut near = vec![input.to_owned()];
    if ty == Ty::Float4 {
        if let Ok(v) = input.parse::<f32>() {
            if v.is_finite() {
                let wide = f64::from(v);
                near.extend([
                    format!("{v:e}"),
                    format!("{:e}", step32(v, true)),
                    format!("{:e}", step32(v, false)),
                    // The float4's exact value, and decimals around it that still round to it.
                    format!("{wide:e}"),
                    format!("{:.12e}", wide),
                    format!("{:e}", step64(wide, true)),
                    format!("{:e}", step64(wide, false)),
                    format!("{:.25e}", v),
                ]);
            }
        }
    } else if let Ok(v) = input.parse::<f64>() {
        if v.is_finite() {
            near.extend([
                format!("{v:e}"),
                format!("{:e}", step64(v, true)),
                format!("{:e}", step64(v, false)),
                format!("{v:.20e}"),
                format!("{v:.30e}"),
                format!("{v}"),
                format!("{:e}", -v),
            ]);
        }
    }
    proptest::sample::select(near).boxed()
}

/// The next float up or down from a finite `v` (`f64::next_up`, which needs Rust 1.86).
fn step64(v: f64, up: bool) -> f64 {
    if v == 0.0 {
        let tiny = f64::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = v.to_bits();
    f64::from_bits(if (v > 0.0) == up { bits + 1 } else { bits - 1 })
}

fn step32(v: f32, up: bool) -> f32 {
    if v == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = v.to_bits();
    f32::from_bits(if (v > 0.0) == up { bits + 1 } else { bits - 1 })
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v:e}")
    }
}

fn float_cases(ty: Ty) -> impl Strategy<Value = Case> {
    let column = if ty == Ty::Float4 {
        prop_oneof![
            4 => any::<f32>().prop_map(|v| float_text(f64::from(v))),
            2 => dec(12).prop_map(|d| d.text()),
            1 => proptest::sample::select(vec!["0", "-0", "1", "-1", "0.1", "NaN", "Infinity", "-Infinity", "3.4028235e38", "1e-45"]).prop_map(String::from),
        ]
        .boxed()
    } else {
        prop_oneof![
            4 => any::<f64>().prop_map(float_text),
            2 => dec(25).prop_map(|d| d.text()),
            1 => proptest::sample::select(vec!["0", "-0", "1", "-1", "0.1", "NaN", "Infinity", "-Infinity", "1.7976931348623157e308", "5e-324"]).prop_map(String::from),
        ]
        .boxed()
    };
    (column, any::<bool>()).prop_flat_map(move |(c, quote)| {
        let out_of_range = if ty == Ty::Float4 {
            vec!["1e39", "-1e39", "1e-50", "-1e-50"]
        } else {
            vec!["1e400", "-1e400", "1e-400", "-1e-400"]
        };
        let rule = prop_oneof![
            6 => near_float(ty, &c),
            1 => any::<f64>().prop_map(float_text),
            1 => dec(30).prop_map(|d| d.text()),
            1 => special_number(),
            1 => proptest::sample::select(out_of_range).prop_map(String::from),
            1 => not_a_number(),
        ];
        let c2 = c.clone();
        let plain = rule.prop_map(move |r| Case::new(ty, c.clone(), r, quote));
        let special = yaml_special(ty).prop_map(move |s| Case {
            column: c2.clone(),
            ..s
        });
        prop_oneof![12 => plain, 1 => special]
    })
}

fn bool_cases() -> impl Strategy<Value = Case> {
    let spellings = vec![
        "true", "false", "t", "f", "yes", "no", "y", "n", "on", "off", "1", "0", "TRUE", "False",
        "YES", "Off", "maybe", "", "2", "tru e",
    ];
    (
        proptest::sample::select(vec!["true", "false", "t", "f"]),
        proptest::sample::select(spellings),
        any::<bool>(),
    )
        .prop_map(|(c, r, quote)| Case::new(Ty::Bool, c, r, quote))
}

// ---------------------------------------------------------------------------------------------
// Dates and times

/// A date of the proleptic Gregorian calendar, astronomical year (0 is 1 BC).
#[derive(Clone, Copy, Debug)]
struct Ymd {
    y: i64,
    m: u32,
    d: u32,
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let leap = y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0);
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Ymd {
    /// As PostgreSQL prints it (`0044-03-15 BC`), or without zero padding of month and day.
    fn text(self, padded: bool) -> String {
        let (year, bc) = if self.y <= 0 {
            (1 - self.y, " BC")
        } else {
            (self.y, "")
        };
        if padded {
            format!("{year:04}-{:02}-{:02}{bc}", self.m, self.d)
        } else {
            format!("{year:04}-{}-{}{bc}", self.m, self.d)
        }
    }

    /// `text` split around the era, to put a time between them.
    fn with_time(self, sep: char, time: &str) -> String {
        let t = self.text(true);
        match t.strip_suffix(" BC") {
            Some(date) => format!("{date}{sep}{time} BC"),
            None => format!("{t}{sep}{time}"),
        }
    }

    /// The same month and year with another day (clamped into the month).
    fn with_day(self, d: i64) -> Ymd {
        let max = i64::from(days_in_month(self.y, self.m));
        Ymd {
            d: u32::try_from(d.clamp(1, max)).unwrap(),
            ..self
        }
    }
}

/// Dates up to year `max_year`, mostly recent, some at the ends of PostgreSQL's range.
fn ymd(max_year: i64) -> impl Strategy<Value = Ymd> {
    let year = prop_oneof![
        6 => 1900i64..2100,
        2 => -4713i64..=max_year,
        1 => -100i64..=100,
        1 => proptest::sample::select(vec![-4713, -43, 0, 1, 1970, 2000, 9999, 10000, max_year]),
    ];
    (year, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| {
        let ymd = Ymd { y, m, d: 1 };
        ymd.with_day(i64::from(d))
    })
}

/// A time of day (fraction digits as written).
#[derive(Clone, Debug)]
struct Hms {
    h: u32,
    m: u32,
    s: u32,
    frac: String,
}

impl Hms {
    fn text(&self) -> String {
        if self.frac.is_empty() {
            format!("{:02}:{:02}:{:02}", self.h, self.m, self.s)
        } else {
            format!("{:02}:{:02}:{:02}.{}", self.h, self.m, self.s, self.frac)
        }
    }

    /// The fraction as six digits (microseconds).
    fn micros(&self) -> u32 {
        format!("{:0<6}", self.frac)[..6].parse().unwrap()
    }
}

fn hms() -> impl Strategy<Value = Hms> {
    (
        0u32..24,
        0u32..60,
        0u32..60,
        prop_oneof![
            1 => Just(String::new()),
            2 => proptest::string::string_regex("[0-9]{1,6}").unwrap(),
        ],
    )
        .prop_map(|(h, m, s, frac)| Hms { h, m, s, frac })
}

/// Rule spellings of the time `t` and of times next to it (one microsecond or second away,
/// fractions beyond microseconds that PostgreSQL rounds).
fn near_time(t: &Hms) -> Vec<String> {
    let mut v = vec![t.text()];
    if t.s == 0 && t.frac.is_empty() {
        v.push(format!("{:02}:{:02}", t.h, t.m));
    }
    let us = t.micros();
    let base = format!("{:02}:{:02}:{:02}", t.h, t.m, t.s);
    v.push(format!("{base}.{us:06}000"));
    for extra in ["4", "5", "49999", "50001", "9", "0000001", "5000000001"] {
        v.push(format!("{base}.{us:06}{extra}"));
    }
    if us < 999_999 {
        v.push(format!("{base}.{:06}", us + 1));
    }
    if us > 0 {
        v.push(format!("{base}.{:06}", us - 1));
    }
    if t.s < 59 {
        v.push(format!("{:02}:{:02}:{:02}", t.h, t.m, t.s + 1));
    }
    if t.s > 0 {
        v.push(format!("{:02}:{:02}:{:02}", t.h, t.m, t.s - 1));
    }
    v
}

/// Times of day at the end of a day, as PostgreSQL accepts them (all mean the next midnight).
const END_OF_DAY: [&str; 3] = ["24:00:00", "23:59:60", "23:59:59.9999999"];

fn date_cases() -> impl Strategy<Value = Case> {
    let column = prop_oneof![
        12 => ymd(5_874_897).prop_map(Some),
        1 => Just(None),
    ];
    (column, any::<bool>(), any::<bool>()).prop_flat_map(|(c, quote, pos_inf)| {
        let Some(c) = c else {
            let col = if pos_inf { "infinity" } else { "-infinity" };
            return prop_oneof![
                ymd(5_874_897).prop_map(|d| d.text(true)),
                proptest::sample::select(vec!["infinity", "-infinity", "Infinity"]).prop_map(String::from),
            ]
            .prop_map(move |r| Case::new(Ty::Date, col, r, quote))
            .boxed();
        };
        let near: Vec<String> = vec![
            c.text(true),
            c.text(false),
            c.with_day(i64::from(c.d) - 1).text(true),
            c.with_day(i64::from(c.d) + 1).text(true),
            Ymd { y: c.y + 1, ..c }.with_day(i64::from(c.d)).text(true),
            Ymd { y: c.y - 1, ..c }.with_day(i64::from(c.d)).text(true),
        ];
        // A time of day in a date rule value: the filter refuses it (see the module docs).
        let with_time = vec![c.with_time(' ', "00:00:00"), c.with_time('T', "10:00")];
        let rule = prop_oneof![
            6 => proptest::sample::select(near),
            2 => ymd(5_874_897).prop_map(|d| d.text(true)),
            1 => proptest::sample::select(vec!["infinity", "-infinity", "INFINITY", "+infinity"]).prop_map(String::from),
            1 => proptest::sample::select(with_time),
            1 => proptest::sample::select(vec![
                "2024-02-30", "2023-02-29", "0000-01-01", "2024-13-01", "2024-00-10", "2024-01-00",
                "5874898-01-01", "4714-11-23 BC", "2024-03-20x", "", "2024/03/20x", "-2024-03-20",
                "2024-03-20 BC BC", "infinityx",
            ]).prop_map(String::from),
        ];
        let col = c.text(true);
        rule.prop_map(move |r| Case::new(Ty::Date, col.clone(), r, quote))
            .boxed()
    })
}

/// Timestamp rule values the server rejects.
const BAD_TIMESTAMPS: [&str; 12] = [
    "2024-03-20 25:00:00",
    "2024-03-20 10:60:00",
    "2024-03-20 10:00:61",
    "2024-03-20 24:00:01",
    "2024-03-20 23:59:60.000001",
    "2024-03-20 10:00:00+16",
    "2024-03-20 10:00:00+05:60",
    "2024-03-20 10",
    "294277-01-01 00:00:00",
    "4714-11-23 23:59:59 BC",
    "2024-02-30 10:00:00",
    "+infinity",
];

fn timestamp_cases() -> impl Strategy<Value = Case> {
    let column = prop_oneof![
        12 => (ymd(294_276), hms(), 0usize..16)
            .prop_map(|(d, t, end)| Some((d, t, END_OF_DAY.get(end).copied()))),
        1 => Just(None),
    ];
    (column, any::<bool>(), any::<bool>()).prop_flat_map(|(c, quote, pos_inf)| {
        let Some((d, t, end)) = c else {
            let col = if pos_inf { "infinity" } else { "-infinity" };
            return prop_oneof![
                (ymd(294_276), hms()).prop_map(|(d, t)| d.with_time(' ', &t.text())),
                proptest::sample::select(vec!["infinity", "-infinity"]).prop_map(String::from),
            ]
            .prop_map(move |r| Case::new(Ty::Timestamp, col, r, quote))
            .boxed();
        };
        let mut near: Vec<String> = near_time(&t)
            .iter()
            .map(|time| d.with_time(' ', time))
            .collect();
        near.push(d.with_time('T', &t.text()));
        near.push(d.with_time(' ', &format!("{}+05:30", t.text())));
        near.push(d.with_time('T', &format!("{}Z", t.text())));
        near.push(d.with_time(' ', &format!("{} -08", t.text())));
        near.push(d.text(true));
        near.extend(END_OF_DAY.iter().map(|e| d.with_time(' ', e)));
        let col = match end {
            Some(e) => d.with_time(' ', e),
            None => d.with_time(' ', &t.text()),
        };
        let rule = prop_oneof![
            8 => proptest::sample::select(near),
            2 => (ymd(294_276), hms()).prop_map(|(d, t)| d.with_time(' ', &t.text())),
            1 => proptest::sample::select(vec!["infinity", "-infinity", "-INFINITY"]).prop_map(String::from),
            1 => proptest::sample::select(BAD_TIMESTAMPS.to_vec()).prop_map(String::from),
        ];
        rule.prop_map(move |r| Case::new(Ty::Timestamp, col.clone(), r, quote))
            .boxed()
    })
}

/// A UTC offset in seconds east, written in one of the ways PostgreSQL reads (`style` picks).
fn offset_text(secs: i32, style: usize) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, a % 3600 / 60, a % 60);
    let mut forms = vec![format!("{sign}{h:02}:{m:02}:{s:02}")];
    if s == 0 {
        forms.push(format!("{sign}{h:02}:{m:02}"));
        forms.push(format!("{sign}{h:02}{m:02}"));
        if m == 0 {
            forms.push(format!("{sign}{h:02}"));
            forms.push(format!("{sign}{h}"));
        }
    }
    if a == 0 {
        forms.push("Z".into());
    }
    forms.swap_remove(style % forms.len())
}

/// Offsets in seconds east: usual ones, odd ones (local mean time), the extremes.
fn offset() -> impl Strategy<Value = i32> {
    let max = 15 * 3600 + 59 * 60 + 59;
    prop_oneof![
        4 => proptest::sample::select(vec![
            0, 3600, -3600, 19_800, -12_600, 20_700, 45_900, -28_800, 50_400, -39_600, 1172,
        ]),
        1 => -max..=max,
        1 => proptest::sample::select(vec![max, -max, 15 * 3600 + 59 * 60]),
    ]
}

fn timestamptz_cases() -> impl Strategy<Value = Case> {
    let column = prop_oneof![
        12 => (ymd(294_276), hms(), proptest::option::of(offset()), 0usize..8).prop_map(Some),
        1 => Just(None),
    ];
    (column, any::<bool>(), any::<bool>(), 0..ZONES.len()).prop_flat_map(
        |(c, quote, pos_inf, zone)| {
            let Some((d, t, off, style)) = c else {
                let col = if pos_inf { "infinity" } else { "-infinity" };
                return prop_oneof![
                    (ymd(294_276), hms(), offset()).prop_map(|(d, t, o)| d.with_time(' ', &format!("{}{}", t.text(), offset_text(o, 0)))),
                    proptest::sample::select(vec!["infinity", "-infinity"]).prop_map(String::from),
                ]
                .prop_map(move |r| Case { zone, ..Case::new(Ty::Timestamptz, col, r, quote) })
                .boxed();
            };
            let zone_text = |o: Option<i32>, style: usize| {
                o.map(|o| offset_text(o, style)).unwrap_or_default()
            };
            let col = d.with_time(' ', &format!("{}{}", t.text(), zone_text(off, style)));
            let mut near: Vec<String> = Vec::new();
            for s in 0..6 {
                near.push(d.with_time(' ', &format!("{}{}", t.text(), zone_text(off, s))));
            }
            for time in near_time(&t) {
                near.push(d.with_time('T', &format!("{time}{}", zone_text(off, style + 1))));
            }
            // The same instant an hour earlier or later on the clock, with the offset moved.
            let max = 15 * 3600 + 59 * 60 + 59;
            if let Some(o) = off {
                if t.h >= 1 && o - 3600 >= -max {
                    let earlier = Hms { h: t.h - 1, ..t.clone() };
                    near.push(d.with_time(' ', &format!("{}{}", earlier.text(), offset_text(o - 3600, style))));
                }
                if t.h <= 22 && o + 3600 <= max {
                    let later = Hms { h: t.h + 1, ..t.clone() };
                    near.push(d.with_time(' ', &format!("{}{}", later.text(), offset_text(o + 3600, style))));
                }
            }
            near.push(d.text(true));
            near.push(d.with_time(' ', &t.text()));
            let bad = BAD_TIMESTAMPS.iter().map(|s| (*s).to_owned()).chain([
                "2024-03-20 10:00:00+05:30:60".into(),
                "2024-03-20 10:00:00+123456".into(),
                "4714-11-24 00:30:00+01 BC".into(),
                "294276-12-31 23:00:00-05".into(),
            ]);
            let rule = prop_oneof![
                8 => proptest::sample::select(near),
                2 => (ymd(294_276), hms(), proptest::option::of(offset()), 0usize..8).prop_map(|(d, t, o, s)| {
                    d.with_time(' ', &format!("{}{}", t.text(), o.map(|o| offset_text(o, s)).unwrap_or_default()))
                }),
                1 => proptest::sample::select(vec!["infinity", "-infinity", "Infinity"]).prop_map(String::from),
                1 => proptest::sample::select(bad.collect::<Vec<_>>()),
            ];
            rule.prop_map(move |r| Case {
                zone,
                ..Case::new(Ty::Timestamptz, col.clone(), r, quote)
            })
            .boxed()
        },
    )
}

// ---------------------------------------------------------------------------------------------

/// Integers, numeric, floats and bool (one server for all).
#[test]
fn numbers_and_bool_compare_as_postgres() {
    let int = |ty, min, max| (ty, int_cases(ty, min, max).boxed());
    Oracle::start(1).run(vec![
        int(Ty::Int2, i64::from(i16::MIN), i64::from(i16::MAX)),
        int(Ty::Int4, i64::from(i32::MIN), i64::from(i32::MAX)),
        int(Ty::Int8, i64::MIN, i64::MAX),
        (Ty::Numeric, numeric_cases().boxed()),
        (Ty::Float8, float_cases(Ty::Float8).boxed()),
        (Ty::Float4, float_cases(Ty::Float4).boxed()),
        (Ty::Bool, bool_cases().boxed()),
    ]);
}

/// Date, timestamp and timestamptz (one server for all).
#[test]
fn dates_and_times_compare_as_postgres() {
    Oracle::start(ZONES.len()).run(vec![
        (Ty::Date, date_cases().boxed()),
        (Ty::Timestamp, timestamp_cases().boxed()),
        (Ty::Timestamptz, timestamptz_cases().boxed()),
    ]);
}
