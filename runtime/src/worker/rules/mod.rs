//! Rules: per-table transforms, filters and column exclusions, applied by the worker to every
//! decoded [`ChangeBatch`](crate::message::ChangeBatch) before routing (so rules see source
//! table and column names).
//!
//! Place in the pipeline: JetStream -> decode -> **rules** -> routing -> sink.
//!
//! The file format is pg_flo's (`--rules-config`), modelled and validated in
//! [`pg_flo_config::rules`]:
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
//!
//! Modules: `load` (the validated file -> compiled rules), `compare` (filter comparison in
//! PostgreSQL's order, on text output), `apply` (rules applied to a batch).

mod apply;
mod compare;
mod load;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use pg_flo_config::operation::OperationSet;
pub use pg_flo_config::rules::RulesError;

#[cfg(doc)]
use crate::message::KeyKind;
use compare::Filter;

/// The loaded rules of every table.
///
/// Filter comparison (`<column value> <operator> <rule value>`), by the column's type OID, on
/// PostgreSQL's text output, giving the answer PostgreSQL gives to
/// `<column> <op> '<rule value>'::<type>` (checked against a server by
/// `runtime/tests/filter_order.rs`):
/// - integers (`int2`, `int4`, `int8`, `oid`) and `numeric`: numerically and exactly (both sides
///   are compared as decimal numbers, so `9007199254740993 > 9007199254740992` holds and an
///   integer column compares with `2.5` or `1e30` as SQL does; `Infinity`, `-Infinity` and
///   `NaN` order as in PostgreSQL: NaN above everything and equal to itself);
/// - `float4`, `float8`: the rule value is first rounded to the column's type, as PostgreSQL
///   reads it (`0.100000001` equals a `float4` 0.1); `-0 = 0`, NaN as above;
/// - `bool`: `t`/`f` against `true`/`false`/`t`/`f`/`yes`/`no`/`on`/`off`/`1`/`0`; only `eq` and
///   `ne` can hold, ordering operators never do;
/// - `date`: as dates; `timestamp`: as wall-clock date-times (an offset in the rule value is
///   ignored, as PostgreSQL does when casting to `timestamp`); `timestamptz`: as instants, so
///   `2024-03-20 10:00:00+00` equals `2024-03-20 15:30:00+05:30` (the rule value may be
///   RFC 3339 or PostgreSQL's format; without an offset it is taken as UTC); a date-only rule
///   value means midnight; `infinity`/`-infinity` order last/first. Over PostgreSQL's whole
///   range (4714-11-24 BC to 5874897 AD for dates, to 294276 AD for timestamps), and read as
///   PostgreSQL reads them: fractions of a second rounded to microseconds, `24:00:00` and
///   second 60 accepted, offsets `Z`, `+5`, `+05`, `+0530`, `+05:30`, `+05:30:15` up to
///   15:59:59. Rule values are ISO dates with a year of at least three digits; PostgreSQL's
///   other spellings (`now`, `epoch`, `March 20, 2024`, named time zones, two-digit years) do
///   not parse. A time of day in a rule value for a `date` column does not parse either (SQL
///   would drop it);
/// - every other type (text-like, uuid, json, ...): byte-wise string comparison;
/// - `contains`: case-sensitive substring of the text form, for every type.
///
/// A value that cannot be parsed for a numeric or time column makes the comparison false (the
/// change is dropped), and so does a rule value PostgreSQL refuses for the type (out of its
/// range, `2024-02-30`, year 0, `+infinity`, an offset beyond 15:59:59, `1e400` for a float),
/// as does a filter naming a column the table does not have (or one an earlier
/// `exclude_column` removed): a filter is an allow-list and fails closed.
///
/// The rule value is YAML: an unquoted number is read as YAML's number (`1.50` becomes `1.5`,
/// `.inf` infinity); an unquoted decimal with more than 15 significant digits is rounded to a
/// 64-bit float by YAML before the worker sees it (and an unquoted integer beyond 64 bits does
/// not load): quote such values.
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
    /// INSERT, UPDATE and DELETE as given (DELETE off with `allow_empty_deletes`).
    ops: OperationSet,
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

impl Rules {
    /// True when no table has a rule.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|t| t.rules.is_empty())
    }
}
