//! Wiring of the three controllers onto their watches, once per watched namespace (or once for
//! the whole cluster).
//!
//! - ReplicationGroup: owns its ConfigMaps, ServiceAccounts, Deployments, Jobs, StatefulSets,
//!   Services and PodDisruptionBudgets (watched by the operator's label), and is re-reconciled
//!   when a Rule or Route naming it, or a Secret it references, changes.
//! - Rule / Route: re-reconciled when their group appears or goes; a Route also when another
//!   Route of the same group changes (conflicts).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::attach::{reconcile_route, reconcile_rule};
use super::validate::references_secret;
use super::{error_chain, error_policy, group, Context};
use crate::crd::{ReplicationGroup, Route, Rule};

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

fn owned<K>(
    c: Controller<ReplicationGroup>,
    client: &Client,
    ns: Option<&str>,
) -> Controller<ReplicationGroup>
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

/// Runs the controllers of one scope until a shutdown signal.
async fn run_scope(ctx: Arc<Context>, ns: Option<String>) {
    let client = ctx.client.clone();
    let ns = ns.as_deref();
    let wc = watcher::Config::default();

    let groups = Controller::new(api::<ReplicationGroup>(&client, ns), wc.clone());
    let group_store = groups.store();
    let groups = owned::<ConfigMap>(groups, &client, ns);
    let groups = owned::<ServiceAccount>(groups, &client, ns);
    let groups = owned::<Deployment>(groups, &client, ns);
    let groups = owned::<Job>(groups, &client, ns);
    let groups = owned::<StatefulSet>(groups, &client, ns);
    let groups = owned::<Service>(groups, &client, ns);
    let groups = owned::<PodDisruptionBudget>(groups, &client, ns);
    let groups = groups
        .watches(api::<Rule>(&client, ns), wc.clone(), |rule| {
            let ns = rule.namespace()?;
            Some(ObjectRef::<ReplicationGroup>::new(&rule.spec.group_ref.name).within(&ns))
        })
        .watches(api::<Route>(&client, ns), wc.clone(), |route| {
            let ns = route.namespace()?;
            Some(ObjectRef::<ReplicationGroup>::new(&route.spec.group_ref.name).within(&ns))
        })
        .watches(api::<Secret>(&client, ns), wc.clone(), move |secret| {
            let name = secret.name_any();
            let ns = secret.namespace();
            group_store
                .state()
                .into_iter()
                .filter(|g| g.namespace() == ns && references_secret(g, &name))
                .map(|g| ObjectRef::from_obj(g.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(group::reconcile, error_policy, ctx.clone())
        .for_each(log_outcome("ReplicationGroup"));

    let rules = Controller::new(api::<Rule>(&client, ns), wc.clone());
    let rule_store = rules.store();
    let rules = rules
        .watches(api::<ReplicationGroup>(&client, ns), wc.clone(), move |g| {
            let name = g.name_any();
            let ns = g.namespace();
            rule_store
                .state()
                .into_iter()
                .filter(|r| r.namespace() == ns && r.spec.group_ref.name == name)
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(reconcile_rule, error_policy, ctx.clone())
        .for_each(log_outcome("Rule"));

    let routes = Controller::new(api::<Route>(&client, ns), wc.clone());
    let route_store = routes.store();
    let by_group = route_store.clone();
    let routes = routes
        .watches(api::<ReplicationGroup>(&client, ns), wc.clone(), move |g| {
            let name = g.name_any();
            let ns = g.namespace();
            by_group
                .state()
                .into_iter()
                .filter(|r| r.namespace() == ns && r.spec.group_ref.name == name)
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches(api::<Route>(&client, ns), wc, move |changed| {
            let ns = changed.namespace();
            route_store
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace() == ns
                        && r.spec.group_ref.name == changed.spec.group_ref.name
                        && r.spec.source_table == changed.spec.source_table
                })
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(reconcile_route, error_policy, ctx)
        .for_each(log_outcome("Route"));

    tokio::join!(groups, rules, routes);
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
