//! The ReplicationGroup controller: `reconcile(rg) = finalizer(Apply | Cleanup)`.
//!
//! Apply: fetch (Rules, Routes, Secrets) -> validate (pure; a problem becomes `Degraded /
//! InvalidSpec` + an Event, nothing is applied, and the controller waits for a change) -> build
//! (pure) -> server-side apply + orphan deletion -> slot read from the source -> status. A
//! healthy group is requeued every `status_interval` to refresh slot and lag.
//!
//! Cleanup (the group is being deleted), by `spec.reclaimPolicy`:
//! - `retain`: nothing is dropped; a Warning Event says which slot keeps WAL on the source.
//!   The owned objects go with the group (owner references), the NATS volumes stay.
//! - `delete`: the replicator and worker StatefulSets (and Deployments of an earlier version)
//!   are deleted; once none of their pods is left (a live replicator holds the slot), the slot,
//!   publication and DDL capture objects of the group name (`status.groupName`) are dropped on
//!   the source, the streams on an external NATS are deleted, except what another group of the
//!   cluster with the same group name may use (`group_name::co_owners`) (a managed NATS's
//!   volumes go with its StatefulSet: `persistentVolumeClaimRetentionPolicy.whenDeleted:
//!   Delete`), then the finalizer is removed. Everything tolerates objects already gone, so a
//!   cleanup interrupted at any point is simply run again. If the source cannot be reached the
//!   finalizer stays (with an Event and backoff): setting `reclaimPolicy: retain` lets the
//!   delete finish without cleanup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalize};
use kube::{Api, ResourceExt};

use super::apply::{apply_desired, delete, list_pods, ssa, Applied, NatsPlan, Plan};
use super::conditions::{
    carry_transition_times, group_status, kstatus_conditions, Observed, DEGRADED, READY,
    RECONCILING, STALLED,
};
use super::nats_change::{self, RunningNats};
use super::validate::{
    external_nats, fetch, fetch_secrets, nats_access, secret_versions, source_connection, validate,
    webhook_header_keys, Refs,
};
use super::{
    error_chain, key_of, observe, Context, Error, Readings, CLEANUP_POLL, FIELD_MANAGER, FINALIZER,
};
use crate::crd::{DesiredState, ReclaimPolicy, ReplicationGroup, ReplicationGroupStatus};
use crate::group_name;
use crate::resources::quantity::quantity_bytes;
use crate::resources::{
    admit_operator, annotate_nats_secret_versions, annotate_secret_versions, applied_nats, build,
    config_map_name, copy_job_name, default_image_pull_secrets, nats_auth_name, nats_auth_secret,
    nats_name, nats_volume_claim_name, replicator_name, selector_labels, worker_name, NatsAuth,
    REPLICATOR_FILE,
};
use crate::source;

/// How long a slot read may take before the status reports the source as unreachable.
const SLOT_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Reconciles one ReplicationGroup.
#[tracing::instrument(skip_all, fields(namespace = rg.namespace().unwrap_or_default(), name = rg.name_any()))]
pub async fn reconcile(rg: Arc<ReplicationGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let api: Api<ReplicationGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, rg.clone(), |event| async {
        match event {
            // Boxed: the desired objects make these futures large.
            Finalize::Apply(rg) => Box::pin(apply(rg, &ctx)).await,
            Finalize::Cleanup(rg) => Box::pin(cleanup(rg, &ctx)).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    match &result {
        Err(e) => report_error(&ctx, &rg, e).await,
        Ok(_) => ctx.forget_events(&super::error_key(rg.as_ref())),
    }
    if result.is_ok() && rg.metadata.deletion_timestamp.is_some() {
        // The cleanup finished: the finalizer is gone, and so is the group.
        ctx.metrics.forget_group(&ns, &rg.name_any());
    }
    observe(&ctx, rg.as_ref(), &result, started);
    result
}

/// The group's ConfigMap `<group>-pg-flo-config`, if it exists: what the pods run (the
/// `spec.nats` it was rendered with, the runtime group name of an earlier version).
async fn group_config_map(ctx: &Context, ns: &str, name: &str) -> Result<Option<ConfigMap>, Error> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let cm_name = config_map_name(name);
    cms.get_opt(&cm_name)
        .await
        .map_err(Error::kube("get", "ConfigMap", &cm_name))
}

/// The managed NATS StatefulSet `<group>-nats`, if it exists.
async fn running_nats(ctx: &Context, ns: &str, name: &str) -> Result<Option<StatefulSet>, Error> {
    let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let sts_name = nats_name(name);
    sts.get_opt(&sts_name)
        .await
        .map_err(Error::kube("get", "StatefulSet", &sts_name))
}

/// Grows the volume claims of the managed NATS to `size` (the StorageClass must allow volume
/// expansion); `Err` with the refusal message when the API server refuses.
async fn resize_volumes(
    ctx: &Context,
    ns: &str,
    group: &str,
    replicas: u8,
    size: &str,
) -> Result<Result<(), String>, Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for i in 0..i32::from(replicas.max(1)) {
        let claim = nats_volume_claim_name(group, i);
        let Some(pvc) = api.get_opt(&claim).await.map_err(Error::kube(
            "get",
            "PersistentVolumeClaim",
            &claim,
        ))?
        else {
            continue;
        };
        let current = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| quantity_bytes(&q.0));
        if current >= quantity_bytes(size) {
            continue;
        }
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
        match api
            .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(claim, size, "resized NATS volume claim"),
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) => {
                return Ok(Err(format!(
                    "spec.nats.managed.storageSize: the volume claim {claim} cannot grow to \
                     {size} ({}): the servers keep their volumes as they are; use a StorageClass \
                     with allowVolumeExpansion, or set it back",
                    s.message
                )))
            }
            Err(e) => return Err(Error::kube("resize", "PersistentVolumeClaim", claim)(e)),
        }
    }
    Ok(Ok(()))
}

/// The managed NATS's credentials Secret `<group>-nats-auth`: read, or created with new random
/// passwords (keys it lacks are added). Passwords are generated once: a reconcile never
/// changes them.
async fn ensure_nats_auth(ctx: &Context, rg: &ReplicationGroup) -> Result<Secret, Error> {
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let name = nats_auth_name(&rg.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "Secret", &name))?;
    let auth = match &existing {
        Some(s) => match NatsAuth::from_secret(s)? {
            (_, false) => return Ok(s.clone()),
            (auth, true) => auth,
        },
        None => NatsAuth::generate()?,
    };
    tracing::info!(secret = name, "writing the managed NATS credentials");
    ssa(ctx, &ns, &nats_auth_secret(rg, &auth)?).await
}

/// `name=resourceVersion` of the Secrets the NATS servers read.
fn versions_of(secrets: &[&Secret]) -> String {
    secrets
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s.name_any(),
                s.metadata.resource_version.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A failed reconcile as the user sees it: `Degraded=True` with the error's reason and message
/// (the other conditions keep what was last observed) and one Warning Event per reason and
/// [`super::EVENT_REPEAT`] while the error lasts. Waiting for pods during a delete is no error
/// (the `Deleting` status says what it waits for). Best effort: a failure here is logged.
async fn report_error(ctx: &Context, rg: &ReplicationGroup, err: &Error) {
    if matches!(err, Error::CleanupPending(_)) {
        return;
    }
    let reason = err.reason();
    let message = format!("{} (retried with backoff)", super::describe(err));
    if ctx.event_due(&super::error_key(rg), reason) {
        ctx.event(rg, EventType::Warning, reason, "Reconcile", message.clone())
            .await;
    }
    let (Some(ns), name) = (rg.namespace(), rg.name_any()) else {
        return;
    };
    let api: Api<ReplicationGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let current = match api.get_opt(&name).await {
        Ok(Some(current)) => current,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the group to report a reconcile error");
            return;
        }
    };
    let old = current.status.clone().unwrap_or_default();
    let Some(status) = error_status(&current, reason, &message) else {
        return;
    };
    if status != old {
        if let Err(e) = write_status(ctx, &current, status).await {
            tracing::warn!(error = %error_chain(&e), "cannot write the reconcile error to the status");
        }
    }
}

/// The status of `rg` with `Degraded=True` (`reason`, `message`); `None` when it already says
/// so (a retry with the same error writes nothing).
pub fn error_status(
    rg: &ReplicationGroup,
    reason: &str,
    message: &str,
) -> Option<ReplicationGroupStatus> {
    let old = rg.status.clone().unwrap_or_default();
    if old.conditions.iter().any(|c| {
        c.type_ == DEGRADED && c.status == "True" && c.reason == reason && c.message == message
    }) {
        return None;
    }
    let mut status = old.clone();
    let degraded = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: DEGRADED.into(),
        status: "True".into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: rg.metadata.generation,
        last_transition_time: Time(Timestamp::now()),
    };
    status.conditions.retain(|c| c.type_ != DEGRADED);
    let at = status
        .conditions
        .iter()
        .position(|c| c.type_ == READY)
        .map_or(0, |i| i + 1);
    status
        .conditions
        .insert(at.min(status.conditions.len()), degraded);
    status
        .conditions
        .retain(|c| c.type_ != RECONCILING && c.type_ != STALLED);
    let kstatus = kstatus_conditions(status.phase, &status.conditions, rg.metadata.generation);
    status.conditions.extend(kstatus);
    carry_transition_times(&old.conditions, &mut status.conditions);
    Some(status)
}

async fn apply(rg: Arc<ReplicationGroup>, ctx: &Context) -> Result<Action, Error> {
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let name = rg.name_any();
    // A change of spec.nats is judged against what runs (see `nats_change`); the objects are
    // rendered from the effective spec, with refused changes reverted.
    let config_map = group_config_map(ctx, &ns, &name).await?;
    let applied_nats = config_map.as_ref().and_then(applied_nats);
    let running_sts = running_nats(ctx, &ns, &name).await?;
    let running = running_sts.as_ref().map(RunningNats::of);
    let change = nats_change::decide(&rg.spec.nats, applied_nats.as_ref(), running.as_ref());
    let mut refused = change.refused;
    let mut effective = (*rg).clone();
    effective.spec.nats = change.effective;
    let rg = Arc::new(effective);
    let mut refs = fetch(ctx, &rg).await?;
    // The runtime group name: recorded, explicit, the one an earlier version ran under, or the
    // namespace-qualified default.
    let legacy = if rg
        .status
        .as_ref()
        .and_then(|s| s.group_name.as_ref())
        .is_none()
        && rg.spec.group_name.is_none()
    {
        legacy_group(&rg, config_map.as_ref())
    } else {
        None
    };
    let decided = group_name::decide(&rg, legacy.as_deref());
    let mut problems = validate(&rg, &refs).err().unwrap_or_default();
    if let Err(p) = &decided {
        problems.insert(0, p.clone());
    }
    if !problems.is_empty() {
        let observed = Observed {
            invalid: problems.clone(),
            pods: list_pods(ctx, &ns, &name).await?,
            ..Observed::default()
        };
        let status = group_status(&rg, &observed);
        degraded_event(ctx, &rg, &status, "Validate").await;
        write_status(ctx, &rg, status).await?;
        tracing::warn!(
            problems = problems.len(),
            "invalid spec: waiting for a change"
        );
        return Ok(Action::await_change());
    }
    let Ok((group, _source)) = decided else {
        return Ok(Action::await_change());
    };

    // Another group of the cluster on the same name and source server (or external NATS).
    let mine = group_name::claim(&rg, group.clone());
    let others = other_claims(ctx, &rg).await?;
    if let Some((other, how)) = group_name::blocked_by(&mine, &others) {
        let message = conflict_message(&mine, other, how);
        let status = group_status(
            &rg,
            &Observed {
                conflict: Some(message.clone()),
                pods: list_pods(ctx, &ns, &name).await?,
                ..Observed::default()
            },
        );
        degraded_event(ctx, &rg, &status, "Validate").await;
        write_status(ctx, &rg, status).await?;
        tracing::warn!(
            group,
            other = other.id,
            "group name in use: nothing applied"
        );
        // Looked at again: the other group may go away.
        return Ok(Action::requeue(ctx.status_interval));
    }

    let uid = rg.uid().ok_or(Error::Unnamed)?;
    // A larger volume: resize the claims, then re-create the StatefulSet.
    let mut recreate = false;
    let mut rg = rg;
    if let (Some(grow), Some(m)) = (&change.grow, rg.spec.nats.managed.as_ref()) {
        match resize_volumes(ctx, &ns, &name, m.replicas, &grow.to).await? {
            Ok(()) => recreate = running_sts.is_some(),
            Err(refusal) => {
                refused.push(refusal);
                let mut keep = (*rg).clone();
                if let Some(m) = keep.spec.nats.managed.as_mut() {
                    m.storage_size = grow.from.clone();
                }
                rg = Arc::new(keep);
            }
        }
    }
    let nats_secrets = match &rg.spec.nats.managed {
        Some(m) => {
            let auth = ensure_nats_auth(ctx, &rg).await?;
            refs.secrets.insert(auth.name_any(), Some(auth.clone()));
            let tls = m
                .tls
                .as_ref()
                .and_then(|t| refs.secrets.get(&t.secret_name).cloned().flatten());
            Some(versions_of(
                &[Some(&auth), tls.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>(),
            ))
        }
        None => None,
    };
    let keys = webhook_header_keys(&rg, &refs);
    // The builders render the decided name (`group_name::group_name` reads the status first).
    let mut named = (*rg).clone();
    named.status.get_or_insert_with(Default::default).group_name = Some(group.clone());
    let mut desired = build(&named, &refs.rules, &refs.routes, &ctx.runtime_image, &keys)?;
    annotate_secret_versions(&mut desired, &secret_versions(&refs));
    if let Some(v) = &nats_secrets {
        annotate_nats_secret_versions(&mut desired, v);
    }
    default_image_pull_secrets(&mut desired, &ctx.runtime_image_pull_secrets);
    if let Some(operator) = &ctx.operator_pods {
        admit_operator(&mut desired, operator);
    }
    let recorded_copy = rg
        .status
        .as_ref()
        .and_then(|s| s.copy_completion_time.clone());
    let plan = Plan {
        run_workloads: rg.spec.state != DesiredState::Stopped,
        copy_recorded: recorded_copy.is_some(),
    };
    let config_hash = desired.config_hash.clone();
    let nats_plan = NatsPlan {
        running: running_sts,
        recreate,
    };
    let applied = Box::pin(apply_desired(
        ctx, &ns, &name, &uid, desired, plan, &nats_plan,
    ))
    .await?;
    let readings = match ctx.fresh_readings(&uid) {
        Some(readings) => readings,
        None => {
            let access = nats_access(&rg, &refs);
            let (slot, consumer) = tokio::join!(
                read_slot(&rg, &refs, &group),
                super::nats_status::read_consumer(&access, &group)
            );
            let readings = Readings { slot, consumer };
            ctx.remember_readings(&uid, readings.clone());
            readings
        }
    };
    let Applied {
        replicator,
        worker,
        copy_job,
        copy_complete,
        waiting_for,
        nats_error,
        pods,
    } = applied;
    let migrating = !waiting_for.is_empty();
    let observed = Observed {
        replicator,
        worker,
        copy_job,
        copy_completed: recorded_copy.is_some() || copy_complete,
        waiting_for,
        slot: Some(readings.slot),
        consumer: Some(readings.consumer),
        pods,
        config_hash: Some(config_hash),
        refused,
        ..Observed::default()
    };
    let mut status = group_status(&rg, &observed);
    status.group_name = Some(group);
    if recorded_copy.is_none() && copy_complete {
        status.copy_completion_time = Some(Time(Timestamp::now()));
    }
    degraded_event(ctx, &rg, &status, "Reconcile").await;
    write_status(ctx, &rg, status).await?;
    if let Some(e) = nats_error {
        return Err(e);
    }
    if migrating || recreate {
        // The old pods are terminating, or the NATS StatefulSet is re-created once the deleted
        // one is gone: look again soon.
        return Ok(Action::requeue(CLEANUP_POLL));
    }
    Ok(Action::requeue(ctx.status_interval))
}

/// The `group:` of the group's existing `replicator.yaml` (a ConfigMap the group owns): the name
/// a group created before `spec.groupName` runs under.
fn legacy_group(rg: &ReplicationGroup, cm: Option<&ConfigMap>) -> Option<String> {
    let cm = cm?;
    let owned = rg
        .uid()
        .is_some_and(|uid| cm.owner_references().iter().any(|o| o.uid == uid));
    if !owned {
        return None;
    }
    cm.data
        .as_ref()
        .and_then(|d| d.get(REPLICATOR_FILE))
        .and_then(|y| serde_yaml::from_str::<serde_yaml::Value>(y).ok())
        .and_then(|v| v.get("group")?.as_str().map(str::to_owned))
}

/// What the other ReplicationGroups of the watched namespaces claim (one that cannot be decoded
/// or has no valid name claims nothing).
async fn other_claims(
    ctx: &Context,
    rg: &ReplicationGroup,
) -> Result<Vec<group_name::Claim>, Error> {
    let ar = ApiResource::erase::<ReplicationGroup>(&());
    let apis: Vec<Api<DynamicObject>> = if ctx.watch_namespaces.is_empty() {
        vec![Api::all_with(ctx.client.clone(), &ar)]
    } else {
        ctx.watch_namespaces
            .iter()
            .map(|ns| Api::namespaced_with(ctx.client.clone(), ns, &ar))
            .collect()
    };
    let me = rg.uid();
    let mut claims = Vec::new();
    for api in apis {
        let list = api.list(&ListParams::default()).await.map_err(Error::kube(
            "list",
            "ReplicationGroup",
            "(all)",
        ))?;
        for obj in list.items {
            if obj.metadata.uid.is_some() && obj.metadata.uid == me {
                continue;
            }
            let Ok(other) =
                serde_json::to_value(&obj).and_then(serde_json::from_value::<ReplicationGroup>)
            else {
                continue;
            };
            claims.extend(group_name::claim_of(&other));
        }
    }
    Ok(claims)
}

/// The condition message of a group refused because `other` holds its name.
fn conflict_message(
    mine: &group_name::Claim,
    other: &group_name::Claim,
    how: group_name::Collision,
) -> String {
    let what = match how {
        group_name::Collision::Slot => format!(
            "both would use the replication slot and publication {} on {}:{}",
            source::slot_name(&mine.group),
            mine.server.0,
            mine.server.1
        ),
        group_name::Collision::Streams => format!(
            "both would use the streams pgflo_{}_* on {}",
            mine.group,
            mine.nats.as_deref().unwrap_or_default()
        ),
    };
    let fix = if mine.recorded {
        "delete this group with reclaimPolicy retain and create it again with another \
         spec.groupName"
    } else {
        "set spec.groupName to another name"
    };
    format!(
        "group name {:?} is already used by ReplicationGroup {} ({what}): {fix}; nothing is \
         applied until then",
        mine.group, other.id
    )
}

/// Whether the Degraded condition's change from `old` to `new` is worth an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DegradedChange {
    /// Nothing new.
    None,
    /// Status or reason changed (a new problem, or healthy again): always published.
    Reason,
    /// Only the message changed (a new restart count, one more invalid Rule): published at most
    /// once per reason and [`super::EVENT_REPEAT`].
    Message,
}

/// How the Degraded condition changed between the stored and the new status.
pub fn degraded_change(
    old: Option<&ReplicationGroupStatus>,
    new: &ReplicationGroupStatus,
) -> DegradedChange {
    let find =
        |s: &ReplicationGroupStatus| s.conditions.iter().find(|c| c.type_ == DEGRADED).cloned();
    match (old.and_then(find), find(new)) {
        (_, None) => DegradedChange::None,
        (None, Some(n)) if n.status == "True" => DegradedChange::Reason,
        (None, Some(_)) => DegradedChange::None,
        (Some(o), Some(n)) if o.status != n.status || o.reason != n.reason => {
            DegradedChange::Reason
        }
        (Some(o), Some(n)) if o.message != n.message && n.status == "True" => {
            DegradedChange::Message
        }
        _ => DegradedChange::None,
    }
}

/// Publishes the Event of a change of the Degraded condition: a Warning with its reason, or
/// `Healthy` when it clears; a change of the message alone at most once per
/// [`super::EVENT_REPEAT`].
async fn degraded_event(
    ctx: &Context,
    rg: &ReplicationGroup,
    status: &ReplicationGroupStatus,
    action: &str,
) {
    let change = degraded_change(rg.status.as_ref(), status);
    let Some(c) = status.conditions.iter().find(|c| c.type_ == DEGRADED) else {
        return;
    };
    let (type_, reason) = if c.status == "True" {
        (EventType::Warning, c.reason.as_str())
    } else {
        (EventType::Normal, "Healthy")
    };
    let key = key_of(rg);
    let publish = match change {
        DegradedChange::None => false,
        DegradedChange::Reason => {
            ctx.mark_event(&key, reason);
            true
        }
        DegradedChange::Message => ctx.event_due(&key, reason),
    };
    if publish {
        ctx.event(rg, type_, reason, action, c.message.clone())
            .await;
    }
}

/// Reads the slot of `group` from the source, as a status value or the error text.
async fn read_slot(
    rg: &ReplicationGroup,
    refs: &Refs,
    group: &str,
) -> Result<crate::crd::SlotStatus, String> {
    let Some(conn) = source_connection(rg, refs) else {
        return Err("the source credentials are not readable from their Secrets".into());
    };
    match tokio::time::timeout(SLOT_READ_TIMEOUT, source::read_slot_status(&conn, group)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!(
            "no answer from {}:{} within {}s",
            conn.host,
            conn.port,
            SLOT_READ_TIMEOUT.as_secs()
        )),
    }
}

/// Shows `status` in the operator's per-group gauges and writes it unless the group already
/// has it.
async fn write_status(
    ctx: &Context,
    rg: &ReplicationGroup,
    status: ReplicationGroupStatus,
) -> Result<(), Error> {
    ctx.metrics
        .observe_group(&rg.namespace().unwrap_or_default(), &rg.name_any(), &status);
    if rg.status.as_ref() == Some(&status) {
        return Ok(());
    }
    patch_status(ctx, rg, status).await
}

/// Writes the status subresource (server-side apply, same field manager).
async fn patch_status(
    ctx: &Context,
    rg: &ReplicationGroup,
    status: ReplicationGroupStatus,
) -> Result<(), Error> {
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let name = rg.name_any();
    let api: Api<ReplicationGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "pgflo.io/v1alpha1",
        "kind": "ReplicationGroup",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube("patch status of", "ReplicationGroup", name))?;
    Ok(())
}

/// The group name the cleanup drops objects of: the recorded one, else the one an earlier
/// version ran under; `None` when the group never ran under a name (nothing to drop).
async fn cleanup_group(ctx: &Context, rg: &ReplicationGroup) -> Result<Option<String>, Error> {
    if let Some(g) = rg.status.as_ref().and_then(|s| s.group_name.clone()) {
        return Ok(Some(g));
    }
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let config_map = group_config_map(ctx, &ns, &rg.name_any()).await?;
    let legacy = legacy_group(rg, config_map.as_ref());
    let has_slot = rg
        .status
        .as_ref()
        .and_then(|s| s.slot.as_ref()?.name.as_ref())
        .is_some();
    if legacy.is_none() && !has_slot {
        return Ok(None);
    }
    // (spec.groupName unrecorded plus a ConfigMap: an interrupted first apply.)
    Ok(group_name::decide(rg, legacy.as_deref())
        .ok()
        .map(|(g, _)| g))
}

async fn cleanup(rg: Arc<ReplicationGroup>, ctx: &Context) -> Result<Action, Error> {
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let name = rg.name_any();
    if let Some(uid) = rg.uid() {
        ctx.forget_readings(&uid);
    }
    ctx.forget_events(&key_of(rg.as_ref()));
    let group = cleanup_group(ctx, &rg).await?;
    if rg.spec.reclaim_policy == ReclaimPolicy::Retain {
        let note = match &group {
            Some(group) => {
                let slot = source::slot_name(group);
                format!(
                    "reclaimPolicy is retain: replication slot {slot} and publication {} are \
                     kept on {}/{} and hold WAL until dropped (SELECT \
                     pg_drop_replication_slot('{slot}'))",
                    source::publication_name(group),
                    rg.spec.source.host,
                    rg.spec.source.database
                )
            }
            None => "reclaimPolicy is retain: the group never ran, nothing was created on the \
                     source"
                .to_owned(),
        };
        ctx.event(
            rg.as_ref(),
            EventType::Warning,
            "SlotRetained",
            "Cleanup",
            note,
        )
        .await;
        return Ok(Action::await_change());
    }

    // 1. No replicator may hold the slot, no worker the consumer.
    for sts in [replicator_name(&name), worker_name(&name)] {
        delete::<StatefulSet>(ctx, &ns, &sts).await?;
    }
    for component in ["replicator", "worker"] {
        // The Deployments of an earlier version.
        delete::<Deployment>(ctx, &ns, &format!("{name}-{component}")).await?;
    }
    delete::<Job>(ctx, &ns, &copy_job_name(&name)).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut waiting = Vec::new();
    for component in ["replicator", "worker"] {
        let selector = selector_labels(&name, component)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::kube("list", "Pod", &selector))?;
        waiting.extend(list.items.iter().map(|p| p.name_any()));
    }
    if !waiting.is_empty() {
        let msg = format!(
            "waiting for pods {} to terminate before dropping the slot",
            waiting.join(", ")
        );
        deleting_status(ctx, &rg, msg.clone()).await?;
        // An error keeps the finalizer; `error_policy` looks again in CLEANUP_POLL.
        return Err(Error::CleanupPending(msg));
    }
    let Some(group) = group else {
        ctx.event(
            rg.as_ref(),
            EventType::Normal,
            "CleanedUp",
            "Cleanup",
            "the group never ran: nothing to drop on the source or NATS".into(),
        )
        .await;
        return Ok(Action::await_change());
    };
    let slot = source::slot_name(&group);

    // Another group of the cluster on the same slot or streams: leave those in place.
    let mine = group_name::claim(&rg, group.clone());
    let others = other_claims(ctx, &rg).await?;
    let shared = group_name::co_owners(&mine, &others);
    let keep_slot = shared
        .iter()
        .find(|(_, how)| *how == group_name::Collision::Slot)
        .map(|(o, _)| o.id.clone());
    let keep_streams = shared
        .iter()
        .find(|(_, how)| *how == group_name::Collision::Streams)
        .map(|(o, _)| o.id.clone());
    for (what, other) in [
        (
            format!("replication slot and publication {slot}"),
            &keep_slot,
        ),
        (format!("streams pgflo_{group}_*"), &keep_streams),
    ] {
        if let Some(other) = other {
            ctx.event(
                rg.as_ref(),
                EventType::Warning,
                "CleanupSkipped",
                "Cleanup",
                format!(
                    "the {what} also belong to ReplicationGroup {other} (same group name): left \
                     in place"
                ),
            )
            .await;
        }
    }
    deleting_status(
        ctx,
        &rg,
        "dropping the replication slot, publication and streams".into(),
    )
    .await?;

    // 2. The source: slot, publication, DDL capture objects. The NATS whose streams go is the
    // one the pods used (a refused change of spec.nats never reached them).
    let applied_nats = group_config_map(ctx, &ns, &name)
        .await?
        .as_ref()
        .and_then(applied_nats);
    let rg = match applied_nats {
        Some(nats) if nats != rg.spec.nats => {
            let mut used = (*rg).clone();
            used.spec.nats = nats;
            Arc::new(used)
        }
        _ => rg,
    };
    let refs = fetch_secrets(ctx, &rg).await?;
    if keep_slot.is_none() {
        let Some(conn) = source_connection(&rg, &refs) else {
            // The Event and the condition come from `report_error`.
            let msg = "cannot clean up: the source credentials Secret is missing; restore it, or \
                       set spec.reclaimPolicy: retain to delete the group without cleanup";
            return Err(Error::CleanupBlocked(msg.into()));
        };
        match source::drop_group_objects(&conn, &group).await {
            Ok(source::DropOutcome {
                owned_by: Some(owner),
                ..
            }) => tracing::warn!(
                slot,
                owner,
                "the replication slot and publication of this name belong to another group: left in place"
            ),
            Ok(outcome) => tracing::info!(
                slot,
                slot_dropped = outcome.slot_dropped,
                publication_dropped = outcome.publication_dropped,
                "source cleaned up"
            ),
            Err(e) if e.category() == "slot-active" => {
                // A replicator that just terminated may still hold the slot for a moment.
                deleting_status(ctx, &rg, error_chain(&e)).await?;
                return Err(Error::CleanupPending(error_chain(&e)));
            }
            Err(e) => return Err(Error::Source(e)),
        }
    }

    // 3. The streams on an external NATS (a managed NATS's volumes go with it).
    if keep_streams.is_none() {
        if let Some(access) = external_nats(&rg, &refs) {
            super::nats_cleanup::delete_group_streams(&access, &group).await?;
        }
    }
    ctx.event(
        rg.as_ref(),
        EventType::Normal,
        "CleanedUp",
        "Cleanup",
        match (&keep_slot, &keep_streams) {
            (None, None) => {
                format!("dropped replication slot {slot}, its publication and the group's streams")
            }
            _ => format!(
                "cleaned up what only this group used (group name {group}, shared objects left in place)"
            ),
        },
    )
    .await;
    Ok(Action::await_change())
}

/// Status while deleting: phase `Deleting`, `Ready` false with `message`.
async fn deleting_status(
    ctx: &Context,
    rg: &ReplicationGroup,
    message: String,
) -> Result<(), Error> {
    let observed = Observed {
        deleting: Some(message),
        slot: rg.status.as_ref().and_then(|s| s.slot.clone()).map(Ok),
        ..Observed::default()
    };
    write_status(ctx, rg, group_status(rg, &observed)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn status(conditions: &[(&str, &str, &str, &str)]) -> ReplicationGroupStatus {
        ReplicationGroupStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, r, m)| Condition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: (*r).into(),
                    message: (*m).into(),
                    observed_generation: Some(1),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..ReplicationGroupStatus::default()
        }
    }

    #[test]
    fn degraded_events_on_a_new_reason_and_rarely_on_a_new_message() {
        let healthy = status(&[(DEGRADED, "False", "Healthy", "no problem found")]);
        let crash = |n: u32| {
            status(&[(
                DEGRADED,
                "True",
                "WorkerCrashLooping",
                Box::leak(format!("after {n} restarts").into_boxed_str()),
            )])
        };
        let table = [
            (
                "first status, healthy",
                None,
                healthy.clone(),
                DegradedChange::None,
            ),
            (
                "first status, degraded",
                None,
                crash(1),
                DegradedChange::Reason,
            ),
            ("unchanged", Some(crash(1)), crash(1), DegradedChange::None),
            (
                "a new restart count",
                Some(crash(1)),
                crash(2),
                DegradedChange::Message,
            ),
            (
                "healthy again",
                Some(crash(2)),
                healthy.clone(),
                DegradedChange::Reason,
            ),
            (
                "degraded again",
                Some(healthy.clone()),
                crash(3),
                DegradedChange::Reason,
            ),
            (
                "another reason",
                Some(crash(3)),
                status(&[(DEGRADED, "True", "SlotLost", "lost")]),
                DegradedChange::Reason,
            ),
            (
                "no condition",
                Some(crash(1)),
                ReplicationGroupStatus::default(),
                DegradedChange::None,
            ),
        ];
        for (what, old, new, want) in table {
            assert_eq!(degraded_change(old.as_ref(), &new), want, "{what}");
        }
    }

    #[test]
    fn a_reconcile_error_sets_degraded_once_and_keeps_the_rest() {
        let mut rg: ReplicationGroup = serde_yaml::from_str(
            "apiVersion: pgflo.io/v1alpha1
kind: ReplicationGroup
metadata: {name: orders, namespace: data, generation: 3}
spec:
  source: {host: db, database: shop, user: {name: s, key: u}, password: {name: s, key: p}}
  sink: {stdout: {}}
  nats: {managed: {}}",
        )
        .unwrap();
        rg.status = Some(status(&[
            (
                READY,
                "True",
                "Streaming",
                "replicator and worker are running",
            ),
            (DEGRADED, "False", "Healthy", "no problem found"),
        ]));
        let s = error_status(&rg, "KubernetesApiError", "cannot apply StatefulSet x").unwrap();
        let got: Vec<(&str, &str, &str)> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (READY, "True", "Streaming"),
                (DEGRADED, "True", "KubernetesApiError"),
                // kstatus: the error is retried.
                (RECONCILING, "True", "KubernetesApiError"),
            ]
        );
        assert_eq!(s.conditions[1].message, "cannot apply StatefulSet x");
        assert_eq!(s.conditions[1].observed_generation, Some(3));
        assert_eq!(
            s.conditions[0].last_transition_time,
            Time(Timestamp::UNIX_EPOCH)
        );
        assert_ne!(
            s.conditions[1].last_transition_time,
            Time(Timestamp::UNIX_EPOCH)
        );
        // The same error again: nothing to write.
        rg.status = Some(s);
        assert_eq!(
            error_status(&rg, "KubernetesApiError", "cannot apply StatefulSet x"),
            None
        );
        // Another message of the same reason: written, transition time kept.
        let again = error_status(&rg, "KubernetesApiError", "cannot apply Service y").unwrap();
        assert_eq!(
            again.conditions[1].last_transition_time,
            rg.status.as_ref().unwrap().conditions[1].last_transition_time
        );
    }
}
