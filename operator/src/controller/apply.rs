//! Server-side apply of a group's desired objects and deletion of the ones no longer wanted.
//!
//! Every object is applied with field manager [`FIELD_MANAGER`] and `force` (the operator owns
//! these objects; a conflicting manual edit is overwritten, as with any controller). An object
//! is an orphan when it carries the group's labels and an owner reference to the group's uid
//! but is not in the desired set (e.g. the NATS StatefulSet after switching to external NATS,
//! the Deployments after `state: stopped`); orphans are deleted. Objects that only carry the
//! labels (copied by hand) are never touched.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
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
    /// The replicator Deployment (`None` when stopped).
    pub replicator: Option<Deployment>,
    /// The worker Deployment (`None` when stopped).
    pub worker: Option<Deployment>,
    /// The copy Job (`mode: copy`, not stopped).
    pub copy_job: Option<Job>,
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

/// Creates the copy Job, or, when it exists, only sets its `suspend` (a Job's pod template is
/// immutable, and a copy must not restart because an unrelated setting changed).
async fn ensure_job(ctx: &Context, ns: &str, job: &Job) -> Result<Job, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let name = job.name_any();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "Job", &name))?;
    match existing {
        None => ssa(ctx, ns, job).await,
        Some(current) => {
            let want = job.spec.as_ref().and_then(|s| s.suspend);
            if current.spec.as_ref().and_then(|s| s.suspend) == want {
                return Ok(current);
            }
            let patch = serde_json::json!({"spec": {"suspend": want}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
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

/// Deletes an object; one already gone counts as deleted.
pub async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Namespaced,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
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
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
            match api.delete(&name, &DeleteParams::orphan()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube("delete", "StatefulSet", name)(e)),
            }
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
    deploy: Vec<String>,
    sts: Vec<String>,
    svc: Vec<String>,
    pdb: Vec<String>,
    job: Vec<String>,
    netpol: Vec<String>,
}

/// Applies every desired object (the Deployments only when `run_workloads`), then deletes the
/// group's objects that are no longer desired. A failure applying the managed NATS does not
/// stop the rest (pause, stop and Rule changes still reach the workloads): it is returned in
/// [`Applied::nats_error`].
pub async fn apply_desired(
    ctx: &Context,
    ns: &str,
    group: &str,
    owner_uid: &str,
    desired: Desired,
    run_workloads: bool,
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
    if run_workloads {
        if let Some(job) = copy_job {
            let j = ensure_job(ctx, ns, &job).await?;
            keep.job.push(j.name_any());
            applied.copy_job = Some(j);
        } else {
            let r = ssa(ctx, ns, &replicator).await?;
            keep.deploy.push(r.name_any());
            applied.replicator = Some(r);
        }
        let w = ssa(ctx, ns, &worker).await?;
        keep.deploy.push(w.name_any());
        applied.worker = Some(w);
    }

    delete_orphans::<Deployment>(ctx, ns, group, owner_uid, &keep.deploy).await?;
    delete_orphans::<Job>(ctx, ns, group, owner_uid, &keep.job).await?;
    delete_orphans::<StatefulSet>(ctx, ns, group, owner_uid, &keep.sts).await?;
    delete_orphans::<PodDisruptionBudget>(ctx, ns, group, owner_uid, &keep.pdb).await?;
    delete_orphans::<NetworkPolicy>(ctx, ns, group, owner_uid, &keep.netpol).await?;
    delete_orphans::<Service>(ctx, ns, group, owner_uid, &keep.svc).await?;
    delete_orphans::<ConfigMap>(ctx, ns, group, owner_uid, &keep.cm).await?;
    delete_orphans::<ServiceAccount>(ctx, ns, group, owner_uid, &keep.sa).await?;
    Ok(applied)
}
