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
//! - Valid, group found, no conflict: `Accepted=True` (`Applied`) only once the running worker
//!   uses a configuration that contains this generation of the resource ([`rollout_verdict`]):
//!   the group's ConfigMap lists it (`pgflo.io/rules` / `pgflo.io/routes`, written with the
//!   files) and a ready worker pod that is not being deleted carries that ConfigMap's hash
//!   (`pgflo.io/config-hash`, which the runtime also reports as `pg_flo_config_info{hash}`).
//!   Until then `Accepted=False`: `Pending` (rendering or rolling out), or `NotApplied` when the
//!   group applies nothing (`InvalidSpec`, `GroupNameConflict`: its worker keeps the previous
//!   configuration).
//!
//! A change of a Rule or Route also re-renders its group: the group controller watches them;
//! the Rule and Route controllers look again when their group changes (its status follows the
//! worker pod).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use pg_flo_config::rules::RuleProblem;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conditions::{
    accepted, carry_transition_times, member_conditions, same_conditions, ACCEPTED, DEGRADED,
};
use super::{error_chain, error_key, observe, Context, Error, FIELD_MANAGER};
use crate::crd::{DesiredState, ReplicationGroup, Route, Rule, RuleItem, RuleType, TransformType};
use crate::resources::{
    config_hash, config_map_name, rendered_members, selector_labels, CONFIG_HASH_ANNOTATION,
    ROUTES_ANNOTATION, RULES_ANNOTATION,
};

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

/// The group: `None` when it does not exist, `Some(None)` when it exists but cannot be decoded
/// (it has its own Event).
async fn get_group(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<Option<ReplicationGroup>>, Error> {
    let api: Api<DeserializeGuard<ReplicationGroup>> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api
        .get_opt(name)
        .await
        .map_err(Error::kube("get", "ReplicationGroup", name))?
        .map(|g| g.0.ok()))
}

/// Which list of the group's ConfigMap names a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    /// A Rule (`pgflo.io/rules`).
    Rule,
    /// A Route (`pgflo.io/routes`).
    Route,
}

impl Member {
    fn kind(self) -> &'static str {
        match self {
            Member::Rule => "Rule",
            Member::Route => "Route",
        }
    }

    fn annotation(self) -> &'static str {
        match self {
            Member::Rule => RULES_ANNOTATION,
            Member::Route => ROUTES_ANNOTATION,
        }
    }
}

/// What the operator sees of a group whose valid Rule or Route it judges.
#[derive(Clone, Copy, Debug)]
pub struct Rollout<'a> {
    /// `spec.groupRef.name`.
    pub group: &'a str,
    /// The group, when it can be decoded.
    pub group_object: Option<&'a ReplicationGroup>,
    /// The group's ConfigMap (`<group>-pg-flo-config`), if it exists.
    pub config_map: Option<&'a ConfigMap>,
    /// The group's worker pods.
    pub worker_pods: &'a [Pod],
}

/// `Accepted` of a valid Rule or Route (`kind`, `name`, `generation`) whose group exists:
/// `(true, "Applied", ...)` when the group's ConfigMap lists this generation and a ready
/// worker pod that is not being deleted runs that ConfigMap's hash; else `Pending` (not yet
/// rendered, or rolling out) or `NotApplied` (the group refuses to apply anything, so its worker
/// keeps the previous configuration).
pub fn rollout_verdict(
    member: Member,
    name: &str,
    generation: i64,
    seen: &Rollout<'_>,
) -> (bool, &'static str, String) {
    let kind = member.kind();
    let group = seen.group;
    let rendered = seen.config_map.is_some_and(|cm| {
        cm.annotations()
            .get(member.annotation())
            .is_some_and(|a| rendered_members(a).contains(&(name, generation)))
    });
    let refused = seen.group_object.and_then(|g| {
        g.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| {
                c.type_ == DEGRADED
                    && c.status == "True"
                    && matches!(c.reason.as_str(), "InvalidSpec" | "GroupNameConflict")
            })
            .cloned()
    });
    let (Some(cm), true) = (seen.config_map, rendered) else {
        return match refused {
            Some(c) => (
                false,
                "NotApplied",
                format!(
                    "ReplicationGroup {group} applies no configuration ({}: {}); its worker keeps \
                     the previous configuration, without this {kind} as it is now",
                    c.reason, c.message
                ),
            ),
            None => (
                false,
                "Pending",
                format!(
                    "waiting for ReplicationGroup {group} to render this {kind} (generation \
                     {generation}) into its configuration"
                ),
            ),
        };
    };
    let hash = config_hash(cm);
    let live: Vec<&Pod> = seen
        .worker_pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let runs = |p: &&Pod| p.annotations().get(CONFIG_HASH_ANNOTATION) == Some(&hash);
    if let Some(p) = live.iter().find(|p| runs(p) && super::pods::pod_ready(p)) {
        return (
            true,
            "Applied",
            format!(
                "the worker pod {} of ReplicationGroup {group} runs configuration {hash}, which \
                 contains this {kind}",
                p.name_any()
            ),
        );
    }
    if let Some(state) = seen
        .group_object
        .map(|g| g.spec.state)
        .filter(|s| *s != DesiredState::Running)
    {
        let state = match state {
            DesiredState::Paused => "paused",
            _ => "stopped",
        };
        return (
            false,
            "Pending",
            format!(
                "rendered into configuration {hash} of ReplicationGroup {group}, which is {state}: \
                 applied once its worker runs again"
            ),
        );
    }
    let mut pods: Vec<String> = live
        .iter()
        .map(|p| {
            format!(
                "{} runs {}{}",
                p.name_any(),
                p.annotations()
                    .get(CONFIG_HASH_ANNOTATION)
                    .map_or("an unknown configuration", String::as_str),
                if super::pods::pod_ready(p) {
                    ""
                } else {
                    ", not ready"
                }
            )
        })
        .collect();
    pods.sort();
    (
        false,
        "Pending",
        format!(
            "rendered into configuration {hash} of ReplicationGroup {group}; waiting for a ready \
             worker pod running it ({})",
            if pods.is_empty() {
                "no worker pod yet".to_owned()
            } else {
                pods.join("; ")
            }
        ),
    )
}

/// The group's ConfigMap and worker pods, for [`rollout_verdict`].
async fn rollout_of(
    ctx: &Context,
    ns: &str,
    group: &str,
) -> Result<(Option<ConfigMap>, Vec<Pod>), Error> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let cm_name = config_map_name(group);
    let cm = cms
        .get_opt(&cm_name)
        .await
        .map_err(Error::kube("get", "ConfigMap", &cm_name))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = selector_labels(group, "worker")
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", &selector))?
        .items;
    Ok((cm, pods))
}

/// A verdict: `Accepted` status, reason, message, and whether the group is paused or stopped.
type Verdict = (bool, &'static str, String, bool);

/// The verdict of a valid `kind` resource `obj` of group `group` (looked up here).
async fn group_verdict<K: Resource>(
    ctx: &Context,
    ns: &str,
    group: &str,
    member: Member,
    obj: &K,
) -> Result<Verdict, Error> {
    let Some(group_object) = get_group(ctx, ns, group).await? else {
        return Ok((
            false,
            "GroupNotFound",
            format!(
                "ReplicationGroup {group} not found in namespace {ns}: create it or fix \
                 spec.groupRef.name"
            ),
            false,
        ));
    };
    let suspended = group_object
        .as_ref()
        .is_some_and(|g| g.spec.state != DesiredState::Running);
    let (cm, pods) = rollout_of(ctx, ns, group).await?;
    let (ok, reason, message) = rollout_verdict(
        member,
        obj.meta().name.as_deref().unwrap_or_default(),
        obj.meta().generation.unwrap_or(0),
        &Rollout {
            group,
            group_object: group_object.as_ref(),
            config_map: cm.as_ref(),
            worker_pods: &pods,
        },
    );
    Ok((ok, reason, message, suspended))
}

/// Writes `Accepted` (and an Event when it changed) unless it already says the same.
async fn set_accepted<K>(
    ctx: &Context,
    obj: &K,
    old: &[Condition],
    verdict: Verdict,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let (ok, reason, message, suspended) = verdict;
    let conditions = accepted(obj, ok, reason, message.clone(), suspended, old);
    if same_conditions(old, &conditions) {
        return Ok(());
    }
    patch_conditions(ctx, obj, conditions).await?;
    let type_ = if ok {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(obj, type_, reason, "Validate", message).await;
    Ok(())
}

/// Reconciles one Rule: `Accepted` true when every rule item is valid, its group exists and
/// its worker runs a configuration with this generation of the Rule ([`rollout_verdict`]).
#[tracing::instrument(skip_all, fields(namespace = rule.namespace().unwrap_or_default(), name = rule.name_any()))]
pub async fn reconcile_rule(rule: Arc<Rule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let old = rule
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let result = async {
        let ns = rule.namespace().ok_or(Error::Unnamed)?;
        let group = &rule.spec.group_ref.name;
        let problems = rule_problems(&rule);
        let verdict = if !problems.is_empty() {
            (false, "InvalidRule", problems.join("; "), false)
        } else {
            group_verdict(&ctx, &ns, group, Member::Rule, rule.as_ref()).await?
        };
        set_accepted(&ctx, rule.as_ref(), &old, verdict).await?;
        Ok(Action::await_change())
    }
    .await;
    finish(&ctx, rule.as_ref(), &old, &result).await;
    observe(&ctx, rule.as_ref(), &result, started);
    result
}

/// After a reconcile of a Rule or Route: an error becomes `Accepted=Unknown` with the error's
/// reason and one Warning Event per reason and [`super::EVENT_REPEAT`] while it lasts; a
/// success forgets the error Events.
async fn finish<K>(ctx: &Context, obj: &K, old: &[Condition], result: &Result<Action, Error>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let Err(err) = result else {
        ctx.forget_events(&error_key(obj));
        return;
    };
    let reason = err.reason();
    let message = format!(
        "the operator cannot tell whether the worker uses this {}: {} (retried with backoff)",
        K::kind(&()),
        super::describe(err)
    );
    if ctx.event_due(&error_key(obj), reason) {
        ctx.event(
            obj,
            EventType::Warning,
            reason,
            "Reconcile",
            message.clone(),
        )
        .await;
    }
    let mut conditions = member_conditions(
        Condition {
            type_: ACCEPTED.into(),
            status: "Unknown".into(),
            reason: reason.into(),
            message,
            observed_generation: obj.meta().generation,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        },
        false,
    );
    carry_transition_times(old, &mut conditions);
    if !same_conditions(old, &conditions) {
        if let Err(e) = patch_conditions(ctx, obj, conditions).await {
            tracing::warn!(error = %error_chain(&e), "cannot write the reconcile error to the status");
        }
    }
}

/// Writes `conditions` (and `observedGeneration`) to the status of `obj`.
async fn patch_conditions<K>(
    ctx: &Context,
    obj: &K,
    conditions: Vec<Condition>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
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
    Ok(())
}

/// Reconciles one Route: `Accepted` true when it is valid, its group exists and no other Route
/// of the group and source table sorts before it.
#[tracing::instrument(skip_all, fields(namespace = route.namespace().unwrap_or_default(), name = route.name_any()))]
pub async fn reconcile_route(route: Arc<Route>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let old = route
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
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
            (false, "InvalidRoute", problems.join("; "), false)
        } else if get_group(&ctx, &ns, group).await?.is_none() {
            (
                false,
                "GroupNotFound",
                format!("ReplicationGroup {group} not found in namespace {ns}: create it or fix spec.groupRef.name"),
                false,
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
                false,
            )
        } else {
            group_verdict(&ctx, &ns, group, Member::Route, route.as_ref()).await?
        };
        set_accepted(&ctx, route.as_ref(), &old, verdict).await?;
        Ok(Action::await_change())
    }
    .await;
    finish(&ctx, route.as_ref(), &old, &result).await;
    observe(&ctx, route.as_ref(), &result, started);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_map(rules: Option<&str>) -> ConfigMap {
        let mut annotations = serde_json::Map::new();
        if let Some(r) = rules {
            annotations.insert(RULES_ANNOTATION.into(), r.into());
        }
        serde_json::from_value(json!({
            "metadata": {"name": "orders-pg-flo-config", "annotations": annotations},
            "data": {"worker.yaml": "group: data_orders\n", "rules.yaml": "tables: {}\n"}
        }))
        .unwrap()
    }

    fn worker(hash: &str, ready: bool, terminating: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "orders-worker-0", "annotations": {"pgflo.io/config-hash": hash}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap();
        if terminating {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        p
    }

    fn group(state: &str, degraded: Option<(&str, &str)>) -> ReplicationGroup {
        let mut g: ReplicationGroup = serde_yaml::from_str(&format!(
            "apiVersion: pgflo.io/v1alpha1
kind: ReplicationGroup
metadata: {{name: orders, namespace: data}}
spec:
  state: {state}
  source: {{host: db, database: shop, user: {{name: s, key: u}}, password: {{name: s, key: p}}}}
  sink: {{stdout: {{}}}}
  nats: {{managed: {{}}}}"
        ))
        .unwrap();
        if let Some((reason, message)) = degraded {
            g.status = Some(
                serde_json::from_value(json!({"conditions": [{
                "type": "Degraded", "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": "2025-06-01T00:00:00Z"}]}))
                .unwrap(),
            );
        }
        g
    }

    /// (what, group, ConfigMap, worker pods, expected verdict).
    type Case<'a> = (
        &'static str,
        Option<&'a ReplicationGroup>,
        Option<ConfigMap>,
        Vec<Pod>,
        (bool, &'static str, String),
    );

    #[test]
    fn a_rule_is_applied_only_when_a_ready_worker_runs_a_configuration_with_it() {
        let with_rule = config_map(Some("a=1,mask-email=2"));
        let new = config_hash(&with_rule);
        let running = group("running", None);
        let invalid = group(
            "running",
            Some((
                "InvalidSpec",
                "Rule broken: rules[0]: pattern does not compile",
            )),
        );
        let paused = group("paused", None);
        let table: Vec<Case<'_>> = vec![
            (
                "no ConfigMap yet",
                Some(&running),
                None,
                vec![],
                (false, "Pending", "waiting for ReplicationGroup orders to render this Rule (generation 2) into its configuration".into()),
            ),
            (
                "an older generation is rendered",
                Some(&running),
                Some(config_map(Some("mask-email=1"))),
                vec![worker("old", true, false)],
                (false, "Pending", "waiting for ReplicationGroup orders to render this Rule (generation 2) into its configuration".into()),
            ),
            (
                "an invalid sibling keeps the old configuration",
                Some(&invalid),
                Some(config_map(Some("a=1"))),
                vec![worker("old", true, false)],
                (false, "NotApplied", "ReplicationGroup orders applies no configuration (InvalidSpec: Rule broken: rules[0]: pattern does not compile); its worker keeps the previous configuration, without this Rule as it is now".into()),
            ),
            (
                "rendered, the worker still runs the old hash",
                Some(&running),
                Some(with_rule.clone()),
                vec![worker("old", true, false)],
                (false, "Pending", format!("rendered into configuration {new} of ReplicationGroup orders; waiting for a ready worker pod running it (orders-worker-0 runs old)")),
            ),
            (
                "the new pod is not ready yet",
                Some(&running),
                Some(with_rule.clone()),
                vec![worker(&new, false, false)],
                (false, "Pending", format!("rendered into configuration {new} of ReplicationGroup orders; waiting for a ready worker pod running it (orders-worker-0 runs {new}, not ready)")),
            ),
            (
                "no worker pod",
                Some(&running),
                Some(with_rule.clone()),
                vec![],
                (false, "Pending", format!("rendered into configuration {new} of ReplicationGroup orders; waiting for a ready worker pod running it (no worker pod yet)")),
            ),
            (
                "a ready pod with the new hash being deleted",
                Some(&running),
                Some(with_rule.clone()),
                vec![worker(&new, true, true)],
                (false, "Pending", format!("rendered into configuration {new} of ReplicationGroup orders; waiting for a ready worker pod running it (no worker pod yet)")),
            ),
            (
                "applied",
                Some(&running),
                Some(with_rule.clone()),
                vec![worker(&new, true, false)],
                (true, "Applied", format!("the worker pod orders-worker-0 of ReplicationGroup orders runs configuration {new}, which contains this Rule")),
            ),
            (
                "applied, group undecodable",
                None,
                Some(with_rule.clone()),
                vec![worker(&new, true, false)],
                (true, "Applied", format!("the worker pod orders-worker-0 of ReplicationGroup orders runs configuration {new}, which contains this Rule")),
            ),
            (
                "paused",
                Some(&paused),
                Some(with_rule.clone()),
                vec![],
                (false, "Pending", format!("rendered into configuration {new} of ReplicationGroup orders, which is paused: applied once its worker runs again")),
            ),
        ];
        for (what, g, cm, pods, want) in table {
            let got = rollout_verdict(
                Member::Rule,
                "mask-email",
                2,
                &Rollout {
                    group: "orders",
                    group_object: g,
                    config_map: cm.as_ref(),
                    worker_pods: &pods,
                },
            );
            assert_eq!((got.0, got.1, got.2), (want.0, want.1, want.2), "{what}");
        }
        // A Route is looked up in the Routes' list only.
        let got = rollout_verdict(
            Member::Route,
            "mask-email",
            2,
            &Rollout {
                group: "orders",
                group_object: Some(&running),
                config_map: Some(&with_rule),
                worker_pods: &[worker(&new, true, false)],
            },
        );
        assert_eq!(got.1, "Pending");
    }
}
