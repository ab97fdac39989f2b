//! The Rule and Route controllers: they own nothing, they only tell whether the group's worker
//! takes the resource (`Accepted` condition, Event on a change).
//!
//! - `GroupNotFound`: `spec.groupRef` names no ReplicationGroup in the namespace; accepted as
//!   soon as the group appears (the controllers watch groups).
//! - `InvalidRule`: a rule the worker could not run (e.g. a regex that does not compile). The
//!   group does not render such a rule, and does not drop it either: the group turns `Degraded`
//!   and keeps its previous configuration, since silently leaving out a mask could leak data.
//! - `InvalidRoute`: a route the worker could not run (e.g. two column mappings onto one
//!   column); as with `InvalidRule`, the group turns `Degraded` and keeps its previous
//!   configuration.
//! - `Conflict` (Routes): another Route of the same group and source table sorts first by
//!   name and wins.
//!
//! A change of a Rule or Route also re-renders its group: the group controller watches them.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use pg_flo_config::rules::RuleProblem;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conditions::{accepted, same_conditions};
use super::{observe, Context, Error, FIELD_MANAGER};
use crate::crd::{ReplicationGroup, Route, Rule, RuleItem, RuleType, TransformType};

/// Problems of a Rule the worker could not run, each naming the rule by position: the shape
/// the CRD's validation rules ask for (checked again here for objects written before them),
/// then the runtime's own check of the rule as the worker reads it.
pub fn rule_problems(rule: &Rule) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, item) in rule.spec.rules.iter().enumerate() {
        let at = format!("rules[{i}] (column {})", item.column);
        let shape = shape_problems(item);
        if shape.is_empty() {
            problems.extend(
                item.file_rule()
                    .check()
                    .problems
                    .iter()
                    .map(|p| format!("{at}: {}", describe(p))),
            );
        }
        problems.extend(shape.into_iter().map(|p| format!("{at}: {p}")));
    }
    problems
}

/// A problem of the rule in the CR's terms.
fn describe(problem: &RuleProblem) -> String {
    match problem {
        RuleProblem::InvalidRegex(e) => format!(
            "pattern does not compile: {}",
            e.to_string().replace('\n', " ")
        ),
        other => other.to_string(),
    }
}

/// What the CRD's `x-kubernetes-validations` of a rule item require.
fn shape_problems(item: &RuleItem) -> Vec<&'static str> {
    let mut problems = Vec::new();
    match item.type_ {
        RuleType::Transform => match &item.transform {
            None => problems.push("a transform rule needs `transform`"),
            Some(t) => match t.type_ {
                TransformType::Regex => {
                    if t.pattern.is_none() || t.replace.is_none() {
                        problems.push("a regex transform needs `pattern` and `replace`");
                    }
                }
                TransformType::Mask => {
                    if t.mask_char.as_deref().map(|c| c.chars().count()) != Some(1) {
                        problems.push("a mask transform needs a one-character `maskChar`");
                    }
                }
            },
        },
        RuleType::Filter => {
            if item.filter.is_none() {
                problems.push("a filter rule needs `filter`");
            }
        }
        RuleType::ExcludeColumn => {}
    }
    if item.type_ != RuleType::Transform && item.transform.is_some() {
        problems.push("`transform` is only valid on a transform rule");
    }
    if item.type_ != RuleType::Filter && item.filter.is_some() {
        problems.push("`filter` is only valid on a filter rule");
    }
    problems
}

/// Problems of a Route the worker could not run (the runtime's own check of the route as the
/// worker reads it), e.g. two mappings onto one column.
pub fn route_problems(route: &Route) -> Vec<String> {
    route
        .spec
        .file_route()
        .check(&route.spec.source_table)
        .problems
}

/// The Route that wins for `route`'s group and source table (first by name), if not `route`.
pub fn conflicting_route<'a>(route: &Route, all: &'a [Route]) -> Option<&'a Route> {
    all.iter()
        .filter(|r| {
            r.spec.group_ref.name == route.spec.group_ref.name
                && r.spec.source_table == route.spec.source_table
        })
        .min_by_key(|r| r.name_any())
        .filter(|winner| winner.name_any() != route.name_any())
}

/// Whether the group exists (decodable or not: an undecodable group has its own Event).
async fn group_exists(ctx: &Context, ns: &str, name: &str) -> Result<bool, Error> {
    let api: Api<DeserializeGuard<ReplicationGroup>> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api
        .get_opt(name)
        .await
        .map_err(Error::kube("get", "ReplicationGroup", name))?
        .is_some())
}

/// Writes `Accepted` (and an Event when it changed) unless it already says the same.
async fn set_accepted<K>(
    ctx: &Context,
    obj: &K,
    old: &[Condition],
    verdict: (bool, &str, String),
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let (ok, reason, message) = verdict;
    let conditions = accepted(obj, ok, reason, message.clone(), old);
    if same_conditions(old, &conditions) {
        return Ok(());
    }
    let ns = obj.namespace().ok_or(Error::Unnamed)?;
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": {
            "observedGeneration": obj.meta().generation,
            "conditions": conditions,
        },
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube("patch status of", &K::kind(&()), &name))?;
    let type_ = if ok {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(obj, type_, reason, "Validate", message).await;
    Ok(())
}

/// Reconciles one Rule: `Accepted` true when its group exists and every rule item is valid.
#[tracing::instrument(skip_all, fields(namespace = rule.namespace().unwrap_or_default(), name = rule.name_any()))]
pub async fn reconcile_rule(rule: Arc<Rule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = async {
        let ns = rule.namespace().ok_or(Error::Unnamed)?;
        let group = &rule.spec.group_ref.name;
        let problems = rule_problems(&rule);
        let verdict = if !problems.is_empty() {
            (false, "InvalidRule", problems.join("; "))
        } else if !group_exists(&ctx, &ns, group).await? {
            (
                false,
                "GroupNotFound",
                format!("ReplicationGroup {group} not found in namespace {ns}: create it or fix spec.groupRef.name"),
            )
        } else {
            (true, "Accepted", format!("applied by the worker of ReplicationGroup {group}"))
        };
        let old = rule.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        set_accepted(&ctx, rule.as_ref(), &old, verdict).await?;
        Ok(Action::await_change())
    }
    .await;
    observe(&ctx, rule.as_ref(), &result, started);
    result
}

/// Reconciles one Route: `Accepted` true when it is valid, its group exists and no other Route
/// of the group and source table sorts before it.
#[tracing::instrument(skip_all, fields(namespace = route.namespace().unwrap_or_default(), name = route.name_any()))]
pub async fn reconcile_route(route: Arc<Route>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = async {
        let ns = route.namespace().ok_or(Error::Unnamed)?;
        let group = &route.spec.group_ref.name;
        // Guarded: an undecodable Route (its own Event) must not stop the others' verdicts.
        let api: Api<DeserializeGuard<Route>> = Api::namespaced(ctx.client.clone(), &ns);
        let all: Vec<Route> = api
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list", "Route", &ns))?
            .items
            .into_iter()
            .filter_map(|g| g.0.ok())
            .collect();
        let problems = route_problems(&route);
        let verdict = if !problems.is_empty() {
            (false, "InvalidRoute", problems.join("; "))
        } else if !group_exists(&ctx, &ns, group).await? {
            (
                false,
                "GroupNotFound",
                format!("ReplicationGroup {group} not found in namespace {ns}: create it or fix spec.groupRef.name"),
            )
        } else if let Some(winner) = conflicting_route(&route, &all) {
            (
                false,
                "Conflict",
                format!(
                    "Route {} also routes {} of ReplicationGroup {group} and takes precedence (first by name): delete one of them",
                    winner.name_any(),
                    route.spec.source_table
                ),
            )
        } else {
            (true, "Accepted", format!("applied by the worker of ReplicationGroup {group}"))
        };
        let old = route.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        set_accepted(&ctx, route.as_ref(), &old, verdict).await?;
        Ok(Action::await_change())
    }
    .await;
    observe(&ctx, route.as_ref(), &result, started);
    result
}
