//! Reconciliation: the operator's controllers and what they share.
//!
//! - [`group`]: one `ReplicationGroup` -> its ConfigMap, ServiceAccount, replicator and worker
//!   StatefulSets (or the copy Job) and managed NATS (server-side apply, owner references, labelled orphans
//!   deleted), its status (phase, conditions, slot read from the source) and, on delete, the
//!   reclaim policy (finalizer [`FINALIZER`]).
//! - [`attach`]: `Rule` and `Route`: validated against their group and marked `Accepted`.
//! - [`run`]: wires the controllers onto watches (one set per watched namespace).
//!
//! Errors carry a [`Error::category`] (metric label) and an [`Error::reason`] (condition and
//! Event reason). A problem the user must fix (invalid spec, missing Secret) is not an error:
//! it becomes a status condition and an Event and the controller waits for a change. Errors (API
//! calls, source unreachable during cleanup) are retried with per-object exponential backoff
//! ([`error_policy`]) and shown: `Degraded` (groups) or `Accepted=Unknown` (Rules, Routes) with
//! the reason, and one Warning Event per object and reason every [`EVENT_REPEAT`] at most.

pub mod attach;
pub mod conditions;
pub mod group;
pub mod nats_change;
pub mod nats_status;
pub mod pods;
pub mod validate;

mod apply;
mod nats_cleanup;
mod run;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

pub use run::{run, RunConfig};

use crate::metrics::Metrics;
use crate::resources::BuildError;
use crate::source::SourceError;

/// How often a deletion waiting for pods or an active slot to go away looks again.
pub const CLEANUP_POLL: Duration = Duration::from_secs(5);
/// A slot read from the source, or why it could not be read.
pub type SlotReading = Result<crate::crd::SlotStatus, String>;

/// What the operator reads of a group outside Kubernetes, once per `--status-interval`.
#[derive(Clone, Debug)]
pub struct Readings {
    /// The replication slot.
    pub slot: SlotReading,
    /// The worker's consumer (`error` set when NATS could not be read).
    pub consumer: crate::crd::ConsumerStatus,
}

/// How often an Event of one reason about one object is repeated while it lasts (reconcile
/// errors retried with backoff, a crash-looping pod's message with a new restart count).
pub const EVENT_REPEAT: Duration = Duration::from_secs(15 * 60);

/// Field manager of every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "pg-flo-operator";
/// Finalizer of a ReplicationGroup: runs the reclaim policy before the group goes away.
pub const FINALIZER: &str = "pgflo.io/cleanup";

/// Shared state of the controllers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Image of the replicator, worker (unless `spec.image`): the operator's own.
    pub runtime_image: String,
    /// Pull Secrets of the runtime pods unless `spec.imagePullSecrets` names some.
    pub runtime_image_pull_secrets: Vec<String>,
    /// The watched namespaces (empty: all): where group name collisions are looked for.
    pub watch_namespaces: Vec<String>,
    /// The operator's own pods: admitted by each managed NATS's NetworkPolicy (the status
    /// reads the worker's consumer); `None`: not admitted.
    pub operator_pods: Option<crate::resources::OperatorPods>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// How often a healthy group's status (slot, lag) is refreshed.
    pub status_interval: Duration,
    /// Minimum time between two slot reads of one group (default: `status_interval`).
    slot_refresh: Duration,
    /// Consecutive failures per object (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Last readings per group uid: when, and what (or why not).
    readings: Mutex<HashMap<String, (Instant, Readings)>>,
    /// When an Event was last published per object and reason (see [`EVENT_REPEAT`]).
    events: Mutex<HashMap<(String, String), Instant>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        runtime_image: String,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        status_interval: Duration,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            runtime_image,
            runtime_image_pull_secrets: Vec::new(),
            watch_namespaces: Vec::new(),
            operator_pods: None,
            metrics,
            status_interval,
            slot_refresh: status_interval,
            failures: Mutex::new(HashMap::new()),
            readings: Mutex::new(HashMap::new()),
            events: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the default pull Secrets of the runtime pods.
    pub fn with_runtime_image_pull_secrets(mut self, names: Vec<String>) -> Self {
        self.runtime_image_pull_secrets = names;
        self
    }

    /// Sets the watched namespaces (empty: all), where group name collisions are looked for.
    pub fn with_watch_namespaces(mut self, namespaces: Vec<String>) -> Self {
        self.watch_namespaces = namespaces;
        self
    }

    /// Sets the operator's own pods, admitted by the managed NATS NetworkPolicies.
    pub fn with_operator_pods(mut self, pods: Option<crate::resources::OperatorPods>) -> Self {
        self.operator_pods = pods;
        self
    }

    /// Sets the minimum time between two slot reads of one group (tests use zero).
    pub fn with_slot_refresh(mut self, every: Duration) -> Self {
        self.slot_refresh = every;
        self
    }

    /// The readings of group `uid` if they were taken less than `slot_refresh` ago.
    ///
    /// Why: every status write is itself a watch event that triggers a reconcile; reading the
    /// slot and the consumer again there would find a new lag under traffic (and a new
    /// `readAt`), write again, and loop once per debounce. Reusing fresh readings makes that
    /// reconcile's status equal to the stored one, and an equal status is not written.
    pub(crate) fn fresh_readings(&self, uid: &str) -> Option<Readings> {
        let readings = self.readings.lock().ok()?;
        let (at, reading) = readings.get(uid)?;
        (at.elapsed() < self.slot_refresh).then(|| reading.clone())
    }

    /// Remembers the readings of group `uid`.
    pub(crate) fn remember_readings(&self, uid: &str, reading: Readings) {
        if let Ok(mut readings) = self.readings.lock() {
            readings.insert(uid.to_owned(), (Instant::now(), reading));
        }
    }

    /// Forgets group `uid` (deleted).
    pub(crate) fn forget_readings(&self, uid: &str) {
        if let Ok(mut readings) = self.readings.lock() {
            readings.remove(uid);
        }
    }

    /// Whether an Event of `reason` about the object `key` may be published now: the first one,
    /// or [`EVENT_REPEAT`] after the last one. Counts it when it may.
    pub(crate) fn event_due(&self, key: &str, reason: &str) -> bool {
        let Ok(mut events) = self.events.lock() else {
            return true;
        };
        let k = (key.to_owned(), reason.to_owned());
        let due = events.get(&k).is_none_or(|at| at.elapsed() >= EVENT_REPEAT);
        if due {
            events.insert(k, Instant::now());
        }
        due
    }

    /// Records that an Event of `reason` about `key` was published now (one that is always
    /// published, e.g. a new Degraded reason), so that repeats wait [`EVENT_REPEAT`].
    pub(crate) fn mark_event(&self, key: &str, reason: &str) {
        if let Ok(mut events) = self.events.lock() {
            events.insert((key.to_owned(), reason.to_owned()), Instant::now());
        }
    }

    /// Forgets the Events published about `key` (it reconciled fine: the next failure is news).
    pub(crate) fn forget_events(&self, key: &str) {
        if let Ok(mut events) = self.events.lock() {
            events.retain(|(k, _), _| k != key);
        }
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate_note(note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    fn reset_failures(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// Counts a failure of `key` and returns the delay before the next attempt: 5 s doubling,
    /// at most 5 minutes.
    fn next_backoff(&self, key: &str) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff(n)
    }
}

/// The Events API refuses notes over 1 kB: longer ones are cut at a character boundary, with
/// `…` (the full text is in the status condition).
pub fn truncate_note(note: String) -> String {
    cut(note, 1024)
}

/// `s` cut to at most `max` bytes (at a character boundary), ending in `…` when cut.
pub(crate) fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

/// Delay after the `n`th consecutive failure (n >= 1): 5 s, 10 s, 20 s ... capped at 300 s.
pub fn backoff(n: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << n.saturating_sub(1).min(6));
    Duration::from_secs(secs.min(300))
}

/// Error of a reconcile that is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("cannot {verb} {kind} {name}")]
    Kube {
        /// What was attempted (`apply`, `delete`, `list`, ...).
        verb: &'static str,
        /// Kind of the object.
        kind: String,
        /// Name of the object (or the label selector of a list).
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The desired objects could not be built.
    #[error("cannot build the objects of the group")]
    Build(#[from] BuildError),
    /// The source database could not be cleaned up.
    #[error("cannot clean up the source database of the group (set spec.reclaimPolicy: retain to delete the group without cleanup)")]
    Source(#[source] SourceError),
    /// A NATS stream could not be deleted.
    #[error("cannot delete NATS stream {stream} (set spec.reclaimPolicy: retain to delete the group without cleanup)")]
    Nats {
        /// Stream name.
        stream: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The finalizer helper failed (adding/removing the finalizer or the wrapped reconcile).
    #[error("finalizer {FINALIZER}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The cleanup waits for something to go away (pods, an active slot); retried after
    /// [`CLEANUP_POLL`] without backoff.
    #[error("cleanup waiting: {0}")]
    CleanupPending(String),
    /// The cleanup cannot run until the user fixes something (message says what).
    #[error("cleanup blocked: {0}")]
    CleanupBlocked(String),
    /// The object has no namespace or name.
    #[error("object without namespace or name")]
    Unnamed,
}

impl Error {
    /// Reason of the condition and the Event that report the error: `KubernetesApiError`,
    /// `BuildFailed`, `CleanupFailed` (source database or NATS streams), `CleanupBlocked`,
    /// `CleanupPending`, `FinalizerFailed`, `InvalidObject`.
    pub fn reason(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube { .. } => "KubernetesApiError",
            Error::Build(_) => "BuildFailed",
            Error::Source(_) | Error::Nats { .. } => "CleanupFailed",
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.reason(),
                _ => "FinalizerFailed",
            },
            Error::CleanupPending(_) => "CleanupPending",
            Error::CleanupBlocked(_) => "CleanupBlocked",
            Error::Unnamed => "InvalidObject",
        }
    }

    /// Metric label.
    pub fn category(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube { .. } => "kube-api",
            Error::Build(_) => "build",
            Error::Source(_) => "source",
            Error::Nats { .. } => "nats",
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.category(),
                _ => "kube-api",
            },
            Error::CleanupPending(_) => "cleanup-pending",
            Error::CleanupBlocked(_) => "cleanup-blocked",
            Error::Unnamed => "invalid-object",
        }
    }

    pub(crate) fn kube(
        verb: &'static str,
        kind: &str,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.into();
        let kind = kind.to_owned();
        move |source| Error::Kube {
            verb,
            kind,
            name,
            source,
        }
    }
}

/// Renders an error with its sources (`a: b: c`), for logs, Events and conditions. (The
/// runtime's `pg_flo::redact::error_chain` also scrubs row values and URLs; the operator does
/// not link the runtime, and its errors carry neither: Kubernetes API errors, and the source
/// checks' connection errors, which never include the password.)
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An error as a condition message and Event note: [`error_chain`], except that a refusal of
/// the API server reads `cannot <verb> <kind> <name>: <the server's message> (<code> <reason>)`
/// instead of the client's debug rendering of the response.
pub fn describe(err: &Error) -> String {
    use kube::runtime::finalizer::Error as F;
    match err {
        Error::Kube {
            source: kube::Error::Api(s),
            ..
        } => format!("{err}: {} ({} {})", s.message, s.code, s.reason),
        Error::Finalizer(f) => match f.as_ref() {
            F::ApplyFailed(e) | F::CleanupFailed(e) => describe(e),
            F::AddFinalizer(kube::Error::Api(s)) | F::RemoveFinalizer(kube::Error::Api(s)) => {
                let step = if matches!(f.as_ref(), F::AddFinalizer(_)) {
                    "cannot add"
                } else {
                    "cannot remove"
                };
                format!("{step} {err}: {} ({} {})", s.message, s.code, s.reason)
            }
            _ => error_chain(err),
        },
        _ => error_chain(err),
    }
}

/// Key of an object in the backoff and Event tables.
pub(crate) fn key_of<K>(obj: &K) -> String
where
    K: Resource,
    K::DynamicType: Default,
{
    format!(
        "{}/{}/{}",
        K::kind(&Default::default()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Key of the Events that report reconcile errors of `obj` (forgotten when it reconciles fine).
pub(crate) fn error_key<K>(obj: &K) -> String
where
    K: Resource,
    K::DynamicType: Default,
{
    format!("{}#error", key_of(obj))
}

/// `error_policy` of every controller: log, count, and retry after a per-object exponential
/// backoff.
pub fn error_policy<K>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource,
    K::DynamicType: Default,
{
    let key = key_of(obj.as_ref());
    if let Error::CleanupPending(what) = err {
        tracing::info!(object = key, what, "cleanup waiting");
        return Action::requeue(CLEANUP_POLL);
    }
    let delay = ctx.next_backoff(&key);
    tracing::warn!(
        object = key,
        error = %error_chain(err),
        category = err.category(),
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Records the outcome of one reconcile in the metrics and the backoff table.
pub(crate) fn observe<K>(
    ctx: &Context,
    obj: &K,
    result: &Result<Action, Error>,
    started: std::time::Instant,
) where
    K: Resource,
    K::DynamicType: Default,
{
    let dt = K::DynamicType::default();
    let kind = K::kind(&dt);
    ctx.metrics.observe_reconcile(
        &kind,
        started.elapsed(),
        result.as_ref().err().map(|e| e.category()),
    );
    if result.is_ok() {
        ctx.reset_failures(&key_of(obj));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_fit_the_events_api() {
        assert_eq!(truncate_note("short".into()), "short");
        let long = "é".repeat(700);
        let cut = truncate_note(long);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_note("x".repeat(1024)).len(), 1024);
    }

    #[tokio::test]
    async fn events_of_one_reason_wait_for_the_repeat_interval() {
        let ctx = Context::new(
            Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap(),
            String::new(),
            Reporter {
                controller: "t".into(),
                instance: None,
            },
            Arc::new(Metrics::new().unwrap()),
            Duration::from_secs(30),
        );
        assert!(ctx.event_due("a", "KubernetesApiError"));
        assert!(!ctx.event_due("a", "KubernetesApiError"), "a retry");
        assert!(ctx.event_due("a", "CleanupFailed"), "another reason");
        assert!(ctx.event_due("b", "KubernetesApiError"), "another object");
        ctx.mark_event("c", "WorkerCrashLooping");
        assert!(!ctx.event_due("c", "WorkerCrashLooping"));
        // Reconciled fine: the next failure is news.
        ctx.forget_events("a");
        assert!(ctx.event_due("a", "KubernetesApiError"));
        // After the interval: once more.
        if let Ok(mut events) = ctx.events.lock() {
            for at in events.values_mut() {
                *at = Instant::now() - EVENT_REPEAT;
            }
        }
        assert!(ctx.event_due("a", "KubernetesApiError"));
        assert!(!ctx.event_due("a", "KubernetesApiError"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
