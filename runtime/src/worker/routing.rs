//! Routing (`--routing-config`): renames tables and columns and drops operations a route
//! excludes, before the changes reach the sink.
//!
//! Place in the pipeline: worker decodes a [`ChangeBatch`] -> rules -> **routing** -> sink.
//! Routing runs after the rules, so routes and rules both name *source* tables and columns.
//! The sinks write to `relation.schema`.`relation.table` with `relation.columns[i].name` and
//! find rows by `relation.key.columns`, so renaming those in the batch is all routing does.
//!
//! The file format is pg_flo's (a YAML map keyed by source table), modelled and validated in
//! [`pg_flo_config::routing`]:
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

use std::collections::HashMap;
use std::path::Path;

use pg_flo_config::operation::{Operation, OperationSet};
pub use pg_flo_config::routing::RoutingError;
use pg_flo_config::routing::{self as model, ValidRoute};

use crate::message::{ChangeBatch, Op, Relation};

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
    operations: OperationSet,
}

impl From<ValidRoute> for Route {
    fn from(route: ValidRoute) -> Route {
        Route {
            destination_table: route.destination_table,
            columns: route.columns.into_iter().collect(),
            operations: route.operations,
        }
    }
}

/// Whether a route's operations let `op` through (DDL changes: `--track-ddl`; their SQL text
/// is not rewritten for renamed tables).
fn allows(operations: OperationSet, op: Op) -> bool {
    operations.contains(match op {
        Op::Insert => Operation::Insert,
        Op::Update => Operation::Update,
        Op::Delete => Operation::Delete,
        Op::Truncate => Operation::Truncate,
        Op::Ddl => Operation::Ddl,
    })
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
        let (valid, warnings) = model::parse(path_for_messages, yaml)?;
        let by_key = valid
            .routes
            .into_iter()
            .map(|(key, route)| (key, Route::from(route)))
            .collect();
        Ok((Routes { by_key }, warnings))
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
                .is_none_or(|route| allows(route.operations, op))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, text, text_relation};
    use crate::message::{Change, KeyKind, OldKind, Truncate};

    /// `schema.table` with text columns, keyed (primary key) on `key`.
    fn relation(schema: &str, table: &str, columns: &[&str], key: &[&str]) -> Relation {
        text_relation(schema, table, columns, KeyKind::PrimaryKey, key)
    }

    /// A change of `op` on the relation of index `relation`: new row `("1")` for an insert or
    /// update, old key `("1")` for a delete.
    fn change(op: Op, relation: u16) -> Change {
        let row = vec![text("1")];
        let new = matches!(op, Op::Insert | Op::Update).then(|| row.clone());
        let old = matches!(op, Op::Delete).then(|| (OldKind::Key, row));
        fixtures::change(op, relation, new, old)
    }

    fn truncate(relations: &[u16]) -> Change {
        Change {
            truncate: Some(Truncate {
                relations: relations.to_vec(),
                cascade: false,
                restart_identity: false,
            }),
            ..fixtures::change(Op::Truncate, relations[0], None, None)
        }
    }

    fn batch(relations: &[Relation], changes: Vec<Change>) -> ChangeBatch {
        fixtures::batch(100, relations, changes)
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
        let mut b = batch(&[users()], all_ops(0));
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
        let mut b = batch(&[users(), orders.clone()], vec![change(Op::Insert, 1)]);
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
        let mut b = batch(&[users(), orders], changes);
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
            let mut b = batch(&[users()], changes);
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
            &rels,
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
        let mut b = batch(&rels, vec![truncate(&[0, 1, 2])]);
        b.xid = 0;
        r.apply(&mut b);
        assert_eq!(ops(&b), [Op::Truncate]);
        assert_eq!(b.changes[0].truncate.as_ref().unwrap().relations, [0, 2]);
        assert_eq!(b.relations[0].table, "customers");
        // The same TRUNCATE from a source transaction: dropped for both routed tables.
        let mut b = batch(&rels, vec![truncate(&[0, 1, 2])]);
        r.apply(&mut b);
        assert_eq!(b.changes[0].truncate.as_ref().unwrap().relations, [2]);
    }

    #[test]
    fn schema_qualified_keys_match_that_schema_and_win_over_bare_keys() {
        let r = routes(
            "sales.users: {destination_table: sales_customers}\nusers: {destination_table: customers, operations: [DELETE]}\n",
        );
        let mut b = batch(
            &[
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
        let mut b = batch(&[relation("sales", "users", &["id"], &["id"])], all_ops(0));
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
        let mut b = batch(&[users()], vec![change(Op::Insert, 0)]);
        r.apply(&mut b);
        assert_eq!(b.relations[0].table, "customers");
        assert_eq!(b.relations[0].columns[0].name, "customer_id");

        let (r, warnings) = Routes::from_yaml("routes.yaml", "").unwrap();
        assert!(r.is_empty());
        assert_eq!(warnings, ["routing config routes.yaml has no routes"]);
    }
}
