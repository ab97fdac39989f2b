//! Validation of a rules file: [`parse`] / [`RulesFile::validate`] for a file (every problem at
//! once, messages naming file, table and rule), [`Rule::check`] for one rule (structured
//! problems, for the operator to present in its resource's terms).

use serde_yaml::Value;

use super::{FilterOperator, Parameters, Rule, RuleType, RulesFile, TransformType};
use crate::lenient::{untag, Lenient, Scalar};
use crate::operation::{Operation, OperationList, OperationSet};

/// The rules of a file, validated, in file order.
#[derive(Debug, Default)]
pub struct ValidRules {
    pub tables: Vec<TableRules>,
}

/// The rules of one `tables` key.
#[derive(Debug)]
pub struct TableRules {
    /// The key: a bare table name or `schema.table`.
    pub table: String,
    pub rules: Vec<ValidRule>,
}

/// A rule that passed validation.
#[derive(Debug)]
pub struct ValidRule {
    pub column: String,
    /// Only INSERT, UPDATE and DELETE are meaningful; DELETE is off with `allow_empty_deletes`.
    pub operations: OperationSet,
    pub action: Action,
}

/// What a valid rule does.
#[derive(Debug)]
pub enum Action {
    /// Replace every match of `pattern` with `replace`.
    Regex {
        pattern: regex::bytes::Regex,
        replace: String,
    },
    /// Keep the first and last character, replace every other with `mask_char`.
    Mask { mask_char: String },
    /// Keep the changes whose column value compares with `value` as `operator` says.
    Filter {
        operator: FilterOperator,
        value: String,
    },
    /// Remove the column.
    ExcludeColumn,
}

/// A problem of one rule (the runtime refuses the file; the operator the Rule).
#[derive(Debug, thiserror::Error)]
pub enum RuleProblem {
    #[error("a rule must be a mapping")]
    NotAMapping,
    #[error("`parameters` must be a mapping")]
    ParametersNotAMapping,
    #[error("missing `column`")]
    MissingColumn,
    #[error("`column` must be a non-empty string")]
    BadColumn,
    #[error("`operations` must be a list of INSERT, UPDATE, DELETE, TRUNCATE")]
    OperationsNotAList,
    #[error("unknown operation {0} (expected INSERT, UPDATE, DELETE or TRUNCATE)")]
    UnknownOperation(String),
    #[error("`operations` is given both at rule level and in `parameters`, with different values")]
    OperationsDisagree,
    #[error("`allow_empty_deletes` must be true or false")]
    BadAllowEmptyDeletes,
    #[error("missing `type` (transform, filter or exclude_column)")]
    MissingType,
    #[error("unknown rule type {0} (expected transform, filter or exclude_column)")]
    UnknownType(String),
    #[error("missing parameter `type` (regex or mask)")]
    MissingTransformType,
    #[error("unknown transform type {0} (expected regex or mask)")]
    UnknownTransformType(String),
    #[error("missing parameter `{0}`")]
    MissingParameter(&'static str),
    #[error("parameter `{0}` must be a string")]
    ParameterNotAString(&'static str),
    /// The pattern does not compile (the regex error's text is part of the message, as
    /// pg_flo's users know it).
    #[error("invalid regex pattern: {0}")]
    InvalidRegex(regex::Error),
    #[error("parameter `mask_char` must not be empty")]
    EmptyMaskChar,
    #[error("unknown filter operator {0} (expected eq, ne, gt, lt, gte, lte or contains)")]
    UnknownOperator(String),
    #[error("parameter `value` must be a string, number or boolean")]
    ValueNotScalar,
}

/// What validation of one rule ignores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleWarning {
    #[error("unknown key {0} ignored")]
    UnknownKey(String),
    #[error("unknown parameter {0} ignored")]
    UnknownParameter(String),
    #[error("the rule applies to no operation (INSERT, UPDATE or DELETE); it never does anything")]
    NoOperation,
}

/// The outcome of [`Rule::check`].
#[derive(Debug)]
pub struct RuleCheck {
    /// The valid rule, when there is no problem.
    pub rule: Option<ValidRule>,
    pub problems: Vec<RuleProblem>,
    pub warnings: Vec<RuleWarning>,
}

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
    /// Metric label / log category.
    pub fn category(&self) -> &'static str {
        match self {
            RulesError::Read { .. } => "rules_read",
            RulesError::Yaml { .. } => "rules_yaml",
            RulesError::Invalid { .. } => "rules_invalid",
        }
    }
}

/// Parses and validates a rules document; `file` names it in messages. Returns the rules and
/// the warnings to log, or every problem.
pub fn parse(file: &str, yaml: &str) -> Result<(ValidRules, Vec<String>), RulesError> {
    let yaml_error = |source| RulesError::Yaml {
        path: file.to_owned(),
        source,
    };
    // Through a Value: YAML errors (duplicate keys included) stay YAML errors; tags are removed
    // (a tagged value is read as its value).
    let value: Value = untag(serde_yaml::from_str(yaml).map_err(yaml_error)?);
    let doc: Lenient<Option<RulesFile>> = serde_yaml::from_value(value).map_err(yaml_error)?;
    match doc {
        Lenient::Typed(Some(rules)) => rules.validate(file),
        Lenient::Typed(None) => Ok((ValidRules::default(), vec![no_tables(file)])),
        Lenient::Other(_) => Err(RulesError::Invalid {
            path: file.to_owned(),
            problems: vec![format!(
                "{file}: the document must be a mapping with a `tables` key"
            )],
        }),
    }
}

fn no_tables(file: &str) -> String {
    format!("{file}: no `tables` key; no rules are applied")
}

impl RulesFile {
    /// Validates every rule; see [`parse`].
    pub fn validate(&self, file: &str) -> Result<(ValidRules, Vec<String>), RulesError> {
        let mut warnings: Vec<String> = self
            .unknown
            .keys()
            .map(|k| format!("{file}: unknown key {} ignored", describe(k)))
            .collect();
        let tables = match &self.tables {
            None => {
                warnings.push(no_tables(file));
                return Ok((ValidRules::default(), warnings));
            }
            Some(Lenient::Typed(tables)) => tables,
            Some(Lenient::Other(_)) => {
                return Err(RulesError::Invalid {
                    path: file.to_owned(),
                    problems: vec![format!(
                        "{file}: `tables` must map table names to lists of rules"
                    )],
                })
            }
        };
        let mut valid = ValidRules::default();
        let mut problems = Vec::new();
        for (key, list) in tables {
            let table = match key {
                Lenient::Typed(table) => table,
                Lenient::Other(key) => {
                    problems.push(format!(
                        "{file}: table name {} is not a string",
                        describe(key)
                    ));
                    continue;
                }
            };
            let list = match list {
                Lenient::Typed(list) => list.as_deref().unwrap_or_default(),
                Lenient::Other(_) => {
                    problems.push(format!("{file}: table {table}: rules must be a list"));
                    continue;
                }
            };
            let mut rules = Vec::with_capacity(list.len());
            for (i, rule) in list.iter().enumerate() {
                let at = format!("{file}: table {table}, rule #{}", i + 1);
                let check = match rule {
                    Lenient::Typed(rule) => rule.check(),
                    Lenient::Other(_) => RuleCheck {
                        rule: None,
                        problems: vec![RuleProblem::NotAMapping],
                        warnings: Vec::new(),
                    },
                };
                warnings.extend(check.warnings.iter().map(|w| format!("{at}: {w}")));
                problems.extend(check.problems.iter().map(|p| format!("{at}: {p}")));
                rules.extend(check.rule);
            }
            valid.tables.push(TableRules {
                table: table.clone(),
                rules,
            });
        }
        if problems.is_empty() {
            Ok((valid, warnings))
        } else {
            Err(RulesError::Invalid {
                path: file.to_owned(),
                problems,
            })
        }
    }
}

/// The parameters that are not `operations` / `allow_empty_deletes`, by name.
const TYPED_PARAMS: [&str; 6] = [
    "mask_char",
    "operator",
    "pattern",
    "replace",
    "type",
    "value",
];

impl Parameters {
    /// Whether the typed parameter `name` (one of [`TYPED_PARAMS`]) is present.
    fn has(&self, name: &str) -> bool {
        match name {
            "mask_char" => self.mask_char.is_some(),
            "operator" => self.operator.is_some(),
            "pattern" => self.pattern.is_some(),
            "replace" => self.replace.is_some(),
            "type" => self.transform.is_some(),
            "value" => self.value.is_some(),
            _ => false,
        }
    }
}

impl Rule {
    /// Validates the rule: the valid rule, or every problem; and the warnings.
    pub fn check(&self) -> RuleCheck {
        let mut problems = Vec::new();
        let mut warnings: Vec<RuleWarning> = self
            .unknown
            .keys()
            .map(|k| RuleWarning::UnknownKey(describe(k)))
            .collect();
        let empty = Parameters::default();
        let params = match &self.parameters {
            None => &empty,
            Some(Lenient::Typed(params)) => params,
            Some(Lenient::Other(_)) => {
                problems.push(RuleProblem::ParametersNotAMapping);
                &empty
            }
        };
        let column = match &self.column {
            None => {
                problems.push(RuleProblem::MissingColumn);
                None
            }
            Some(Lenient::Typed(c)) if !c.is_empty() => Some(c.clone()),
            Some(_) => {
                problems.push(RuleProblem::BadColumn);
                None
            }
        };
        let operations = rule_operations(
            self.applies_to.operations.as_ref(),
            params.applies_to.operations.as_ref(),
            &mut problems,
        );
        let allow_empty_deletes = [
            &self.applies_to.allow_empty_deletes,
            &params.applies_to.allow_empty_deletes,
        ]
        .into_iter()
        .flatten()
        .fold(false, |acc, v| match v {
            Lenient::Typed(b) => acc || *b,
            Lenient::Other(_) => {
                problems.push(RuleProblem::BadAllowEmptyDeletes);
                acc
            }
        });
        let operations = operations.map(|mut ops| {
            if allow_empty_deletes {
                ops.delete = false;
            }
            ops
        });
        let (action, known) = action(self.kind.as_ref(), params, &mut problems);
        for name in TYPED_PARAMS {
            if params.has(name) && !known.contains(&name) {
                warnings.push(RuleWarning::UnknownParameter(format!("\"{name}\"")));
            }
        }
        warnings.extend(
            params
                .unknown
                .keys()
                .map(|k| RuleWarning::UnknownParameter(describe(k))),
        );
        let no_operation = operations.is_some_and(|o| !(o.insert || o.update || o.delete));
        if no_operation && problems.is_empty() {
            warnings.push(RuleWarning::NoOperation);
        }
        let rule = match (column, operations, action) {
            (Some(column), Some(operations), Some(action)) if problems.is_empty() => {
                Some(ValidRule {
                    column,
                    operations,
                    action,
                })
            }
            _ => None,
        };
        RuleCheck {
            rule,
            problems,
            warnings,
        }
    }
}

/// The action of a rule and the parameters its type takes.
fn action(
    kind: Option<&Lenient<RuleType>>,
    params: &Parameters,
    problems: &mut Vec<RuleProblem>,
) -> (Option<Action>, &'static [&'static str]) {
    match kind {
        None => {
            problems.push(RuleProblem::MissingType);
            (None, &[])
        }
        Some(Lenient::Typed(RuleType::Transform)) => match &params.transform {
            None => {
                problems.push(RuleProblem::MissingTransformType);
                (None, &["type"])
            }
            Some(Lenient::Typed(TransformType::Regex)) => {
                let pattern = text("pattern", &params.pattern, problems);
                let replace = text("replace", &params.replace, problems);
                let pattern = pattern.and_then(|p| match regex::bytes::Regex::new(&p) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        problems.push(RuleProblem::InvalidRegex(e));
                        None
                    }
                });
                let action = pattern
                    .zip(replace)
                    .map(|(pattern, replace)| Action::Regex { pattern, replace });
                (action, &["type", "pattern", "replace"])
            }
            Some(Lenient::Typed(TransformType::Mask)) => {
                let action = match text("mask_char", &params.mask_char, problems) {
                    Some(m) if m.is_empty() => {
                        problems.push(RuleProblem::EmptyMaskChar);
                        None
                    }
                    Some(mask_char) => Some(Action::Mask { mask_char }),
                    None => None,
                };
                (action, &["type", "mask_char"])
            }
            Some(Lenient::Other(t)) => {
                problems.push(RuleProblem::UnknownTransformType(describe(t)));
                (None, &["type", "pattern", "replace", "mask_char"])
            }
        },
        Some(Lenient::Typed(RuleType::Filter)) => {
            let operator = match &params.operator {
                None => {
                    problems.push(RuleProblem::MissingParameter("operator"));
                    None
                }
                Some(Lenient::Typed(op)) => Some(*op),
                Some(Lenient::Other(o)) => {
                    problems.push(RuleProblem::UnknownOperator(describe(o)));
                    None
                }
            };
            let value = match &params.value {
                None => {
                    problems.push(RuleProblem::MissingParameter("value"));
                    None
                }
                Some(Lenient::Typed(v)) => Some(v.text()),
                Some(Lenient::Other(_)) => {
                    problems.push(RuleProblem::ValueNotScalar);
                    None
                }
            };
            let action = operator
                .zip(value)
                .map(|(operator, value)| Action::Filter { operator, value });
            (action, &["operator", "value"])
        }
        Some(Lenient::Typed(RuleType::ExcludeColumn)) => (Some(Action::ExcludeColumn), &[]),
        Some(Lenient::Other(t)) => {
            problems.push(RuleProblem::UnknownType(describe(t)));
            (None, &[])
        }
    }
}

/// A text parameter: any scalar, as text.
fn text(
    name: &'static str,
    value: &Option<Lenient<Scalar>>,
    problems: &mut Vec<RuleProblem>,
) -> Option<String> {
    match value {
        None => {
            problems.push(RuleProblem::MissingParameter(name));
            None
        }
        Some(Lenient::Typed(s)) => Some(s.text()),
        Some(Lenient::Other(_)) => {
            problems.push(RuleProblem::ParameterNotAString(name));
            None
        }
    }
}

/// `operations` from rule level and/or `parameters`; absent = INSERT, UPDATE, DELETE.
fn rule_operations(
    rule_level: Option<&OperationList>,
    in_params: Option<&OperationList>,
    problems: &mut Vec<RuleProblem>,
) -> Option<OperationSet> {
    match (rule_level, in_params) {
        (None, None) => Some(OperationSet::ALL),
        (Some(list), None) | (None, Some(list)) => operation_set(list, problems),
        (Some(a), Some(b)) => {
            let a = operation_set(a, problems)?;
            let b = operation_set(b, problems)?;
            if a != b {
                problems.push(RuleProblem::OperationsDisagree);
                return None;
            }
            Some(a)
        }
    }
}

/// A rule's operations: INSERT, UPDATE, DELETE; TRUNCATE is accepted (truncates are never
/// filtered or transformed); anything else is a problem.
fn operation_set(list: &OperationList, problems: &mut Vec<RuleProblem>) -> Option<OperationSet> {
    let items = match list {
        OperationList::Many(items) => items.as_slice(),
        OperationList::One(item @ Lenient::Typed(_)) => std::slice::from_ref(item),
        OperationList::One(item @ Lenient::Other(Value::String(_))) => std::slice::from_ref(item),
        OperationList::One(Lenient::Other(_)) => {
            problems.push(RuleProblem::OperationsNotAList);
            return None;
        }
    };
    let mut set = OperationSet::NONE;
    let mut ok = true;
    for item in items {
        match item {
            Lenient::Typed(op @ (Operation::Insert | Operation::Update | Operation::Delete)) => {
                set.insert(*op);
            }
            Lenient::Typed(Operation::Truncate) => {}
            Lenient::Typed(op @ Operation::Ddl) => {
                problems.push(RuleProblem::UnknownOperation(format!(
                    "\"{}\"",
                    op.as_str()
                )));
                ok = false;
            }
            Lenient::Other(v) => {
                problems.push(RuleProblem::UnknownOperation(describe(v)));
                ok = false;
            }
        }
    }
    ok.then_some(set)
}

/// A key or value as the file has it, for messages: strings in double quotes, anything else
/// as YAML.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{s}\""),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "(unprintable)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::AppliesTo;

    fn rule(yaml: &str) -> Rule {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_rendered_file_reads_back_as_written() {
        let file = RulesFile::new([(
            "public.users".to_owned(),
            vec![
                Rule {
                    kind: Some(RuleType::Transform.into()),
                    column: Some("email".to_owned().into()),
                    parameters: Some(
                        Parameters {
                            transform: Some(TransformType::Regex.into()),
                            pattern: Some(Scalar::from("^(.).*$").into()),
                            replace: Some(Scalar::from("$1*").into()),
                            ..Parameters::default()
                        }
                        .into(),
                    ),
                    applies_to: AppliesTo {
                        operations: Some([Operation::Insert].into_iter().collect()),
                        ..AppliesTo::default()
                    },
                    ..Rule::default()
                },
                Rule {
                    kind: Some(RuleType::Filter.into()),
                    column: Some("age".to_owned().into()),
                    parameters: Some(
                        Parameters {
                            operator: Some(FilterOperator::Gte.into()),
                            value: Some(Scalar::from("18").into()),
                            ..Parameters::default()
                        }
                        .into(),
                    ),
                    applies_to: AppliesTo {
                        allow_empty_deletes: Some(true.into()),
                        ..AppliesTo::default()
                    },
                    ..Rule::default()
                },
            ],
        )]);
        let yaml = serde_yaml::to_string(&file).unwrap();
        assert_eq!(
            yaml,
            "tables:\n  public.users:\n  - type: transform\n    column: email\n    parameters:\n      pattern: ^(.).*$\n      replace: $1*\n      type: regex\n    operations:\n    - INSERT\n  - type: filter\n    column: age\n    parameters:\n      operator: gte\n      value: '18'\n    allow_empty_deletes: true\n"
        );
        let (valid, warnings) = parse("r.yaml", &yaml).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(valid.tables.len(), 1);
        let rules = &valid.tables[0].rules;
        assert!(matches!(&rules[0].action, Action::Regex { replace, .. } if replace == "$1*"));
        assert!(!rules[0].operations.update);
        assert!(matches!(
            &rules[1].action,
            Action::Filter { operator: FilterOperator::Gte, value } if value == "18"
        ));
        assert!(rules[1].operations.insert && !rules[1].operations.delete);
    }

    #[test]
    fn check_reports_structured_problems() {
        #[allow(clippy::invalid_regex)] // the invalid pattern is the point
        let check = rule(
            "{type: transform, column: c, parameters: {type: regex, pattern: '(x', replace: y}}",
        )
        .check();
        assert!(matches!(check.problems[..], [RuleProblem::InvalidRegex(_)]));
        assert!(check.rule.is_none());
        let check =
            rule("{type: filter, column: c, parameters: {operator: like, value: 1}}").check();
        assert_eq!(
            check.problems[0].to_string(),
            "unknown filter operator \"like\" (expected eq, ne, gt, lt, gte, lte or contains)"
        );
        let check = rule("{type: exclude_column, column: c, operations: [DDL, TRUNCATE]}").check();
        assert_eq!(
            check.problems[0].to_string(),
            "unknown operation \"DDL\" (expected INSERT, UPDATE, DELETE or TRUNCATE)"
        );
        let check = rule("{type: exclude_column, column: c, operations: 3}").check();
        assert!(matches!(
            check.problems[..],
            [RuleProblem::OperationsNotAList]
        ));
        let check = rule("{type: exclude_column, column: c, allow_empty_deletes: null}").check();
        assert!(matches!(
            check.problems[..],
            [RuleProblem::BadAllowEmptyDeletes]
        ));
        let check = rule(
            "{type: filter, column: c, parameters: {operator: eq, value: 1.50, type: x, mask_char: '*', z: 1}}",
        )
        .check();
        assert!(check.problems.is_empty());
        assert!(
            matches!(&check.rule.unwrap().action, Action::Filter { value, .. } if value == "1.5")
        );
        assert_eq!(
            check.warnings,
            [
                RuleWarning::UnknownParameter("\"mask_char\"".into()),
                RuleWarning::UnknownParameter("\"type\"".into()),
                RuleWarning::UnknownParameter("\"z\"".into()),
            ]
        );
    }

    /// Found by runtime/tests/config_properties.rs: a tagged value failed the whole file with
    /// serde's "untagged and internally tagged enums do not support enum input", naming no
    /// table or rule.
    #[test]
    fn tagged_values_are_read_as_their_values() {
        let (valid, _) = parse(
            "r.yaml",
            "tables:\n  !t t:\n    - {type: filter, column: !c c, parameters: {operator: !o eq, value: !v 18}}\n",
        )
        .unwrap();
        assert_eq!(valid.tables[0].table, "t");
        assert!(matches!(
            &valid.tables[0].rules[0].action,
            Action::Filter { operator: FilterOperator::Eq, value } if value == "18"
        ));
        let Err(RulesError::Invalid { problems, .. }) = parse(
            "r.yaml",
            "tables:\n  t:\n    - {type: filter, column: c, parameters: {operator: !o like, value: !secret s3cr3t}}\n",
        ) else {
            panic!()
        };
        assert_eq!(
            problems,
            ["r.yaml: table t, rule #1: unknown filter operator \"like\" (expected eq, ne, gt, lt, gte, lte or contains)"]
        );
    }

    #[test]
    fn documents_that_are_not_rules_files() {
        assert!(matches!(
            parse("r.yaml", "tables:\n  a: []\n  a: []\n"),
            Err(RulesError::Yaml { .. })
        ));
        let (rules, warnings) = parse("r.yaml", "# nothing\n").unwrap();
        assert!(rules.tables.is_empty());
        assert_eq!(warnings, ["r.yaml: no `tables` key; no rules are applied"]);
        let Err(RulesError::Invalid { problems, .. }) = parse("r.yaml", "tables: [a]\n") else {
            panic!()
        };
        assert_eq!(
            problems,
            ["r.yaml: `tables` must map table names to lists of rules"]
        );
        let Err(RulesError::Invalid { problems, .. }) =
            parse("r.yaml", "tables:\n  3: []\n  t: [1]\n")
        else {
            panic!()
        };
        assert_eq!(
            problems,
            [
                "r.yaml: table name 3 is not a string",
                "r.yaml: table t, rule #1: a rule must be a mapping"
            ]
        );
    }
}
