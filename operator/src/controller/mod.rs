//! Reconciliation: the operator's controllers and what they share.
//!
//! - [`group`]: one `ReplicationGroup` -> its ConfigMap, ServiceAccount, replicator and worker
//!   StatefulSets (or the copy Job) and managed NATS (server-side apply, owner references, labelled orphans
//!   deleted), its status (phase, conditions, slot read from the source) and, on delete, the
//!   reclaim policy (finalizer [`FINALIZER`]).
//! - [`attach`]: `Rule` and `Route`: validated against their group and marked `Accepted`.
//! - [`run`]: wires the controllers onto watches (one set per watched namespace).
//!
//! Errors carry a [`Error::category`] used as metric label and Event reason. A problem the user
//! must fix (invalid spec, missing Secret) is not an error: it becomes a status condition and an
//! Event and the controller waits for a change. Errors (API calls, source unreachable during
//! cleanup) are retried with per-object exponential backoff ([`error_policy`]).

pub mod attach;
pub mod conditions;
pub mod group;
pub mod nats_change;
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
    /// Last slot reading per group uid: when, and what (or why not).
    slots: Mutex<HashMap<String, (Instant, SlotReading)>>,
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
            metrics,
            status_interval,
            slot_refresh: status_interval,
            failures: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
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

    /// Sets the minimum time between two slot reads of one group (tests use zero).
    pub fn with_slot_refresh(mut self, every: Duration) -> Self {
        self.slot_refresh = every;
        self
    }

    /// The slot reading of group `uid` if one was taken less than `slot_refresh` ago.
    ///
    /// Why: every status write is itself a watch event that triggers a reconcile; re-reading the
    /// slot there would find a new lag under traffic, write again, and loop once per debounce.
    /// Reusing a fresh reading makes that reconcile's status equal to the stored one, and an
    /// equal status is not written.
    pub(crate) fn fresh_slot(&self, uid: &str) -> Option<SlotReading> {
        let slots = self.slots.lock().ok()?;
        let (at, reading) = slots.get(uid)?;
        (at.elapsed() < self.slot_refresh).then(|| reading.clone())
    }

    /// Remembers the slot reading of group `uid`.
    pub(crate) fn remember_slot(&self, uid: &str, reading: SlotReading) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(uid.to_owned(), (Instant::now(), reading));
        }
    }

    /// Forgets group `uid` (deleted).
    pub(crate) fn forget_slot(&self, uid: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(uid);
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
pub fn truncate_note(mut note: String) -> String {
    const MAX: usize = 1024 - '…'.len_utf8();
    if note.len() > 1024 {
        let mut end = MAX;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
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
    /// Metric label and Event reason.
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

/// Key of an object in the backoff table.
fn key_of<K>(obj: &K) -> String
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

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
