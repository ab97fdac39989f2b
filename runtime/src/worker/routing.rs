//! Routing (`--routing-config`): renames tables and columns and drops operations a route
//! excludes, before the changes reach the sink.
//!
//! Place in the pipeline: worker decodes a [`ChangeBatch`] -> rules -> **routing** -> sink.
//! Routing runs after the rules, so routes and rules both name *source* tables and columns.
//! The sinks write to `relation.schema`.`relation.table` with `relation.columns[i].name` and
//! find rows by `relation.key.columns`, so renaming those in the batch is all routing does.
//!
//! The file format is pg_flo's (a YAML map keyed by source table):
//! ```yaml
//! users:                            # bare table name (any schema), or `schema.table`
//!   source_table: users             # ignored: the key wins (a differing value is a warning)
//!   destination_table: customers    # default: the table name of the key
//!   column_mappings:
//!     - {source: id, destination: customer_id}
//!   operations: [INSERT, UPDATE]    # case-insensitive; absent or empty = every operation
//! ```
//! Differences from pg_flo (its bugs, fixed):
//! - An absent or empty `operations` list allows every operation (pg_flo dropped everything).
//! - Unknown operation names, incomplete or duplicate column mappings and malformed routes are
//!   load errors, all reported at once; unknown keys inside a route are warnings.
//! - Replication-key column names are remapped for every key kind (pg_flo skipped `FULL`).
//! - A `schema.table` key is accepted; it matches only that schema and takes precedence over
//!   a bare key for the same table.
//! - A TRUNCATE of several tables keeps only the tables whose route allows TRUNCATE (tables
//!   without a route are kept) and renames each of them.
//! - The TRUNCATE that resets a restarted copy (in a copy message, [`ChangeBatch::is_copy`])
//!   is not a source operation: `operations` cannot drop it. It keeps the tables the copy
//!   writes to, those whose route allows INSERT.
//!
//! The schema is never changed. `DDL` is accepted in `operations` for compatibility, but the
//! change messages carry no DDL yet, so it has no effect; DDL text is never rewritten.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::message::{ChangeBatch, Op, Relation};

/// The keys a route may carry.
const ROUTE_KEYS: [&str; 4] = [
    "source_table",
    "destination_table",
    "column_mappings",
    "operations",
];

/// Every route of a routing file, by key (`table` or `schema.table`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routes {
    by_key: HashMap<String, Route>,
}

/// Where one source table goes.
#[derive(Clone, Debug, PartialEq)]
struct Route {
    destination_table: String,
    /// Source column name -> destination column name.
    columns: HashMap<String, String>,
    operations: Operations,
}

/// Which operations a route lets through.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Operations {
    insert: bool,
    update: bool,
    delete: bool,
    truncate: bool,
    /// DDL changes (`--track-ddl`); their SQL text is not rewritten for renamed tables.
    ddl: bool,
}

impl Operations {
    const ALL: Operations = Operations {
        insert: true,
        update: true,
        delete: true,
        truncate: true,
        ddl: true,
    };
    const NONE: Operations = Operations {
        insert: false,
        update: false,
        delete: false,
        truncate: false,
        ddl: false,
    };

    fn allows(self, op: Op) -> bool {
        match op {
            Op::Insert => self.insert,
            Op::Update => self.update,
            Op::Delete => self.delete,
            Op::Truncate => self.truncate,
            Op::Ddl => self.ddl,
        }
    }
}

/// Why a routing file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot read routing config {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML in routing config {path}")]
    Yaml {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    /// Every problem found, each naming the route (table) it belongs to.
    #[error("invalid routing config {path}:{}", problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid { path: String, problems: Vec<String> },
}

impl RoutingError {
    /// Metric label / log category.
    pub fn category(&self) -> &'static str {
        match self {
            RoutingError::Read { .. } => "routing_config_read",
            RoutingError::Yaml { .. } => "routing_config_parse",
            RoutingError::Invalid { .. } => "routing_config_invalid",
        }
    }

    /// A routing file never gets better by retrying.
    pub fn retry(&self) -> crate::sink::Retry {
        crate::sink::Retry::Permanent
    }
}

impl Routes {
    /// Reads and validates a routing file; returns the routes and the warnings to log.
    pub fn from_file(path: &Path) -> Result<(Routes, Vec<String>), RoutingError> {
        let shown = path.display().to_string();
        let yaml = std::fs::read_to_string(path).map_err(|source| RoutingError::Read {
            path: shown.clone(),
            source,
        })?;
        Routes::from_yaml(&shown, &yaml)
    }

    /// Parses and validates a routing document; `path_for_messages` names it in errors and
    /// warnings. Returns the routes and the warnings to log.
    pub fn from_yaml(
        path_for_messages: &str,
        yaml: &str,
    ) -> Result<(Routes, Vec<String>), RoutingError> {
        let path = path_for_messages;
        let doc: Value = serde_yaml::from_str(yaml).map_err(|source| RoutingError::Yaml {
            path: path.to_owned(),
            source,
        })?;
        let mut warnings = Vec::new();
        let map = match doc {
            Value::Null => {
                warnings.push(format!("routing config {path} has no routes"));
                return Ok((Routes::default(), warnings));
            }
            Value::Mapping(map) => map,
            other => {
                return Err(RoutingError::Invalid {
                    path: path.to_owned(),
                    problems: vec![format!(
                        "the document must be a map of source table to route (`users: {{destination_table: customers}}`), not {}",
                        kind(&other)
                    )],
                })
            }
        };
        let mut problems = Vec::new();
        let mut by_key = HashMap::new();
        for (key, value) in map {
            let Value::String(key) = key else {
                problems.push(format!(
                    "route key {} must be a table name (a string)",
                    show(&key)
                ));
                continue;
            };
            let mut found = Found {
                table: &key,
                problems: &mut problems,
                warnings: &mut warnings,
                path,
            };
            if let Some(route) = parse_route(&key, value, &mut found) {
                by_key.insert(key, route);
            }
        }
        if problems.is_empty() {
            Ok((Routes { by_key }, warnings))
        } else {
            problems.extend(warnings.into_iter().map(|w| format!("(warning) {w}")));
            Err(RoutingError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The route of a relation: a `schema.table` key first, then a bare `table` key.
    fn route_for(&self, rel: &Relation) -> Option<&Route> {
        self.by_key
            .get(&format!("{}.{}", rel.schema, rel.table))
            .or_else(|| self.by_key.get(&rel.table))
    }

    /// Renames tables and columns and drops changes whose operation the route excludes, in
    /// place.
    ///
    /// - A change of a table without a route passes unchanged.
    /// - A change whose operation its route excludes is dropped. A TRUNCATE keeps the
    ///   truncated tables whose route allows TRUNCATE (or that have no route); it is dropped
    ///   when none is left, and its `relation` is moved to the first table kept.
    /// - Every routed relation of the batch is renamed: table, mapped column names and the
    ///   key's column names (unmapped columns keep their names; the schema is kept).
    ///
    /// Relations are never removed, so the relation indexes of the remaining changes stay
    /// valid. A mapping onto a name an unmapped column already has yields two columns of the
    /// same name, which the sink rejects.
    pub fn apply(&self, batch: &mut ChangeBatch) {
        if self.is_empty() {
            return;
        }
        // Looked up by source names, before anything is renamed.
        let routes: Vec<Option<&Route>> =
            batch.relations.iter().map(|r| self.route_for(r)).collect();
        if routes.iter().all(Option::is_none) {
            return;
        }
        let allowed = |relation: u16, op: Op| {
            routes
                .get(usize::from(relation))
                .copied()
                .flatten()
                .is_none_or(|route| route.operations.allows(op))
        };
        // A copy's reset empties what the copy refills: the tables that take its inserts.
        let truncate_as = if batch.is_copy() {
            Op::Insert
        } else {
            Op::Truncate
        };
        batch.changes.retain_mut(|change| {
            let truncated = change
                .truncate
                .as_mut()
                .filter(|t| change.op == Op::Truncate && !t.relations.is_empty());
            match truncated {
                Some(t) => {
                    t.relations.retain(|&r| allowed(r, truncate_as));
                    match t.relations.first() {
                        Some(&first) => {
                            change.relation = first;
                            true
                        }
                        None => false,
                    }
                }
                None => allowed(change.relation, change.op),
            }
        });
        for (rel, route) in batch.relations.iter_mut().zip(&routes) {
            if let Some(route) = route {
                route.rename(rel);
            }
        }
    }
}

impl Route {
    fn rename(&self, rel: &mut Relation) {
        rel.table.clone_from(&self.destination_table);
        if self.columns.is_empty() {
            return;
        }
        for column in &mut rel.columns {
            if let Some(dest) = self.columns.get(&column.name) {
                column.name.clone_from(dest);
            }
        }
        for name in &mut rel.key.columns {
            if let Some(dest) = self.columns.get(name.as_str()) {
                name.clone_from(dest);
            }
        }
    }
}

/// Where findings about one route go.
struct Found<'a> {
    table: &'a str,
    problems: &'a mut Vec<String>,
    warnings: &'a mut Vec<String>,
    path: &'a str,
}

impl Found<'_> {
    fn problem(&mut self, what: String) {
        self.problems
            .push(format!("route {:?}: {what}", self.table));
    }

    fn warning(&mut self, what: String) {
        self.warnings.push(format!(
            "routing config {}: route {:?}: {what}",
            self.path, self.table
        ));
    }
}

/// Parses one route; problems and warnings go to `found`. `None` when it has a problem.
fn parse_route(key: &str, value: Value, found: &mut Found<'_>) -> Option<Route> {
    let before = found.problems.len();
    // The table part of the key: `schema.table` keys route `table`.
    let table = key.split_once('.').map_or(key, |(_, table)| table);
    if key.is_empty() || table.is_empty() {
        found.problem("the key must name a source table".into());
    }
    let map = match value {
        Value::Null => Mapping::new(),
        Value::Mapping(map) => map,
        other => {
            found.problem(format!(
                "must be a map with destination_table, column_mappings and operations, not {}",
                kind(&other)
            ));
            return None;
        }
    };
    let mut destination_table = table.to_owned();
    let mut columns = HashMap::new();
    let mut operations = Operations::ALL;
    for (k, v) in map {
        let Value::String(k) = k else {
            found.warning(format!("unknown key {} (ignored)", show(&k)));
            continue;
        };
        match k.as_str() {
            "source_table" => match v {
                Value::String(s) if s == table || s == key => {}
                Value::Null => {}
                other => found.warning(format!(
                    "source_table {} is ignored: the route applies to its key {key:?}",
                    show(&other)
                )),
            },
            "destination_table" => match v {
                Value::String(s) if !s.is_empty() => destination_table = s,
                Value::Null => {}
                other => found.problem(format!(
                    "destination_table must be a non-empty table name, not {}",
                    show(&other)
                )),
            },
            "column_mappings" => columns = parse_columns(v, found),
            "operations" => operations = parse_operations(v, found),
            _ => found.warning(format!(
                "unknown key {k:?} (ignored; a route has {})",
                ROUTE_KEYS.join(", ")
            )),
        }
    }
    (found.problems.len() == before).then_some(Route {
        destination_table,
        columns,
        operations,
    })
}

fn parse_columns(value: Value, found: &mut Found<'_>) -> HashMap<String, String> {
    let mut columns = HashMap::new();
    let items = match value {
        Value::Null => return columns,
        Value::Sequence(items) => items,
        other => {
            found.problem(format!(
                "column_mappings must be a list of {{source: <column>, destination: <column>}}, not {}",
                kind(&other)
            ));
            return columns;
        }
    };
    let mut destinations = BTreeSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let Value::Mapping(map) = item else {
            found.problem(format!(
                "column_mappings[{i}] must be a map {{source: <column>, destination: <column>}}, not {}",
                kind(&item)
            ));
            continue;
        };
        let (mut source, mut destination) = (None, None);
        for (k, v) in map {
            let name = match &v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            match k.as_str() {
                Some("source") => source = Some(name.ok_or(v)),
                Some("destination") => destination = Some(name.ok_or(v)),
                _ => found.warning(format!(
                    "column_mappings[{i}]: unknown key {} (ignored; a mapping has source and destination)",
                    show(&k)
                )),
            }
        }
        let mut column = |field: &str, got: Option<Result<String, Value>>| match got {
            Some(Ok(name)) => Some(name),
            Some(Err(other)) => {
                found.problem(format!(
                    "column_mappings[{i}]: {field} must be a non-empty column name, not {}",
                    show(&other)
                ));
                None
            }
            None => {
                found.problem(format!("column_mappings[{i}]: {field} is missing"));
                None
            }
        };
        let source = column("source", source);
        let destination = column("destination", destination);
        let (Some(source), Some(destination)) = (source, destination) else {
            continue;
        };
        if !destinations.insert(destination.clone()) {
            found.problem(format!(
                "column_mappings[{i}]: destination column {destination:?} is already the destination of another mapping"
            ));
        }
        if columns.contains_key(&source) {
            found.problem(format!(
                "column_mappings[{i}]: source column {source:?} is mapped more than once"
            ));
            continue;
        }
        columns.insert(source, destination);
    }
    columns
}

fn parse_operations(value: Value, found: &mut Found<'_>) -> Operations {
    let items = match value {
        Value::Null => return Operations::ALL,
        Value::Sequence(items) if items.is_empty() => return Operations::ALL,
        Value::Sequence(items) => items,
        other => {
            found.problem(format!(
                "operations must be a list such as [INSERT, UPDATE, DELETE, TRUNCATE, DDL], not {}",
                kind(&other)
            ));
            return Operations::ALL;
        }
    };
    let mut ops = Operations::NONE;
    for item in items {
        let flag = match item.as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("INSERT") => &mut ops.insert,
            Some("UPDATE") => &mut ops.update,
            Some("DELETE") => &mut ops.delete,
            Some("TRUNCATE") => &mut ops.truncate,
            Some("DDL") => &mut ops.ddl,
            _ => {
                found.problem(format!(
                    "unknown operation {} (use INSERT, UPDATE, DELETE, TRUNCATE or DDL)",
                    show(&item)
                ));
                continue;
            }
        };
        *flag = true;
    }
    ops
}

/// A YAML value as the user wrote it, for messages (never row data: this is config).
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| kind(other).to_owned()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{
        Change, Column, KeyKind, OldKind, ReplicationKey, Truncate, Value as Val, FORMAT_VERSION,
    };

    fn relation(schema: &str, table: &str, columns: &[&str], key: &[&str]) -> Relation {
        Relation {
            oid: 16384,
            schema: schema.into(),
            table: table.into(),
            columns: columns
                .iter()
                .map(|name| Column {
                    name: (*name).into(),
                    type_oid: 25,
                    type_modifier: -1,
                    identity: key.contains(name),
                })
                .collect(),
            key: ReplicationKey {
                kind: KeyKind::PrimaryKey,
                columns: key.iter().map(|k| (*k).into()).collect(),
            },
        }
    }

    fn change(op: Op, relation: u16) -> Change {
        let row = Some(vec![Val::Text(b"1".to_vec().into())]);
        Change {
            op,
            lsn: 1,
            relation,
            new: matches!(op, Op::Insert | Op::Update)
                .then(|| row.clone())
                .flatten(),
            old: matches!(op, Op::Delete)
                .then(|| (OldKind::Key, vec![Val::Text(b"1".to_vec().into())])),
            truncate: None,
        }
    }

    fn truncate(relations: &[u16]) -> Change {
        Change {
            op: Op::Truncate,
            lsn: 1,
            relation: relations[0],
            new: None,
            old: None,
            truncate: Some(Truncate {
                relations: relations.to_vec(),
                cascade: false,
                restart_identity: false,
            }),
        }
    }

    fn batch(relations: Vec<Relation>, changes: Vec<Change>) -> ChangeBatch {
        ChangeBatch {
            version: FORMAT_VERSION,
            commit_lsn: 100,
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

    fn routes(yaml: &str) -> Routes {
        let (routes, warnings) = Routes::from_yaml("routes.yaml", yaml).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        routes
    }

    fn ops(b: &ChangeBatch) -> Vec<Op> {
        b.changes.iter().map(|c| c.op).collect()
    }

    fn users() -> Relation {
        relation("public", "users", &["id", "name", "email"], &["id"])
    }

    fn all_ops(relation: u16) -> Vec<Change> {
        [Op::Insert, Op::Update, Op::Delete]
            .into_iter()
            .map(|op| change(op, relation))
            .collect()
    }

    #[test]
    fn renames_table_columns_and_key_columns() {
        let r = routes(
            "users:\n  source_table: users\n  destination_table: customers\n  column_mappings:\n    - {source: id, destination: customer_id}\n    - {source: name, destination: full_name}\n",
        );
        let mut b = batch(vec![users()], all_ops(0));
        r.apply(&mut b);
        let rel = &b.relations[0];
        assert_eq!(rel.schema, "public");
        assert_eq!(rel.table, "customers");
        let names: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["customer_id", "full_name", "email"]);
        assert_eq!(rel.key.columns, ["customer_id"]);
        assert_eq!(ops(&b), [Op::Insert, Op::Update, Op::Delete]);
    }

    #[test]
    fn unmapped_columns_and_unrouted_tables_are_unchanged() {
        let r = routes("users:\n  column_mappings: [{source: name, destination: full_name}]\n");
        let orders = relation("public", "orders", &["id", "name"], &["id", "name"]);
        let mut b = batch(vec![users(), orders.clone()], vec![change(Op::Insert, 1)]);
        r.apply(&mut b);
        // destination_table defaults to the key
        assert_eq!(b.relations[0].table, "users");
        let names: Vec<&str> = b.relations[0]
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["id", "full_name", "email"]);
        assert_eq!(b.relations[0].key.columns, ["id"]);
        assert_eq!(b.relations[1], orders);
        assert_eq!(ops(&b), [Op::Insert]);
    }

    #[test]
    fn operations_filter_drops_excluded_operations() {
        let r = routes("users:\n  destination_table: customers\n  operations: [insert]\n");
        let mut changes = all_ops(0);
        changes.extend(all_ops(1));
        let orders = relation("public", "orders", &["id"], &["id"]);
        let mut b = batch(vec![users(), orders], changes);
        r.apply(&mut b);
        let kept: Vec<(Op, u16)> = b.changes.iter().map(|c| (c.op, c.relation)).collect();
        assert_eq!(
            kept,
            [
                (Op::Insert, 0),
                (Op::Insert, 1),
                (Op::Update, 1),
                (Op::Delete, 1)
            ]
        );
        assert_eq!(b.relations[0].table, "customers");
        assert_eq!(b.relations[1].table, "orders");
    }

    #[test]
    fn absent_or_empty_operations_allow_everything() {
        for yaml in [
            "users:\n  destination_table: customers\n",
            "users:\n  destination_table: customers\n  operations: []\n",
            "users:\n  destination_table: customers\n  operations:\n",
        ] {
            let r = routes(yaml);
            let mut changes = all_ops(0);
            changes.push(truncate(&[0]));
            let mut b = batch(vec![users()], changes);
            r.apply(&mut b);
            assert_eq!(
                ops(&b),
                [Op::Insert, Op::Update, Op::Delete, Op::Truncate],
                "{yaml}"
            );
        }
    }

    #[test]
    fn truncate_renames_and_filters_every_listed_relation() {
        let r = routes(
            "users: {destination_table: customers}\norders: {destination_table: purchases}\naudit: {operations: [INSERT]}\n",
        );
        let rels = vec![
            users(),
            relation("public", "orders", &["id"], &["id"]),
            relation("public", "audit", &["id"], &["id"]),
            relation("public", "plain", &["id"], &["id"]),
        ];
        let mut b = batch(
            rels,
            vec![
                truncate(&[2, 0, 1, 3]),
                truncate(&[2]),
                change(Op::Insert, 2),
            ],
        );
        r.apply(&mut b);
        assert_eq!(ops(&b), [Op::Truncate, Op::Insert]);
        let t = &b.changes[0];
        assert_eq!(t.truncate.as_ref().unwrap().relations, [0, 1, 3]);
        assert_eq!(t.relation, 0);
        let tables: Vec<&str> = b.relations.iter().map(|r| r.table.as_str()).collect();
        assert_eq!(tables, ["customers", "purchases", "audit", "plain"]);
        assert_eq!(b.changes[1].relation, 2);
    }

    #[test]
    fn a_restarted_copys_truncate_is_not_filtered_by_operations() {
        let r = routes(
            "users: {destination_table: customers, operations: [INSERT, UPDATE]}\n\
             orders: {operations: [UPDATE]}\n",
        );
        let rels = vec![
            users(),
            relation("public", "orders", &["id"], &["id"]),
            relation("public", "plain", &["id"], &["id"]),
        ];
        // A copy message (xid 0): kept for the tables the copy inserts into.
        let mut b = batch(rels.clone(), vec![truncate(&[0, 1, 2])]);
        b.xid = 0;
        r.apply(&mut b);
        assert_eq!(ops(&b), [Op::Truncate]);
        assert_eq!(b.changes[0].truncate.as_ref().unwrap().relations, [0, 2]);
        assert_eq!(b.relations[0].table, "customers");
        // The same TRUNCATE from a source transaction: dropped for both routed tables.
        let mut b = batch(rels, vec![truncate(&[0, 1, 2])]);
        r.apply(&mut b);
        assert_eq!(b.changes[0].truncate.as_ref().unwrap().relations, [2]);
    }

    #[test]
    fn schema_qualified_keys_match_that_schema_and_win_over_bare_keys() {
        let r = routes(
            "sales.users: {destination_table: sales_customers}\nusers: {destination_table: customers, operations: [DELETE]}\n",
        );
        let mut b = batch(
            vec![
                relation("sales", "users", &["id"], &["id"]),
                users(),
                relation("sales", "orders", &["id"], &["id"]),
            ],
            vec![
                change(Op::Insert, 0),
                change(Op::Insert, 1),
                change(Op::Delete, 1),
                change(Op::Insert, 2),
            ],
        );
        r.apply(&mut b);
        let tables: Vec<(&str, &str)> = b
            .relations
            .iter()
            .map(|r| (r.schema.as_str(), r.table.as_str()))
            .collect();
        assert_eq!(
            tables,
            [
                ("sales", "sales_customers"),
                ("public", "customers"),
                ("sales", "orders")
            ]
        );
        let kept: Vec<(Op, u16)> = b.changes.iter().map(|c| (c.op, c.relation)).collect();
        assert_eq!(kept, [(Op::Insert, 0), (Op::Delete, 1), (Op::Insert, 2)]);

        // a qualified key alone defaults its destination to the table part
        let r = routes("sales.users:\n  operations: [INSERT]\n");
        let mut b = batch(
            vec![relation("sales", "users", &["id"], &["id"])],
            all_ops(0),
        );
        r.apply(&mut b);
        assert_eq!(b.relations[0].table, "users");
        assert_eq!(ops(&b), [Op::Insert]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let yaml = r#"
users:
  destination_table: customers
  operations: [INSERT, UPSERT, 3]
  column_mappings:
    - {source: a, destination: x}
    - {source: b, destination: x}
    - {source: c}
    - {destination: y}
    - nope
orders:
  operations: INSERT
  destination_table: ""
audit: [1, 2]
"#;
        let err = Routes::from_yaml("routes.yaml", yaml).unwrap_err();
        assert_eq!(err.category(), "routing_config_invalid");
        let RoutingError::Invalid { path, problems } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, "routes.yaml");
        let expect = [
            r#"route "users": unknown operation "UPSERT""#,
            r#"route "users": unknown operation 3"#,
            r#"route "users": column_mappings[1]: destination column "x" is already"#,
            r#"route "users": column_mappings[2]: destination is missing"#,
            r#"route "users": column_mappings[3]: source is missing"#,
            r#"route "users": column_mappings[4] must be a map"#,
            r#"route "orders": operations must be a list"#,
            r#"route "orders": destination_table must be a non-empty table name, not """#,
            r#"route "audit": must be a map"#,
        ];
        for e in expect {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "{e}\n{problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
        let shown = err.to_string();
        assert!(
            shown.starts_with("invalid routing config routes.yaml:\n  - "),
            "{shown}"
        );

        for (yaml, want) in [
            ("[users]", "the document must be a map"),
            ("42: {}", "route key 42 must be a table name"),
        ] {
            match Routes::from_yaml("r.yaml", yaml) {
                Err(RoutingError::Invalid { problems, .. }) => {
                    assert!(problems[0].contains(want), "{problems:?}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            Routes::from_yaml("r.yaml", "users: [unclosed"),
            Err(RoutingError::Yaml { .. })
        ));
        assert!(matches!(
            Routes::from_file(Path::new("/nonexistent/routes.yaml")),
            Err(RoutingError::Read { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let yaml = r#"
users:
  source_table: people
  destination_table: customers
  destination_schema: crm
  column_mappings:
    - {source: id, destination: customer_id, type: int}
"#;
        let (r, warnings) = Routes::from_yaml("routes.yaml", yaml).unwrap();
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        for (w, want) in warnings.iter().zip([
            r#"source_table "people" is ignored"#,
            r#"unknown key "destination_schema""#,
            r#"column_mappings[0]: unknown key "type""#,
        ]) {
            assert!(
                w.starts_with(r#"routing config routes.yaml: route "users": "#) && w.contains(want),
                "{w}"
            );
        }
        let mut b = batch(vec![users()], vec![change(Op::Insert, 0)]);
        r.apply(&mut b);
        assert_eq!(b.relations[0].table, "customers");
        assert_eq!(b.relations[0].columns[0].name, "customer_id");

        let (r, warnings) = Routes::from_yaml("routes.yaml", "").unwrap();
        assert!(r.is_empty());
        assert_eq!(warnings, ["routing config routes.yaml has no routes"]);
    }
}
