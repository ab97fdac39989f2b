//! Kinds of change, as the rules and routing files name them in `operations`.

use serde::{Deserialize, Serialize};

use crate::lenient::Lenient;

/// A kind of change. Read case-insensitively (`insert` = `INSERT`), written in capitals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Operation {
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `TRUNCATE`.
    Truncate,
    /// `DDL` (routing only).
    Ddl,
}

impl Operation {
    /// The name as written by the operator and shown in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Truncate => "TRUNCATE",
            Operation::Ddl => "DDL",
        }
    }
}

impl TryFrom<String> for Operation {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "INSERT" => Operation::Insert,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "TRUNCATE" => Operation::Truncate,
            "DDL" => Operation::Ddl,
            _ => return Err(format!("unknown operation {name:?}")),
        })
    }
}

impl From<Operation> for String {
    fn from(op: Operation) -> String {
        op.as_str().to_owned()
    }
}

/// `operations` as written: a list, or (accepted by rules files) a single name.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OperationList {
    /// `[INSERT, UPDATE]`.
    Many(Vec<Lenient<Operation>>),
    /// `INSERT`, or anything else that is not a list.
    One(Lenient<Operation>),
}

impl FromIterator<Operation> for OperationList {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        OperationList::Many(iter.into_iter().map(Lenient::Typed).collect())
    }
}

/// The kinds of change a rule or a route applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperationSet {
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    pub ddl: bool,
}

impl OperationSet {
    /// Every kind of change.
    pub const ALL: OperationSet = OperationSet {
        insert: true,
        update: true,
        delete: true,
        truncate: true,
        ddl: true,
    };
    /// No kind of change.
    pub const NONE: OperationSet = OperationSet {
        insert: false,
        update: false,
        delete: false,
        truncate: false,
        ddl: false,
    };

    /// Whether the set holds `op`.
    pub fn contains(self, op: Operation) -> bool {
        *self.flag(op)
    }

    /// Adds `op`.
    pub fn insert(&mut self, op: Operation) {
        *self.flag_mut(op) = true;
    }

    fn flag(&self, op: Operation) -> &bool {
        match op {
            Operation::Insert => &self.insert,
            Operation::Update => &self.update,
            Operation::Delete => &self.delete,
            Operation::Truncate => &self.truncate,
            Operation::Ddl => &self.ddl,
        }
    }

    fn flag_mut(&mut self, op: Operation) -> &mut bool {
        match op {
            Operation::Insert => &mut self.insert,
            Operation::Update => &mut self.update,
            Operation::Delete => &mut self.delete,
            Operation::Truncate => &mut self.truncate,
            Operation::Ddl => &mut self.ddl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_written_in_capitals() {
        let list: OperationList = serde_yaml::from_str("[insert, Ddl, UPSERT, 3]").unwrap();
        let OperationList::Many(items) = &list else {
            panic!("{list:?}")
        };
        assert_eq!(items[0], Lenient::Typed(Operation::Insert));
        assert_eq!(items[1], Lenient::Typed(Operation::Ddl));
        assert!(matches!(items[2], Lenient::Other(_)));
        assert!(matches!(items[3], Lenient::Other(_)));
        let one: OperationList = serde_yaml::from_str("delete").unwrap();
        assert_eq!(one, OperationList::One(Lenient::Typed(Operation::Delete)));
        let written: OperationList = [Operation::Insert, Operation::Truncate]
            .into_iter()
            .collect();
        assert_eq!(
            serde_yaml::to_string(&written).unwrap(),
            "- INSERT\n- TRUNCATE\n"
        );
        let mut set = OperationSet::NONE;
        set.insert(Operation::Update);
        assert!(set.contains(Operation::Update) && !set.contains(Operation::Insert));
    }
}
