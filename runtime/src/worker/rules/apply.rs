//! Applying the rules to a batch: per relation and kind of change, a [`Plan`] resolved against
//! the relation's columns once per batch, then run on each change (transforms rewrite values,
//! filters drop changes, exclusions prune columns and give the relation a new shape).

use std::borrow::Cow;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;

use pg_flo_config::operation::Operation;

use super::compare::{is_text_like, Class, Filter};
use super::{Action, Rule, Rules};
use crate::message::{Change, ChangeBatch, KeyKind, OldKind, Op, Relation, ReplicationKey, Value};

/// The kind of change of `op` when rules can touch it (TRUNCATE and DDL never are).
fn slot(op: Op) -> Option<Operation> {
    match op {
        Op::Insert => Some(Operation::Insert),
        Op::Update => Some(Operation::Update),
        Op::Delete => Some(Operation::Delete),
        Op::Truncate | Op::Ddl => None,
    }
}

impl Rules {
    /// The rules of a relation, in file order.
    fn rules_for(&self, rel: &Relation) -> Vec<&Rule> {
        let Some(keys) = self.by_table.get(&rel.table) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|(schema, _)| schema.as_deref().is_none_or(|s| s == rel.schema))
            .filter_map(|(_, i)| self.entries.get(*i))
            .flat_map(|t| t.rules.iter())
            .collect()
    }

    /// Applies every matching rule to every change of the batch, in place: transforms rewrite
    /// values, filters drop changes, exclude_column removes columns (from the relation and the
    /// values). Changes of tables without rules are untouched (a batch without such tables is
    /// not touched at all).
    ///
    /// Relations are shared by index; a table whose rules change its columns gets a new,
    /// deduplicated relation per resulting shape, and relations no change refers to any more
    /// are removed (indexes are remapped).
    pub fn apply(&self, batch: &mut ChangeBatch) {
        if self.by_table.is_empty() {
            return;
        }
        let table_rules: Vec<Vec<&Rule>> =
            batch.relations.iter().map(|r| self.rules_for(r)).collect();
        if table_rules.iter().all(Vec::is_empty) {
            return;
        }
        let base = batch.relations.len();
        let mut variants: Vec<Relation> = Vec::new();
        let mut plans: HashMap<(u16, Operation), Plan<'_>> = HashMap::new();
        let changes = std::mem::take(&mut batch.changes);
        let mut kept = Vec::with_capacity(changes.len());
        for mut change in changes {
            let Some(slot) = slot(change.op) else {
                kept.push(change);
                continue;
            };
            let index = change.relation;
            let (Some(rules), Some(rel)) = (
                table_rules.get(usize::from(index)),
                batch.relations.get(usize::from(index)),
            ) else {
                kept.push(change);
                continue;
            };
            if rules.is_empty() {
                kept.push(change);
                continue;
            }
            let plan = match plans.entry((index, slot)) {
                MapEntry::Occupied(e) => e.into_mut(),
                MapEntry::Vacant(e) => {
                    e.insert(Plan::build(index, rel, rules, slot, base, &mut variants))
                }
            };
            if plan.run(&mut change) {
                kept.push(change);
            }
        }
        batch.changes = kept;
        if !variants.is_empty() {
            batch.relations.extend(variants);
            compact_relations(batch);
        }
    }
}

/// What the rules of one table do to one kind of change, resolved against the relation's
/// columns once per batch.
struct Plan<'r> {
    steps: Vec<Step<'r>>,
    /// Which of the relation's columns remain; `None` when all do.
    keep: Option<Vec<bool>>,
    /// Every column was excluded: the change is dropped.
    drop_all: bool,
    /// The (possibly new) relation index for the changes; `None` if it does not fit a `u16`.
    relation: Option<u16>,
}

enum Step<'r> {
    Regex {
        col: usize,
        re: &'r regex::bytes::Regex,
        replace: &'r [u8],
    },
    Mask {
        col: usize,
        mask: &'r str,
    },
    Filter {
        target: Option<Target>,
        filter: &'r Filter,
    },
}

#[derive(Clone, Copy)]
struct Target {
    col: usize,
    class: Class,
}

impl<'r> Plan<'r> {
    fn build(
        index: u16,
        rel: &Relation,
        rules: &[&'r Rule],
        slot: Operation,
        base: usize,
        variants: &mut Vec<Relation>,
    ) -> Plan<'r> {
        let mut present = vec![true; rel.columns.len()];
        let mut steps = Vec::new();
        for rule in rules.iter().filter(|r| r.ops.contains(slot)) {
            let col = rel
                .column_index(&rule.column)
                .filter(|&i| present.get(i).copied().unwrap_or(false));
            let text_col =
                col.filter(|&i| rel.columns.get(i).is_some_and(|c| is_text_like(c.type_oid)));
            match &rule.action {
                Action::Regex { re, replace } => {
                    if let Some(col) = text_col {
                        steps.push(Step::Regex {
                            col,
                            re,
                            replace: replace.as_slice(),
                        });
                    }
                }
                Action::Mask { mask } => {
                    if let Some(col) = text_col {
                        steps.push(Step::Mask { col, mask });
                    }
                }
                Action::Filter(filter) => {
                    let target = col.and_then(|i| {
                        rel.columns.get(i).map(|c| Target {
                            col: i,
                            class: Class::of(c.type_oid),
                        })
                    });
                    steps.push(Step::Filter { target, filter });
                }
                Action::Exclude => {
                    if let Some(p) = col.and_then(|i| present.get_mut(i)) {
                        *p = false;
                    }
                }
            }
        }
        if present.iter().all(|p| *p) {
            return Plan {
                steps,
                keep: None,
                drop_all: false,
                relation: Some(index),
            };
        }
        let drop_all = !present.iter().any(|p| *p);
        let mut shaped = Relation {
            oid: rel.oid,
            schema: rel.schema.clone(),
            table: rel.table.clone(),
            columns: Vec::with_capacity(rel.columns.len()),
            key: rel.key.clone(),
        };
        let mut removed_key = false;
        for (c, keep) in rel.columns.iter().zip(&present) {
            if *keep {
                shaped.columns.push(c.clone());
            } else if rel.key.columns.contains(&c.name) {
                removed_key = true;
            }
        }
        if removed_key {
            shaped.key = ReplicationKey {
                kind: KeyKind::Full,
                columns: Vec::new(),
            };
        }
        let at = match variants.iter().position(|v| *v == shaped) {
            Some(at) => at,
            None => {
                variants.push(shaped);
                variants.len() - 1
            }
        };
        let relation = u16::try_from(base + at).ok();
        if relation.is_none() {
            tracing::error!(
                schema = rel.schema,
                table = rel.table,
                "too many relations in one message to apply exclude_column; its changes are dropped"
            );
        }
        Plan {
            steps,
            keep: Some(present),
            drop_all,
            relation,
        }
    }

    /// Runs the plan on one change; false means the change is dropped.
    fn run(&self, change: &mut Change) -> bool {
        for step in &self.steps {
            match step {
                Step::Regex { col, re, replace } => {
                    rewrite(change, *col, |b| match re.replace_all(b, *replace) {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(v) => Some(v),
                    })
                }
                Step::Mask { col, mask } => rewrite(change, *col, |b| mask_value(b, mask)),
                Step::Filter { target, filter } => {
                    let Some(target) = target else {
                        return false;
                    };
                    if !judge(change, *target, filter) {
                        return false;
                    }
                }
            }
        }
        if self.drop_all {
            return false;
        }
        let Some(relation) = self.relation else {
            return false;
        };
        if let Some(keep) = &self.keep {
            let prune = |values: &mut Vec<Value>| {
                let mut i = 0;
                values.retain(|_| {
                    let k = keep.get(i).copied().unwrap_or(true);
                    i += 1;
                    k
                });
            };
            if let Some(new) = &mut change.new {
                prune(new);
            }
            if let Some((_, old)) = &mut change.old {
                prune(old);
            }
        }
        change.relation = relation;
        true
    }
}

/// Rewrites the text value of column `col` in the new and the old tuple; `f` returns `None`
/// when the value stays as it is. NULL and unchanged TOAST are left alone.
fn rewrite(change: &mut Change, col: usize, f: impl Fn(&[u8]) -> Option<Vec<u8>>) {
    let new = change.new.as_mut().and_then(|v| v.get_mut(col));
    let old = change.old.as_mut().and_then(|(_, v)| v.get_mut(col));
    for value in new.into_iter().chain(old) {
        if let Value::Text(bytes) = value {
            if let Some(out) = f(bytes) {
                *bytes = out.into();
            }
        }
    }
}

/// First and last character kept, every other character replaced by `mask`.
fn mask_value(bytes: &[u8], mask: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let n = text.chars().count();
    if n <= 2 {
        return None;
    }
    let mut chars = text.chars();
    let (first, last) = (chars.next()?, chars.next_back()?);
    let mut out = String::with_capacity(first.len_utf8() + mask.len() * (n - 2) + last.len_utf8());
    out.push(first);
    for _ in 0..n - 2 {
        out.push_str(mask);
    }
    out.push(last);
    Some(out.into_bytes())
}

/// Whether a change passes a filter (see [`Rules`] for missing data).
fn judge(change: &Change, target: Target, filter: &Filter) -> bool {
    let value = match change.op {
        Op::Delete => match &change.old {
            // No data about the deleted row: never dropped for lack of data.
            None => return true,
            // Only the replica-identity key was sent (key columns are never NULL); any other
            // column reads NULL because its value is unknown.
            Some((OldKind::Key, values)) => match values.get(target.col) {
                Some(Value::Text(bytes)) => return filter.matches(target.class, bytes),
                _ => return true,
            },
            Some((OldKind::Full, values)) => values.get(target.col),
        },
        _ => match &change.new {
            None => return true,
            Some(values) => values.get(target.col),
        },
    };
    match value {
        None | Some(Value::UnchangedToast) => true,
        Some(Value::Null) => false,
        Some(Value::Text(bytes)) => filter.matches(target.class, bytes),
    }
}

/// Removes relations no change refers to and remaps the indexes.
fn compact_relations(batch: &mut ChangeBatch) {
    let mut used = vec![false; batch.relations.len()];
    for change in &batch.changes {
        let truncated = change.truncate.iter().flat_map(|t| t.relations.iter());
        for &i in std::iter::once(&change.relation).chain(truncated) {
            if let Some(u) = used.get_mut(usize::from(i)) {
                *u = true;
            }
        }
    }
    if used.iter().all(|u| *u) {
        return;
    }
    let mut remap = vec![0u16; used.len()];
    let mut next = 0u16;
    for (slot, u) in remap.iter_mut().zip(&used) {
        if *u {
            *slot = next;
            next = next.saturating_add(1);
        }
    }
    let mut i = 0;
    batch.relations.retain(|_| {
        let u = used.get(i).copied().unwrap_or(false);
        i += 1;
        u
    });
    let map = |i: &mut u16| {
        if let Some(n) = remap.get(usize::from(*i)) {
            *i = *n;
        }
    };
    for change in &mut batch.changes {
        map(&mut change.relation);
        if let Some(t) = &mut change.truncate {
            t.relations.iter_mut().for_each(map);
        }
    }
}
