//! Rules: per-table transforms, filters and column exclusions, applied by the worker to every
//! decoded [`ChangeBatch`] before routing (so rules see source table and column names).
//!
//! Place in the pipeline: JetStream -> decode -> **rules** -> routing -> sink.
//!
//! The file format is pg_flo's (`--rules-config`):
//! ```yaml
//! tables:
//!   users:                       # bare table name, or "schema.table"
//!     - type: transform          # transform | filter | exclude_column
//!       column: email
//!       parameters: { type: regex, pattern: "^(.).*@(.*)$", replace: "$1***@$2" }
//!       operations: [INSERT, UPDATE]   # default: INSERT, UPDATE, DELETE
//!     - type: transform
//!       column: phone
//!       parameters: { type: mask, mask_char: "*" }
//!     - type: filter
//!       column: age
//!       parameters: { operator: gte, value: 18, allow_empty_deletes: true }
//!     - type: exclude_column
//!       column: ssn
//! ```
//!
//! Semantics (pg_flo's, with its known bugs fixed):
//! - Rules of a table run in file order on every change of that table. A bare key matches the
//!   table in any schema; a `schema.table` key matches that schema only (and also a table whose
//!   name is literally `schema.table`). Rules of several matching keys run in file order.
//! - `operations` is honoured, given at rule level or inside `parameters` (pg_flo's files put it
//!   there; pg_flo itself ignored it at both places). When both are given they must agree.
//!   `allow_empty_deletes: true` (either level) means the rule does not apply to DELETEs.
//!   TRUNCATE changes are never touched, whatever `operations` says.
//! - A rule reads the old tuple of a DELETE and the new tuple otherwise (an UPDATE is judged on
//!   its NEW value).
//! - `transform` (`regex` with `pattern`/`replace`, or `mask` with `mask_char`) rewrites values
//!   of text-like columns (`text`, `varchar`, `bpchar`, `name`) only; on other column types it
//!   does nothing. It rewrites the new AND the old tuple, so a masked key still finds the
//!   masked row in the target. NULL and unchanged-TOAST values are left alone. `regex`
//!   replaces every match; `$1`, `${name}` expand and `$$` is a literal `$`. `mask` keeps the
//!   first and last character (characters, not bytes) and replaces every other character with
//!   `mask_char`; values of at most two characters stay as they are.
//! - `filter` keeps a change when `<column value> <operator> <value>` holds and drops it
//!   otherwise; see [`Rules`] for the type-aware comparison and the NULL / TOAST / key-only
//!   delete rules.
//! - `exclude_column` removes the column from the change's relation and from its new and old
//!   tuples; see [`Rules`] for key columns and the last column.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use serde_yaml::Value as Yaml;

use crate::message::{Change, ChangeBatch, KeyKind, OldKind, Op, Relation, ReplicationKey, Value};

/// Why a rules file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rules file {path} is not valid YAML")]
    Yaml {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("rules file {path} has {} problem(s):\n{}", problems.len(), problems.join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

impl RulesError {
    pub fn category(&self) -> &'static str {
        match self {
            RulesError::Read { .. } => "rules_read",
            RulesError::Yaml { .. } => "rules_yaml",
            RulesError::Invalid { .. } => "rules_invalid",
        }
    }
}

/// The loaded rules of every table.
///
/// Filter comparison (`<column value> <operator> <rule value>`), by the column's type OID, on
/// PostgreSQL's text output:
/// - integers (`int2`, `int4`, `int8`, `oid`), `numeric`, `float4`, `float8`: numerically and
///   exactly (both sides are compared as decimal numbers, so `9007199254740993 >
///   9007199254740992` holds; `Infinity`, `-Infinity` and `NaN` order as in PostgreSQL);
/// - `bool`: `t`/`f` against `true`/`false`/`t`/`f`/`yes`/`no`/`on`/`off`/`1`/`0`; only `eq` and
///   `ne` can hold, ordering operators never do;
/// - `date`: as dates; `timestamp`: as wall-clock date-times (an offset in the rule value is
///   ignored, as PostgreSQL does when casting to `timestamp`); `timestamptz`: as instants, so
///   `2024-03-20 10:00:00+00` equals `2024-03-20 15:30:00+05:30` (the rule value may be
///   RFC 3339 or PostgreSQL's format; without an offset it is taken as UTC); a date-only rule
///   value means midnight; `infinity`/`-infinity` order last/first;
/// - every other type (text-like, uuid, json, ...): byte-wise string comparison;
/// - `contains`: case-sensitive substring of the text form, for every type.
///
/// A value that cannot be parsed for a numeric or time column makes the comparison false (the
/// change is dropped), as does a filter naming a column the table does not have (or one an
/// earlier `exclude_column` removed): a filter is an allow-list and fails closed.
///
/// Missing data (pg_flo dropped these changes, weakness 12; we keep them):
/// - NULL: every operator is false (as in SQL), the change is dropped;
/// - unchanged TOAST in an UPDATE: the filtered column did not change and its value is not in
///   the message, so the filter cannot be judged; the change is **kept** (dropping it would
///   lose an update whose other columns did change);
/// - a DELETE whose old tuple carries only the replica-identity key, filtered on a non-key
///   column: the value was never sent, so the change is **kept** — deletes are never dropped
///   for lack of data (the row may have been replicated before; deleting a row the target
///   does not have is harmless, keeping one the source deleted is not). A filter on a key
///   column is judged on the key value. pg_flo's docs offer only `allow_empty_deletes` as the
///   way out of its dropped deletes; it remains accepted and makes the rule skip DELETEs
///   entirely.
///
/// `exclude_column` on a replica-identity key column removes it and turns the relation's key
/// into [`KeyKind::Full`] with no columns (what is left no longer identifies a row; sinks then
/// match on every remaining column). Excluding a change's last remaining column drops the
/// change (pg_flo errored and dropped it too). A column the table does not have is ignored.
#[derive(Debug, Default)]
pub struct Rules {
    entries: Vec<TableRules>,
    /// Table name -> (schema the key requires, index into `entries`), in file order.
    by_table: HashMap<String, Vec<(Option<String>, usize)>>,
}

#[derive(Debug)]
struct TableRules {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    column: String,
    ops: OpSet,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Regex {
        re: regex::bytes::Regex,
        replace: Vec<u8>,
    },
    Mask {
        mask: String,
    },
    Filter(Filter),
    Exclude,
}

/// The operations a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpSet {
    insert: bool,
    update: bool,
    delete: bool,
}

impl OpSet {
    const ALL: OpSet = OpSet {
        insert: true,
        update: true,
        delete: true,
    };

    fn contains(self, op: Slot) -> bool {
        match op {
            Slot::Insert => self.insert,
            Slot::Update => self.update,
            Slot::Delete => self.delete,
        }
    }
}

/// The operations rules can touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Insert,
    Update,
    Delete,
}

impl Slot {
    fn of(op: Op) -> Option<Slot> {
        match op {
            Op::Insert => Some(Slot::Insert),
            Op::Update => Some(Slot::Update),
            Op::Delete => Some(Slot::Delete),
            Op::Truncate | Op::Ddl => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Eq,
    Ne,
    Gt,
    Lt,
    Gte,
    Lte,
    Contains,
}

impl Operator {
    fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "eq" => Operator::Eq,
            "ne" => Operator::Ne,
            "gt" => Operator::Gt,
            "lt" => Operator::Lt,
            "gte" => Operator::Gte,
            "lte" => Operator::Lte,
            "contains" => Operator::Contains,
            _ => return None,
        })
    }

    /// Whether `column.cmp(value) == ord` satisfies the operator.
    fn holds(self, ord: Ordering) -> bool {
        match self {
            Operator::Eq => ord == Ordering::Equal,
            Operator::Ne => ord != Ordering::Equal,
            Operator::Gt => ord == Ordering::Greater,
            Operator::Lt => ord == Ordering::Less,
            Operator::Gte => ord != Ordering::Less,
            Operator::Lte => ord != Ordering::Greater,
            Operator::Contains => false,
        }
    }
}

/// A filter with its rule value pre-parsed for every kind of column.
#[derive(Debug)]
struct Filter {
    op: Operator,
    text: String,
    num: Option<Num>,
    boolean: Option<bool>,
    date: Option<Moment<NaiveDate>>,
    local: Option<Moment<NaiveDateTime>>,
    instant: Option<Moment<NaiveDateTime>>,
}

impl Filter {
    fn new(op: Operator, text: String) -> Filter {
        Filter {
            op,
            num: Num::parse(text.as_bytes()),
            boolean: parse_bool(text.as_bytes()),
            date: parse_date(text.as_bytes()),
            local: parse_timestamp(text.as_bytes()),
            instant: parse_timestamptz(text.as_bytes()),
            text,
        }
    }

    /// Whether a (non-NULL) column value of the given class passes the filter.
    fn matches(&self, class: Class, value: &[u8]) -> bool {
        if self.op == Operator::Contains {
            return contains(value, self.text.as_bytes());
        }
        match class {
            Class::Numeric => match (Num::parse(value), &self.num) {
                (Some(v), Some(r)) => self.op.holds(v.cmp(r)),
                _ => false,
            },
            Class::Bool => match (parse_bool(value), self.boolean) {
                (Some(v), Some(r)) => match self.op {
                    Operator::Eq => v == r,
                    Operator::Ne => v != r,
                    _ => false,
                },
                _ => false,
            },
            Class::Date => cmp_parsed(self.op, parse_date(value), self.date),
            Class::Timestamp => cmp_parsed(self.op, parse_timestamp(value), self.local),
            Class::Timestamptz => cmp_parsed(self.op, parse_timestamptz(value), self.instant),
            Class::Bytes => self.op.holds(value.cmp(self.text.as_bytes())),
        }
    }
}

fn cmp_parsed<T: Ord>(op: Operator, value: Option<T>, rule: Option<T>) -> bool {
    match (value, rule) {
        (Some(v), Some(r)) => op.holds(v.cmp(&r)),
        _ => false,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// How a column's values compare, by type OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Numeric,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
    Bytes,
}

impl Class {
    fn of(type_oid: u32) -> Class {
        match type_oid {
            // int2, int4, int8, oid, numeric, float4, float8
            21 | 23 | 20 | 26 | 1700 | 700 | 701 => Class::Numeric,
            16 => Class::Bool,
            1082 => Class::Date,
            1114 => Class::Timestamp,
            1184 => Class::Timestamptz,
            _ => Class::Bytes,
        }
    }
}

/// text, varchar, bpchar, name: the types transforms rewrite.
fn is_text_like(type_oid: u32) -> bool {
    matches!(type_oid, 25 | 1043 | 1042 | 19)
}

// ---------------------------------------------------------------------------------------------
// Loading

const RULE_KEYS: &[&str] = &[
    "type",
    "column",
    "parameters",
    "operations",
    "allow_empty_deletes",
];
const COMMON_PARAMS: &[&str] = &["operations", "allow_empty_deletes"];

impl Rules {
    /// Reads and validates a rules file; returns the rules and warnings (unknown keys, a file
    /// without `tables`) to log.
    pub fn from_file(path: &Path) -> Result<(Rules, Vec<String>), RulesError> {
        let name = path.display().to_string();
        let yaml = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: name.clone(),
            source,
        })?;
        Rules::from_yaml(&name, &yaml)
    }

    /// Parses and validates rules; every problem is reported at once, each as
    /// `<file>: table <t>, rule #<n>: <problem>` with `n` counted from 1.
    pub fn from_yaml(
        path_for_messages: &str,
        yaml: &str,
    ) -> Result<(Rules, Vec<String>), RulesError> {
        let file = path_for_messages;
        let doc: Yaml = serde_yaml::from_str(yaml).map_err(|source| RulesError::Yaml {
            path: file.to_string(),
            source,
        })?;
        let mut rules = Rules::default();
        let mut warnings = Vec::new();
        let mut problems = Vec::new();
        let top = match doc {
            Yaml::Null => {
                warnings.push(format!("{file}: no `tables` key; no rules are applied"));
                return Ok((rules, warnings));
            }
            Yaml::Mapping(m) => m,
            _ => {
                return Err(RulesError::Invalid {
                    path: file.to_string(),
                    problems: vec![format!(
                        "{file}: the document must be a mapping with a `tables` key"
                    )],
                })
            }
        };
        let mut tables = None;
        for (key, value) in top {
            match key.as_str() {
                Some("tables") => tables = Some(value),
                _ => warnings.push(format!(
                    "{file}: unknown key {} ignored",
                    describe_key(&key)
                )),
            }
        }
        let tables = match tables {
            None | Some(Yaml::Null) => {
                warnings.push(format!("{file}: no `tables` key; no rules are applied"));
                return Ok((rules, warnings));
            }
            Some(Yaml::Mapping(m)) => m,
            Some(_) => {
                return Err(RulesError::Invalid {
                    path: file.to_string(),
                    problems: vec![format!(
                        "{file}: `tables` must map table names to lists of rules"
                    )],
                })
            }
        };
        for (key, value) in tables {
            let Some(table) = key.as_str().map(str::to_string) else {
                problems.push(format!(
                    "{file}: table name {} is not a string",
                    describe_key(&key)
                ));
                continue;
            };
            let list = match value {
                Yaml::Null => Vec::new(),
                Yaml::Sequence(s) => s,
                _ => {
                    problems.push(format!("{file}: table {table}: rules must be a list"));
                    continue;
                }
            };
            let mut table_rules = Vec::with_capacity(list.len());
            for (i, raw) in list.iter().enumerate() {
                let at = format!("{file}: table {table}, rule #{}", i + 1);
                let mut errs = Vec::new();
                let rule = parse_rule(raw, &mut errs, &mut |w| {
                    warnings.push(format!("{at}: {w}"));
                });
                problems.extend(errs.into_iter().map(|e| format!("{at}: {e}")));
                table_rules.extend(rule);
            }
            let index = rules.entries.len();
            rules.entries.push(TableRules { rules: table_rules });
            if let Some((schema, bare)) = table.split_once('.') {
                rules
                    .by_table
                    .entry(bare.to_string())
                    .or_default()
                    .push((Some(schema.to_string()), index));
            }
            rules.by_table.entry(table).or_default().push((None, index));
        }
        if problems.is_empty() {
            Ok((rules, warnings))
        } else {
            Err(RulesError::Invalid {
                path: file.to_string(),
                problems,
            })
        }
    }

    /// True when no table has a rule.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|t| t.rules.is_empty())
    }

    /// The rules of a relation, in file order.
    fn rules_for(&self, rel: &Relation) -> Vec<&Rule> {
        let Some(keys) = self.by_table.get(&rel.table) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|(schema, _)| schema.as_deref().is_none_or(|s| s == rel.schema))
            .filter_map(|(_, i)| self.entries.get(*i))
            .flat_map(|t| t.rules.iter())
            .collect()
    }

    /// Applies every matching rule to every change of the batch, in place: transforms rewrite
    /// values, filters drop changes, exclude_column removes columns (from the relation and the
    /// values). Changes of tables without rules are untouched (a batch without such tables is
    /// not touched at all).
    ///
    /// Relations are shared by index; a table whose rules change its columns gets a new,
    /// deduplicated relation per resulting shape, and relations no change refers to any more
    /// are removed (indexes are remapped).
    pub fn apply(&self, batch: &mut ChangeBatch) {
        if self.by_table.is_empty() {
            return;
        }
        let table_rules: Vec<Vec<&Rule>> =
            batch.relations.iter().map(|r| self.rules_for(r)).collect();
        if table_rules.iter().all(Vec::is_empty) {
            return;
        }
        let base = batch.relations.len();
        let mut variants: Vec<Relation> = Vec::new();
        let mut plans: HashMap<(u16, Slot), Plan<'_>> = HashMap::new();
        let changes = std::mem::take(&mut batch.changes);
        let mut kept = Vec::with_capacity(changes.len());
        for mut change in changes {
            let Some(slot) = Slot::of(change.op) else {
                kept.push(change);
                continue;
            };
            let index = change.relation;
            let (Some(rules), Some(rel)) = (
                table_rules.get(usize::from(index)),
                batch.relations.get(usize::from(index)),
            ) else {
                kept.push(change);
                continue;
            };
            if rules.is_empty() {
                kept.push(change);
                continue;
            }
            let plan = match plans.entry((index, slot)) {
                MapEntry::Occupied(e) => e.into_mut(),
                MapEntry::Vacant(e) => {
                    e.insert(Plan::build(index, rel, rules, slot, base, &mut variants))
                }
            };
            if plan.run(&mut change) {
                kept.push(change);
            }
        }
        batch.changes = kept;
        if !variants.is_empty() {
            batch.relations.extend(variants);
            compact_relations(batch);
        }
    }
}

fn describe_key(key: &Yaml) -> String {
    match key {
        Yaml::String(s) => format!("\"{s}\""),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "(unprintable)".to_string()),
    }
}

/// A scalar as pg_flo stringifies it (`18` -> "18", `true` -> "true").
fn scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_rule(raw: &Yaml, errs: &mut Vec<String>, warn: &mut dyn FnMut(String)) -> Option<Rule> {
    let Yaml::Mapping(map) = raw else {
        errs.push("a rule must be a mapping".into());
        return None;
    };
    for key in map.keys() {
        if !key.as_str().is_some_and(|k| RULE_KEYS.contains(&k)) {
            warn(format!("unknown key {} ignored", describe_key(key)));
        }
    }
    let empty = serde_yaml::Mapping::new();
    let params = match map.get("parameters") {
        None | Some(Yaml::Null) => &empty,
        Some(Yaml::Mapping(p)) => p,
        Some(_) => {
            errs.push("`parameters` must be a mapping".into());
            &empty
        }
    };
    let column = match map.get("column") {
        None | Some(Yaml::Null) => {
            errs.push("missing `column`".into());
            None
        }
        Some(Yaml::String(c)) if !c.is_empty() => Some(c.clone()),
        Some(_) => {
            errs.push("`column` must be a non-empty string".into());
            None
        }
    };
    let ops = parse_operations(map.get("operations"), params.get("operations"), errs);
    let allow_empty_deletes = [
        map.get("allow_empty_deletes"),
        params.get("allow_empty_deletes"),
    ]
    .into_iter()
    .flatten()
    .fold(false, |acc, v| match v {
        Yaml::Bool(b) => acc || *b,
        _ => {
            errs.push("`allow_empty_deletes` must be true or false".into());
            acc
        }
    });
    let ops = ops.map(|mut ops| {
        if allow_empty_deletes {
            ops.delete = false;
        }
        ops
    });
    let string_param = |name: &str, errs: &mut Vec<String>| -> Option<String> {
        match params.get(name) {
            None | Some(Yaml::Null) => {
                errs.push(format!("missing parameter `{name}`"));
                None
            }
            Some(v) => {
                let s = scalar_text(v);
                if s.is_none() {
                    errs.push(format!("parameter `{name}` must be a string"));
                }
                s
            }
        }
    };
    let known_params: &[&str];
    let action = match map.get("type").map(|t| (t, t.as_str())) {
        None | Some((Yaml::Null, _)) => {
            errs.push("missing `type` (transform, filter or exclude_column)".into());
            known_params = &[];
            None
        }
        Some((_, Some("transform"))) => match params.get("type").map(|t| (t, t.as_str())) {
            None | Some((Yaml::Null, _)) => {
                errs.push("missing parameter `type` (regex or mask)".into());
                known_params = &["type"];
                None
            }
            Some((_, Some("regex"))) => {
                known_params = &["type", "pattern", "replace"];
                let pattern = string_param("pattern", errs);
                let replace = string_param("replace", errs);
                let re = pattern.and_then(|p| match regex::bytes::Regex::new(&p) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        errs.push(format!("invalid regex pattern: {e}"));
                        None
                    }
                });
                match (re, replace) {
                    (Some(re), Some(replace)) => Some(Action::Regex {
                        re,
                        replace: replace.into_bytes(),
                    }),
                    _ => None,
                }
            }
            Some((_, Some("mask"))) => {
                known_params = &["type", "mask_char"];
                match string_param("mask_char", errs) {
                    Some(m) if m.is_empty() => {
                        errs.push("parameter `mask_char` must not be empty".into());
                        None
                    }
                    Some(mask) => Some(Action::Mask { mask }),
                    None => None,
                }
            }
            Some((t, _)) => {
                errs.push(format!(
                    "unknown transform type {} (expected regex or mask)",
                    describe_key(t)
                ));
                known_params = &["type", "pattern", "replace", "mask_char"];
                None
            }
        },
        Some((_, Some("filter"))) => {
            known_params = &["operator", "value"];
            let op = match params.get("operator").map(|o| (o, o.as_str())) {
                None | Some((Yaml::Null, _)) => {
                    errs.push("missing parameter `operator`".into());
                    None
                }
                Some((o, s)) => {
                    let op = s.and_then(Operator::parse);
                    if op.is_none() {
                        errs.push(format!(
                            "unknown filter operator {} (expected eq, ne, gt, lt, gte, lte or contains)",
                            describe_key(o)
                        ));
                    }
                    op
                }
            };
            let value = match params.get("value") {
                None | Some(Yaml::Null) => {
                    errs.push("missing parameter `value`".into());
                    None
                }
                Some(v) => {
                    let s = scalar_text(v);
                    if s.is_none() {
                        errs.push("parameter `value` must be a string, number or boolean".into());
                    }
                    s
                }
            };
            match (op, value) {
                (Some(op), Some(value)) => Some(Action::Filter(Filter::new(op, value))),
                _ => None,
            }
        }
        Some((_, Some("exclude_column"))) => {
            known_params = &[];
            Some(Action::Exclude)
        }
        Some((t, _)) => {
            errs.push(format!(
                "unknown rule type {} (expected transform, filter or exclude_column)",
                describe_key(t)
            ));
            known_params = &[];
            None
        }
    };
    if action.is_some() || !errs.is_empty() {
        for key in params.keys() {
            let known = key
                .as_str()
                .is_some_and(|k| known_params.contains(&k) || COMMON_PARAMS.contains(&k));
            if !known {
                warn(format!("unknown parameter {} ignored", describe_key(key)));
            }
        }
    }
    if ops
        == Some(OpSet {
            insert: false,
            update: false,
            delete: false,
        })
        && errs.is_empty()
    {
        warn(
            "the rule applies to no operation (INSERT, UPDATE or DELETE); it never does anything"
                .into(),
        );
    }
    match (column, ops, action) {
        (Some(column), Some(ops), Some(action)) if errs.is_empty() => Some(Rule {
            column,
            ops,
            action,
        }),
        _ => None,
    }
}

/// `operations` from rule level and/or `parameters`; absent = INSERT, UPDATE, DELETE.
fn parse_operations(
    rule_level: Option<&Yaml>,
    in_params: Option<&Yaml>,
    errs: &mut Vec<String>,
) -> Option<OpSet> {
    let parse = |v: &Yaml, errs: &mut Vec<String>| -> Option<OpSet> {
        let items: Vec<&Yaml> = match v {
            Yaml::Sequence(s) => s.iter().collect(),
            Yaml::String(_) => vec![v],
            _ => {
                errs.push("`operations` must be a list of INSERT, UPDATE, DELETE, TRUNCATE".into());
                return None;
            }
        };
        let mut set = OpSet {
            insert: false,
            update: false,
            delete: false,
        };
        let mut ok = true;
        for item in items {
            match item.as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("INSERT") => set.insert = true,
                Some("UPDATE") => set.update = true,
                Some("DELETE") => set.delete = true,
                // Accepted, but truncates are never filtered or transformed.
                Some("TRUNCATE") => {}
                _ => {
                    errs.push(format!(
                        "unknown operation {} (expected INSERT, UPDATE, DELETE or TRUNCATE)",
                        describe_key(item)
                    ));
                    ok = false;
                }
            }
        }
        ok.then_some(set)
    };
    let rule_level = rule_level.filter(|v| !v.is_null());
    let in_params = in_params.filter(|v| !v.is_null());
    match (rule_level, in_params) {
        (None, None) => Some(OpSet::ALL),
        (Some(v), None) | (None, Some(v)) => parse(v, errs),
        (Some(a), Some(b)) => {
            let (a, b) = (parse(a, errs)?, parse(b, errs)?);
            if a != b {
                errs.push(
                    "`operations` is given both at rule level and in `parameters`, with different values"
                        .into(),
                );
                return None;
            }
            Some(a)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Applying

/// What the rules of one table do to one kind of change, resolved against the relation's
/// columns once per batch.
struct Plan<'r> {
    steps: Vec<Step<'r>>,
    /// Which of the relation's columns remain; `None` when all do.
    keep: Option<Vec<bool>>,
    /// Every column was excluded: the change is dropped.
    drop_all: bool,
    /// The (possibly new) relation index for the changes; `None` if it does not fit a `u16`.
    relation: Option<u16>,
}

enum Step<'r> {
    Regex {
        col: usize,
        re: &'r regex::bytes::Regex,
        replace: &'r [u8],
    },
    Mask {
        col: usize,
        mask: &'r str,
    },
    Filter {
        target: Option<Target>,
        filter: &'r Filter,
    },
}

#[derive(Clone, Copy)]
struct Target {
    col: usize,
    class: Class,
}

impl<'r> Plan<'r> {
    fn build(
        index: u16,
        rel: &Relation,
        rules: &[&'r Rule],
        slot: Slot,
        base: usize,
        variants: &mut Vec<Relation>,
    ) -> Plan<'r> {
        let mut present = vec![true; rel.columns.len()];
        let mut steps = Vec::new();
        for rule in rules.iter().filter(|r| r.ops.contains(slot)) {
            let col = rel
                .column_index(&rule.column)
                .filter(|&i| present.get(i).copied().unwrap_or(false));
            let text_col =
                col.filter(|&i| rel.columns.get(i).is_some_and(|c| is_text_like(c.type_oid)));
            match &rule.action {
                Action::Regex { re, replace } => {
                    if let Some(col) = text_col {
                        steps.push(Step::Regex {
                            col,
                            re,
                            replace: replace.as_slice(),
                        });
                    }
                }
                Action::Mask { mask } => {
                    if let Some(col) = text_col {
                        steps.push(Step::Mask { col, mask });
                    }
                }
                Action::Filter(filter) => {
                    let target = col.and_then(|i| {
                        rel.columns.get(i).map(|c| Target {
                            col: i,
                            class: Class::of(c.type_oid),
                        })
                    });
                    steps.push(Step::Filter { target, filter });
                }
                Action::Exclude => {
                    if let Some(p) = col.and_then(|i| present.get_mut(i)) {
                        *p = false;
                    }
                }
            }
        }
        if present.iter().all(|p| *p) {
            return Plan {
                steps,
                keep: None,
                drop_all: false,
                relation: Some(index),
            };
        }
        let drop_all = !present.iter().any(|p| *p);
        let mut shaped = Relation {
            oid: rel.oid,
            schema: rel.schema.clone(),
            table: rel.table.clone(),
            columns: Vec::with_capacity(rel.columns.len()),
            key: rel.key.clone(),
        };
        let mut removed_key = false;
        for (c, keep) in rel.columns.iter().zip(&present) {
            if *keep {
                shaped.columns.push(c.clone());
            } else if rel.key.columns.contains(&c.name) {
                removed_key = true;
            }
        }
        if removed_key {
            shaped.key = ReplicationKey {
                kind: KeyKind::Full,
                columns: Vec::new(),
            };
        }
        let at = match variants.iter().position(|v| *v == shaped) {
            Some(at) => at,
            None => {
                variants.push(shaped);
                variants.len() - 1
            }
        };
        let relation = u16::try_from(base + at).ok();
        if relation.is_none() {
            tracing::error!(
                schema = rel.schema,
                table = rel.table,
                "too many relations in one message to apply exclude_column; its changes are dropped"
            );
        }
        Plan {
            steps,
            keep: Some(present),
            drop_all,
            relation,
        }
    }

    /// Runs the plan on one change; false means the change is dropped.
    fn run(&self, change: &mut Change) -> bool {
        for step in &self.steps {
            match step {
                Step::Regex { col, re, replace } => {
                    rewrite(change, *col, |b| match re.replace_all(b, *replace) {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(v) => Some(v),
                    })
                }
                Step::Mask { col, mask } => rewrite(change, *col, |b| mask_value(b, mask)),
                Step::Filter { target, filter } => {
                    let Some(target) = target else {
                        return false;
                    };
                    if !judge(change, *target, filter) {
                        return false;
                    }
                }
            }
        }
        if self.drop_all {
            return false;
        }
        let Some(relation) = self.relation else {
            return false;
        };
        if let Some(keep) = &self.keep {
            let prune = |values: &mut Vec<Value>| {
                let mut i = 0;
                values.retain(|_| {
                    let k = keep.get(i).copied().unwrap_or(true);
                    i += 1;
                    k
                });
            };
            if let Some(new) = &mut change.new {
                prune(new);
            }
            if let Some((_, old)) = &mut change.old {
                prune(old);
            }
        }
        change.relation = relation;
        true
    }
}

/// Rewrites the text value of column `col` in the new and the old tuple; `f` returns `None`
/// when the value stays as it is. NULL and unchanged TOAST are left alone.
fn rewrite(change: &mut Change, col: usize, f: impl Fn(&[u8]) -> Option<Vec<u8>>) {
    let new = change.new.as_mut().and_then(|v| v.get_mut(col));
    let old = change.old.as_mut().and_then(|(_, v)| v.get_mut(col));
    for value in new.into_iter().chain(old) {
        if let Value::Text(bytes) = value {
            if let Some(out) = f(bytes) {
                *bytes = out.into();
            }
        }
    }
}

/// First and last character kept, every other character replaced by `mask`.
fn mask_value(bytes: &[u8], mask: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let n = text.chars().count();
    if n <= 2 {
        return None;
    }
    let mut chars = text.chars();
    let (first, last) = (chars.next()?, chars.next_back()?);
    let mut out = String::with_capacity(first.len_utf8() + mask.len() * (n - 2) + last.len_utf8());
    out.push(first);
    for _ in 0..n - 2 {
        out.push_str(mask);
    }
    out.push(last);
    Some(out.into_bytes())
}

/// Whether a change passes a filter (see [`Rules`] for missing data).
fn judge(change: &Change, target: Target, filter: &Filter) -> bool {
    let value = match change.op {
        Op::Delete => match &change.old {
            // No data about the deleted row: never dropped for lack of data.
            None => return true,
            // Only the replica-identity key was sent (key columns are never NULL); any other
            // column reads NULL because its value is unknown.
            Some((OldKind::Key, values)) => match values.get(target.col) {
                Some(Value::Text(bytes)) => return filter.matches(target.class, bytes),
                _ => return true,
            },
            Some((OldKind::Full, values)) => values.get(target.col),
        },
        _ => match &change.new {
            None => return true,
            Some(values) => values.get(target.col),
        },
    };
    match value {
        None | Some(Value::UnchangedToast) => true,
        Some(Value::Null) => false,
        Some(Value::Text(bytes)) => filter.matches(target.class, bytes),
    }
}

/// Removes relations no change refers to and remaps the indexes.
fn compact_relations(batch: &mut ChangeBatch) {
    let mut used = vec![false; batch.relations.len()];
    for change in &batch.changes {
        let truncated = change.truncate.iter().flat_map(|t| t.relations.iter());
        for &i in std::iter::once(&change.relation).chain(truncated) {
            if let Some(u) = used.get_mut(usize::from(i)) {
                *u = true;
            }
        }
    }
    if used.iter().all(|u| *u) {
        return;
    }
    let mut remap = vec![0u16; used.len()];
    let mut next = 0u16;
    for (slot, u) in remap.iter_mut().zip(&used) {
        if *u {
            *slot = next;
            next = next.saturating_add(1);
        }
    }
    let mut i = 0;
    batch.relations.retain(|_| {
        let u = used.get(i).copied().unwrap_or(false);
        i += 1;
        u
    });
    let map = |i: &mut u16| {
        if let Some(n) = remap.get(usize::from(*i)) {
            *i = *n;
        }
    };
    for change in &mut batch.changes {
        map(&mut change.relation);
        if let Some(t) = &mut change.truncate {
            t.relations.iter_mut().for_each(map);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsing (PostgreSQL text output and rule values)

/// An exact decimal number (or PostgreSQL's infinities and NaN), ordered as PostgreSQL orders
/// `numeric`: -Infinity < finite < Infinity < NaN, NaN = NaN.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Num {
    NegInf,
    /// `(-1)^neg × 0.d1d2d3… × 10^exp`; `digits` has no leading or trailing zeros; zero has no
    /// digits, `neg = false` and `exp = 0`.
    Finite {
        neg: bool,
        exp: i64,
        digits: Vec<u8>,
    },
    PosInf,
    NaN,
}

impl Num {
    fn parse(bytes: &[u8]) -> Option<Num> {
        let s = std::str::from_utf8(bytes).ok()?.trim();
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        match body.to_ascii_lowercase().as_str() {
            "infinity" | "inf" | ".inf" => {
                return Some(if neg { Num::NegInf } else { Num::PosInf })
            }
            "nan" | ".nan" => return Some(Num::NaN),
            _ => {}
        }
        let (mantissa, exp) = match body.find(['e', 'E']) {
            Some(at) => {
                let e = &body[at + 1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                (&body[..at], i64::from(e.parse::<i32>().ok()?))
            }
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.len() + frac.len() == 0
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let lead = all.iter().take_while(|b| **b == b'0').count();
        let mut digits = all.get(lead..).unwrap_or_default().to_vec();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Num::Finite {
                neg: false,
                exp: 0,
                digits,
            });
        }
        let exp = i64::try_from(int.len()).ok()? + exp - i64::try_from(lead).ok()?;
        Some(Num::Finite { neg, exp, digits })
    }

    fn rank(&self) -> u8 {
        match self {
            Num::NegInf => 0,
            Num::Finite { neg: true, .. } => 1,
            Num::Finite { digits, .. } if digits.is_empty() => 2,
            Num::Finite { .. } => 3,
            Num::PosInf => 4,
            Num::NaN => 5,
        }
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Num) -> Ordering {
        match (self, other) {
            (
                Num::Finite {
                    neg: an,
                    exp: ae,
                    digits: ad,
                },
                Num::Finite {
                    neg: bn,
                    exp: be,
                    digits: bd,
                },
            ) if an == bn && !ad.is_empty() && !bd.is_empty() => {
                // Same sign, both non-zero: magnitude by exponent, then digits (no trailing
                // zeros, so a prefix is the smaller number).
                let magnitude = ae.cmp(be).then_with(|| ad.cmp(bd));
                if *an {
                    magnitude.reverse()
                } else {
                    magnitude
                }
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Num) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn parse_bool(bytes: &[u8]) -> Option<bool> {
    let s = std::str::from_utf8(bytes).ok()?.trim().to_ascii_lowercase();
    match s.as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A point in time, or PostgreSQL's `-infinity` / `infinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Moment<T> {
    NegInf,
    At(T),
    PosInf,
}

/// A date with an optional time of day and UTC offset (seconds east), as PostgreSQL prints
/// them (`2024-03-20`, `2024-03-20 10:00:00.5+05:30`, `0044-03-15 BC`) or RFC 3339.
struct DateTimeText {
    date: NaiveDate,
    time: Option<NaiveTime>,
    offset: Option<i32>,
}

fn parse_moment<T>(bytes: &[u8], f: impl FnOnce(DateTimeText) -> Option<T>) -> Option<Moment<T>> {
    let s = std::str::from_utf8(bytes).ok()?.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(Moment::PosInf),
        "-infinity" => return Some(Moment::NegInf),
        _ => {}
    }
    parse_datetime_text(s).and_then(f).map(Moment::At)
}

fn parse_date(bytes: &[u8]) -> Option<Moment<NaiveDate>> {
    parse_moment(bytes, |t| {
        (t.time.is_none() && t.offset.is_none()).then_some(t.date)
    })
}

/// Wall-clock date-time; an offset is ignored (as PostgreSQL's cast to `timestamp` does).
fn parse_timestamp(bytes: &[u8]) -> Option<Moment<NaiveDateTime>> {
    parse_moment(bytes, |t| {
        Some(t.date.and_time(t.time.unwrap_or(NaiveTime::MIN)))
    })
}

/// The instant in UTC; a value without an offset is taken as UTC.
fn parse_timestamptz(bytes: &[u8]) -> Option<Moment<NaiveDateTime>> {
    parse_moment(bytes, |t| {
        let local = t.date.and_time(t.time.unwrap_or(NaiveTime::MIN));
        let offset = TimeDelta::try_seconds(i64::from(t.offset.unwrap_or(0)))?;
        local.checked_sub_signed(offset)
    })
}

fn parse_datetime_text(s: &str) -> Option<DateTimeText> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest.trim_end(), true),
        None => (s, false),
    };
    let (date, rest) = match s.find([' ', 'T', 't']) {
        Some(at) => (&s[..at], s[at + 1..].trim_start()),
        None => (s, ""),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if [y, m, d]
        .iter()
        .any(|p| p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut year: i32 = y.parse().ok()?;
    if bc {
        year = 1 - year;
    }
    let date = NaiveDate::from_ymd_opt(year, m.parse().ok()?, d.parse().ok()?)?;
    if rest.is_empty() {
        return Some(DateTimeText {
            date,
            time: None,
            offset: None,
        });
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time, zone) = (&rest[..end], rest[end..].trim());
    Some(DateTimeText {
        date,
        time: Some(parse_time(time)?),
        offset: if zone.is_empty() {
            None
        } else {
            Some(parse_offset(zone)?)
        },
    })
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    let mut parts = s.splitn(3, ':');
    let h: u32 = digits(parts.next()?)?;
    let m: u32 = digits(parts.next()?)?;
    let (sec, nano) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let mut nano = 0u32;
            for (i, b) in frac.bytes().take(9).enumerate() {
                nano += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
            }
            (digits(whole)?, nano)
        }
    };
    NaiveTime::from_hms_nano_opt(h, m, sec, nano)
}

/// `Z`, `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS` -> seconds east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    if s.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let (sign, body) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let fields: Vec<&str> = if body.contains(':') {
        body.split(':').collect()
    } else if body.len() == 4 {
        vec![&body[..2], &body[2..]]
    } else {
        vec![body]
    };
    if fields.is_empty() || fields.len() > 3 || fields.iter().any(|f| f.len() != 2) {
        return None;
    }
    let mut secs = 0i32;
    for (f, unit) in fields.iter().zip([3600, 60, 1]) {
        let v: i32 = digits(f)?;
        secs += v * unit;
    }
    Some(sign * secs)
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Column, Truncate, FORMAT_VERSION};

    fn col(name: &str, type_oid: u32, identity: bool) -> Column {
        Column {
            name: name.into(),
            type_oid,
            type_modifier: -1,
            identity,
        }
    }

    fn users() -> Relation {
        Relation {
            oid: 16384,
            schema: "public".into(),
            table: "users".into(),
            columns: vec![
                col("id", 23, true),
                col("name", 25, false),
                col("email", 1043, false),
            ],
            key: ReplicationKey {
                kind: KeyKind::PrimaryKey,
                columns: vec!["id".into()],
            },
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec().into())
    }

    fn change(
        op: Op,
        relation: u16,
        new: Option<Vec<Value>>,
        old: Option<(OldKind, Vec<Value>)>,
    ) -> Change {
        Change {
            op,
            lsn: 1,
            relation,
            new,
            old,
            truncate: None,
        }
    }

    fn insert(values: Vec<Value>) -> Change {
        change(Op::Insert, 0, Some(values), None)
    }

    fn batch(relations: Vec<Relation>, changes: Vec<Change>) -> ChangeBatch {
        ChangeBatch {
            version: FORMAT_VERSION,
            commit_lsn: 10,
            commit_time_us: 0,
            xid: 1,
            seq: 0,
            last: true,
            prev: None,
            emitted_at_us: 0,
            relations,
            changes,
            source: None,
            copy: false,
        }
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
        let rel = Relation {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            columns: vec![col("id", 23, true), col("v", oid, false)],
            key: ReplicationKey {
                kind: KeyKind::PrimaryKey,
                columns: vec!["id".into()],
            },
        };
        let yaml = format!(
            "tables:\n  t:\n    - type: filter\n      column: v\n      parameters: {{operator: {op}, value: {rule_value}}}\n"
        );
        let b = applied(&yaml, batch(vec![rel], vec![insert(vec![t("1"), value])]));
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
            batch(
                vec![users()],
                vec![
                    insert(vec![t("1"), t("alice"), t("a@x")]),
                    insert(vec![t("2"), t("ab"), t("a@x")]),
                    insert(vec![t("3"), t("Zoë Ångström"), t("a@x")]),
                    insert(vec![t("4"), Value::Null, t("a@x")]),
                    insert(vec![t("5"), t(""), t("a@x")]),
                ],
            ),
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
            batch(
                vec![users()],
                vec![change(
                    Op::Update,
                    0,
                    Some(vec![t("1"), t("Ørjan"), Value::UnchangedToast]),
                    Some((OldKind::Full, vec![t("1"), t("émile"), t("x")])),
                )],
            ),
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
            batch(
                vec![users()],
                vec![
                    insert(vec![t("1"), t("a"), t("bob@example.com")]),
                    insert(vec![t("2"), t("b"), t("no-at-sign")]),
                    change(
                        Op::Delete,
                        0,
                        None,
                        Some((OldKind::Full, vec![t("3"), t("c"), t("eve@x.org")])),
                    ),
                ],
            ),
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
            for oid in [21, 23, 20, 26] {
                assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
            }
        }
    }

    #[test]
    fn filter_numeric_and_floats() {
        for (oid, value, op, rule, want) in [
            (1700, "100.00", "gte", "'99.99'", true),
            (1700, "100.00", "eq", "100", true),
            (1700, "100.00", "eq", "100.0", true),
            (1700, "999.99", "lt", "1000.0", true),
            (1700, "0.001", "lt", "0.01", true),
            (1700, "0.0100", "eq", "0.01", true),
            (1700, "-0.5", "lt", "0", true),
            (1700, "-0.5", "gt", "-0.6", true),
            (
                1700,
                "123456789012345678901234567890.000000000000000000001",
                "gt",
                "'123456789012345678901234567890'",
                true,
            ),
            (
                1700,
                "123456789012345678901234567890",
                "eq",
                "'123456789012345678901234567890.0'",
                true,
            ),
            (1700, "NaN", "gt", "1e300", true),
            (1700, "NaN", "eq", "NaN", true),
            (1700, "Infinity", "gt", "1e300", true),
            (1700, "-Infinity", "lt", "-1e300", true),
            (701, "1e+100", "gt", "1e99", true),
            (701, "1.5e-05", "lt", "0.0001", true),
            (701, "1.5e-05", "eq", "0.000015", true),
            (700, "0.1", "eq", "0.1", true),
            (701, "3.14", "gt", "3", true),
            (701, "-Infinity", "lt", "0", true),
            (701, "Infinity", "eq", ".inf", true),
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
            assert_eq!(p(16, value, op, rule), want, "{value} {op} {rule}");
        }
    }

    #[test]
    fn filter_text_is_bytewise_and_case_sensitive() {
        for oid in [25, 1043, 1042, 19, 2950] {
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
        assert!(p(25, "hello world", "contains", "lo w"));
        assert!(!p(25, "hello world", "contains", "Lo W"));
        assert!(p(23, "12345", "contains", "234"));
        assert!(p(1082, "2024-03-20", "contains", "-03-"));
        assert!(p(25, "anything", "contains", "''"));
        assert!(!p(25, "", "contains", "x"));
        assert!(p(25, "Zoë", "contains", "ë"));
    }

    #[test]
    fn filter_dates_and_timestamps() {
        for (oid, value, op, rule, want) in [
            (1082, "2024-03-20", "eq", "2024-03-20", true),
            (1082, "2024-03-20", "gt", "2024-03-19", true),
            (1082, "2024-03-20", "lt", "'2024-12-01'", true),
            (1082, "2024-03-20", "gte", "2024-03-21", false),
            (1082, "0044-03-15 BC", "lt", "0001-01-01", true),
            (1082, "infinity", "gt", "9999-12-31", true),
            (1082, "-infinity", "lt", "0001-01-01", true),
            (1082, "2024-03-20", "eq", "not-a-date", false),
            (1082, "garbage", "ne", "2024-03-20", false),
            (
                1114,
                "2024-03-20 10:00:00",
                "eq",
                "'2024-03-20T10:00:00'",
                true,
            ),
            (
                1114,
                "2024-03-20 10:00:00.5",
                "gt",
                "'2024-03-20 10:00:00'",
                true,
            ),
            (1114, "2024-03-20 00:00:00", "eq", "2024-03-20", true),
            (
                1114,
                "2024-03-20 10:00:00",
                "lt",
                "'2024-03-20 09:00:00'",
                false,
            ),
            (
                1184,
                "2024-03-20 10:00:00+00",
                "eq",
                "'2024-03-20T10:00:00Z'",
                true,
            ),
            (
                1184,
                "2024-03-20 10:00:00+00",
                "eq",
                "'2024-03-20 15:30:00+05:30'",
                true,
            ),
            (
                1184,
                "2024-03-20 15:30:00+05:30",
                "eq",
                "'2024-03-20T10:00:00+00:00'",
                true,
            ),
            (
                1184,
                "2024-03-20 10:00:00-02",
                "gt",
                "'2024-03-20 11:00:00+00'",
                true,
            ),
            (
                1184,
                "2024-03-20 10:00:00+05:30",
                "lt",
                "'2024-03-20T05:00:00Z'",
                true,
            ),
            (
                1184,
                "2024-03-20 10:00:00.123456+00",
                "gt",
                "'2024-03-20T10:00:00.123Z'",
                true,
            ),
            (
                1184,
                "2024-03-20 10:00:00+00",
                "ne",
                "'2024-03-20 10:00:00+01'",
                true,
            ),
            (
                1184,
                "2024-03-20 10:00:00+00",
                "eq",
                "'2024-03-20 10:00:00'",
                true,
            ),
            (1184, "2024-03-20 00:00:00+00", "eq", "2024-03-20", true),
            (
                1184,
                "1900-01-01 00:00:00+00:19:32",
                "lt",
                "'1900-01-01T00:00:00Z'",
                true,
            ),
            (1184, "infinity", "gt", "'2999-01-01T00:00:00Z'", true),
            (1184, "2024-03-20 10:00:00+00", "gt", "yesterday", false),
        ] {
            assert_eq!(p(oid, value, op, rule), want, "{oid}: {value} {op} {rule}");
        }
    }

    #[test]
    fn null_drops_and_unchanged_toast_keeps() {
        for op in ["eq", "ne", "gt", "lt", "gte", "lte", "contains"] {
            assert!(!passes(25, Value::Null, op, "x"), "{op}");
            assert!(!passes(23, Value::Null, op, "1"), "{op}");
        }
        // An UPDATE whose filtered column is an unchanged TOASTed value is kept.
        let yaml = "tables:\n  users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: keep}\n";
        let b = applied(
            yaml,
            batch(
                vec![users()],
                vec![
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
                ],
            ),
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
            batch(
                vec![users()],
                vec![
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
                ],
            ),
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
            batch(
                vec![users()],
                vec![
                    insert(vec![t("1"), t("x"), t("e")]),
                    change(Op::Update, 0, Some(vec![t("2"), t("x"), t("e")]), None),
                    change(
                        Op::Delete,
                        0,
                        None,
                        Some((OldKind::Full, vec![t("3"), t("x"), t("e")])),
                    ),
                ],
            )
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
            batch(
                vec![users()],
                vec![
                    insert(vec![t("1"), t("x"), t("e")]),
                    change(
                        Op::Delete,
                        0,
                        None,
                        Some((OldKind::Full, vec![t("3"), t("x"), t("e")])),
                    ),
                ],
            )
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
        let b = applied(yaml, batch(vec![users()], vec![tr.clone()]));
        assert_eq!(b.changes, [tr]);
        assert_eq!(b.relations, [users()]);
    }

    #[test]
    fn exclude_column_prunes_every_tuple_and_relation() {
        let yaml = "tables:\n  users:\n    - type: exclude_column\n      column: name\n    - type: exclude_column\n      column: missing\n";
        let b = applied(
            yaml,
            batch(
                vec![users()],
                vec![
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
                ],
            ),
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
            batch(
                vec![orders.clone(), users()],
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
            batch(vec![users()], vec![insert(vec![t("1"), t("n"), t("e")])]),
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
        let b = applied(
            all,
            batch(vec![users()], vec![insert(vec![t("1"), t("n"), t("e")])]),
        );
        assert!(b.changes.is_empty());
        assert!(b.relations.is_empty());
    }

    #[test]
    fn filter_on_excluded_or_missing_column_drops() {
        let yaml = "tables:\n  users:\n    - {type: exclude_column, column: name}\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: n}\n";
        let b = applied(
            yaml,
            batch(vec![users()], vec![insert(vec![t("1"), t("n"), t("e")])]),
        );
        assert!(b.changes.is_empty());
        let yaml = "tables:\n  users:\n    - type: filter\n      column: nope\n      parameters: {operator: ne, value: n}\n";
        let b = applied(
            yaml,
            batch(vec![users()], vec![insert(vec![t("1"), t("n"), t("e")])]),
        );
        assert!(b.changes.is_empty());
    }

    #[test]
    fn rules_run_in_order_and_schema_qualified_keys_match() {
        // The filter sees the masked value.
        let yaml = "tables:\n  users:\n    - type: transform\n      column: name\n      parameters: {type: mask, mask_char: '*'}\n  public.users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: 'a***e'}\n  other.users:\n    - type: filter\n      column: name\n      parameters: {operator: eq, value: never}\n";
        let b = applied(
            yaml,
            batch(
                vec![users()],
                vec![
                    insert(vec![t("1"), t("alice"), t("e")]),
                    insert(vec![t("2"), t("bobby"), t("e")]),
                ],
            ),
        );
        assert_eq!(b.changes.len(), 1);
        assert_eq!(text(&b.changes[0].new.as_ref().unwrap()[1]), "a***e");
    }

    #[test]
    fn tables_without_rules_are_untouched() {
        let yaml = "tables:\n  orders:\n    - {type: exclude_column, column: id}\n";
        let original = batch(vec![users()], vec![insert(vec![t("1"), t("n"), t("e")])]);
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

    #[test]
    fn num_ordering() {
        let n = |s: &str| Num::parse(s.as_bytes()).unwrap();
        assert_eq!(n("1.50"), n("1.5"));
        assert_eq!(n("000.000"), n("-0"));
        assert_eq!(n("1e3"), n("1000"));
        assert!(n("0.99") < n("1"));
        assert!(n("-1") < n("-0.99"));
        assert!(n("-1e10") < n("-1e9"));
        assert!(n("12") < n("12.0001"));
        assert!(
            n("-Infinity") < n("-1e308") && n("1e308") < n("Infinity") && n("Infinity") < n("NaN")
        );
        for bad in ["", "-", ".", "1e", "1.2.3", "12a", "e5", "1e99999999999"] {
            assert_eq!(Num::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
