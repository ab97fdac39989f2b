//! The Argo CD health script (`charts/pg-flo-operator/argocd/health.lua`, repeated in
//! docs/operations.md) run for real (Lua 5.4 through `mlua`; the script keeps to Lua 5.1, Argo
//! CD's) against statuses the operator's own status functions compute for each phase of a
//! ReplicationGroup, and the conditions of Rules and Routes for each verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use pg_flo_operator::controller::conditions::{group_status, member_conditions, Observed};
use pg_flo_operator::crd::{ReplicationGroup, SlotStatus};
use serde_json::{json, Value};

const SCRIPT: &str = include_str!("../../charts/pg-flo-operator/argocd/health.lua");

/// Converts JSON into Lua values as Argo CD does (objects and arrays as tables).
fn lua_value(lua: &mlua::Lua, v: &Value) -> mlua::Value {
    match v {
        Value::Null => mlua::Value::Nil,
        Value::Bool(b) => mlua::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => mlua::Value::Integer(i),
            None => mlua::Value::Number(n.as_f64().unwrap()),
        },
        Value::String(s) => mlua::Value::String(lua.create_string(s).unwrap()),
        Value::Array(items) => {
            let t = lua.create_table().unwrap();
            for (i, item) in items.iter().enumerate() {
                t.set(i + 1, lua_value(lua, item)).unwrap();
            }
            mlua::Value::Table(t)
        }
        Value::Object(map) => {
            let t = lua.create_table().unwrap();
            for (k, item) in map {
                t.set(k.as_str(), lua_value(lua, item)).unwrap();
            }
            mlua::Value::Table(t)
        }
    }
}

/// `(status, message)` the script gives `obj`.
fn health(obj: &Value) -> (String, String) {
    let lua = mlua::Lua::new();
    lua.globals().set("obj", lua_value(&lua, obj)).unwrap();
    let hs: mlua::Table = lua.load(SCRIPT).set_name("health.lua").eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn group(state: &str, mode: &str) -> ReplicationGroup {
    serde_yaml::from_str(&format!(
        "apiVersion: pgflo.io/v1alpha1
kind: ReplicationGroup
metadata: {{name: orders, namespace: data, generation: 4}}
spec:
  state: {state}
  mode: {mode}
  maxRetainedWal: 1Ki
  source: {{host: db, database: shop, user: {{name: s, key: u}}, password: {{name: s, key: p}}}}
  sink: {{stdout: {{}}}}
  nats: {{managed: {{}}}}"
    ))
    .unwrap()
}

fn available() -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 2, "availableReplicas": 1, "updatedReplicas": 1}
    }))
    .unwrap()
}

fn crash_looping_worker() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "orders-worker-0",
                     "labels": {"app.kubernetes.io/component": "worker"}},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "worker", "image": "pg-flo:1", "imageID": "",
                "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    }))
    .unwrap()
}

fn slot(wal: &str, retained: i64) -> Option<Result<SlotStatus, String>> {
    Some(Ok(SlotStatus {
        wal_status: Some(wal.into()),
        retained_bytes: Some(retained),
        ..SlotStatus::default()
    }))
}

fn running() -> Observed {
    Observed {
        replicator: Some(available()),
        worker: Some(available()),
        slot: slot("reserved", 10),
        now: Some("2025-06-01T12:00:00Z".parse().unwrap()),
        ..Observed::default()
    }
}

/// The group as the API server would return it with the status the operator computes.
fn with_status(rg: &ReplicationGroup, o: &Observed) -> Value {
    let mut rg = rg.clone();
    rg.status = Some(group_status(&rg, o));
    serde_json::to_value(&rg).unwrap()
}

#[test]
fn replication_groups_by_phase() {
    let running_group = group("running", "stream");
    let copy_job: Job =
        serde_json::from_value(json!({"metadata": {"name": "orders-copy"}})).unwrap();
    let table: Vec<(&str, Value, &str, &str)> = vec![
        (
            "streaming",
            with_status(&running_group, &running()),
            "Healthy",
            "replicator and worker are running",
        ),
        (
            "rolling out",
            with_status(
                &running_group,
                &Observed {
                    worker: Some(StatefulSet::default()),
                    ..running()
                },
            ),
            "Progressing",
            "waiting for the worker to become available",
        ),
        (
            "copying",
            with_status(
                &group("running", "copy"),
                &Observed {
                    replicator: None,
                    copy_job: Some(copy_job.clone()),
                    ..running()
                },
            ),
            "Progressing",
            "the initial copy is running",
        ),
        (
            "copy completed",
            with_status(
                &group("running", "copy"),
                &Observed {
                    replicator: None,
                    copy_job: Some(copy_job),
                    copy_completed: true,
                    ..running()
                },
            ),
            "Healthy",
            "the copy finished; the slot is kept for a later stream",
        ),
        (
            "paused",
            with_status(&group("paused", "stream"), &Observed { replicator: None, worker: None, ..running() }),
            "Suspended",
            "spec.state is paused: replicator and worker scaled to zero; slot and stream kept",
        ),
        (
            "stopped",
            with_status(&group("stopped", "stream"), &Observed { replicator: None, worker: None, ..running() }),
            "Suspended",
            "spec.state is stopped: replicator and worker removed; slot and stream kept",
        ),
        (
            "invalid spec",
            with_status(
                &running_group,
                &Observed {
                    invalid: vec!["Secret src not found".into()],
                    ..Observed::default()
                },
            ),
            "Degraded",
            "Secret src not found",
        ),
        (
            "a crash-looping worker",
            with_status(
                &running_group,
                &Observed {
                    worker: Some(StatefulSet::default()),
                    pods: vec![crash_looping_worker()],
                    ..running()
                },
            ),
            "Degraded",
            "worker pod orders-worker-0 is in CrashLoopBackOff after 5 restarts: see `kubectl logs orders-worker-0 --previous`",
        ),
        (
            "streaming, but the slot retains more than maxRetainedWal",
            with_status(&running_group, &Observed { slot: slot("reserved", 4096), ..running() }),
            "Degraded",
            "the replication slot retains 4096 bytes of WAL on the source, more than spec.maxRetainedWal (1Ki): the source's disk fills while the group does not catch up; find what holds it back (status.pods, status.consumer), raise the limit, or drop the slot and copy again (docs/operations.md)",
        ),
        (
            "a lost slot",
            with_status(&running_group, &Observed { slot: slot("lost", 10), ..running() }),
            "Degraded",
            "the replication slot lost WAL it needed (wal_status lost; max_slot_wal_keep_size exceeded): changes are missing; delete and recreate the group with mode copyAndStream",
        ),
        (
            "deleting",
            with_status(
                &running_group,
                &Observed {
                    deleting: Some("waiting for pods orders-worker-0 to terminate".into()),
                    ..Observed::default()
                },
            ),
            "Progressing",
            "waiting for pods orders-worker-0 to terminate",
        ),
        (
            "no status yet",
            serde_json::to_value(&running_group).unwrap(),
            "Progressing",
            "waiting for the operator",
        ),
        (
            "a new generation the operator has not seen",
            {
                let mut v = with_status(&running_group, &running());
                v["metadata"]["generation"] = json!(5);
                v
            },
            "Progressing",
            "waiting for the operator to observe generation 5",
        ),
    ];
    for (what, obj, status, message) in table {
        assert_eq!(
            health(&obj),
            (status.to_owned(), message.to_owned()),
            "{what}"
        );
    }
}

/// A Rule or Route with the conditions the operator writes for an `Accepted` verdict.
fn member(kind: &str, status: &str, reason: &str, message: &str, suspended: bool) -> Value {
    let accepted = Condition {
        type_: "Accepted".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(2),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    };
    json!({
        "apiVersion": "pgflo.io/v1alpha1", "kind": kind,
        "metadata": {"name": "m", "namespace": "data", "generation": 2},
        "spec": {},
        "status": {"observedGeneration": 2,
                   "conditions": member_conditions(accepted, suspended)}
    })
}

#[test]
fn rules_and_routes_by_verdict() {
    let table = [
        ("Rule", "True", "Applied", false, "Healthy"),
        ("Rule", "False", "Pending", false, "Progressing"),
        ("Rule", "False", "Pending", true, "Suspended"),
        ("Rule", "False", "InvalidRule", false, "Degraded"),
        ("Rule", "False", "NotApplied", false, "Degraded"),
        (
            "Rule",
            "Unknown",
            "KubernetesApiError",
            false,
            "Progressing",
        ),
        ("Route", "True", "Applied", false, "Healthy"),
        ("Route", "False", "Conflict", false, "Degraded"),
        ("Route", "False", "GroupNotFound", false, "Degraded"),
        ("Route", "False", "InvalidRoute", false, "Degraded"),
        ("Route", "False", "Pending", true, "Suspended"),
    ];
    for (kind, status, reason, suspended, want) in table {
        let obj = member(kind, status, reason, "the message", suspended);
        assert_eq!(
            health(&obj),
            (want.to_owned(), "the message".to_owned()),
            "{kind} {status} {reason} suspended={suspended}"
        );
    }
    // Written by an operator before the Ready condition: Accepted alone.
    for (status, reason, want) in [
        ("True", "Applied", "Healthy"),
        ("False", "Pending", "Progressing"),
        ("False", "InvalidRule", "Degraded"),
        ("Unknown", "KubernetesApiError", "Progressing"),
    ] {
        let mut obj = member("Rule", status, reason, "older", false);
        let accepted = obj["status"]["conditions"][0].clone();
        obj["status"]["conditions"] = json!([accepted]);
        assert_eq!(
            health(&obj),
            (want.to_owned(), "older".to_owned()),
            "{reason}"
        );
    }
}

/// docs/operations.md shows the script as it is in the chart.
#[test]
fn the_documented_script_is_the_charts() {
    let doc = include_str!("../../docs/operations.md");
    let block = format!("```lua\n{SCRIPT}```");
    assert!(
        doc.contains(&block),
        "docs/operations.md must contain charts/pg-flo-operator/argocd/health.lua verbatim in a ```lua block"
    );
}
