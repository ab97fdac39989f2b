//! The `Route` custom resource: pg_flo's routing file, one table per resource.

// The repeated `type_ = ...` of `#[kube(printcolumn(...))]` are separate columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use pg_flo_config::lenient::Lenient;
use pg_flo_config::routing as file;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{GroupRef, Operation};

/// Renames a source table and its columns in the sink of a ReplicationGroup, optionally for
/// some kinds of change only.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pgflo.io",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    doc = "Table and column renames of one source table (pg_flo routing).",
    status = "RouteStatus",
    shortname = "pgroute",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupRef.name"),
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.sourceTable"),
    printcolumn(
        name = "Destination",
        type_ = "string",
        json_path = ".spec.destinationTable"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The ReplicationGroup (same namespace) whose worker applies the route.
    pub group_ref: GroupRef,
    /// Source table: a bare name (any schema) or `schema.table`.
    #[schemars(length(min = 1))]
    pub source_table: String,
    /// Table name in the sink.
    #[schemars(length(min = 1))]
    pub destination_table: String,
    /// Column renames; columns not listed keep their name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_mappings: Vec<ColumnMapping>,
    /// Changes routed (default: all); other changes of the table are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<Operation>>,
}

/// Rename of one column.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMapping {
    /// Column name in the source table.
    #[schemars(length(min = 1))]
    pub source: String,
    /// Column name in the sink.
    #[schemars(length(min = 1))]
    pub destination: String,
}

impl RouteSpec {
    /// The route as pg_flo's routing file writes it (under the key `sourceTable`): what the
    /// worker runs, and what [`file::Route::check`] validates.
    pub fn file_route(&self) -> file::Route {
        let mappings = self
            .column_mappings
            .iter()
            .map(|m| file::ColumnMapping::new(&m.source, &m.destination).into());
        file::Route {
            destination_table: Some(self.destination_table.clone().into()),
            column_mappings: (!self.column_mappings.is_empty())
                .then(|| Lenient::Typed(mappings.collect())),
            operations: self
                .operations
                .as_ref()
                .map(|ops| ops.iter().map(|&op| op.into()).collect()),
            ..file::Route::default()
        }
    }
}

/// Observed state of a Route.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// `metadata.generation` the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; `Accepted` tells whether the worker took the route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
