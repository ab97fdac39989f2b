//! What the source really committed, and what a sink delivered, as comparable change
//! signatures.
//!
//! The truth is read from a second logical replication slot on the source with PostgreSQL's
//! own `test_decoding` plugin: every committed change, in commit order, independent of pg_flo's
//! decoder. A sink's JSON output (file lines, webhook bodies) is reduced to the same
//! signatures. Every row of the chaos tables carries a `uid` that never changes and a `ver`
//! that every update increments, so `table op uid ver` names one change; a delete is named by
//! the identity its old tuple carries (keys are never reused).

use std::collections::BTreeMap;

/// One committed source transaction: its commit LSN and its changes' signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub commit_lsn: u64,
    pub changes: Vec<String>,
}

/// Parses an LSN `X/Y`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some(u64::from_str_radix(hi, 16).ok()? << 32 | u64::from_str_radix(lo, 16).ok()?)
}

/// Reduces `test_decoding` rows (`lsn`, `data`, in slot order) to transactions of the chaos
/// tables. `root_of` maps a partition to its partitioned table (changes are published under
/// the root); tables `keep` rejects are left out, and so are logical messages.
pub fn transactions(
    rows: &[(u64, String)],
    root_of: impl Fn(&str) -> Option<String>,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Transaction>, String> {
    let mut out = Vec::new();
    let mut open: Option<Vec<String>> = None;
    for (lsn, data) in rows {
        if data == "BEGIN" || data.starts_with("BEGIN ") {
            open = Some(Vec::new());
        } else if data == "COMMIT" || data.starts_with("COMMIT ") {
            let changes = open
                .take()
                .ok_or_else(|| format!("COMMIT without BEGIN at {lsn}"))?;
            if !changes.is_empty() {
                out.push(Transaction {
                    commit_lsn: *lsn,
                    changes,
                });
            }
        } else if let Some(rest) = data.strip_prefix("table ") {
            let changes = open
                .as_mut()
                .ok_or_else(|| format!("change outside a transaction: {data}"))?;
            if let Some(sig) = decoded_change(rest, &root_of, &keep)? {
                changes.push(sig);
            }
        }
    }
    Ok(out)
}

/// One `test_decoding` change line after `table `.
fn decoded_change(
    line: &str,
    root_of: &impl Fn(&str) -> Option<String>,
    keep: &impl Fn(&str) -> bool,
) -> Result<Option<String>, String> {
    let (tables, rest) = line
        .split_once(": ")
        .ok_or_else(|| format!("no table in {line:.80}"))?;
    let (op, columns) = rest.split_once(':').unwrap_or((rest, ""));
    let columns = columns.trim_start();
    let named = |t: &str| root_of(t).unwrap_or_else(|| t.to_owned());
    if op == "TRUNCATE" {
        let mut list: Vec<String> = tables.split(", ").map(named).filter(|t| keep(t)).collect();
        list.sort();
        list.dedup();
        return Ok((!list.is_empty()).then(|| truncate_signature(&list)));
    }
    let table = named(tables);
    if !keep(&table) {
        return Ok(None);
    }
    // The tuple an INSERT or UPDATE wrote, or the old identity a DELETE names; an UPDATE's
    // `old-key:` part (a changed key, or replica identity FULL) is not needed.
    let mut tuple = BTreeMap::new();
    let mut in_old_key = false;
    for token in tokens(columns)? {
        match token {
            Token::Label("old-key") => in_old_key = true,
            Token::Label("new-tuple") => in_old_key = false,
            Token::Label(_) => {}
            Token::Column(name, value) => {
                if !in_old_key {
                    tuple.insert(name, value);
                }
            }
        }
    }
    let sig = match op {
        "INSERT" | "UPDATE" => row_signature(&table, op, &tuple)?,
        "DELETE" => delete_signature(&table, &tuple),
        other => return Err(format!("unknown operation {other} in {line:.80}")),
    };
    Ok(Some(sig))
}

enum Token<'a> {
    /// `old-key:`, `new-tuple:`, `(no-tuple-data)`.
    Label(&'a str),
    /// `name[type]:value`; a quoted value unescaped, `null` as `None`.
    Column(String, Option<String>),
}

/// The tokens of a `test_decoding` tuple: `name[type]:value` separated by spaces; a value is a
/// quoted string (`''` inside it is one quote) or runs to the next space.
fn tokens(mut s: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(out);
        }
        let word_end = s.find([' ', '[']).unwrap_or(s.len());
        if !s[word_end..].starts_with('[') {
            out.push(Token::Label(s[..word_end].trim_end_matches(':')));
            s = &s[word_end..];
            continue;
        }
        let name = s[..word_end].trim_matches('"').to_owned();
        let type_end = s[word_end..]
            .find("]:")
            .ok_or_else(|| format!("no type end after column {name}"))?;
        s = &s[word_end + type_end + 2..];
        if let Some(quoted) = s.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated value of column {name}")),
                    Some((i, '\'')) => {
                        if quoted[i + 1..].starts_with('\'') {
                            value.push('\'');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            };
            out.push(Token::Column(name, Some(value)));
            s = &quoted[end..];
        } else {
            let end = s.find(' ').unwrap_or(s.len());
            let raw = &s[..end];
            out.push(Token::Column(name, (raw != "null").then(|| raw.to_owned())));
            s = &s[end..];
        }
    }
}

fn row_signature(
    table: &str,
    op: &str,
    tuple: &BTreeMap<String, Option<String>>,
) -> Result<String, String> {
    let get = |c: &str| {
        tuple
            .get(c)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("{op} on {table} without {c}"))
    };
    Ok(format!(
        "{table} {op} uid={} ver={}",
        get("uid")?,
        get("ver")?
    ))
}

/// A delete: by `uid` when the old tuple has it (replica identity FULL), else by its key
/// columns.
fn delete_signature(table: &str, old: &BTreeMap<String, Option<String>>) -> String {
    if let Some(Some(uid)) = old.get("uid") {
        return format!("{table} DELETE uid={uid}");
    }
    // JSON sinks list every column of the old tuple, NULL where the identity does not carry
    // it; identity columns are never NULL here.
    let key: Vec<String> = old
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    format!("{table} DELETE {}", key.join(","))
}

fn truncate_signature(tables: &[String]) -> String {
    format!("TRUNCATE {}", tables.join(","))
}

/// The signature of one change of a JSON sink (pg_flo's JSON object); `None` for DDL.
pub fn json_signature(change: &serde_json::Value) -> Result<Option<String>, String> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    let field = |name: &str| {
        change
            .get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("no {name} in a change"))
    };
    let op = field("Type")?;
    if op == "DDL" {
        return Ok(None);
    }
    if op == "TRUNCATE" {
        let mut tables: Vec<String> = change
            .get("Tables")
            .and_then(serde_json::Value::as_array)
            .ok_or("a TRUNCATE without Tables")?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        tables.sort();
        tables.dedup();
        return Ok(Some(truncate_signature(&tables)));
    }
    let table = format!("{}.{}", field("Schema")?, field("Table")?);
    let tuple_of = |name: &str| -> BTreeMap<String, Option<String>> {
        change
            .get(name)
            .and_then(serde_json::Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default()
    };
    match op {
        "INSERT" | "UPDATE" => row_signature(&table, op, &tuple_of("NewTuple")).map(Some),
        "DELETE" => Ok(Some(delete_signature(&table, &tuple_of("OldTuple")))),
        other => Err(format!("unknown Type {other}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn rows(lines: &[&str]) -> Vec<(u64, String)> {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, (*l).to_owned()))
            .collect()
    }

    fn root(t: &str) -> Option<String> {
        t.strip_suffix("_0")
            .or_else(|| t.strip_suffix("_1"))
            .map(str::to_owned)
    }

    fn chaos(t: &str) -> bool {
        t.starts_with("public.t_")
    }

    #[test]
    fn test_decoding_lines_become_signatures() {
        let got = transactions(
            &rows(&[
                "BEGIN",
                "table public.t_pk: INSERT: id[bigint]:5 uid[bigint]:9 ver[integer]:0 owner[integer]:1 note[text]:'it''s a [x]: y' doc[text]:null",
                "table public.t_pk: UPDATE: id[bigint]:5 uid[bigint]:9 ver[integer]:1 owner[integer]:1 note[text]:'n' doc[text]:unchanged-toast-datum",
                "table public.t_pk: UPDATE: old-key: id[bigint]:5 new-tuple: id[bigint]:6 uid[bigint]:9 ver[integer]:2 owner[integer]:1 note[text]:'n' doc[text]:null",
                "table public.t_full: UPDATE: old-key: uid[bigint]:3 ver[integer]:0 note[text]:'a b' new-tuple: uid[bigint]:3 ver[integer]:1 note[text]:'new-tuple: x'",
                "table public.t_composite: DELETE: a[integer]:2 b[bigint]:77",
                "table public.t_full: DELETE: uid[bigint]:3 ver[integer]:1 note[text]:'x'",
                "message: transactional: 1 prefix: pg_flo, sz: 3 content:abc",
                "table public.t_parted_1: INSERT: id[bigint]:8 uid[bigint]:10 ver[integer]:4",
                "table internal_pg_flo.x: INSERT: id[integer]:1",
                "COMMIT",
                "BEGIN",
                "table public.t_parted_0, public.t_parted_1, public.t_pk: TRUNCATE: (no-flags)",
                "COMMIT",
                "BEGIN",
                "table internal_pg_flo.x: INSERT: id[integer]:2",
                "COMMIT",
            ]),
            root,
            chaos,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Transaction {
                    commit_lsn: 11,
                    changes: vec![
                        "public.t_pk INSERT uid=9 ver=0".into(),
                        "public.t_pk UPDATE uid=9 ver=1".into(),
                        "public.t_pk UPDATE uid=9 ver=2".into(),
                        "public.t_full UPDATE uid=3 ver=1".into(),
                        "public.t_composite DELETE a=2,b=77".into(),
                        "public.t_full DELETE uid=3".into(),
                        "public.t_parted INSERT uid=10 ver=4".into(),
                    ]
                },
                Transaction {
                    commit_lsn: 14,
                    changes: vec!["TRUNCATE public.t_parted,public.t_pk".into()]
                },
            ]
        );
    }

    #[test]
    fn malformed_lines_are_errors_not_guesses() {
        for bad in [
            "table public.t_pk: INSERT: id[bigint]:5 ver[integer]:0",
            "table public.t_pk: INSERT: note[text]:'open",
            "table public.t_pk: MERGE: id[bigint]:5",
            "table public.t_pk: INSERT: id[bigint",
        ] {
            let r = transactions(&rows(&["BEGIN", bad, "COMMIT"]), root, chaos);
            assert!(r.is_err(), "{bad} -> {r:?}");
        }
        assert!(transactions(&rows(&["COMMIT"]), root, chaos).is_err());
    }

    #[test]
    fn json_changes_become_the_same_signatures() {
        let cases = [
            (
                r#"{"Type":"INSERT","Schema":"public","Table":"t_pk","NewTuple":{"id":5,"uid":9,"ver":0,"note":"x"}}"#,
                Some("public.t_pk INSERT uid=9 ver=0"),
            ),
            (
                r#"{"Type":"UPDATE","Schema":"public","Table":"t_pk","NewTuple":{"id":6,"uid":9,"ver":2},"OldTuple":{"id":5},"UnchangedToastColumns":["doc"]}"#,
                Some("public.t_pk UPDATE uid=9 ver=2"),
            ),
            (
                r#"{"Type":"DELETE","Schema":"public","Table":"t_composite","OldTuple":{"b":77,"a":2,"note":null}}"#,
                Some("public.t_composite DELETE a=2,b=77"),
            ),
            (
                r#"{"Type":"DELETE","Schema":"public","Table":"t_full","OldTuple":{"uid":"3","ver":1}}"#,
                Some("public.t_full DELETE uid=3"),
            ),
            (
                r#"{"Type":"TRUNCATE","Schema":"public","Table":"t_pk","Tables":["public.t_pk","public.t_parted"]}"#,
                Some("TRUNCATE public.t_parted,public.t_pk"),
            ),
            (
                r#"{"Type":"DDL","Schema":"public","Table":"t_pk","NewTuple":{"ddl_command":"ALTER"}}"#,
                None,
            ),
        ];
        for (json, want) in cases {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(json_signature(&v).unwrap().as_deref(), want, "{json}");
        }
        let v = serde_json::json!({"Type": "INSERT", "Schema": "public", "Table": "t_pk", "NewTuple": {"uid": 1}});
        assert!(json_signature(&v).is_err());
    }

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
    }
}
