//! The routing file (`--routing-config`): its model as serde types and its validation, shared
//! by the runtime (which parses a file and applies the [`ValidRoutes`]) and the operator (which
//! renders Route resources into a [`RoutingFile`] and checks each [`Route`] with the same
//! [`Route::check`]).
//!
//! The format is pg_flo's (a YAML map keyed by source table):
//! ```yaml
//! users:                            # bare table name (any schema), or `schema.table`
//!   source_table: users             # ignored: the key wins (a differing value is a warning)
//!   destination_table: customers    # default: the table name of the key
//!   column_mappings:
//!     - {source: id, destination: customer_id}
//!   operations: [INSERT, UPDATE]    # case-insensitive; absent or empty = every operation
//! ```
//! Unknown operation names, incomplete or duplicate column mappings and malformed routes are
//! problems, all reported at once, each naming its route; unknown keys are warnings. What
//! routing does is the runtime's (`pg_flo::worker::routing`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::lenient::{present, untag, Entries, Lenient};
use crate::operation::{OperationList, OperationSet};

/// The routing file: source table key (`table` or `schema.table`) -> route, in file order.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct RoutingFile(pub Entries<Lenient<String>, Lenient<Option<Route>>>);

impl RoutingFile {
    /// A routing file of the given routes, in that order.
    pub fn new(routes: impl IntoIterator<Item = (String, Route)>) -> RoutingFile {
        RoutingFile(
            routes
                .into_iter()
                .map(|(key, route)| (Lenient::Typed(key), Lenient::Typed(Some(route))))
                .collect(),
        )
    }
}

/// The keys a route may carry.
const ROUTE_KEYS: [&str; 4] = [
    "source_table",
    "destination_table",
    "column_mappings",
    "operations",
];

/// One route, as written. Fields are in the order they are written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Route {
    /// Ignored: the key names the source table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_table: Option<Lenient<String>>,
    /// Table name in the sink (default: the table part of the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_table: Option<Lenient<String>>,
    /// Column renames; columns not listed keep their name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_mappings: Option<Lenient<Vec<Lenient<ColumnMapping>>>>,
    /// Kinds of change routed (absent or empty: all); others are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<OperationList>,
    /// Other keys.
    #[serde(flatten)]
    pub unknown: Mapping,
}

/// Rename of one column.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ColumnMapping {
    /// Column name in the source table.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub source: Option<Lenient<String>>,
    /// Column name in the sink.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub destination: Option<Lenient<String>>,
    /// Other keys.
    #[serde(flatten)]
    pub unknown: Mapping,
}

impl ColumnMapping {
    /// `source` -> `destination`.
    pub fn new(source: impl Into<String>, destination: impl Into<String>) -> ColumnMapping {
        ColumnMapping {
            source: Some(Lenient::Typed(source.into())),
            destination: Some(Lenient::Typed(destination.into())),
            unknown: Mapping::new(),
        }
    }
}

/// The routes of a file, validated, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValidRoutes {
    /// Key (`table` or `schema.table`) -> route.
    pub routes: Vec<(String, ValidRoute)>,
}

/// A route that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidRoute {
    pub destination_table: String,
    /// Source column -> destination column; no source and no destination twice.
    pub columns: Vec<(String, String)>,
    pub operations: OperationSet,
}

/// The outcome of [`Route::check`]; messages do not name the route.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteCheck {
    /// The valid route, when there is no problem.
    pub route: Option<ValidRoute>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
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
}

/// Parses and validates a routing document; `path` names it in messages. Returns the routes
/// and the warnings to log, or every problem (warnings appended, marked `(warning)`).
pub fn parse(path: &str, yaml: &str) -> Result<(ValidRoutes, Vec<String>), RoutingError> {
    let yaml_error = |source| RoutingError::Yaml {
        path: path.to_owned(),
        source,
    };
    // Through a Value: YAML errors (duplicate keys included) stay YAML errors; tags are removed
    // (a tagged value is read as its value).
    let value: Value = untag(serde_yaml::from_str(yaml).map_err(yaml_error)?);
    let doc: Lenient<Option<RoutingFile>> = serde_yaml::from_value(value).map_err(yaml_error)?;
    match doc {
        Lenient::Typed(Some(file)) => file.validate(path),
        Lenient::Typed(None) => Ok((
            ValidRoutes::default(),
            vec![format!("routing config {path} has no routes")],
        )),
        Lenient::Other(other) => Err(RoutingError::Invalid {
            path: path.to_owned(),
            problems: vec![format!(
                "the document must be a map of source table to route (`users: {{destination_table: customers}}`), not {}",
                kind(&other)
            )],
        }),
    }
}

impl RoutingFile {
    /// Validates every route; see [`parse`].
    pub fn validate(&self, path: &str) -> Result<(ValidRoutes, Vec<String>), RoutingError> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut valid = ValidRoutes::default();
        for (key, route) in &self.0 {
            let key = match key {
                Lenient::Typed(key) => key,
                Lenient::Other(key) => {
                    problems.push(format!(
                        "route key {} must be a table name (a string)",
                        show(key)
                    ));
                    continue;
                }
            };
            let check = match route {
                Lenient::Typed(route) => route.as_ref().unwrap_or(&Route::default()).check(key),
                Lenient::Other(other) => RouteCheck {
                    route: None,
                    problems: vec![format!(
                        "must be a map with destination_table, column_mappings and operations, not {}",
                        kind(other)
                    )],
                    warnings: Vec::new(),
                },
            };
            problems.extend(check.problems.iter().map(|p| format!("route {key:?}: {p}")));
            warnings.extend(
                check
                    .warnings
                    .iter()
                    .map(|w| format!("routing config {path}: route {key:?}: {w}")),
            );
            if let Some(route) = check.route {
                valid.routes.push((key.clone(), route));
            }
        }
        if problems.is_empty() {
            Ok((valid, warnings))
        } else {
            problems.extend(warnings.into_iter().map(|w| format!("(warning) {w}")));
            Err(RoutingError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }
}

impl Route {
    /// Validates the route of `key` (`table` or `schema.table`): the valid route, or every
    /// problem; and the warnings.
    pub fn check(&self, key: &str) -> RouteCheck {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        // The table part of the key: `schema.table` keys route `table`.
        let table = key.split_once('.').map_or(key, |(_, table)| table);
        if key.is_empty() || table.is_empty() {
            problems.push("the key must name a source table".to_owned());
        }
        match &self.source_table {
            None => {}
            Some(Lenient::Typed(s)) if s == table || s == key => {}
            Some(other) => warnings.push(format!(
                "source_table {} is ignored: the route applies to its key {key:?}",
                show_lenient(other)
            )),
        }
        for k in self.unknown.keys() {
            warnings.push(match k {
                Value::String(k) => format!(
                    "unknown key {k:?} (ignored; a route has {})",
                    ROUTE_KEYS.join(", ")
                ),
                other => format!("unknown key {} (ignored)", show(other)),
            });
        }
        let destination_table = match &self.destination_table {
            None => table.to_owned(),
            Some(Lenient::Typed(s)) if !s.is_empty() => s.clone(),
            Some(other) => {
                problems.push(format!(
                    "destination_table must be a non-empty table name, not {}",
                    show_lenient(other)
                ));
                table.to_owned()
            }
        };
        let columns = match &self.column_mappings {
            None => Vec::new(),
            Some(Lenient::Typed(items)) => columns(items, &mut problems, &mut warnings),
            Some(Lenient::Other(other)) => {
                problems.push(format!(
                    "column_mappings must be a list of {{source: <column>, destination: <column>}}, not {}",
                    kind(other)
                ));
                Vec::new()
            }
        };
        let operations = route_operations(self.operations.as_ref(), &mut problems);
        let route = problems.is_empty().then_some(ValidRoute {
            destination_table,
            columns,
            operations,
        });
        RouteCheck {
            route,
            problems,
            warnings,
        }
    }
}

fn columns(
    items: &[Lenient<ColumnMapping>],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut columns: Vec<(String, String)> = Vec::new();
    let mut destinations = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let mapping = match item {
            Lenient::Typed(mapping) => mapping,
            Lenient::Other(other) => {
                problems.push(format!(
                    "column_mappings[{i}] must be a map {{source: <column>, destination: <column>}}, not {}",
                    kind(other)
                ));
                continue;
            }
        };
        for k in mapping.unknown.keys() {
            warnings.push(format!(
                "column_mappings[{i}]: unknown key {} (ignored; a mapping has source and destination)",
                show(k)
            ));
        }
        let mut column = |field: &str, got: &Option<Lenient<String>>| match got {
            Some(Lenient::Typed(name)) if !name.is_empty() => Some(name.clone()),
            Some(other) => {
                problems.push(format!(
                    "column_mappings[{i}]: {field} must be a non-empty column name, not {}",
                    show_lenient(other)
                ));
                None
            }
            None => {
                problems.push(format!("column_mappings[{i}]: {field} is missing"));
                None
            }
        };
        let source = column("source", &mapping.source);
        let destination = column("destination", &mapping.destination);
        let (Some(source), Some(destination)) = (source, destination) else {
            continue;
        };
        if !destinations.insert(destination.clone()) {
            problems.push(format!(
                "column_mappings[{i}]: destination column {destination:?} is already the destination of another mapping"
            ));
        }
        if columns.iter().any(|(s, _)| *s == source) {
            problems.push(format!(
                "column_mappings[{i}]: source column {source:?} is mapped more than once"
            ));
            continue;
        }
        columns.push((source, destination));
    }
    columns
}

/// A route's operations: absent or empty = all of them.
fn route_operations(list: Option<&OperationList>, problems: &mut Vec<String>) -> OperationSet {
    let items = match list {
        None => return OperationSet::ALL,
        Some(OperationList::Many(items)) if items.is_empty() => return OperationSet::ALL,
        Some(OperationList::Many(items)) => items,
        Some(OperationList::One(one)) => {
            let what = match one {
                Lenient::Typed(_) => "a string",
                Lenient::Other(other) => kind(other),
            };
            problems.push(format!(
                "operations must be a list such as [INSERT, UPDATE, DELETE, TRUNCATE, DDL], not {what}"
            ));
            return OperationSet::ALL;
        }
    };
    let mut ops = OperationSet::NONE;
    for item in items {
        match item {
            Lenient::Typed(op) => ops.insert(*op),
            Lenient::Other(other) => problems.push(format!(
                "unknown operation {} (use INSERT, UPDATE, DELETE, TRUNCATE or DDL)",
                show(other)
            )),
        }
    }
    ops
}

fn show_lenient(value: &Lenient<String>) -> String {
    match value {
        Lenient::Typed(s) => format!("{s:?}"),
        Lenient::Other(other) => show(other),
    }
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
    use crate::operation::Operation;

    #[test]
    fn a_rendered_file_reads_back_as_written() {
        let file = RoutingFile::new([(
            "orders".to_owned(),
            Route {
                destination_table: Some("archive".to_owned().into()),
                column_mappings: Some(Lenient::Typed(vec![
                    ColumnMapping::new("id", "order_id").into()
                ])),
                operations: Some([Operation::Insert, Operation::Update].into_iter().collect()),
                ..Route::default()
            },
        )]);
        let yaml = serde_yaml::to_string(&file).unwrap();
        assert_eq!(
            yaml,
            "orders:\n  destination_table: archive\n  column_mappings:\n  - source: id\n    destination: order_id\n  operations:\n  - INSERT\n  - UPDATE\n"
        );
        let (valid, warnings) = parse("r.yaml", &yaml).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut ops = OperationSet::NONE;
        ops.insert(Operation::Insert);
        ops.insert(Operation::Update);
        assert_eq!(
            valid.routes,
            [(
                "orders".to_owned(),
                ValidRoute {
                    destination_table: "archive".into(),
                    columns: vec![("id".into(), "order_id".into())],
                    operations: ops,
                }
            )]
        );
    }

    /// Found by runtime/tests/config_properties.rs: a tagged value failed the whole file with
    /// serde's "untagged and internally tagged enums do not support enum input", naming no
    /// route.
    #[test]
    fn tagged_values_are_read_as_their_values() {
        let (valid, _) = parse(
            "r.yaml",
            "!t orders:\n  destination_table: !d archive\n  column_mappings: [{source: !s id, destination: order_id}]\n",
        )
        .unwrap();
        assert_eq!(valid.routes[0].0, "orders");
        assert_eq!(valid.routes[0].1.destination_table, "archive");
        assert_eq!(
            valid.routes[0].1.columns,
            [("id".into(), "order_id".into())]
        );
        let Err(RoutingError::Invalid { problems, .. }) =
            parse("r.yaml", "orders: {operations: [!o INSERT, !o upsert]}\n")
        else {
            panic!()
        };
        assert_eq!(
            problems,
            ["route \"orders\": unknown operation \"upsert\" (use INSERT, UPDATE, DELETE, TRUNCATE or DDL)"]
        );
    }

    #[test]
    fn check_names_no_route_and_the_file_does() {
        let route: Route = serde_yaml::from_str(
            "{column_mappings: [{source: a, destination: x}, {source: null, destination: x}]}",
        )
        .unwrap();
        let check = route.check("sales.");
        assert_eq!(
            check.problems,
            [
                "the key must name a source table",
                "column_mappings[1]: source must be a non-empty column name, not null"
            ]
        );
        let Err(RoutingError::Invalid { problems, .. }) =
            parse("r.yaml", "sales.: {x: 1}\nusers: {operations: insert}\n")
        else {
            panic!()
        };
        assert_eq!(
            problems,
            [
                "route \"sales.\": the key must name a source table",
                "route \"users\": operations must be a list such as [INSERT, UPDATE, DELETE, TRUNCATE, DDL], not a string",
                "(warning) routing config r.yaml: route \"sales.\": unknown key \"x\" (ignored; a route has source_table, destination_table, column_mappings, operations)",
            ]
        );
        assert!(matches!(
            parse("r.yaml", "a: {}\na: {}\n"),
            Err(RoutingError::Yaml { .. })
        ));
    }
}
