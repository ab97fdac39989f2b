//! Server-side apply of a group's desired objects and deletion of the ones no longer wanted.
//!
//! Every object is applied with field manager [`FIELD_MANAGER`] and `force` (the operator owns
//! these objects; a conflicting manual edit is overwritten, as with any controller). An object
//! is an orphan when it carries the group's labels and an owner reference to the group's uid
//! but is not in the desired set (e.g. the NATS StatefulSet after switching to external NATS,
//! the StatefulSets after `state: stopped`); orphans are deleted. Deployments (the replicator and
//! worker of earlier versions) are replaced by StatefulSets without two pods at once, see
//! [`apply_desired`]. Objects that only carry the
//! labels (copied by hand) are never touched.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::nats_change::keep_immutable_fields;
use super::{Context, Error, FIELD_MANAGER};
use crate::resources::{Desired, NatsObjects, GROUP_LABEL};

/// A namespaced kind the operator reads, deletes (and with `Serialize`, applies).
pub trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
{
}

/// The applied workloads, as the API server returned them (with status).
#[derive(Debug, Default)]
pub struct Applied {
    /// The replicator StatefulSet (`None` when stopped or with `mode: copy`).
    pub replicator: Option<StatefulSet>,
    /// The worker StatefulSet (`None` when stopped).
    pub worker: Option<StatefulSet>,
    /// The copy Job (`mode: copy`, not stopped, or kept until its completion is recorded).
    pub copy_job: Option<Job>,
    /// The copy Job was seen finished.
    pub copy_complete: bool,
    /// What keeps a StatefulSet at zero pods while a pod of the Deployment it replaces (or of
    /// another controller) is still there: `Deployment <name>` / `Pod <name>`.
    pub waiting_for: Vec<String>,
    /// The group's pods (replicator, worker, copy Job, managed NATS), listed before the
    /// workloads were applied.
    pub pods: Vec<Pod>,
    /// The first failure applying the managed NATS objects: the rest was applied anyway; the
    /// reconcile reports it after writing the status (and is retried with backoff).
    pub nats_error: Option<Error>,
}

/// How the managed NATS StatefulSet is applied.
#[derive(Debug, Default)]
pub struct NatsPlan {
    /// The StatefulSet as it exists (its immutable fields are kept).
    pub running: Option<StatefulSet>,
    /// Its volume template changes (the claims were resized): delete it, leaving the pods and
    /// volumes (`propagationPolicy: Orphan`), and create it in a later reconcile, once gone.
    pub recreate: bool,
}

/// What the reconciler asks of [`apply_desired`] beyond the desired objects.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Run the workloads (not `state: stopped`).
    pub run_workloads: bool,
    /// `status.copyCompletionTime` is set: the copy Job is never created again.
    pub copy_recorded: bool,
}

/// Whether a Job finished successfully.
pub fn job_complete(j: &Job) -> bool {
    let complete = j
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        });
    complete || j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1
}

/// Creates the copy Job unless its copy already finished, or, when it exists, only sets its
/// `suspend` (a Job's pod template is immutable, and a copy must not restart because an
/// unrelated setting changed). `None` when the copy finished and the Job is gone.
async fn ensure_job(
    ctx: &Context,
    ns: &str,
    job: &Job,
    copy_recorded: bool,
) -> Result<Option<Job>, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let name = job.name_any();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "Job", &name))?;
    match existing {
        None if copy_recorded => Ok(None),
        None => ssa(ctx, ns, job).await.map(Some),
        Some(current) => {
            let want = job.spec.as_ref().and_then(|s| s.suspend);
            if job_complete(&current) || current.spec.as_ref().and_then(|s| s.suspend) == want {
                return Ok(Some(current));
            }
            let patch = serde_json::json!({"spec": {"suspend": want}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(Some)
                .map_err(Error::kube("suspend", "Job", &name))
        }
    }
}

/// Applies one object with server-side apply.
pub async fn ssa<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Namespaced + Serialize,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::kube("apply", &K::kind(&()), name))
}

/// Deletes an object (background propagation); one already gone counts as deleted.
pub async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Namespaced,
{
    delete_with::<K>(ctx, ns, name, &DeleteParams::background()).await
}

/// Deletes an object with `params`; one already gone counts as deleted.
pub async fn delete_with<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), Error>
where
    K: Namespaced,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube("delete", &K::kind(&()), name)(e)),
    }
}

/// Label selector of the objects the operator made for `group`.
pub fn group_selector(group: &str) -> String {
    format!("{GROUP_LABEL}={group},app.kubernetes.io/managed-by=pg-flo-operator")
}

/// Deletes the objects of kind `K` owned by the group (`owner_uid`) that are not in `keep`.
async fn delete_orphans<K>(
    ctx: &Context,
    ns: &str,
    group: &str,
    owner_uid: &str,
    keep: &[String],
) -> Result<(), Error>
where
    K: Namespaced,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let selector = group_selector(group);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", &K::kind(&()), &selector))?;
    for obj in list.items {
        let name = obj.name_any();
        let owned = obj.owner_references().iter().any(|o| o.uid == owner_uid);
        if owned && !keep.contains(&name) {
            tracing::info!(kind = %K::kind(&()), name, "deleting object no longer wanted");
            delete::<K>(ctx, ns, &name).await?;
        }
    }
    Ok(())
}

/// Applies the managed NATS objects; returns the names applied (to keep) per kind. The
/// StatefulSet keeps its immutable fields ([`keep_immutable_fields`]); when it must be
/// re-created it is deleted with `Orphan` propagation (its pods and volumes stay) and not
/// applied now. The names of objects that failed are kept too (never deleted as orphans).
async fn apply_nats(
    ctx: &Context,
    ns: &str,
    nats: &mut NatsObjects,
    plan: &NatsPlan,
    keep: &mut Keep,
) -> Result<(), Error> {
    keep.cm.push(nats.config_map.name_any());
    keep.svc.push(nats.headless_service.name_any());
    keep.svc.push(nats.client_service.name_any());
    keep.sts.push(nats.stateful_set.name_any());
    keep.pdb.push(nats.pdb.name_any());
    keep.netpol.push(nats.network_policy.name_any());
    ssa(ctx, ns, &nats.config_map).await?;
    ssa(ctx, ns, &nats.headless_service).await?;
    ssa(ctx, ns, &nats.client_service).await?;
    match &plan.running {
        Some(running) if running.metadata.deletion_timestamp.is_some() => {
            tracing::info!(
                name = nats.stateful_set.name_any(),
                "waiting for the NATS StatefulSet to go before creating it again"
            );
        }
        Some(running) if plan.recreate => {
            let name = running.name_any();
            tracing::info!(
                name,
                "re-creating the NATS StatefulSet for its new volume size (pods and volumes stay)"
            );
            delete_with::<StatefulSet>(ctx, ns, &name, &DeleteParams::orphan()).await?;
        }
        Some(running) => {
            keep_immutable_fields(&mut nats.stateful_set, running);
            ssa(ctx, ns, &nats.stateful_set).await?;
        }
        None => {
            ssa(ctx, ns, &nats.stateful_set).await?;
        }
    }
    ssa(ctx, ns, &nats.pdb).await?;
    ssa(ctx, ns, &nats.network_policy).await?;
    Ok(())
}

/// Names of the objects to keep, per kind.
#[derive(Default)]
struct Keep {
    sa: Vec<String>,
    cm: Vec<String>,
    sts: Vec<String>,
    svc: Vec<String>,
    pdb: Vec<String>,
    job: Vec<String>,
    netpol: Vec<String>,
}

/// Whether `pod` still runs (or may run) a process of `component` that is not the pod of the
/// StatefulSet `sts`: a pod of the Deployment the StatefulSet replaces, of a copy Job, or
/// anyone else's with the same labels. Finished pods (`Succeeded`, `Failed`) run nothing.
pub fn foreign_pod(pod: &Pod, sts: &str) -> bool {
    let finished = super::pods::finished(pod);
    let ours = pod
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "StatefulSet" && o.name == sts);
    !finished && !ours
}

/// Applies every desired object (the workloads only when `plan.run_workloads`), then deletes the
/// group's objects that are no longer desired. A failure applying the managed NATS does not
/// stop the rest (pause, stop and Rule changes still reach the workloads): it is returned in
/// [`Applied::nats_error`].
///
/// The replicator and worker run as StatefulSets. A group created by an earlier version runs
/// them as Deployments of the same names; the move keeps one pod per component at all times:
/// 1. the StatefulSet is applied with **zero** replicas while a Deployment of its name exists
///    or a pod with its component's labels that is not its own still runs (`waiting_for`);
/// 2. the Deployments are deleted with foreground propagation (the Deployment object stays
///    until its ReplicaSets and pods are gone, so it is a reliable "still running" signal);
/// 3. a later reconcile (the caller requeues soon) finds nothing left and applies one replica.
///
/// The same rule keeps the replicator StatefulSet at zero while a copy Job's pod still runs.
pub async fn apply_desired(
    ctx: &Context,
    ns: &str,
    group: &str,
    owner_uid: &str,
    desired: Desired,
    plan: Plan,
    nats_plan: &NatsPlan,
) -> Result<Applied, Error> {
    let Desired {
        config_map,
        config_hash: _,
        service_account,
        replicator,
        copy_job,
        worker,
        nats,
    } = desired;
    let mut keep = Keep::default();

    keep.sa
        .push(ssa(ctx, ns, &service_account).await?.name_any());
    keep.cm.push(ssa(ctx, ns, &config_map).await?.name_any());
    let mut applied = Applied::default();
    if let Some(mut n) = nats {
        if let Err(e) = apply_nats(ctx, ns, &mut n, nats_plan, &mut keep).await {
            tracing::warn!(error = %super::error_chain(&e), "cannot apply the managed NATS; applying the rest");
            applied.nats_error = Some(e);
        }
    }

    // Deployments of an earlier version (owned by the group) and the group's runtime pods.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let selector = group_selector(group);
    let legacy: Vec<String> = deployments
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Deployment", &selector))?
        .items
        .iter()
        .filter(|d| d.owner_references().iter().any(|o| o.uid == owner_uid))
        .map(|d| d.name_any())
        .collect();
    let pods = list_pods(ctx, ns, group).await?;

    // The copy Job: created once; kept until its completion is recorded in the status.
    if let Some(job) = &copy_job {
        if plan.run_workloads {
            if let Some(j) = ensure_job(ctx, ns, job, plan.copy_recorded).await? {
                applied.copy_complete = job_complete(&j);
                keep.job.push(j.name_any());
                applied.copy_job = Some(j);
            }
        } else if !plan.copy_recorded {
            let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
            let name = job.name_any();
            if let Some(j) = api
                .get_opt(&name)
                .await
                .map_err(Error::kube("get", "Job", &name))?
            {
                if job_complete(&j) {
                    // Stopped right after the copy finished: record it before the Job goes.
                    applied.copy_complete = true;
                    keep.job.push(name);
                }
            }
        }
    }
    if plan.run_workloads {
        let mut workloads = vec![("worker", worker)];
        if copy_job.is_none() {
            workloads.insert(0, ("replicator", replicator));
        }
        for (component, mut sts) in workloads {
            let name = sts.name_any();
            let mut waiting: Vec<String> = legacy
                .iter()
                .filter(|d| **d == format!("{group}-{component}"))
                .map(|d| format!("Deployment {d}"))
                .collect();
            waiting.extend(
                pods.iter()
                    .filter(|p| {
                        p.labels()
                            .get("app.kubernetes.io/component")
                            .map(String::as_str)
                            == Some(component)
                            && foreign_pod(p, &name)
                    })
                    .map(|p| format!("Pod {}", p.name_any())),
            );
            if !waiting.is_empty() {
                if let Some(spec) = sts.spec.as_mut() {
                    spec.replicas = Some(0);
                }
                tracing::info!(
                    statefulset = name,
                    waiting = waiting.join(", "),
                    "StatefulSet kept at zero pods until the previous pods are gone"
                );
            }
            let applied_sts = ssa(ctx, ns, &sts).await?;
            keep.sts.push(applied_sts.name_any());
            applied.waiting_for.extend(waiting);
            match component {
                "replicator" => applied.replicator = Some(applied_sts),
                _ => applied.worker = Some(applied_sts),
            }
        }
    }

    // Only now (the StatefulSets exist) the Deployments go, foreground: their object stays
    // until their pods are gone.
    for name in &legacy {
        tracing::info!(name, "deleting the Deployment replaced by a StatefulSet");
        delete_with::<Deployment>(ctx, ns, name, &DeleteParams::foreground()).await?;
    }
    delete_orphans::<Job>(ctx, ns, group, owner_uid, &keep.job).await?;
    delete_orphans::<StatefulSet>(ctx, ns, group, owner_uid, &keep.sts).await?;
    delete_orphans::<PodDisruptionBudget>(ctx, ns, group, owner_uid, &keep.pdb).await?;
    delete_orphans::<NetworkPolicy>(ctx, ns, group, owner_uid, &keep.netpol).await?;
    delete_orphans::<Service>(ctx, ns, group, owner_uid, &keep.svc).await?;
    delete_orphans::<ConfigMap>(ctx, ns, group, owner_uid, &keep.cm).await?;
    delete_orphans::<ServiceAccount>(ctx, ns, group, owner_uid, &keep.sa).await?;
    applied.pods = pods;
    Ok(applied)
}

/// The pods of `group` (its `metadata.name`): replicator, worker, copy Job, managed NATS.
pub async fn list_pods(ctx: &Context, ns: &str, group: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("app.kubernetes.io/name=pg-flo,app.kubernetes.io/instance={group}");
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", &selector))?
        .items)
}
