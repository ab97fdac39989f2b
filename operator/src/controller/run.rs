//! Wiring of the three controllers onto their watches, once per watched namespace (or once for
//! the whole cluster).
//!
//! - ReplicationGroup: owns its ConfigMaps, ServiceAccounts, Deployments, Jobs, StatefulSets,
//!   Services, PodDisruptionBudgets and NetworkPolicies (watched by the operator's label), and
//!   is re-reconciled when a Rule or Route naming it, a Secret it references (or its generated
//!   NATS credentials; Secrets are watched by metadata only, their data is never listed), or
//!   one of its pods (by the operator's label and `pgflo.io/group`: pod
//!   states and restarts are in its status) changes.
//! - Rule / Route: re-reconciled when their group changes (appears, goes, or its status
//!   follows its worker pod: `Accepted` waits for the worker running their configuration) or
//!   its ConfigMap does (which generations it renders); a Route also when another Route of the
//!   same group changes (conflicts).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::attach::{reconcile_route, reconcile_rule};
use super::validate::references_secret;
use super::{error_chain, error_policy, group, Context, Error};
use crate::crd::{ReplicationGroup, Route, Rule};
use crate::resources::GROUP_LABEL;

/// What the controllers watch.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn log_outcome<T: std::fmt::Debug, E: std::error::Error>(
    kind: &'static str,
) -> impl Fn(Result<T, E>) -> futures_util::future::Ready<()> {
    move |res| {
        match res {
            Ok(o) => tracing::debug!(kind, object = ?o, "reconciled"),
            Err(e) => tracing::debug!(kind, error = %error_chain(&e), "reconcile outcome"),
        }
        futures_util::future::ready(())
    }
}

fn controller_config() -> Config {
    Config::default()
        .concurrency(4)
        .debounce(Duration::from_secs(1))
}

/// A watched custom resource that may fail to deserialize (e.g. an integer out of the Rust
/// type's range that the schema allows): one such object must not stop the watch of all.
type Guarded<K> = DeserializeGuard<K>;

fn owned<K>(
    c: Controller<Guarded<ReplicationGroup>>,
    client: &Client,
    ns: Option<&str>,
) -> Controller<Guarded<ReplicationGroup>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let wc = watcher::Config::default().labels("app.kubernetes.io/managed-by=pg-flo-operator");
    c.owns(api::<K>(client, ns), wc)
}

/// The objects of `store` whose decoded form passes `keep`.
fn matching<K, F>(store: &Store<Guarded<K>>, keep: F) -> Vec<ObjectRef<Guarded<K>>>
where
    K: Resource<DynamicType = ()> + Clone,
    F: Fn(&K) -> bool,
{
    store
        .state()
        .into_iter()
        .filter(|g| g.0.as_ref().is_ok_and(&keep))
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Maps a changed group to the objects of `store` (Rules or Routes) in its namespace whose
/// `group_of` names it.
fn members<K, F>(
    store: Store<Guarded<K>>,
    group_of: F,
) -> impl Fn(Guarded<ReplicationGroup>) -> Vec<ObjectRef<Guarded<K>>>
where
    K: Resource<DynamicType = ()> + Clone,
    F: Fn(&K) -> &String,
{
    move |g| {
        let meta = g.meta();
        matching(&store, |r: &K| {
            r.namespace() == meta.namespace && Some(group_of(r)) == meta.name.as_ref()
        })
    }
}

/// Maps a changed object labelled `pgflo.io/group` (the group's ConfigMap) to the objects of
/// `store` (Rules or Routes) in its namespace whose `group_of` names that group.
fn members_of_labelled<K, F, O>(
    store: Store<Guarded<K>>,
    group_of: F,
) -> impl Fn(O) -> Vec<ObjectRef<Guarded<K>>>
where
    K: Resource<DynamicType = ()> + Clone,
    F: Fn(&K) -> &String,
    O: Resource,
{
    move |o| {
        let Some(group) = o.labels().get(GROUP_LABEL).cloned() else {
            return Vec::new();
        };
        let ns = o.meta().namespace.clone();
        matching(&store, |r: &K| r.namespace() == ns && *group_of(r) == group)
    }
}

/// Runs the controllers of one scope until a shutdown signal.
async fn run_scope(ctx: Arc<Context>, ns: Option<String>) {
    let client = ctx.client.clone();
    let ns = ns.as_deref();
    let wc = watcher::Config::default();

    let groups = Controller::new(api::<Guarded<ReplicationGroup>>(&client, ns), wc.clone());
    let group_store = groups.store();
    let groups = owned::<ConfigMap>(groups, &client, ns);
    let groups = owned::<ServiceAccount>(groups, &client, ns);
    let groups = owned::<Deployment>(groups, &client, ns);
    let groups = owned::<Job>(groups, &client, ns);
    let groups = owned::<StatefulSet>(groups, &client, ns);
    let groups = owned::<Service>(groups, &client, ns);
    let groups = owned::<PodDisruptionBudget>(groups, &client, ns);
    let groups = owned::<NetworkPolicy>(groups, &client, ns);
    let group_of = |ns: Option<String>, group: &str| {
        Some(ObjectRef::<Guarded<ReplicationGroup>>::new(group).within(&ns?))
    };
    let groups = groups
        .watches(api::<Guarded<Rule>>(&client, ns), wc.clone(), move |g| {
            let rule = g.0.ok()?;
            group_of(rule.namespace(), &rule.spec.group_ref.name)
        })
        .watches(api::<Guarded<Route>>(&client, ns), wc.clone(), move |g| {
            let route = g.0.ok()?;
            group_of(route.namespace(), &route.spec.group_ref.name)
        })
        .watches(
            api::<Pod>(&client, ns),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=pg-flo-operator"),
            move |pod| {
                let group = pod.labels().get(GROUP_LABEL)?.clone();
                group_of(pod.namespace(), &group)
            },
        )
        // Secrets by metadata only (an `Api<PartialObjectMeta<_>>` lists and watches with
        // `Accept: ...;as=PartialObjectMetadata`: names and resource versions, never the data);
        // the groups read the Secrets they reference by name.
        .watches(
            api::<PartialObjectMeta<Secret>>(&client, ns),
            wc.clone(),
            move |secret| {
                let name = secret.name_any();
                let ns = secret.namespace();
                matching(&group_store, |g: &ReplicationGroup| {
                    g.namespace() == ns && references_secret(g, &name)
                })
            },
        )
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(guarded(group::reconcile), error_policy, ctx.clone())
        .for_each(log_outcome("ReplicationGroup"));

    // The group's ConfigMap says which generation of which Rule and Route it renders.
    let config_maps =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=pg-flo-operator");
    let rules = Controller::new(api::<Guarded<Rule>>(&client, ns), wc.clone());
    let rule_store = rules.store();
    let rules = rules
        .watches(
            api::<Guarded<ReplicationGroup>>(&client, ns),
            wc.clone(),
            members(rule_store.clone(), |r: &Rule| &r.spec.group_ref.name),
        )
        .watches(
            api::<ConfigMap>(&client, ns),
            config_maps.clone(),
            members_of_labelled(rule_store, |r: &Rule| &r.spec.group_ref.name),
        )
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(guarded(reconcile_rule), error_policy, ctx.clone())
        .for_each(log_outcome("Rule"));

    let routes = Controller::new(api::<Guarded<Route>>(&client, ns), wc.clone());
    let route_store = routes.store();
    let routes = routes
        .watches(
            api::<Guarded<ReplicationGroup>>(&client, ns),
            wc.clone(),
            members(route_store.clone(), |r: &Route| &r.spec.group_ref.name),
        )
        .watches(
            api::<ConfigMap>(&client, ns),
            config_maps,
            members_of_labelled(route_store.clone(), |r: &Route| &r.spec.group_ref.name),
        )
        .watches(api::<Guarded<Route>>(&client, ns), wc, move |changed| {
            let Ok(changed) = changed.0 else {
                return Vec::new();
            };
            let ns = changed.namespace();
            matching(&route_store, |r: &Route| {
                r.namespace() == ns
                    && r.spec.group_ref.name == changed.spec.group_ref.name
                    && r.spec.source_table == changed.spec.source_table
            })
        })
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(guarded(reconcile_route), error_policy, ctx)
        .for_each(log_outcome("Route"));

    tokio::join!(groups, rules, routes);
}

/// Wraps a reconcile of `K` for guarded objects: a decoded object is reconciled, one that
/// cannot be decoded gets a Warning Event `InvalidObject` naming the problem, and waits for a
/// change.
fn guarded<K, F, Fut>(
    reconcile: F,
) -> impl Fn(
    Arc<Guarded<K>>,
    Arc<Context>,
) -> futures_util::future::BoxFuture<'static, Result<Action, Error>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |obj, ctx| {
        let reconcile = reconcile.clone();
        Box::pin(async move {
            match &obj.0 {
                Ok(k) => reconcile(Arc::new(k.clone()), ctx).await,
                Err(invalid) => {
                    tracing::warn!(
                        kind = %K::kind(&()),
                        name = invalid.metadata.name.as_deref().unwrap_or_default(),
                        error = %invalid.error,
                        "cannot decode object: waiting for a change"
                    );
                    ctx.event(
                        obj.as_ref(),
                        EventType::Warning,
                        "InvalidObject",
                        "Decode",
                        format!(
                            "the operator cannot read this {}: {}; fix the object",
                            K::kind(&()),
                            invalid.error
                        ),
                    )
                    .await;
                    Ok(Action::await_change())
                }
            }
        })
    }
}

/// Runs every controller for the configured namespaces until a shutdown signal.
pub async fn run(ctx: Arc<Context>, cfg: RunConfig) {
    if cfg.namespaces.is_empty() {
        tracing::info!("watching all namespaces");
        run_scope(ctx, None).await;
    } else {
        tracing::info!(namespaces = cfg.namespaces.join(","), "watching namespaces");
        join_all(
            cfg.namespaces
                .into_iter()
                .map(|ns| run_scope(ctx.clone(), Some(ns))),
        )
        .await;
    }
}
