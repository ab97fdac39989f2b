//! The rules file (`--rules-config`): its model as serde types and its validation, shared by
//! the runtime (which parses a file and then compiles the [`ValidRules`]) and the operator
//! (which renders Rule resources into a [`RulesFile`] and checks each [`Rule`] with the same
//! [`Rule::check`]).
//!
//! The format is pg_flo's:
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
//! Validation reports every problem at once, each as `<file>: table <t>, rule #<n>: <problem>`
//! (`n` from 1), and returns warnings for what is ignored: unknown keys and parameters, a file
//! without `tables`, a rule that applies to no operation. `operations` may be given at rule
//! level or inside `parameters` (where pg_flo's files put it); both must then agree.
//! `allow_empty_deletes` (either level) makes the rule skip DELETEs. What the rules do is the
//! runtime's (`pg_flo::worker::rules`).
//!
//! This module holds the model; `check` the validation and what it yields.

mod check;

use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

pub use check::{
    parse, Action, RuleCheck, RuleProblem, RuleWarning, RulesError, TableRules, ValidRule,
    ValidRules,
};

use crate::lenient::{present, Entries, Lenient, Scalar};
use crate::operation::OperationList;

/// The rules file: `tables`, and any other key (ignored, with a warning).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct RulesFile {
    /// Table (a bare name, any schema, or `schema.table`) -> its rules, in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Lenient<Tables>>,
    /// Keys other than `tables`.
    #[serde(flatten)]
    pub unknown: Mapping,
}

/// The `tables` mapping: table name -> list of rules (null: none).
pub type Tables = Entries<Lenient<String>, Lenient<Option<Vec<Lenient<Rule>>>>>;

impl RulesFile {
    /// A rules file of the given tables and rules, in that order.
    pub fn new(tables: impl IntoIterator<Item = (String, Vec<Rule>)>) -> RulesFile {
        let tables = tables
            .into_iter()
            .map(|(table, rules)| {
                let rules = rules.into_iter().map(Lenient::Typed).collect();
                (Lenient::Typed(table), Lenient::Typed(Some(rules)))
            })
            .collect();
        RulesFile {
            tables: Some(Lenient::Typed(tables)),
            unknown: Mapping::new(),
        }
    }
}

/// One rule, as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Rule {
    /// `transform`, `filter` or `exclude_column`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Lenient<RuleType>>,
    /// The column the rule reads, rewrites or removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<Lenient<String>>,
    /// The rule's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Lenient<Parameters>>,
    /// Which changes the rule applies to (rule level).
    #[serde(flatten)]
    pub applies_to: AppliesTo,
    /// Other keys.
    #[serde(flatten)]
    pub unknown: Mapping,
}

/// The parameters of a rule; which apply depends on the rule's type. Fields are in the order
/// they are written (alphabetical).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Parameters {
    /// Mask transform: the character (or string) replacing every character but the first and
    /// last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_char: Option<Lenient<Scalar>>,
    /// Filter: the comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Lenient<FilterOperator>>,
    /// Regex transform: the pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Lenient<Scalar>>,
    /// Regex transform: the replacement (`$1`, `${name}` expand, `$$` is `$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Lenient<Scalar>>,
    /// Transform: `regex` or `mask`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Lenient<TransformType>>,
    /// Filter: the value compared with (a string, number or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Lenient<Scalar>>,
    /// Which changes the rule applies to, as at rule level (where pg_flo's files put it).
    #[serde(flatten)]
    pub applies_to: AppliesTo,
    /// Other keys.
    #[serde(flatten)]
    pub unknown: Mapping,
}

/// The keys that say which changes a rule applies to; a rule may give them at rule level or
/// inside `parameters` (both levels are read, see [`Rule::check`]).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct AppliesTo {
    /// Kinds of change the rule applies to (default: INSERT, UPDATE, DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<OperationList>,
    /// `true`: the rule does not apply to DELETEs.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_empty_deletes: Option<Lenient<bool>>,
}

/// Kind of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    /// Rewrite the values of a text-like column.
    Transform,
    /// Keep only the changes whose column value passes a comparison.
    Filter,
    /// Remove the column from every change.
    ExcludeColumn,
}

/// Kind of a transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TransformType {
    /// Replace every match of `pattern` with `replace` (`$1`, `${name}` expand).
    Regex,
    /// Keep the first and last character and replace the others with the mask character
    /// (`mask_char`; `maskChar` in a Rule).
    Mask,
}

/// Comparison operator of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FilterOperator {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater than or equal.
    Gte,
    /// Less than or equal.
    Lte,
    /// Case-sensitive substring of the text form.
    Contains,
}
