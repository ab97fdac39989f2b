//! The PromQL of the chart's monitoring objects: the alert expressions of the PrometheusRule and
//! the queries of the Grafana dashboard, parsed with the `promql-parser` crate, and the metric
//! names they read.

#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::Value as Json;

/// One PromQL expression of the chart and where it comes from (an alert name, a dashboard
/// panel title or variable).
#[derive(Clone, Debug)]
pub struct Query {
    pub origin: String,
    pub expr: String,
}

/// The alerts of a rendered PrometheusRule (as JSON): `(alert name, expr)`.
pub fn rule_queries(rule: &Json) -> Vec<Query> {
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            out.push(Query {
                origin: format!("alert {}", r["alert"].as_str().unwrap()),
                expr: r["expr"].as_str().unwrap().to_string(),
            });
        }
    }
    out
}

/// Grafana's variables in a query, replaced by values PromQL accepts: the range
/// `$__rate_interval` by a duration (the variables in label values are plain strings to PromQL).
pub fn substitute_grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
}

/// Every query of the dashboard: the panels' targets and the `label_values(<selector>, label)`
/// queries of the template variables (their selector).
pub fn dashboard_queries(dashboard: &Json) -> Vec<Query> {
    let mut out = Vec::new();
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {q}", v["name"]));
        let (selector, _label) = inner.rsplit_once(',').unwrap();
        out.push(Query {
            origin: format!("variable {}", v["name"].as_str().unwrap()),
            expr: selector.trim().to_string(),
        });
    }
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                origin: format!("panel {:?} {}", p["title"].as_str().unwrap(), t["refId"]),
                expr: substitute_grafana(t["expr"].as_str().unwrap()),
            });
        }
    }
    out
}

pub fn parse(q: &Query) -> Expr {
    parser::parse(&q.expr)
        .unwrap_or_else(|e| panic!("{}: PromQL does not parse: {e}\n{}", q.origin, q.expr))
}

struct Selectors(Vec<VectorSelector>);

impl ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
        match e {
            Expr::VectorSelector(vs) => self.0.push(vs.clone()),
            Expr::MatrixSelector(ms) => self.0.push(ms.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// Every vector selector of `e` (the ones inside range selectors included).
pub fn selectors(e: &Expr) -> Vec<VectorSelector> {
    let mut v = Selectors(Vec::new());
    let Ok(_) = walk_expr(&mut v, e);
    v.0
}

/// The metric name of a selector; every selector of the chart names its metric.
pub fn metric_name(q: &Query, vs: &VectorSelector) -> String {
    vs.name
        .clone()
        .unwrap_or_else(|| panic!("{}: a selector without a metric name: {vs}", q.origin))
}

/// The value a selector requires of `label` with `=`, if any.
pub fn equal_matcher(vs: &VectorSelector, label: &str) -> Option<String> {
    vs.matchers
        .matchers
        .iter()
        .find(|m| m.name == label && matches!(m.op, MatchOp::Equal))
        .map(|m| m.value.clone())
}

/// The regex a selector requires of `label` with `=~`, if any.
pub fn regex_matcher(vs: &VectorSelector, label: &str) -> Option<String> {
    vs.matchers
        .matchers
        .iter()
        .find(|m| m.name == label && matches!(m.op, MatchOp::Re(_)))
        .map(|m| m.value.clone())
}

/// The metric names `q` reads.
pub fn metric_names(q: &Query) -> BTreeSet<String> {
    selectors(&parse(q))
        .iter()
        .map(|vs| metric_name(q, vs))
        .collect()
}

struct Groupings(Vec<Vec<String>>);

impl ExprVisitor for Groupings {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
        if let Expr::Aggregate(a) = e {
            match &a.modifier {
                Some(parser::LabelModifier::Include(l)) => self.0.push(l.labels.clone()),
                Some(parser::LabelModifier::Exclude(_)) | None => self.0.push(Vec::new()),
            }
        }
        Ok(true)
    }
}

/// The `by (...)` labels of every aggregation of `e` (empty for `without` or no modifier).
pub fn aggregation_labels(e: &Expr) -> Vec<Vec<String>> {
    let mut v = Groupings(Vec::new());
    let Ok(_) = walk_expr(&mut v, e);
    v.0
}

/// Metric names in the text exposition format (a body, without HTTP headers): the name of
/// every sample line, so histograms give `_bucket`, `_sum` and `_count`.
pub fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(
                !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "not a sample line of the text format: {l:?}"
            );
            name.to_string()
        })
        .collect()
}
