//! The `Rule` custom resource: pg_flo's rules file, one table per resource.

// The repeated `type_ = ...` of `#[kube(printcolumn(...))]` are separate columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use pg_flo_config::lenient::Scalar;
use pg_flo_config::rules as file;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{GroupRef, Operation};

/// Kind of a transform (`regex` or `mask`), and comparison operator of a filter: the rules
/// file's own types, so the CRD and the file cannot name them differently.
pub use pg_flo_config::rules::{FilterOperator, TransformType};

/// Transforms, filters and column exclusions the worker of a ReplicationGroup applies to the
/// changes of one source table, in list order, before routing.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pgflo.io",
    version = "v1alpha1",
    kind = "Rule",
    namespaced,
    doc = "Transforms, filters and column exclusions of one source table (pg_flo rules).",
    status = "RuleStatus",
    shortname = "pgrule",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupRef.name"),
    printcolumn(name = "Table", type_ = "string", json_path = ".spec.table"),
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
pub struct RuleSpec {
    /// The ReplicationGroup (same namespace) whose worker applies the rules.
    pub group_ref: GroupRef,
    /// Source table the rules apply to: a bare name (any schema) or `schema.table`.
    #[schemars(length(min = 1))]
    pub table: String,
    /// Rules, applied in order.
    #[schemars(length(min = 1))]
    pub rules: Vec<RuleItem>,
}

/// Kind of a rule.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RuleType {
    /// Rewrite the values of a text-like column (`transform` must be set).
    Transform,
    /// Keep only the changes whose column value passes a comparison (`filter` must be set).
    Filter,
    /// Remove the column from every change.
    ExcludeColumn,
}

/// One rule: pg_flo's `type`/`column`/`parameters` entry with typed parameters.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'transform' || has(self.transform)", "message": "a transform rule needs `transform`"},
    {"rule": "self.type != 'filter' || has(self.filter)", "message": "a filter rule needs `filter`"},
    {"rule": "!has(self.transform) || self.type == 'transform'", "message": "`transform` is only valid on a transform rule"},
    {"rule": "!has(self.filter) || self.type == 'filter'", "message": "`filter` is only valid on a filter rule"}
]))]
pub struct RuleItem {
    /// Kind of the rule.
    #[serde(rename = "type")]
    pub type_: RuleType,
    /// Column the rule reads or rewrites.
    #[schemars(length(min = 1))]
    pub column: String,
    /// Parameters of a `transform` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformParams>,
    /// Parameters of a `filter` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterParams>,
    /// Changes the rule applies to (default: all of INSERT, UPDATE, DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<Operation>>,
    /// When true the rule does not apply to DELETEs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty_deletes: Option<bool>,
}

/// Parameters of a transform rule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'regex' || (has(self.pattern) && has(self.replace))", "message": "a regex transform needs `pattern` and `replace`"},
    {"rule": "self.type != 'mask' || has(self.maskChar)", "message": "a mask transform needs `maskChar`"}
]))]
pub struct TransformParams {
    /// Kind of the transform.
    #[serde(rename = "type")]
    pub type_: TransformType,
    /// Regular expression (regex transforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Replacement (regex transforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// Mask character (mask transforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1))]
    pub mask_char: Option<String>,
}

/// Parameters of a filter rule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterParams {
    /// Comparison operator.
    pub operator: FilterOperator,
    /// Value compared with (parsed according to the column type).
    pub value: String,
}

impl RuleItem {
    /// The rule as pg_flo's rules file writes it (`type`, `column`, `parameters`, ...): what
    /// the worker runs, and what [`file::Rule::check`] validates.
    pub fn file_rule(&self) -> file::Rule {
        let mut parameters = file::Parameters::default();
        let text = |s: &Option<String>| s.clone().map(|s| Scalar::from(s).into());
        if let Some(t) = &self.transform {
            parameters.transform = Some(t.type_.into());
            parameters.pattern = text(&t.pattern);
            parameters.replace = text(&t.replace);
            parameters.mask_char = text(&t.mask_char);
        }
        if let Some(f) = &self.filter {
            parameters.operator = Some(f.operator.into());
            parameters.value = Some(Scalar::from(f.value.clone()).into());
        }
        let kind = match self.type_ {
            RuleType::Transform => file::RuleType::Transform,
            RuleType::Filter => file::RuleType::Filter,
            RuleType::ExcludeColumn => file::RuleType::ExcludeColumn,
        };
        file::Rule {
            kind: Some(kind.into()),
            column: Some(self.column.clone().into()),
            parameters: (parameters != file::Parameters::default()).then(|| parameters.into()),
            applies_to: file::AppliesTo {
                operations: self
                    .operations
                    .as_ref()
                    .map(|ops| ops.iter().map(|&op| op.into()).collect()),
                allow_empty_deletes: self.allow_empty_deletes.map(Into::into),
            },
            ..file::Rule::default()
        }
    }
}

/// Observed state of a Rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatus {
    /// `metadata.generation` the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; `Accepted` tells whether the worker took the rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
