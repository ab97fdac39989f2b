//! A table with a column of every PostgreSQL type pg_flo must carry exactly, rows exercising
//! each type's edge cases, and exact source/target comparisons of whole rows.
//!
//! - [`ALL_TYPES_SCHEMA`] creates (in whichever database it runs) the `hstore` extension, an
//!   enum, a composite type, a domain and `public.all_types`: `id int PRIMARY KEY` plus one
//!   column per type. Run it on source and target alike (`Pipeline::both`).
//! - [`ALL_TYPES_ROWS`] inserts rows 1-9: ordinary values, all NULL, empty values (`''`, empty
//!   arrays and ranges), extremes (min/max, BC dates, a 10,000-element jsonb that is TOASTed),
//!   NaN and the infinities. [`ALL_TYPES_CHANGES`] then updates some rows (arrays, json, the
//!   key, a row whose TOASTed jsonb stays unchanged) and deletes row 7.
//! - [`row_md5s`] / [`assert_same_rows`] / [`wait_same_rows`] compare tables row by row as
//!   `row_to_json` text, which shows every value exactly (json keeps its whitespace, key order
//!   and duplicate keys; char(n) its padding; floats their shortest exact digits), and name the
//!   differing ids and columns on a mismatch.
//! - [`columns`] and [`text_values`] give each column's type and each value's text output (as
//!   the replication session renders it), for checks of the JSON sinks.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio_postgres::Client;

use crate::wait_for;

/// The table [`ALL_TYPES_SCHEMA`] creates.
pub const ALL_TYPES_TABLE: &str = "public.all_types";

/// The ids [`ALL_TYPES_ROWS`] inserts.
pub const ALL_TYPES_IDS: [i32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

/// Creates the `hstore` extension, the types `public.mood` (enum), `public.pair` (composite)
/// and `public.positive_amount` (domain), and the table `public.all_types`.
pub const ALL_TYPES_SCHEMA: &str = r##"CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'with space', 'quo"te''s');
CREATE TYPE public.pair AS (label text, n integer, tags text[]);
CREATE DOMAIN public.positive_amount AS numeric(12, 2) CHECK (VALUE > 0);
CREATE TABLE public.all_types (
    id integer PRIMARY KEY,
    c_smallint smallint,
    c_integer integer,
    c_bigint bigint,
    c_numeric numeric,
    c_real real,
    c_double double precision,
    c_money money,
    c_text text,
    c_varchar varchar(10),
    c_char char(5),
    c_qchar "char",
    c_name name,
    c_bytea bytea,
    c_boolean boolean,
    c_date date,
    c_time time,
    c_timetz timetz,
    c_timestamp timestamp,
    c_timestamptz timestamptz,
    c_interval interval,
    c_uuid uuid,
    c_inet inet,
    c_cidr cidr,
    c_macaddr macaddr,
    c_macaddr8 macaddr8,
    c_point point,
    c_line line,
    c_lseg lseg,
    c_box box,
    c_path_open path,
    c_path_closed path,
    c_polygon polygon,
    c_circle circle,
    c_bit bit(8),
    c_varbit varbit,
    c_tsvector tsvector,
    c_tsquery tsquery,
    c_xml xml,
    c_json json,
    c_jsonb jsonb,
    c_int4range int4range,
    c_int8range int8range,
    c_numrange numrange,
    c_tsrange tsrange,
    c_tstzrange tstzrange,
    c_daterange daterange,
    c_oid oid,
    c_pg_lsn pg_lsn,
    c_enum public.mood,
    c_composite public.pair,
    c_domain public.positive_amount,
    c_hstore public.hstore,
    c_int4_array integer[],
    c_text_array text[],
    c_int4_2d integer[][],
    c_bytea_array bytea[],
    c_varchar_array varchar(20)[],
    c_char_array char(1)[],
    c_bool_array boolean[],
    c_jsonb_array jsonb[],
    c_timestamptz_array timestamptz[],
    c_numeric_array numeric[],
    c_uuid_array uuid[]
);"##;

/// Inserts rows 1 to 9 into `public.all_types` (see the module docs).
pub const ALL_TYPES_ROWS: &str = r##"-- 1: ordinary values in every column.
INSERT INTO public.all_types VALUES (
    1, 12, 123456, 1234567890123, 12.50, 1.5, 3.141592653589793, 1234.56,
    'hello, world', 'varchar', 'ab', 'x', 'a_name',
    '\xdeadbeef', true, '2024-03-20', '10:11:12.345678', '10:11:12+02',
    '2024-03-20 10:11:12.123456', '2024-03-20 10:11:12.5+02',
    '1 year 2 mons -3 days 04:05:06.789',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8',
    '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
    '(1.5,-2.5)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)',
    '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))', '((0,0),(1,1),(2,0))', '<(0,0),1.5>',
    B'10101010', B'101',
    'a fat cat sat on a mat and ate a fat rat', 'fat & (rat | cat) & !dog',
    '<a b="1">text &amp; more</a>',
    '{"b": 1,   "a": [1, 2 ,3],
      "b": 2}',
    '{"b": 1, "a": {"nested": [true, false, null]}, "num": 1.000000000000000000001}',
    '[1,10)', '[1,10000000000)', '[1.5,2.5]',
    '["2020-01-01 00:00:00","2020-12-31 23:59:59.999999")',
    '[2020-01-01 00:00:00+02,2021-01-01 00:00:00+02)', '[2020-01-01,2020-02-01)',
    12345, '16/B374D848', 'happy', ROW('label', 7, ARRAY['x', 'y'])::public.pair, 12.34,
    '"a"=>"1", "b"=>NULL, "with space"=>"quote\"d", "back\\slash"=>"x"',
    '{1,2,3}',
    ARRAY[NULL, 'quote"d', 'comma,here', 'back\slash', E'tab\there', E'new\nline', '', 'NULL', ' spaced ', '{braces}'],
    '{{1,2},{3,4}}',
    ARRAY['\x00ff'::bytea, NULL, '\x'::bytea],
    ARRAY['a', 'b c', NULL],
    ARRAY['a', ' ', NULL]::char(1)[],
    ARRAY[true, false, NULL],
    ARRAY['{"a": 1}'::jsonb, 'null', '"x,y"', '[1, "two"]'],
    ARRAY['2020-01-01 00:00:00+05'::timestamptz, 'infinity', '-infinity', NULL],
    ARRAY[1.50, 'NaN', NULL, '-0.000001', 'Infinity']::numeric[],
    ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, NULL]
);
-- 2: NULL everywhere but the key.
INSERT INTO public.all_types (id) VALUES (2);
-- 3: empty values: '' for the text-like columns, empty arrays, ranges, bit strings, json
-- containers.
INSERT INTO public.all_types (
    id, c_text, c_varchar, c_char, c_qchar, c_name, c_bytea, c_varbit, c_tsvector, c_xml,
    c_json, c_jsonb, c_int4range, c_int8range, c_numrange, c_tsrange, c_tstzrange,
    c_daterange, c_composite, c_hstore, c_int4_array, c_text_array, c_int4_2d,
    c_bytea_array, c_varchar_array, c_char_array, c_bool_array, c_jsonb_array,
    c_timestamptz_array, c_numeric_array, c_uuid_array, c_path_open, c_polygon
) VALUES (
    3, '', '', '', '', '', '', '', '', '',
    '""', '{}', 'empty', 'empty', 'empty', 'empty', 'empty',
    'empty', ROW(NULL, NULL, NULL)::public.pair, '', '{}', '{}', '{}',
    '{}', '{}', '{}', '{}', '{}',
    '{}', '{}', '{}', '[(0,0)]', '((0,0))'
);
-- 4: extreme values.
INSERT INTO public.all_types VALUES (
    4, -32768, -2147483648, -9223372036854775808,
    '-123456789012345678901234567890.123456789012345678901234567890',
    '3.4028235e38', '1.7976931348623157e308', '-92233720368547758.08',
    repeat('long text ', 1000) || E'unicode: \u00e9\u4e2d\U0001F600 "quotes" \\ tab\t nl\n cr\r',
    'ten chars!', 'abcde', E'\\377', repeat('n', 63),
    (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), '' ORDER BY g), 'hex')
       FROM generate_series(0, 255) g),
    false, '4713-01-01 BC', '24:00:00', '24:00:00-15:59',
    '4713-01-01 00:00:00 BC', '294276-12-31 23:59:59.999999',
    '-178000000 years', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
    '::ffff:1.2.3.4/128', '::/0', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff',
    '(1e+308,-1e-308)', '{0,1,-1e+300}', '[(-1e+300,1e+300),(0,0)]', '(1e+300,1e+300),(-1e+300,-1e+300)',
    '[(1e-300,2),(3,4)]', '((0,0),(0,1e+300),(1e+300,0))', '((0,0),(0,1e+300),(1e+300,0))', '<(1e+300,-1e+300),1e+300>',
    B'11111111', repeat('10', 500)::varbit,
    $$'it''s' 'back\\slash':1A,3B 'fat':2C,4D 'ratatouille':5 "quote":6$$,
    $$'fat':AB & ( 'rat' <-> 'cat' | !'dog':* ) <2> 'x'$$,
    '<?xml version="1.0"?><root attr="&lt;&gt;"><![CDATA[cdata <here>]]><e/></root>',
    '  {"dup": 1, "dup": 2, "nested": {"z": 0, "a": [  ]}, "esc": "\u00e9\n\"", "big": 1e400}  ',
    (SELECT jsonb_agg(g) FROM generate_series(1, 10000) g),
    '(,)', '[-9223372036854775808,9223372036854775807)', '(-1e+100,1e-100]',
    '[-infinity,infinity]', '("4713-01-01 00:00:00+00 BC",)', '[,infinity)',
    4294967295, 'FFFFFFFF/FFFFFFFF', 'quo"te''s',
    ROW(E'with "quotes", comma, \\ and (parens)', -2147483648, ARRAY[NULL, '', '"']::text[])::public.pair,
    '9999999999.99',
    '""=>"", "NULL"=>"null", "=>"=>"=>"',
    ARRAY[-2147483648, 2147483647, NULL],
    ARRAY[repeat('x', 5000), E'\\', '"', ',', '{', '}', ' ', E'\t', E'\n'],
    '[0:1][-1:0]={{1,NULL},{3,4}}',
    ARRAY[(SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), '' ORDER BY g), 'hex') FROM generate_series(0, 255) g)],
    ARRAY[repeat('v', 20)],
    ARRAY[E'\\', '"', ',']::char(1)[],
    ARRAY[NULL, NULL]::boolean[],
    ARRAY['{"k": [1, 2, {"deep": null}]}'::jsonb, '1e-20', '""'],
    ARRAY['4713-01-01 00:00:00+00 BC'::timestamptz, '294276-12-31 23:59:59.999999+00'],
    ARRAY['NaN', '-Infinity', '1e-100', '123456789012345678901234567890']::numeric[],
    ARRAY['ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid, '00000000-0000-0000-0000-000000000000']
);
-- 5: the other end of the scales, NaN and the infinities.
INSERT INTO public.all_types (
    id, c_smallint, c_integer, c_bigint, c_numeric, c_real, c_double, c_money, c_text,
    c_date, c_time, c_timetz, c_timestamp, c_timestamptz, c_interval, c_uuid, c_oid,
    c_pg_lsn, c_qchar, c_json, c_jsonb, c_numrange, c_enum, c_int4_array
) VALUES (
    5, 32767, 2147483647, 9223372036854775807, 'NaN', 'NaN', 'NaN', '92233720368547758.07',
    ' ', '5874897-12-31', '00:00:00', '00:00:00+15:59', 'infinity', 'infinity',
    '178000000 years 11 mons 30 days 23:59:59.999999', '00000000-0000-0000-0000-000000000000',
    0, '0/0', E'\\001', 'null', 'null', '[-Infinity,Infinity]', 'with space', '{NULL}'
);
INSERT INTO public.all_types (id, c_numeric, c_real, c_double, c_timestamp, c_timestamptz, c_date, c_interval, c_json, c_jsonb)
VALUES
    (6, 'Infinity', 'Infinity', 'Infinity', '-infinity', '-infinity', 'infinity', '-00:00:00.000001', '"string"', '"unicode \u00e9 \ud83d\ude00"'),
    (7, '-Infinity', '-Infinity', '-Infinity', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', '-infinity', '0', '[]', '[]'),
    (8, '-0.000000000000000000000001', '-0', '-0', '1970-01-01 00:00:00.000001', '1969-12-31 23:59:59.999999+00', '1970-01-01', '1 day', '1e1000', '1e-1000'),
    (9, '0.0000', '1.17549435e-38', '5e-324', '2024-02-29 12:00:00', '2024-02-29 12:00:00-08', '2024-02-29', '-1 year -2 mons +3 days -04:05:06', '{}', '0.1');"##;

/// Updates rows 1 to 5 of [`ALL_TYPES_ROWS`] (row 4 keeps its TOASTed jsonb unchanged, row 5
/// becomes row 50) and deletes row 7.
pub const ALL_TYPES_CHANGES: &str = r##"UPDATE public.all_types SET
    c_text = 'changed', c_int4_array = '{9,8,7}',
    c_text_array = ARRAY['new', NULL, E'a\\b', '"q"'],
    c_json = '{ "changed" : true,"changed":false }', c_jsonb = '{"changed": [1, 2]}',
    c_composite = ROW('new label', NULL, '{}')::public.pair,
    c_hstore = c_hstore || '"added"=>"yes"'::public.hstore,
    c_int4_2d = '{{5,6,7},{8,9,10}}', c_timestamptz = '2030-06-15 12:00:00-07'
  WHERE id = 1;
UPDATE public.all_types SET
    c_integer = 42, c_text = NULL, c_bool_array = '{t,f}', c_numeric = 'NaN',
    c_jsonb_array = ARRAY['{"after": "update"}'::jsonb]
  WHERE id = 4;
UPDATE public.all_types SET
    c_text = 'no longer null', c_enum = 'sad', c_interval = '1 mon', c_uuid_array = '{}',
    c_daterange = '[2024-01-01,)', c_bit = B'00000001', c_xml = '<r/>'
  WHERE id = 2;
UPDATE public.all_types SET c_text = NULL, c_text_array = NULL, c_json = '[ ]' WHERE id = 3;
UPDATE public.all_types SET id = 50 WHERE id = 5;
DELETE FROM public.all_types WHERE id = 7;"##;

/// The session settings of pg_flo's replication and target connections: values compared as
/// text are rendered the way they travel.
pub const PIPELINE_SESSION_SQL: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO'; \
     SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 3";

/// `(id, md5(row_to_json(t)::text))` of every row of `table` (`schema.table`, with an integer
/// `id` column), ordered by id.
pub async fn row_md5s(client: &Client, table: &str) -> anyhow::Result<Vec<(i32, String)>> {
    let rows = client
        .query(
            &format!("SELECT id, md5(row_to_json(t)::text) FROM {table} t ORDER BY id"),
            &[],
        )
        .await
        .with_context(|| format!("row md5s of {table}"))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .with_context(|| format!("read row md5s of {table}"))
}

/// `row_to_json(t)::text` of the row of `table` with `id`, `None` when there is none.
pub async fn row_json(client: &Client, table: &str, id: i32) -> anyhow::Result<Option<String>> {
    let row = client
        .query_opt(
            &format!("SELECT row_to_json(t)::text FROM {table} t WHERE id = $1"),
            &[&id],
        )
        .await
        .with_context(|| format!("row {id} of {table}"))?;
    row.map(|r| r.try_get(0))
        .transpose()
        .with_context(|| format!("read row {id} of {table}"))
}

/// Each column of the row of `table` with `id` as (name, its JSON text in `row_to_json`).
async fn row_columns(
    client: &Client,
    table: &str,
    id: i32,
) -> anyhow::Result<BTreeMap<String, String>> {
    let rows = client
        .query(
            &format!(
                "SELECT j.key, j.value::text FROM {table} t, json_each(row_to_json(t)) j \
                 WHERE t.id = $1"
            ),
            &[&id],
        )
        .await
        .with_context(|| format!("columns of row {id} of {table}"))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .with_context(|| format!("read columns of row {id} of {table}"))
}

/// Compares `table` in `source` and `target` row by row ([`row_md5s`]). On a mismatch the
/// error names the ids missing on either side and the differing ids, and for the first
/// differing id shows each differing column's value on both sides and both rows'
/// `row_to_json` text.
pub async fn assert_same_rows(source: &Client, target: &Client, table: &str) -> anyhow::Result<()> {
    let src = row_md5s(source, table).await?;
    let dst = row_md5s(target, table).await?;
    if src == dst {
        return Ok(());
    }
    let src_map: BTreeMap<i32, &String> = src.iter().map(|(id, md5)| (*id, md5)).collect();
    let dst_map: BTreeMap<i32, &String> = dst.iter().map(|(id, md5)| (*id, md5)).collect();
    let missing: Vec<i32> = src_map
        .keys()
        .filter(|id| !dst_map.contains_key(id))
        .copied()
        .collect();
    let extra: Vec<i32> = dst_map
        .keys()
        .filter(|id| !src_map.contains_key(id))
        .copied()
        .collect();
    let differing: Vec<i32> = src_map
        .iter()
        .filter(|(id, md5)| dst_map.get(id).is_some_and(|d| d != *md5))
        .map(|(id, _)| *id)
        .collect();
    let mut report = format!(
        "{table} differs between source ({} rows) and target ({} rows): \
         missing in target {missing:?}, only in target {extra:?}, differing {differing:?}",
        src.len(),
        dst.len()
    );
    let first = differing
        .first()
        .or_else(|| missing.first())
        .or_else(|| extra.first())
        .copied();
    if let Some(id) = first {
        if differing.contains(&id) {
            let s = row_columns(source, table, id).await?;
            let t = row_columns(target, table, id).await?;
            report.push_str(&format!(
                "\nrow {id}, differing columns (row_to_json values):"
            ));
            let names: std::collections::BTreeSet<&String> = s.keys().chain(t.keys()).collect();
            for name in names {
                let (sv, tv) = (s.get(name), t.get(name));
                if sv != tv {
                    report.push_str(&format!(
                        "\n  {name}:\n    source {}\n    target {}",
                        shown(sv.map(String::as_str)),
                        shown(tv.map(String::as_str))
                    ));
                }
            }
        }
        let s = row_json(source, table, id).await?;
        let t = row_json(target, table, id).await?;
        report.push_str(&format!(
            "\nrow {id} in source: {}\nrow {id} in target: {}",
            shown(s.as_deref()),
            shown(t.as_deref())
        ));
    }
    anyhow::bail!(report)
}

/// Longer values are cut in reports (the column diff pinpoints the difference).
const SHOWN_CHARS: usize = 4000;

fn shown(value: Option<&str>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(v) if v.chars().count() > SHOWN_CHARS => {
            let cut: String = v.chars().take(SHOWN_CHARS).collect();
            format!("{cut}... ({} chars in all)", v.chars().count())
        }
        Some(v) => v.to_owned(),
    }
}

/// Polls until `table` holds the same rows ([`row_md5s`]) in `source` and `target`; on
/// timeout the error carries [`assert_same_rows`]'s report.
pub async fn wait_same_rows(
    source: &Client,
    target: &Client,
    table: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let waited = wait_for(
        &format!("{table} to hold the same rows in source and target"),
        timeout,
        || async {
            let s = row_md5s(source, table).await.ok()?;
            let t = row_md5s(target, table).await.ok()?;
            (s == t).then_some(())
        },
    )
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(e) => match assert_same_rows(source, target, table).await {
            Ok(()) => Ok(()),
            Err(report) => Err(e.context(format!("{report:#}"))),
        },
    }
}

/// The columns of `table` in order, as (name, type OID); the OID is what pgoutput sends (a
/// domain's own OID, not its base type's).
pub async fn columns(client: &Client, table: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let rows = client
        .query(
            "SELECT attname::text, atttypid FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[&table],
        )
        .await
        .with_context(|| format!("columns of {table}"))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .with_context(|| format!("read columns of {table}"))
}

/// Every row of `table` (ordered by id) as (id, each column's text output or `None` for NULL,
/// in [`columns`] order), rendered with [`PIPELINE_SESSION_SQL`]'s settings: exactly the text
/// pgoutput sends. Uses the type output functions (`format('%s', c)`), not casts to text
/// (which differ for inet, char(n) and bool).
pub async fn text_values(
    client: &Client,
    table: &str,
) -> anyhow::Result<Vec<(i32, Vec<Option<String>>)>> {
    let cols = columns(client, table).await?;
    let exprs: Vec<String> = cols
        .iter()
        .map(|(name, _)| {
            let c = crate::quote_ident(name);
            // num_nulls, not IS NULL: a composite whose fields are all NULL is not NULL.
            format!("CASE WHEN num_nulls(t.{c}) = 1 THEN NULL ELSE format('%s', t.{c}) END")
        })
        .collect();
    let sql = format!(
        "SELECT id, ARRAY[{}]::text[] FROM {table} t ORDER BY id",
        exprs.join(", ")
    );
    client
        .batch_execute(&format!("BEGIN; {PIPELINE_SESSION_SQL}"))
        .await
        .context("begin text_values transaction")?;
    let rows = client.query(&sql, &[]).await;
    let done = client.batch_execute("COMMIT").await;
    let rows = rows.with_context(|| format!("text values of {table}"))?;
    done.context("end text_values transaction")?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .with_context(|| format!("read text values of {table}"))
}
