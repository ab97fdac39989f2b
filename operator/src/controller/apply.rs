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
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Context, Error, FIELD_MANAGER};
use crate::resources::{Desired, GROUP_LABEL};

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
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The replicator Deployment (`None` when stopped).
    pub replicator: Option<Deployment>,
    /// The worker Deployment (`None` when stopped).
    pub worker: Option<Deployment>,
    /// The copy Job (`mode: copy`, not stopped).
    pub copy_job: Option<Job>,
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

/// Applies every desired object (the Deployments only when `run_workloads`), then deletes the
/// group's objects that are no longer desired.
pub async fn apply_desired(
    ctx: &Context,
    ns: &str,
    group: &str,
    owner_uid: &str,
    desired: Desired,
    run_workloads: bool,
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
    let mut keep_sa = Vec::new();
    let mut keep_cm = Vec::new();
    let mut keep_deploy = Vec::new();
    let mut keep_sts = Vec::new();
    let mut keep_svc = Vec::new();
    let mut keep_pdb = Vec::new();
    let mut keep_job = Vec::new();

    keep_sa.push(ssa(ctx, ns, &service_account).await?.name_any());
    keep_cm.push(ssa(ctx, ns, &config_map).await?.name_any());
    if let Some(n) = nats {
        keep_svc.push(ssa(ctx, ns, &n.headless_service).await?.name_any());
        keep_svc.push(ssa(ctx, ns, &n.client_service).await?.name_any());
        keep_sts.push(ssa(ctx, ns, &n.stateful_set).await?.name_any());
        keep_pdb.push(ssa(ctx, ns, &n.pdb).await?.name_any());
    }
    let mut applied = Applied::default();
    if run_workloads {
        if let Some(job) = copy_job {
            let j = ensure_job(ctx, ns, &job).await?;
            keep_job.push(j.name_any());
            applied.copy_job = Some(j);
        } else {
            let r = ssa(ctx, ns, &replicator).await?;
            keep_deploy.push(r.name_any());
            applied.replicator = Some(r);
        }
        let w = ssa(ctx, ns, &worker).await?;
        keep_deploy.push(w.name_any());
        applied.worker = Some(w);
    }

    delete_orphans::<Deployment>(ctx, ns, group, owner_uid, &keep_deploy).await?;
    delete_orphans::<Job>(ctx, ns, group, owner_uid, &keep_job).await?;
    delete_orphans::<StatefulSet>(ctx, ns, group, owner_uid, &keep_sts).await?;
    delete_orphans::<PodDisruptionBudget>(ctx, ns, group, owner_uid, &keep_pdb).await?;
    delete_orphans::<Service>(ctx, ns, group, owner_uid, &keep_svc).await?;
    delete_orphans::<ConfigMap>(ctx, ns, group, owner_uid, &keep_cm).await?;
    delete_orphans::<ServiceAccount>(ctx, ns, group, owner_uid, &keep_sa).await?;
    Ok(applied)
}
