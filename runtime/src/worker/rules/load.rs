//! Loading: a rules file is read, parsed and validated by the shared model
//! ([`pg_flo_config::rules::parse`], every problem at once, warnings for what it ignores), then
//! compiled into [`Rules`]: filter values pre-parsed for every column type, tables indexed by
//! name. Compiling cannot fail: whatever the model accepts, the worker runs.

use std::path::Path;

use pg_flo_config::rules::{self as model, ValidRules};

use super::compare::Filter;
use super::{Action, Rule, Rules, RulesError, TableRules};

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
        let (valid, warnings) = model::parse(path_for_messages, yaml)?;
        Ok((Rules::compile(valid), warnings))
    }

    /// The rules of a valid file, ready to apply.
    fn compile(valid: ValidRules) -> Rules {
        let mut rules = Rules::default();
        for model::TableRules { table, rules: list } in valid.tables {
            let index = rules.entries.len();
            rules.entries.push(TableRules {
                rules: list.into_iter().map(compile_rule).collect(),
            });
            if let Some((schema, bare)) = table.split_once('.') {
                rules
                    .by_table
                    .entry(bare.to_string())
                    .or_default()
                    .push((Some(schema.to_string()), index));
            }
            rules.by_table.entry(table).or_default().push((None, index));
        }
        rules
    }
}

fn compile_rule(rule: model::ValidRule) -> Rule {
    let action = match rule.action {
        model::Action::Regex { pattern, replace } => Action::Regex {
            re: pattern,
            replace: replace.into_bytes(),
        },
        model::Action::Mask { mask_char } => Action::Mask { mask: mask_char },
        model::Action::Filter { operator, value } => Action::Filter(Filter::new(operator, value)),
        model::Action::ExcludeColumn => Action::Exclude,
    };
    Rule {
        column: rule.column,
        ops: rule.operations,
        action,
    }
}
