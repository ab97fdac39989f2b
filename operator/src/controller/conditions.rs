//! The status of a group computed from what was observed, without IO: phase, conditions
//! (`Ready`, `Progressing`, `Degraded`, `Paused`, and the kstatus pair `Reconciling` /
//! `Stalled` derived from them by [`kstatus_conditions`]) and slot; the conditions of a Rule or
//! Route (`Accepted`, and `Ready` / `Reconciling` / `Stalled` by [`member_conditions`]).
//!
//! kstatus (the conventions Flux, Argo CD and `kubectl wait` read): `Ready`; `Reconciling`
//! True while the controller is still working towards the spec (a rollout, the initial copy, a
//! delete, an error it retries); `Stalled` True when it cannot get there until the user changes
//! something. Both are present only while True (abnormal-true polarity), with
//! `observedGeneration`.
//!
//! A condition keeps its `lastTransitionTime` while its status does not change, so a periodic
//! refresh does not look like a flapping condition.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::pods::{pod_problems, pod_states};
use crate::crd::{
    ConsumerStatus, DesiredState, Mode, Phase, ReplicationGroup, ReplicationGroupStatus, SlotStatus,
};

/// Condition types of a ReplicationGroup.
pub const READY: &str = "Ready";
/// Rollout or initial copy in progress.
pub const PROGRESSING: &str = "Progressing";
/// Something needs attention (see reason and message).
pub const DEGRADED: &str = "Degraded";
/// Paused or stopped on request.
pub const PAUSED: &str = "Paused";
/// `Degraded` reason of a refused spec change.
pub const CHANGE_REFUSED: &str = "ChangeRefused";
/// Condition type of a Rule or Route.
pub const ACCEPTED: &str = "Accepted";
/// kstatus: the controller is still working towards the spec (present only while True).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: progress is blocked until the user changes something (present only while True).
pub const STALLED: &str = "Stalled";

/// `Degraded` reasons (and suffixes, for the pod reasons) that only a change by the user
/// clears: `Stalled`.
const STALLED_REASONS: [&str; 6] = [
    "InvalidSpec",
    "GroupNameConflict",
    "CopyFailed",
    "SlotLost",
    CHANGE_REFUSED,
    "CleanupBlocked",
];
const STALLED_POD_SUFFIXES: [&str; 4] = [
    "CrashLooping",
    "ImagePullFailed",
    "ConfigError",
    "OOMKilled",
];
/// `Degraded` reasons of a reconcile error the controller retries with backoff: `Reconciling`.
const RETRIED_REASONS: [&str; 4] = [
    "KubernetesApiError",
    "BuildFailed",
    "CleanupFailed",
    "FinalizerFailed",
];

/// The kstatus conditions of a group for its phase and its other conditions: `Stalled` when
/// `Degraded` has a reason only the user can clear (an invalid spec, a name conflict, a failed
/// copy, a lost slot, a refused change, a pod that keeps failing, a blocked cleanup);
/// otherwise `Reconciling` while it rolls out, copies, is being deleted or retries an error.
/// Neither while it runs as asked (streaming, completed, paused, stopped), also with a
/// warning (`SlotWalUnreserved`, `SlotRetainedWalHigh`, `SourceUnreachable`: the operator
/// cannot do more there, and `Degraded` / `Ready=False` say it).
pub fn kstatus_conditions(
    phase: Option<Phase>,
    conditions: &[Condition],
    generation: Option<i64>,
) -> Vec<Condition> {
    let find = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let cond = |t: &str, r: &str, m: String| condition(t, true, r, m, generation);
    if let Some(d) = find(DEGRADED) {
        let reason = d.reason.as_str();
        if STALLED_REASONS.contains(&reason)
            || STALLED_POD_SUFFIXES.iter().any(|s| reason.ends_with(s))
        {
            return vec![cond(STALLED, reason, d.message.clone())];
        }
        if RETRIED_REASONS.contains(&reason) {
            return vec![cond(RECONCILING, reason, d.message.clone())];
        }
    }
    let reconciling = match phase {
        Some(Phase::Deleting) => Some((
            "Deleting",
            // Ready whatever its status (a deleting group's Ready is False).
            conditions
                .iter()
                .find(|c| c.type_ == READY)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        )),
        Some(Phase::Pending | Phase::Copying) | None => find(PROGRESSING)
            .map(|p| (p.reason.as_str(), p.message.clone()))
            .or(Some((
                "Pending",
                "waiting for the group to be applied".to_owned(),
            ))),
        _ => find(PROGRESSING).map(|p| (p.reason.as_str(), p.message.clone())),
    };
    reconciling
        .map(|(r, m)| vec![cond(RECONCILING, r, m)])
        .unwrap_or_default()
}

/// The conditions of a Rule or Route for its `Accepted` condition: `Accepted`, `Ready` (True
/// when applied; the reason `Suspended` while its group is paused or stopped), and
/// `Reconciling` while it is rendered or rolled out or an error is retried, or `Stalled` when
/// the user must change something (`InvalidRule`, `InvalidRoute`, `Conflict`,
/// `GroupNotFound`, `NotApplied`). `suspended`: its group is paused or stopped.
pub fn member_conditions(accepted: Condition, suspended: bool) -> Vec<Condition> {
    let generation = accepted.observed_generation;
    let mut ready = Condition {
        type_: READY.into(),
        ..accepted.clone()
    };
    let mut out = Vec::new();
    match (accepted.status.as_str(), accepted.reason.as_str()) {
        ("True", _) => {}
        ("False", "Pending") if suspended => ready.reason = "Suspended".into(),
        ("False", "Pending") | ("Unknown", _) => out.push(condition(
            RECONCILING,
            true,
            &accepted.reason,
            accepted.message.clone(),
            generation,
        )),
        _ => out.push(condition(
            STALLED,
            true,
            &accepted.reason,
            accepted.message.clone(),
            generation,
        )),
    }
    let mut all = vec![accepted, ready];
    all.append(&mut out);
    all
}

/// What the reconciler saw of a group.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Problems of the spec or its references (from `validate`); none when valid.
    pub invalid: Vec<String>,
    /// Another group already uses this group's name (message says which and the fix).
    pub conflict: Option<String>,
    /// The replicator StatefulSet as applied (`None` when stopped or invalid).
    pub replicator: Option<StatefulSet>,
    /// The worker StatefulSet as applied.
    pub worker: Option<StatefulSet>,
    /// The copy Job as applied (`mode: copy`).
    pub copy_job: Option<Job>,
    /// `mode: copy`: the copy finished (recorded, or the Job was seen complete).
    pub copy_completed: bool,
    /// Pods (and Deployments) of an earlier version that must be gone before the StatefulSets
    /// start theirs.
    pub waiting_for: Vec<String>,
    /// The slot read from the source, or why it could not be read.
    pub slot: Option<Result<SlotStatus, String>>,
    /// The group is being deleted; the message says what the cleanup waits for.
    pub deleting: Option<String>,
    /// Changes of the spec that were refused (the running objects keep the old values; see
    /// `nats_change`): `Degraded` with reason `ChangeRefused`, the rest of the status as usual.
    pub refused: Vec<String>,
    /// The group's pods (replicator, worker, copy Job, managed NATS).
    pub pods: Vec<Pod>,
    /// The worker's consumer read from NATS (`error` set when it could not be read).
    pub consumer: Option<ConsumerStatus>,
    /// The hash of the configuration just rendered (`None`: nothing applied).
    pub config_hash: Option<String>,
    /// The time the pod states are judged at (default: now).
    pub now: Option<Timestamp>,
}

/// Whether a Job has a condition `type_` that is true.
fn job_condition(j: &Job, type_: &str) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether a StatefulSet rolled out its current spec and has an available pod.
pub fn workload_available(d: &StatefulSet) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    d.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= generation
            && s.available_replicas.unwrap_or(0) >= 1
            && s.updated_replicas.unwrap_or(0) >= 1
    })
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Keeps the transition time of conditions whose status did not change.
pub fn carry_transition_times(old: &[Condition], new: &mut [Condition]) {
    for c in new.iter_mut() {
        if let Some(o) = old.iter().find(|o| o.type_ == c.type_) {
            if o.status == c.status {
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
}

/// The slot's retained WAL and `spec.maxRetainedWal`, when the first exceeds the second.
pub fn retained_over_limit(
    rg: &ReplicationGroup,
    slot: Option<&SlotStatus>,
) -> Option<(i64, String)> {
    let limit = rg.spec.max_retained_wal.as_ref()?;
    let bytes = crate::resources::quantity::quantity_bytes(limit)?;
    let retained = slot?.retained_bytes?;
    (u64::try_from(retained).ok()? > bytes).then(|| (retained, limit.clone()))
}

/// The status of `rg` for what was observed.
pub fn group_status(rg: &ReplicationGroup, o: &Observed) -> ReplicationGroupStatus {
    let generation = rg.metadata.generation;
    let cond = |t: &str, s: bool, r: &str, m: String| condition(t, s, r, m, generation);
    let slot = match &o.slot {
        Some(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    let slot_error = match &o.slot {
        Some(Err(e)) => Some(e.clone()),
        _ => None,
    };
    let slot_lost = slot
        .as_ref()
        .is_some_and(|s| s.wal_status.as_deref() == Some("lost"));
    let slot_unreserved = slot
        .as_ref()
        .is_some_and(|s| s.wal_status.as_deref() == Some("unreserved"));
    let pod_problems = pod_problems(&o.pods, o.now.unwrap_or_else(Timestamp::now));
    let pods_failing = !pod_problems.is_empty();
    let replicator_up = o.replicator.as_ref().is_some_and(workload_available);
    let worker_up = o.worker.as_ref().is_some_and(workload_available);
    let copying = rg.spec.mode != Mode::Stream && !replicator_up;

    let copy_done = o.copy_completed;
    let copy_failed = !copy_done
        && o.copy_job
            .as_ref()
            .is_some_and(|j| job_condition(j, "Failed"));
    let refused = !o.invalid.is_empty() || o.conflict.is_some();

    // Degraded: the first problem that needs attention.
    let degraded: Option<(&str, String)> = if !o.invalid.is_empty() {
        Some(("InvalidSpec", o.invalid.join("; ")))
    } else if let Some(c) = &o.conflict {
        Some(("GroupNameConflict", c.clone()))
    } else if copy_failed {
        Some((
            "CopyFailed",
            format!(
                "the copy Job failed after its retries: see `kubectl logs job/{}`; delete the \
                 Job to run the copy again",
                o.copy_job
                    .as_ref()
                    .map(|j| j.name_any())
                    .unwrap_or_default()
            ),
        ))
    } else if slot_lost {
        Some((
            "SlotLost",
            "the replication slot lost WAL it needed (wal_status lost; max_slot_wal_keep_size \
             exceeded): changes are missing; delete and recreate the group with mode copyAndStream"
                .to_owned(),
        ))
    } else if let Some(first) = pod_problems.first() {
        Some((
            first.reason.as_str(),
            pod_problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ))
    } else if slot_unreserved {
        Some((
            "SlotWalUnreserved",
            format!(
                "the replication slot holds more WAL than max_wal_size (wal_status unreserved, \
                 {} retained): it loses WAL at the next checkpoint unless the replicator catches \
                 up; raise max_slot_wal_keep_size on the source or fix what holds the replicator \
                 back",
                slot.as_ref()
                    .and_then(|s| s.retained_bytes)
                    .map_or_else(|| "unknown bytes".to_owned(), |b| format!("{b} bytes"))
            ),
        ))
    } else if let Some((retained, limit)) = retained_over_limit(rg, slot.as_ref()) {
        Some((
            "SlotRetainedWalHigh",
            format!(
                "the replication slot retains {retained} bytes of WAL on the source, more than \
                 spec.maxRetainedWal ({limit}): the source's disk fills while the group does not \
                 catch up; find what holds it back (status.pods, status.consumer), raise the \
                 limit, or drop the slot and copy again (docs/operations.md)"
            ),
        ))
    } else if let Some(e) = &slot_error {
        Some((
            "SourceUnreachable",
            format!("cannot read the replication slot: {e}"),
        ))
    } else if !o.refused.is_empty() {
        Some((CHANGE_REFUSED, o.refused.join("; ")))
    } else {
        None
    };

    let phase = if o.deleting.is_some() {
        Phase::Deleting
    } else if refused
        || slot_lost
        || copy_failed
        || (pods_failing && rg.spec.state == DesiredState::Running)
    {
        Phase::Degraded
    } else if rg.spec.state == DesiredState::Paused {
        Phase::Paused
    } else if rg.spec.state == DesiredState::Stopped {
        Phase::Stopped
    } else if rg.spec.mode == Mode::Copy && copy_done {
        Phase::Completed
    } else if o.copy_job.is_some() {
        Phase::Copying
    } else if replicator_up && worker_up {
        Phase::Streaming
    } else if copying && o.replicator.is_some() {
        Phase::Copying
    } else {
        Phase::Pending
    };

    // A refused change leaves the group running as it was: still ready.
    let ready = matches!(phase, Phase::Streaming | Phase::Completed)
        && degraded.as_ref().is_none_or(|d| d.0 == CHANGE_REFUSED);
    let ready_cond = if ready && phase == Phase::Completed {
        cond(
            READY,
            true,
            "CopyComplete",
            "the copy finished; the slot is kept for a later stream".into(),
        )
    } else if ready {
        cond(
            READY,
            true,
            "Streaming",
            "replicator and worker are running".into(),
        )
    } else {
        let (reason, msg) = match phase {
            Phase::Deleting => ("Deleting", o.deleting.clone().unwrap_or_default()),
            Phase::Paused => (
                "Paused",
                "spec.state is paused: replicator and worker scaled to zero; slot and stream kept"
                    .into(),
            ),
            Phase::Stopped => (
                "Stopped",
                "spec.state is stopped: replicator and worker removed; slot and stream kept".into(),
            ),
            Phase::Degraded => (
                "Degraded",
                degraded.as_ref().map(|d| d.1.clone()).unwrap_or_default(),
            ),
            Phase::Copying => ("Copying", "the initial copy is running".into()),
            Phase::Streaming | Phase::Completed => (
                "Degraded",
                degraded.as_ref().map(|d| d.1.clone()).unwrap_or_default(),
            ),
            Phase::Pending => (
                "Pending",
                pending_message(replicator_up, worker_up, &o.waiting_for),
            ),
        };
        cond(READY, false, reason, msg)
    };
    let progressing = matches!(phase, Phase::Pending | Phase::Copying) && !refused;
    let progressing_cond = if phase == Phase::Degraded && pods_failing && !refused {
        cond(
            PROGRESSING,
            false,
            "Stalled",
            "the rollout does not progress: a pod keeps failing (see the Degraded condition)"
                .into(),
        )
    } else if progressing {
        cond(
            PROGRESSING,
            true,
            if phase == Phase::Copying {
                "Copying"
            } else {
                "RollingOut"
            },
            if phase == Phase::Copying {
                "the initial copy is running".into()
            } else {
                pending_message(replicator_up, worker_up, &o.waiting_for)
            },
        )
    } else {
        cond(
            PROGRESSING,
            false,
            "Settled",
            "nothing is rolling out".into(),
        )
    };
    let degraded_cond = match &degraded {
        Some((reason, msg)) => cond(DEGRADED, true, reason, msg.clone()),
        None => cond(DEGRADED, false, "Healthy", "no problem found".into()),
    };
    let paused_cond = match rg.spec.state {
        DesiredState::Running => cond(PAUSED, false, "Running", "spec.state is running".into()),
        DesiredState::Paused => cond(PAUSED, true, "Paused", "spec.state is paused".into()),
        DesiredState::Stopped => cond(PAUSED, true, "Stopped", "spec.state is stopped".into()),
    };
    let mut conditions = vec![ready_cond, progressing_cond, degraded_cond, paused_cond];
    let kstatus = kstatus_conditions(Some(phase), &conditions, generation);
    conditions.extend(kstatus);
    let old = rg
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    carry_transition_times(old, &mut conditions);
    // Keep the last slot reading when the source cannot be read right now.
    let slot = slot.or_else(|| rg.status.as_ref().and_then(|s| s.slot.clone()));
    let old = rg.status.as_ref();
    let consumer = consumer_status(old.and_then(|s| s.consumer.as_ref()), o.consumer.as_ref());
    ReplicationGroupStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        slot,
        // Decided once, never changed here (the reconciler records it).
        group_name: old.and_then(|s| s.group_name.clone()),
        copy_completion_time: old.and_then(|s| s.copy_completion_time.clone()),
        config_hash: o
            .config_hash
            .clone()
            .or_else(|| old.and_then(|s| s.config_hash.clone())),
        pods: pod_states(&o.pods),
        consumer,
    }
}

/// `status.consumer` after a reading: the new one; when it failed (`error` set), with the
/// counts and `readAt` of the last successful one (`readAt` says how old they are); without a
/// reading, the last status.
pub fn consumer_status(
    old: Option<&ConsumerStatus>,
    reading: Option<&ConsumerStatus>,
) -> Option<ConsumerStatus> {
    let Some(new) = reading else {
        return old.cloned();
    };
    if new.error.is_none() {
        return Some(new.clone());
    }
    let old = old.cloned().unwrap_or_default();
    Some(ConsumerStatus {
        pending: old.pending,
        ack_pending: old.ack_pending,
        redelivered: old.redelivered,
        lag_seconds: old.lag_seconds,
        read_at: old.read_at,
        ..new.clone()
    })
}

fn pending_message(replicator_up: bool, worker_up: bool, waiting_for: &[String]) -> String {
    if !waiting_for.is_empty() {
        return format!(
            "waiting for {} to terminate before the StatefulSets start their pods (never two \
             pods of one component)",
            waiting_for.join(", ")
        );
    }
    match (replicator_up, worker_up) {
        (false, false) => "waiting for the replicator and the worker to become available".into(),
        (false, true) => "waiting for the replicator to become available".into(),
        (true, false) => "waiting for the worker to become available".into(),
        (true, true) => "replicator and worker are available".into(),
    }
}

/// The conditions of a Rule or Route for its `Accepted` verdict ([`member_conditions`]);
/// `suspended`: its group is paused or stopped.
pub fn accepted(
    obj: &impl ResourceExt,
    ok: bool,
    reason: &str,
    message: String,
    suspended: bool,
    old: &[Condition],
) -> Vec<Condition> {
    let mut c = member_conditions(
        condition(ACCEPTED, ok, reason, message, obj.meta().generation),
        suspended,
    );
    carry_transition_times(old, &mut c);
    c
}

/// Whether two condition lists say the same (ignoring transition times).
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> ReplicationGroup {
        serde_yaml::from_str(
            "apiVersion: pgflo.io/v1alpha1
kind: ReplicationGroup
metadata: {name: orders, namespace: data, generation: 4}
spec:
  source: {host: db, database: shop, user: {name: s, key: u}, password: {name: s, key: p}}
  sink: {stdout: {}}
  nats: {managed: {}}",
        )
        .unwrap()
    }

    fn available() -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"generation": 2},
            "status": {"observedGeneration": 2, "availableReplicas": 1, "updatedReplicas": 1}
        }))
        .unwrap()
    }

    fn find<'a>(s: &'a ReplicationGroupStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_lost_slot_degrades_a_running_group() {
        let o = Observed {
            replicator: Some(available()),
            worker: Some(available()),
            slot: Some(Ok(SlotStatus {
                wal_status: Some("lost".into()),
                ..SlotStatus::default()
            })),
            ..Observed::default()
        };
        let s = group_status(&group(), &o);
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(find(&s, DEGRADED).reason, "SlotLost");
        assert_eq!(find(&s, READY).status, "False");
        assert_eq!(s.observed_generation, Some(4));
    }

    #[test]
    fn an_unreachable_source_is_degraded_and_keeps_the_last_slot_reading() {
        let mut rg = group();
        let last = SlotStatus {
            name: Some("pg_flo_orders_publication".into()),
            lag_bytes: Some(42),
            ..SlotStatus::default()
        };
        rg.status = Some(ReplicationGroupStatus {
            slot: Some(last.clone()),
            ..ReplicationGroupStatus::default()
        });
        let o = Observed {
            replicator: Some(available()),
            worker: Some(available()),
            slot: Some(Err("connection refused".into())),
            ..Observed::default()
        };
        let s = group_status(&rg, &o);
        let d = find(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "SourceUnreachable")
        );
        assert_eq!(
            d.message,
            "cannot read the replication slot: connection refused"
        );
        assert_eq!(find(&s, READY).status, "False");
        assert_eq!(s.slot, Some(last));
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let mut rg = group();
        let o = Observed {
            replicator: Some(available()),
            worker: Some(available()),
            slot: Some(Ok(SlotStatus::default())),
            ..Observed::default()
        };
        let mut first = group_status(&rg, &o);
        let old = Time(Timestamp::UNIX_EPOCH);
        for c in &mut first.conditions {
            c.last_transition_time = old.clone();
        }
        rg.status = Some(first);
        let second = group_status(&rg, &o);
        assert_eq!(second.phase, Some(Phase::Streaming));
        assert!(second
            .conditions
            .iter()
            .all(|c| c.last_transition_time == old));
        // A change of status moves the time.
        rg.spec.state = DesiredState::Paused;
        let third = group_status(&rg, &o);
        assert_ne!(find(&third, PAUSED).last_transition_time, old);
        assert_eq!(find(&third, DEGRADED).last_transition_time, old);
    }

    /// A worker pod crash-looping after a permanent sink rejection, as the kubelet reports it.
    fn crash_looping_worker(restarts: i32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orders-worker-0",
                         "labels": {"app.kubernetes.io/component": "worker"},
                         "annotations": {"pgflo.io/config-hash": "h1"}},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "worker", "image": "pg-flo:1", "imageID": "",
                    "ready": false, "restartCount": restarts,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "finishedAt": "2025-06-01T11:58:00Z",
                        "message": "ERROR pg_flo: pg_flo stopped error=the sink rejected a change permanently"}}}]}
        }))
        .unwrap()
    }

    /// (what, replicator up, worker up, pods, slot, (phase, Ready, Progressing reason,
    /// Degraded reason)).
    type Case = (
        &'static str,
        bool,
        bool,
        Vec<Pod>,
        Option<Result<SlotStatus, String>>,
        (Phase, &'static str, &'static str, &'static str),
    );

    #[test]
    fn the_group_status_by_what_was_observed() {
        let now: Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let slot = |wal: &str| {
            Some(Ok(SlotStatus {
                wal_status: Some(wal.into()),
                retained_bytes: Some(5_000_000),
                ..SlotStatus::default()
            }))
        };
        // (what, replicator up, worker up, pods, slot) -> (phase, Ready, Progressing, Degraded reason)
        let table: Vec<Case> = vec![
            (
                "streaming",
                true,
                true,
                vec![],
                slot("reserved"),
                (Phase::Streaming, "True", "Settled", "Healthy"),
            ),
            (
                "rolling out",
                true,
                false,
                vec![],
                slot("reserved"),
                (Phase::Pending, "False", "RollingOut", "Healthy"),
            ),
            (
                "a crash-looping worker is no rollout",
                true,
                false,
                vec![crash_looping_worker(5)],
                slot("reserved"),
                (Phase::Degraded, "False", "Stalled", "WorkerCrashLooping"),
            ),
            (
                "unreserved WAL: still streaming, degraded",
                true,
                true,
                vec![],
                slot("unreserved"),
                (Phase::Streaming, "False", "Settled", "SlotWalUnreserved"),
            ),
            (
                "lost beats everything but the spec",
                true,
                false,
                vec![crash_looping_worker(5)],
                slot("lost"),
                (Phase::Degraded, "False", "Stalled", "SlotLost"),
            ),
            (
                "source unreachable",
                true,
                true,
                vec![],
                Some(Err("refused".into())),
                (Phase::Streaming, "False", "Settled", "SourceUnreachable"),
            ),
        ];
        for (what, rep, work, pods, slot, want) in table {
            let o = Observed {
                replicator: rep.then(available),
                worker: Some(if work {
                    available()
                } else {
                    StatefulSet::default()
                }),
                pods,
                slot,
                now: Some(now),
                ..Observed::default()
            };
            let s = group_status(&group(), &o);
            let got = (
                s.phase.unwrap(),
                find(&s, READY).status.as_str(),
                find(&s, PROGRESSING).reason.as_str(),
                find(&s, DEGRADED).reason.as_str(),
            );
            assert_eq!(got, want, "{what}");
        }
    }

    fn conditions(list: &[(&str, &str, &str)]) -> Vec<Condition> {
        list.iter()
            .map(|(t, st, r)| condition(t, *st == "True", r, format!("{t} {r}"), Some(4)))
            .collect()
    }

    /// (what, phase, conditions as (type, status, reason)) -> kstatus (type, reason).
    type KstatusCase = (
        &'static str,
        Option<Phase>,
        Vec<(&'static str, &'static str, &'static str)>,
        Vec<(&'static str, &'static str)>,
    );

    /// kstatus from the phase and the other conditions: (what, phase, conditions) ->
    /// (type, reason) of the kstatus conditions (only the ones that are True).
    #[test]
    fn kstatus_conditions_by_phase_and_degraded_reason() {
        let healthy = (DEGRADED, "False", "Healthy");
        let settled = (PROGRESSING, "False", "Settled");
        let table: Vec<KstatusCase> = vec![
            (
                "streaming",
                Some(Phase::Streaming),
                vec![(READY, "True", "Streaming"), settled, healthy],
                vec![],
            ),
            (
                "completed",
                Some(Phase::Completed),
                vec![(READY, "True", "CopyComplete"), settled, healthy],
                vec![],
            ),
            (
                "paused",
                Some(Phase::Paused),
                vec![(READY, "False", "Paused"), settled, healthy],
                vec![],
            ),
            (
                "stopped",
                Some(Phase::Stopped),
                vec![(READY, "False", "Stopped"), settled, healthy],
                vec![],
            ),
            (
                "rolling out",
                Some(Phase::Pending),
                vec![
                    (READY, "False", "Pending"),
                    (PROGRESSING, "True", "RollingOut"),
                    healthy,
                ],
                vec![(RECONCILING, "RollingOut")],
            ),
            (
                "copying",
                Some(Phase::Copying),
                vec![
                    (READY, "False", "Copying"),
                    (PROGRESSING, "True", "Copying"),
                    healthy,
                ],
                vec![(RECONCILING, "Copying")],
            ),
            (
                "deleting",
                Some(Phase::Deleting),
                vec![(READY, "False", "Deleting"), settled, healthy],
                vec![(RECONCILING, "Deleting")],
            ),
            ("no phase yet", None, vec![], vec![(RECONCILING, "Pending")]),
            (
                "invalid spec",
                Some(Phase::Degraded),
                vec![
                    (READY, "False", "Degraded"),
                    settled,
                    (DEGRADED, "True", "InvalidSpec"),
                ],
                vec![(STALLED, "InvalidSpec")],
            ),
            (
                "name conflict",
                Some(Phase::Degraded),
                vec![(DEGRADED, "True", "GroupNameConflict")],
                vec![(STALLED, "GroupNameConflict")],
            ),
            (
                "copy failed",
                Some(Phase::Degraded),
                vec![(DEGRADED, "True", "CopyFailed")],
                vec![(STALLED, "CopyFailed")],
            ),
            (
                "slot lost",
                Some(Phase::Degraded),
                vec![(DEGRADED, "True", "SlotLost")],
                vec![(STALLED, "SlotLost")],
            ),
            (
                "crash loop",
                Some(Phase::Degraded),
                vec![
                    (PROGRESSING, "False", "Stalled"),
                    (DEGRADED, "True", "WorkerCrashLooping"),
                ],
                vec![(STALLED, "WorkerCrashLooping")],
            ),
            (
                "image pull",
                Some(Phase::Degraded),
                vec![(DEGRADED, "True", "ReplicatorImagePullFailed")],
                vec![(STALLED, "ReplicatorImagePullFailed")],
            ),
            (
                "config error",
                Some(Phase::Degraded),
                vec![(DEGRADED, "True", "NatsConfigError")],
                vec![(STALLED, "NatsConfigError")],
            ),
            (
                "oom",
                Some(Phase::Degraded),
                vec![(DEGRADED, "True", "CopyOOMKilled")],
                vec![(STALLED, "CopyOOMKilled")],
            ),
            (
                "refused change, still running",
                Some(Phase::Streaming),
                vec![
                    (READY, "True", "Streaming"),
                    settled,
                    (DEGRADED, "True", CHANGE_REFUSED),
                ],
                vec![(STALLED, CHANGE_REFUSED)],
            ),
            (
                "cleanup blocked",
                Some(Phase::Deleting),
                vec![(DEGRADED, "True", "CleanupBlocked")],
                vec![(STALLED, "CleanupBlocked")],
            ),
            (
                "api error retried",
                Some(Phase::Streaming),
                vec![
                    (READY, "True", "Streaming"),
                    settled,
                    (DEGRADED, "True", "KubernetesApiError"),
                ],
                vec![(RECONCILING, "KubernetesApiError")],
            ),
            (
                "cleanup failed retried",
                Some(Phase::Deleting),
                vec![(DEGRADED, "True", "CleanupFailed")],
                vec![(RECONCILING, "CleanupFailed")],
            ),
            (
                "unreserved WAL: a warning, nothing to reconcile",
                Some(Phase::Streaming),
                vec![
                    (READY, "False", "Degraded"),
                    settled,
                    (DEGRADED, "True", "SlotWalUnreserved"),
                ],
                vec![],
            ),
            (
                "retained WAL high",
                Some(Phase::Streaming),
                vec![
                    (READY, "False", "Degraded"),
                    settled,
                    (DEGRADED, "True", "SlotRetainedWalHigh"),
                ],
                vec![],
            ),
            (
                "source unreachable",
                Some(Phase::Streaming),
                vec![
                    (READY, "False", "Degraded"),
                    settled,
                    (DEGRADED, "True", "SourceUnreachable"),
                ],
                vec![],
            ),
        ];
        for (what, phase, list, want) in table {
            let got = kstatus_conditions(phase, &conditions(&list), Some(4));
            let got_short: Vec<(&str, &str)> = got
                .iter()
                .map(|c| (c.type_.as_str(), c.reason.as_str()))
                .collect();
            assert_eq!(got_short, want, "{what}");
            for c in &got {
                assert_eq!(
                    (c.status.as_str(), c.observed_generation),
                    ("True", Some(4)),
                    "{what}"
                );
            }
        }
        // The message is the condition's it comes from.
        let got = kstatus_conditions(
            Some(Phase::Degraded),
            &conditions(&[(DEGRADED, "True", "SlotLost")]),
            Some(4),
        );
        assert_eq!(got[0].message, "Degraded SlotLost");
    }

    /// A Rule's or Route's conditions for its `Accepted` verdict: (status, reason, suspended)
    /// -> (Ready status and reason, the kstatus condition).
    #[test]
    fn member_conditions_by_verdict() {
        let table = [
            ("True", "Applied", false, ("True", "Applied"), None),
            (
                "False",
                "Pending",
                false,
                ("False", "Pending"),
                Some((RECONCILING, "Pending")),
            ),
            ("False", "Pending", true, ("False", "Suspended"), None),
            (
                "False",
                "NotApplied",
                false,
                ("False", "NotApplied"),
                Some((STALLED, "NotApplied")),
            ),
            (
                "False",
                "GroupNotFound",
                false,
                ("False", "GroupNotFound"),
                Some((STALLED, "GroupNotFound")),
            ),
            (
                "False",
                "InvalidRule",
                false,
                ("False", "InvalidRule"),
                Some((STALLED, "InvalidRule")),
            ),
            (
                "False",
                "InvalidRoute",
                false,
                ("False", "InvalidRoute"),
                Some((STALLED, "InvalidRoute")),
            ),
            (
                "False",
                "Conflict",
                false,
                ("False", "Conflict"),
                Some((STALLED, "Conflict")),
            ),
            (
                "Unknown",
                "KubernetesApiError",
                false,
                ("Unknown", "KubernetesApiError"),
                Some((RECONCILING, "KubernetesApiError")),
            ),
        ];
        for (status, reason, suspended, ready, kstatus) in table {
            let accepted = Condition {
                status: status.into(),
                ..condition(ACCEPTED, false, reason, "why".into(), Some(7))
            };
            let got = member_conditions(accepted.clone(), suspended);
            assert_eq!(got[0], accepted, "{reason}");
            assert_eq!(
                (
                    got[1].type_.as_str(),
                    got[1].status.as_str(),
                    got[1].reason.as_str()
                ),
                (READY, ready.0, ready.1),
                "{reason} {suspended}"
            );
            assert_eq!(
                got.get(2).map(|c| (c.type_.as_str(), c.reason.as_str())),
                kstatus,
                "{reason} {suspended}"
            );
            assert!(got
                .iter()
                .all(|c| c.observed_generation == Some(7) && c.message == "why"));
            assert_eq!(got.len(), 2 + usize::from(kstatus.is_some()));
        }
    }

    #[test]
    fn a_crash_looping_worker_says_why_and_how_often() {
        let o = Observed {
            replicator: Some(available()),
            worker: Some(StatefulSet::default()),
            pods: vec![crash_looping_worker(7)],
            slot: Some(Ok(SlotStatus::default())),
            ..Observed::default()
        };
        let s = group_status(&group(), &o);
        assert_eq!(
            find(&s, DEGRADED).message,
            "worker pod orders-worker-0 is in CrashLoopBackOff after 7 restarts; last exit code 1 \
             (Error) at 2025-06-01T11:58:00Z: pg_flo stopped error=the sink rejected a change \
             permanently: see `kubectl logs orders-worker-0 --previous`"
        );
        assert_eq!(
            s.pods,
            vec![crate::crd::PodState {
                component: "worker".into(),
                name: "orders-worker-0".into(),
                ready: false,
                restarts: 7,
                state: "CrashLoopBackOff".into(),
                config_hash: Some("h1".into()),
            }]
        );
        assert_eq!(find(&s, PROGRESSING).status, "False");
    }

    #[test]
    fn unreserved_wal_names_the_retained_bytes() {
        let o = Observed {
            replicator: Some(available()),
            worker: Some(available()),
            slot: Some(Ok(SlotStatus {
                wal_status: Some("unreserved".into()),
                retained_bytes: Some(123_456),
                ..SlotStatus::default()
            })),
            ..Observed::default()
        };
        let s = group_status(&group(), &o);
        assert_eq!(
            find(&s, DEGRADED).message,
            "the replication slot holds more WAL than max_wal_size (wal_status unreserved, \
             123456 bytes retained): it loses WAL at the next checkpoint unless the replicator \
             catches up; raise max_slot_wal_keep_size on the source or fix what holds the \
             replicator back"
        );
    }

    /// `spec.maxRetainedWal`: over the limit is `Degraded/SlotRetainedWalHigh` (the phase
    /// stays: nothing is lost yet); at or under it, or without a reading or a limit, nothing.
    #[test]
    fn retained_wal_over_the_limit_degrades_the_group() {
        let observed = |retained: Option<i64>| Observed {
            replicator: Some(available()),
            worker: Some(available()),
            slot: Some(Ok(SlotStatus {
                wal_status: Some("reserved".into()),
                retained_bytes: retained,
                ..SlotStatus::default()
            })),
            ..Observed::default()
        };
        let limited = |limit: Option<&str>| {
            let mut rg = group();
            rg.spec.max_retained_wal = limit.map(str::to_owned);
            rg
        };
        // (limit, retained, Degraded reason)
        let cases: [(Option<&str>, Option<i64>, &str); 6] = [
            (Some("1Ki"), Some(1025), "SlotRetainedWalHigh"),
            (Some("1Ki"), Some(1024), "Healthy"),
            (Some("1Gi"), Some(5_000_000), "Healthy"),
            (Some("1Ki"), None, "Healthy"),
            (None, Some(i64::MAX), "Healthy"),
            (Some("not a size"), Some(i64::MAX), "Healthy"),
        ];
        for (limit, retained, reason) in cases {
            let s = group_status(&limited(limit), &observed(retained));
            assert_eq!(find(&s, DEGRADED).reason, reason, "{limit:?} {retained:?}");
            assert_eq!(s.phase, Some(Phase::Streaming), "{limit:?} {retained:?}");
        }
        let s = group_status(&limited(Some("1Ki")), &observed(Some(4096)));
        assert!(
            find(&s, DEGRADED)
                .message
                .starts_with("the replication slot retains 4096 bytes of WAL on the source, more than spec.maxRetainedWal (1Ki)"),
            "{}",
            find(&s, DEGRADED).message
        );
    }

    #[test]
    fn a_failed_consumer_reading_keeps_the_last_counts_and_shows_the_error() {
        let at = Time(Timestamp::UNIX_EPOCH);
        let good = ConsumerStatus {
            name: Some("pgflo_g_consumer".into()),
            stream: Some("pgflo_g_stream".into()),
            pending: Some(10),
            ack_pending: Some(2),
            redelivered: Some(0),
            lag_seconds: Some(4),
            read_at: Some(at.clone()),
            error: None,
        };
        let failed = ConsumerStatus {
            name: Some("pgflo_g_consumer".into()),
            stream: Some("pgflo_g_stream".into()),
            error: Some("cannot connect".into()),
            ..ConsumerStatus::default()
        };
        let table = [
            ("no reading", Some(&good), None, Some(good.clone())),
            ("no reading, nothing before", None, None, None),
            ("a new reading", None, Some(&good), Some(good.clone())),
            (
                "failed after a good one",
                Some(&good),
                Some(&failed),
                Some(ConsumerStatus {
                    error: Some("cannot connect".into()),
                    ..good.clone()
                }),
            ),
            (
                "failed, nothing before",
                None,
                Some(&failed),
                Some(failed.clone()),
            ),
            (
                "good again",
                Some(&ConsumerStatus {
                    error: Some("x".into()),
                    ..good.clone()
                }),
                Some(&good),
                Some(good.clone()),
            ),
        ];
        for (what, old, reading, want) in table {
            assert_eq!(consumer_status(old, reading), want, "{what}");
        }
    }
}
