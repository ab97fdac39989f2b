//! The group's pods as the kubelet reports them, without IO: what `status.pods` shows and which
//! pod states degrade the group.
//!
//! A StatefulSet's status only counts ready pods: a worker that exits on a permanent sink
//! rejection and crash-loops looks like a rollout that has not finished yet. The container
//! states say what is going on:
//!
//! | Container | Reason (`<Component>` is `Replicator`, `Worker`, `Copy` or `Nats`) |
//! |---|---|
//! | waiting `CrashLoopBackOff` | `<Component>CrashLooping` |
//! | waiting `ImagePullBackOff`, `ErrImagePull`, `InvalidImageName` | `<Component>ImagePullFailed` |
//! | waiting `CreateContainerConfigError`, `CreateContainerError` | `<Component>ConfigError` |
//! | last (or current) termination `OOMKilled`, while not ready or within [`OOM_RECENT`] | `<Component>OOMKilled` |
//!
//! The message names the pod, the restart count and the last termination (exit code, reason,
//! time and [`last_words`] of its message: with `terminationMessagePolicy:
//! FallbackToLogsOnError` the runtime's last log lines, whose last one is `pg_flo stopped
//! error=...`). Pods being deleted and finished pods (`Succeeded`, `Failed`) are shown but never
//! degrade the group.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::PodState;
use crate::resources::CONFIG_HASH_ANNOTATION;

/// How long an `OOMKilled` termination of a container that is ready again keeps degrading the
/// group (a container that is not ready keeps it degraded as long as it is not).
pub const OOM_RECENT: Duration = Duration::from_secs(10 * 60);

/// At most this many bytes of a termination message go into a condition.
pub const TERMINATION_MESSAGE_MAX: usize = 400;

/// The order of the components in `status.pods` and in the Degraded message.
const COMPONENTS: [&str; 4] = ["replicator", "copy", "worker", "nats"];

/// A pod state that needs attention: the condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    /// `<Component><Problem>`, e.g. `WorkerCrashLooping`.
    pub reason: String,
    /// What happened, with the pod, the restart count and the last termination.
    pub message: String,
}

/// The component of a group's pod: `copy` for the copy Job's pod (it carries the replicator's
/// labels), else its `app.kubernetes.io/component` label.
pub fn component_of(pod: &Pod) -> String {
    if pod.owner_references().iter().any(|o| o.kind == "Job") {
        return "copy".into();
    }
    pod.labels()
        .get("app.kubernetes.io/component")
        .cloned()
        .unwrap_or_default()
}

fn statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[])
}

/// Whether `pod`'s `Ready` condition is True.
pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `pod` ran to its end (`Succeeded` or `Failed`).
pub(crate) fn finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// The state of a container as `kubectl get pods` shows it.
fn container_state(c: &ContainerStatus) -> String {
    let Some(state) = &c.state else {
        return "Pending".into();
    };
    if let Some(w) = &state.waiting {
        return w.reason.clone().unwrap_or_else(|| "Waiting".into());
    }
    if let Some(t) = &state.terminated {
        return t.reason.clone().unwrap_or_else(|| "Terminated".into());
    }
    if state.running.is_some() {
        return "Running".into();
    }
    "Pending".into()
}

/// What `status.pods` says about one pod.
pub fn pod_state(pod: &Pod) -> PodState {
    let component = component_of(pod);
    let containers = statuses(pod);
    // The container named as the component (the runtime's and NATS's), else the first.
    let main = containers
        .iter()
        .find(|c| c.name == component || (component == "copy" && c.name == "replicator"))
        .or_else(|| containers.first());
    let state = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating".into()
    } else {
        main.map(container_state).unwrap_or_else(|| {
            // No container status yet: the pod's phase (`Pending`) or reason (`Evicted`).
            let s = pod.status.as_ref();
            s.and_then(|s| s.reason.clone())
                .or_else(|| s.and_then(|s| s.phase.clone()))
                .unwrap_or_else(|| "Pending".into())
        })
    };
    PodState {
        component,
        name: pod.name_any(),
        ready: pod_ready(pod),
        restarts: containers.iter().map(|c| c.restart_count).sum(),
        state,
        config_hash: pod.annotations().get(CONFIG_HASH_ANNOTATION).cloned(),
    }
}

fn component_rank(component: &str) -> usize {
    COMPONENTS
        .iter()
        .position(|c| *c == component)
        .unwrap_or(COMPONENTS.len())
}

/// `status.pods`: one entry per pod, by component (replicator, copy, worker, nats), then name.
pub fn pod_states(pods: &[Pod]) -> Vec<PodState> {
    let mut states: Vec<PodState> = pods.iter().map(pod_state).collect();
    states.sort_by(|a, b| {
        (component_rank(&a.component), &a.name).cmp(&(component_rank(&b.component), &b.name))
    });
    states
}

/// The part of a termination message worth showing, at most [`TERMINATION_MESSAGE_MAX`]
/// bytes: with `FallbackToLogsOnError` the message is the last log lines; the runtime's last one
/// is `pg_flo stopped error=...` (text or JSON log format). That line (from `pg_flo stopped`
/// on, or in JSON its `error` field), else the last non-empty line.
pub fn last_words(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("pg_flo stopped"))
        .or_else(|| lines.last())
        .copied()
        .unwrap_or_default();
    let words = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v.is_object() => {
            let fields = v.get("fields").unwrap_or(&v);
            let msg = fields.get("message").and_then(|m| m.as_str());
            match (msg, fields.get("error").and_then(|e| e.as_str())) {
                (Some(m), Some(e)) => format!("{m} error={e}"),
                (Some(m), None) => m.to_owned(),
                _ => line.to_owned(),
            }
        }
        _ => match line.find("pg_flo stopped") {
            Some(at) => line[at..].to_owned(),
            None => line.to_owned(),
        },
    };
    super::cut(words, TERMINATION_MESSAGE_MAX)
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` when cut.
fn capitalized(component: &str) -> String {
    let mut c = component.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => "Pod".into(),
    }
}

fn plural(n: i32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `; last exit code 1 (Error) at <time>: <last words>` of a container's last termination.
fn last_termination(c: &ContainerStatus) -> String {
    let t = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.state.as_ref().and_then(|s| s.terminated.as_ref()));
    let Some(t) = t else {
        return String::new();
    };
    let mut s = format!(
        "; last exit code {} ({})",
        t.exit_code,
        t.reason.as_deref().unwrap_or("unknown reason")
    );
    if let Some(at) = &t.finished_at {
        s.push_str(&format!(" at {}", at.0));
    }
    if let Some(m) = t
        .message
        .as_deref()
        .map(last_words)
        .filter(|m| !m.is_empty())
    {
        s.push_str(": ");
        s.push_str(&m);
    }
    s
}

fn oom_killed(c: &ContainerStatus, now: Timestamp) -> bool {
    let current = c.state.as_ref().and_then(|s| s.terminated.as_ref());
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let Some(t) = current
        .filter(|t| t.reason.as_deref() == Some("OOMKilled"))
        .or_else(|| last.filter(|t| t.reason.as_deref() == Some("OOMKilled")))
    else {
        return false;
    };
    if !c.ready {
        return true;
    }
    t.finished_at.as_ref().is_none_or(|at| {
        now.duration_since(at.0)
            .try_into()
            .map_or(true, |since: Duration| since < OOM_RECENT)
    })
}

/// The problem of one container, if any.
fn container_problem(
    pod: &str,
    component: &str,
    c: &ContainerStatus,
    now: Timestamp,
) -> Option<PodProblem> {
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
    let waiting_reason = waiting.and_then(|w| w.reason.as_deref()).unwrap_or("");
    let waiting_message = waiting
        .and_then(|w| w.message.as_deref())
        .map(|m| super::cut(m.trim().to_owned(), TERMINATION_MESSAGE_MAX))
        .filter(|m| !m.is_empty());
    let restarts = c.restart_count;
    let who = format!("{component} pod {pod}");
    let (problem, message) = if oom_killed(c, now) {
        (
            "OOMKilled",
            format!(
                "{who} was killed for exceeding its memory limit ({}, {restarts} restart{}){}: \
                 raise the memory limit in spec.{}.resources",
                if waiting_reason.is_empty() {
                    "OOMKilled"
                } else {
                    waiting_reason
                },
                plural(restarts),
                last_termination(c),
                match component {
                    "copy" => "copyJob",
                    "nats" => "nats.managed",
                    other => other,
                }
            ),
        )
    } else {
        match waiting_reason {
            "CrashLoopBackOff" => (
                "CrashLooping",
                format!(
                    "{who} is in CrashLoopBackOff after {restarts} restart{}{}: see `kubectl logs \
                     {pod} --previous`",
                    plural(restarts),
                    last_termination(c)
                ),
            ),
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => (
                "ImagePullFailed",
                format!(
                    "{who} cannot pull its image {} ({waiting_reason}){}: check the image name \
                     and the pull Secrets",
                    c.image,
                    waiting_message
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            ),
            "CreateContainerConfigError" | "CreateContainerError" => (
                "ConfigError",
                format!(
                    "{who} cannot start its container ({waiting_reason}){}",
                    waiting_message
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            ),
            _ => return None,
        }
    };
    Some(PodProblem {
        reason: format!("{}{problem}", capitalized(component)),
        message,
    })
}

/// The problems of the group's pods that are not being deleted and not finished, by component
/// (replicator, copy, worker, nats), then pod name; at most one per pod (its first container's
/// with a problem).
pub fn pod_problems(pods: &[Pod], now: Timestamp) -> Vec<PodProblem> {
    let mut live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !finished(p))
        .collect();
    live.sort_by_key(|p| (component_rank(&component_of(p)), p.name_any()));
    live.into_iter()
        .filter_map(|p| {
            let component = component_of(p);
            let name = p.name_any();
            statuses(p)
                .iter()
                .find_map(|c| container_problem(&name, &component, c, now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2025-06-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// A pod of `component` with one container whose status is `container` (merged onto a
    /// running, ready container with no restarts).
    fn pod(name: &str, component: &str, ready: bool, container: serde_json::Value) -> Pod {
        let mut c = json!({
            "name": component, "image": "registry.test/pg-flo:1", "imageID": "",
            "ready": ready, "restartCount": 0, "state": {"running": {}}
        });
        for (k, v) in container.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/component": component},
                         "annotations": {"pgflo.io/config-hash": "abc"}},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                       "containerStatuses": [c]}
        }))
        .unwrap()
    }

    fn crash(exit: i32, reason: &str, message: &str, restarts: i32) -> serde_json::Value {
        json!({
            "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": exit, "reason": reason, "message": message,
                                         "finishedAt": "2025-06-01T11:58:00Z"}}
        })
    }

    const TEXT_LOG: &str = "2025-06-01T11:57:59.1Z  INFO pg_flo::worker: applying batch\n\
        2025-06-01T11:58:00.2Z ERROR pg_flo: pg_flo stopped error=the sink rejected a change \
        permanently: relation \"public.orders\" does not exist (SQLSTATE 42P01)\n";

    /// (what, pod, expected (reason, message)).
    type Case = (&'static str, Pod, Option<(&'static str, &'static str)>);

    #[test]
    fn each_waiting_reason_and_oom_kill_degrades_with_its_reason_and_message() {
        let cases: Vec<Case> =
            vec![
            (
                "healthy",
                pod("orders-worker-0", "worker", true, json!({})),
                None,
            ),
            (
                "starting",
                pod(
                    "orders-worker-0",
                    "worker",
                    false,
                    json!({"state": {"waiting": {"reason": "ContainerCreating"}}}),
                ),
                None,
            ),
            (
                "crash loop after a permanent sink rejection",
                pod("orders-worker-0", "worker", false, crash(1, "Error", TEXT_LOG, 5)),
                Some((
                    "WorkerCrashLooping",
                    "worker pod orders-worker-0 is in CrashLoopBackOff after 5 restarts; last \
                     exit code 1 (Error) at 2025-06-01T11:58:00Z: pg_flo stopped error=the sink \
                     rejected a change permanently: relation \"public.orders\" does not exist \
                     (SQLSTATE 42P01): see `kubectl logs orders-worker-0 --previous`",
                )),
            ),
            (
                "crash loop, one restart, no message",
                pod("orders-replicator-0", "replicator", false, crash(2, "Error", "", 1)),
                Some((
                    "ReplicatorCrashLooping",
                    "replicator pod orders-replicator-0 is in CrashLoopBackOff after 1 restart; \
                     last exit code 2 (Error) at 2025-06-01T11:58:00Z: see `kubectl logs \
                     orders-replicator-0 --previous`",
                )),
            ),
            (
                "image pull back-off",
                pod(
                    "orders-worker-0",
                    "worker",
                    false,
                    json!({"state": {"waiting": {"reason": "ImagePullBackOff",
                        "message": "Back-off pulling image \"registry.test/pg-flo:1\""}}}),
                ),
                Some((
                    "WorkerImagePullFailed",
                    "worker pod orders-worker-0 cannot pull its image registry.test/pg-flo:1 \
                     (ImagePullBackOff): Back-off pulling image \"registry.test/pg-flo:1\": check \
                     the image name and the pull Secrets",
                )),
            ),
            (
                "image pull error",
                pod(
                    "orders-nats-0",
                    "nats",
                    false,
                    json!({"state": {"waiting": {"reason": "ErrImagePull"}}}),
                ),
                Some((
                    "NatsImagePullFailed",
                    "nats pod orders-nats-0 cannot pull its image registry.test/pg-flo:1 \
                     (ErrImagePull): check the image name and the pull Secrets",
                )),
            ),
            (
                "a missing Secret key",
                pod(
                    "orders-replicator-0",
                    "replicator",
                    false,
                    json!({"state": {"waiting": {"reason": "CreateContainerConfigError",
                        "message": "couldn't find key password in Secret data/src"}}}),
                ),
                Some((
                    "ReplicatorConfigError",
                    "replicator pod orders-replicator-0 cannot start its container \
                     (CreateContainerConfigError): couldn't find key password in Secret data/src",
                )),
            ),
            (
                "OOM-killed and crash-looping",
                pod("orders-worker-0", "worker", false, crash(137, "OOMKilled", "", 3)),
                Some((
                    "WorkerOOMKilled",
                    "worker pod orders-worker-0 was killed for exceeding its memory limit \
                     (CrashLoopBackOff, 3 restarts); last exit code 137 (OOMKilled) at \
                     2025-06-01T11:58:00Z: raise the memory limit in spec.worker.resources",
                )),
            ),
            (
                "OOM-killed 2 minutes ago, ready again",
                pod(
                    "orders-worker-0",
                    "worker",
                    true,
                    json!({"restartCount": 1, "lastState": {"terminated": {"exitCode": 137,
                        "reason": "OOMKilled", "finishedAt": "2025-06-01T11:58:00Z"}}}),
                ),
                Some((
                    "WorkerOOMKilled",
                    "worker pod orders-worker-0 was killed for exceeding its memory limit \
                     (OOMKilled, 1 restart); last exit code 137 (OOMKilled) at \
                     2025-06-01T11:58:00Z: raise the memory limit in spec.worker.resources",
                )),
            ),
            (
                "OOM-killed an hour ago, ready since",
                pod(
                    "orders-worker-0",
                    "worker",
                    true,
                    json!({"restartCount": 1, "lastState": {"terminated": {"exitCode": 137,
                        "reason": "OOMKilled", "finishedAt": "2025-06-01T11:00:00Z"}}}),
                ),
                None,
            ),
            (
                "crashed once, restarted and running",
                pod(
                    "orders-worker-0",
                    "worker",
                    true,
                    json!({"restartCount": 1, "lastState": {"terminated": {"exitCode": 1,
                        "reason": "Error", "finishedAt": "2025-06-01T11:58:00Z"}}}),
                ),
                None,
            ),
        ];
        for (what, p, want) in cases {
            let got = pod_problems(std::slice::from_ref(&p), now());
            let got: Vec<(&str, &str)> = got
                .iter()
                .map(|p| (p.reason.as_str(), p.message.as_str()))
                .collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{what}");
        }
    }

    #[test]
    fn terminating_and_finished_pods_never_degrade() {
        let mut terminating = pod("orders-worker-0", "worker", false, crash(1, "Error", "", 4));
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let mut failed = pod(
            "orders-copy-x",
            "replicator",
            false,
            crash(1, "Error", "", 4),
        );
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        assert_eq!(pod_problems(&[terminating.clone(), failed], now()), vec![]);
        assert_eq!(pod_state(&terminating).state, "Terminating");
    }

    #[test]
    fn problems_come_by_component_then_name() {
        let pods = vec![
            pod("orders-worker-0", "worker", false, crash(1, "Error", "", 2)),
            pod("orders-nats-1", "nats", false, crash(1, "Error", "", 2)),
            pod("orders-nats-0", "nats", false, crash(1, "Error", "", 2)),
            pod(
                "orders-replicator-0",
                "replicator",
                false,
                crash(1, "Error", "", 2),
            ),
        ];
        let reasons: Vec<String> = pod_problems(&pods, now())
            .into_iter()
            .map(|p| p.reason)
            .collect();
        assert_eq!(
            reasons,
            [
                "ReplicatorCrashLooping",
                "WorkerCrashLooping",
                "NatsCrashLooping",
                "NatsCrashLooping"
            ]
        );
        let names: Vec<String> = pod_states(&pods).into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "orders-replicator-0",
                "orders-worker-0",
                "orders-nats-0",
                "orders-nats-1"
            ]
        );
    }

    #[test]
    fn pod_states_show_readiness_restarts_state_and_config_hash() {
        let table = [
            (
                pod(
                    "orders-worker-0",
                    "worker",
                    true,
                    json!({"restartCount": 2}),
                ),
                ("worker", true, 2, "Running"),
            ),
            (
                pod("orders-worker-0", "worker", false, crash(1, "Error", "", 7)),
                ("worker", false, 7, "CrashLoopBackOff"),
            ),
            (
                pod(
                    "orders-replicator-0",
                    "replicator",
                    false,
                    json!({"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
                ),
                ("replicator", false, 0, "OOMKilled"),
            ),
        ];
        for (p, (component, ready, restarts, state)) in table {
            let s = pod_state(&p);
            assert_eq!(
                (s.component.as_str(), s.ready, s.restarts, s.state.as_str()),
                (component, ready, restarts, state)
            );
            assert_eq!(s.config_hash.as_deref(), Some("abc"));
        }
        // No container status yet: the pod's phase; a copy Job's pod is `copy`.
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "orders-copy-abc", "labels": {"app.kubernetes.io/component": "replicator"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "orders-copy", "uid": "u"}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        let s = pod_state(&p);
        assert_eq!(
            (s.component.as_str(), s.ready, s.restarts, s.state.as_str()),
            ("copy", false, 0, "Pending")
        );
        p.status = None;
        assert_eq!(pod_state(&p).state, "Pending");
    }

    #[test]
    fn last_words_keep_the_runtimes_final_line_and_stay_short() {
        let json_log =
            "{\"timestamp\":\"t\",\"level\":\"INFO\",\"fields\":{\"message\":\"applying\"}}\n\
            {\"timestamp\":\"t\",\"level\":\"ERROR\",\"fields\":{\"message\":\"pg_flo stopped\",\
            \"error\":\"cannot connect to the target\"},\"target\":\"pg_flo\"}";
        let long = format!("pg_flo stopped error={}", "é".repeat(400));
        let table: Vec<(&str, String, String)> = vec![
            (
                "text log",
                TEXT_LOG.into(),
                "pg_flo stopped error=the sink rejected a change permanently: relation \
                 \"public.orders\" does not exist (SQLSTATE 42P01)"
                    .into(),
            ),
            (
                "json log",
                json_log.into(),
                "pg_flo stopped error=cannot connect to the target".into(),
            ),
            (
                "a panic: the last line",
                "thread 'main' panicked at src/x.rs:1:1:\nboom\n\n".into(),
                "boom".into(),
            ),
            ("empty", "  \n".into(), String::new()),
            (
                "the runtime's line is not the last",
                format!("{TEXT_LOG}note: run with RUST_BACKTRACE=1\n"),
                "pg_flo stopped error=the sink rejected a change permanently: relation \
                 \"public.orders\" does not exist (SQLSTATE 42P01)"
                    .into(),
            ),
        ];
        for (what, input, want) in table {
            assert_eq!(last_words(&input), want, "{what}");
        }
        let cut = last_words(&long);
        assert!(cut.len() <= TERMINATION_MESSAGE_MAX, "{}", cut.len());
        assert!(cut.starts_with("pg_flo stopped error=éé") && cut.ends_with('…'));
    }
}
