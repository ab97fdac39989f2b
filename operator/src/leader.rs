//! Leader election on a `coordination.k8s.io/v1` Lease, so that several operator replicas can
//! run and exactly one reconciles.
//!
//! Contract:
//! - A replica reconciles only after [`LeaderElector::acquire`] returned, and stops (the process
//!   exits) when [`LeaderElector::hold`] returns: when another replica holds the Lease, or when
//!   it could not renew for [`LeaseConfig::renew_deadline`] since its last successful renewal.
//!   One failed renewal (a transient API error) is retried every
//!   [`LeaseConfig::retry_period`] and does not end the leadership.
//! - **Expiry is judged on the local clock only** (as client-go does): a replica remembers when
//!   *it* saw the Lease's record (holder, `renewTime`, `resourceVersion`) last change, on its
//!   monotonic clock, and may take the Lease over only when `leaseDurationSeconds` passed on
//!   that clock since, without a change. The `renewTime` written by another node's clock is
//!   never compared with ours, so clock skew between nodes can neither let a standby take a
//!   live Lease nor keep it from taking a dead one.
//! - Safety margin: the leader's deadline runs from the *start* of its last successful renewal
//!   (the write may have landed at any moment of the request), a standby's expiry from when it
//!   *read* that write, so the leader steps down `lease_duration - renew_deadline` before any
//!   standby may take over (given clocks that run at the same rate; their offsets do not
//!   matter). Every attempt is cut off at the deadline, so a hanging request cannot stretch it.
//! - Every write carries the `resourceVersion` read just before (optimistic concurrency), so two
//!   candidates never both win: the second write gets `409 Conflict` and counts as "not leader".
//!
//! The decisions are pure functions ([`observe`], [`decide`], [`after_renew`]) over the observed
//! state and a local instant.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal (written as `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal; shorter than
    /// `lease_duration` (the difference is the margin before a standby may take over).
    pub renew_deadline: Duration,
    /// Delay between attempts to acquire, and between retries of a failed renewal.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The operator's settings (client-go's defaults): 15 s lease, 10 s renew deadline, 2 s
    /// retry period.
    pub fn standard(name: String, namespace: String, identity: String) -> Self {
        Self {
            name,
            namespace,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// How often the holder renews: a third of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }
}

/// What identifies one write of the Lease: any renewal changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity` (`None` or empty: released).
    pub holder: Option<String>,
    /// `spec.renewTime`, as written by the holder's clock (compared for equality only).
    pub renew_time: Option<Timestamp>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub lease_duration: Option<Duration>,
}

impl LeaseRecord {
    /// The record of `lease`.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            resource_version: lease.metadata.resource_version.clone(),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        }
    }
}

/// The Lease record this replica saw last, and when it first saw it (local monotonic clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The record.
    pub record: LeaseRecord,
    /// When this replica first read this record.
    pub since: Instant,
}

/// The observation after reading `record` at `now`: the previous one while the record is
/// unchanged (its time keeps running), else a new one from `now`.
pub fn observe(previous: Option<&Observation>, record: LeaseRecord, now: Instant) -> Observation {
    match previous {
        Some(p) if p.record == record => p.clone(),
        _ => Observation { record, since: now },
    }
}

/// What a candidate does with the Lease it observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It holds the Lease: renew it.
    Renew,
    /// Nobody holds it (released), or the holder has not renewed for a lease duration of
    /// local time: take it over.
    TakeOver,
    /// Another replica holds it (or may still): wait.
    Held,
}

/// The decision of candidate `me` on `obs` at `now`. The holder's lease duration is the one it
/// wrote (`default_duration` when absent).
pub fn decide(obs: &Observation, me: &str, now: Instant, default_duration: Duration) -> Decision {
    match obs.record.holder.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None => Decision::TakeOver,
        Some(_) => {
            let duration = obs.record.lease_duration.unwrap_or(default_duration);
            if now.saturating_duration_since(obs.since) >= duration {
                Decision::TakeOver
            } else {
                Decision::Held
            }
        }
    }
}

/// How one renewal attempt of the leader ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The Lease was written.
    Renewed,
    /// Another replica holds the Lease (or won the write).
    HeldByOther,
    /// The API call failed or timed out.
    Failed,
}

/// What the leader does after a renewal attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Still leading; `last_renewed`: the start of the last successful renewal.
    Lead {
        /// Start of the last successful renewal.
        last_renewed: Instant,
    },
    /// Stop leading now.
    StepDown,
}

/// The leader's state after an attempt that started at `started` and ended with `outcome` at
/// `now`: a renewal moves `last_renewed` to `started`; a failure keeps leading until
/// `renew_deadline` after `last_renewed`; another holder ends it at once.
pub fn after_renew(
    outcome: RenewOutcome,
    started: Instant,
    last_renewed: Instant,
    now: Instant,
    renew_deadline: Duration,
) -> Leadership {
    match outcome {
        RenewOutcome::Renewed => Leadership::Lead {
            last_renewed: started,
        },
        RenewOutcome::HeldByOther => Leadership::StepDown,
        RenewOutcome::Failed if now.saturating_duration_since(last_renewed) >= renew_deadline => {
            Leadership::StepDown
        }
        RenewOutcome::Failed => Leadership::Lead { last_renewed },
    }
}

/// Acquires and renews the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// What this replica saw of the Lease last.
    observed: Mutex<Option<Observation>>,
}

impl LeaderElector {
    /// An elector for `cfg` using `client`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Mutex::new(None),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Records `lease` as read (or written) at `now`; the resulting observation.
    fn remember(&self, lease: &Lease, now: Instant) -> Observation {
        let record = LeaseRecord::of(lease);
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let obs = observe(observed.as_ref(), record, now);
        *observed = Some(obs.clone());
        obs
    }

    /// One attempt: creates, renews or takes over the Lease. `Ok(true)` when this replica holds
    /// it afterwards, `Ok(false)` when another replica does (or won a race).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(Timestamp::now(), None, 0)),
            };
            return self.written(self.api.create(&PostParams::default(), &lease).await);
        };
        let obs = self.remember(&current, Instant::now());
        let spec = current.spec.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let now = Timestamp::now();
        let next = match decide(
            &obs,
            &self.cfg.identity,
            Instant::now(),
            self.cfg.lease_duration,
        ) {
            Decision::Held => return Ok(false),
            Decision::Renew => self.spec(now, spec.acquire_time.clone(), transitions),
            Decision::TakeOver => {
                tracing::info!(
                    previous = obs.record.holder.as_deref().unwrap_or(""),
                    "taking over the leader lease"
                );
                self.spec(now, None, transitions.saturating_add(1))
            }
        };
        let lease = Lease {
            metadata: current.metadata.clone(),
            spec: Some(next),
        };
        self.written(
            self.api
                .replace(&self.cfg.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// The result of a write: `true` when it went through (remembered as observed now),
    /// `false` on `409 Conflict` (someone else wrote first).
    fn written(&self, r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match r {
            Ok(lease) => {
                self.remember(&lease, Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease, trying every retry period. Returns when the
    /// winning attempt started: what [`LeaderElector::hold`] counts the renew deadline from.
    pub async fn acquire(&self) -> Instant {
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => return started,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or write the leader lease"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews the Lease every renew interval (retrying a failure every retry period) until
    /// leadership is lost; `last_renewed`: what [`LeaderElector::acquire`] returned. Returns
    /// when another replica holds the Lease or no renewal succeeded for the renew deadline.
    pub async fn hold(&self, mut last_renewed: Instant) {
        let mut wait = self.cfg.renew_interval();
        loop {
            let deadline = last_renewed + self.cfg.renew_deadline;
            tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
            let started = Instant::now();
            let outcome = match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await
            {
                Ok(Ok(true)) => RenewOutcome::Renewed,
                Ok(Ok(false)) => RenewOutcome::HeldByOther,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot renew the leader lease: retrying");
                    RenewOutcome::Failed
                }
                Err(_) => {
                    tracing::warn!("renewing the leader lease timed out");
                    RenewOutcome::Failed
                }
            };
            match after_renew(
                outcome,
                started,
                last_renewed,
                Instant::now(),
                self.cfg.renew_deadline,
            ) {
                Leadership::Lead { last_renewed: at } => {
                    last_renewed = at;
                    wait = if outcome == RenewOutcome::Renewed {
                        self.cfg.renew_interval()
                    } else {
                        self.cfg.retry_period
                    };
                }
                Leadership::StepDown if outcome == RenewOutcome::HeldByOther => {
                    tracing::error!("another replica holds the leader lease");
                    return;
                }
                Leadership::StepDown => {
                    tracing::error!(
                        renew_deadline_s = self.cfg.renew_deadline.as_secs_f64(),
                        "could not renew the leader lease before its renew deadline"
                    );
                    return;
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown) so that a standby takes over without waiting for it
    /// to expire. Best effort.
    pub async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let mut spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(spec),
        };
        if let Err(e) = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "cannot release the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);
    const DEADLINE: Duration = Duration::from_secs(10);

    fn record(holder: Option<&str>, rv: &str, renew_secs: i64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_owned),
            renew_time: Some(Timestamp::from_second(renew_secs).unwrap()),
            resource_version: Some(rv.to_owned()),
            lease_duration: Some(LEASE),
        }
    }

    #[test]
    fn an_observation_keeps_its_time_while_the_record_is_unchanged() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(7);
        let first = observe(None, record(Some("a"), "1", 100), t0);
        assert_eq!(first.since, t0);
        // Same record read again: the time since it was first seen keeps running.
        assert_eq!(
            observe(Some(&first), record(Some("a"), "1", 100), t1).since,
            t0
        );
        // Any change (a renewal: new resourceVersion and renewTime; a new holder) restarts it.
        let changes = [
            record(Some("a"), "2", 105),
            record(Some("a"), "2", 100),
            record(Some("a"), "1", 105),
            record(Some("b"), "1", 100),
            record(None, "1", 100),
        ];
        for r in changes {
            assert_eq!(observe(Some(&first), r.clone(), t1).since, t1, "{r:?}");
        }
    }

    #[test]
    fn a_candidate_takes_over_only_after_a_lease_duration_of_local_time() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        // (observed record, observed since, now, candidate, decision)
        let now_secs = Timestamp::now().as_second();
        let cases = [
            // Held by another: waits a full lease duration of *local* time since first seen,
            // whatever renewTime says (written by another node's clock).
            (record(Some("a"), "1", now_secs), s(0), s(0), Decision::Held),
            (
                record(Some("a"), "1", now_secs),
                s(0),
                s(14),
                Decision::Held,
            ),
            (
                record(Some("a"), "1", now_secs),
                s(0),
                s(15),
                Decision::TakeOver,
            ),
            // renewTime an hour in the past (the holder's clock is behind): not expired yet.
            (
                record(Some("a"), "1", now_secs - 3600),
                s(0),
                s(1),
                Decision::Held,
            ),
            // renewTime an hour ahead (the holder's clock is ahead): expires all the same.
            (
                record(Some("a"), "1", now_secs + 3600),
                s(0),
                s(16),
                Decision::TakeOver,
            ),
            // Released: at once.
            (record(None, "1", now_secs), s(0), s(0), Decision::TakeOver),
            // Held by me: renew, expired or not.
            (
                record(Some("me"), "1", now_secs),
                s(0),
                s(0),
                Decision::Renew,
            ),
            (
                record(Some("me"), "1", now_secs),
                s(0),
                s(60),
                Decision::Renew,
            ),
        ];
        for (rec, since, now, want) in cases {
            let obs = Observation {
                record: rec.clone(),
                since,
            };
            assert_eq!(
                decide(&obs, "me", now, Duration::from_secs(99)),
                want,
                "{rec:?} at {:?}",
                now - since
            );
        }
        // Without leaseDurationSeconds: the candidate's own duration.
        let mut rec = record(Some("a"), "1", now_secs);
        rec.lease_duration = None;
        let obs = Observation {
            record: rec,
            since: s(0),
        };
        assert_eq!(decide(&obs, "me", s(5), LEASE), Decision::Held);
        assert_eq!(decide(&obs, "me", s(15), LEASE), Decision::TakeOver);
    }

    #[test]
    fn the_leader_survives_failed_renewals_until_its_renew_deadline() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        use Leadership::{Lead, StepDown};
        use RenewOutcome::{Failed, HeldByOther, Renewed};
        // (outcome, attempt started, last renewed, now, next)
        let cases = [
            (
                Renewed,
                s(5_000),
                s(0),
                s(5_100),
                Lead {
                    last_renewed: s(5_000),
                },
            ),
            // One failure (and more) before the deadline: still leading, same last renewal.
            (
                Failed,
                s(5_000),
                s(0),
                s(5_100),
                Lead { last_renewed: s(0) },
            ),
            (
                Failed,
                s(9_000),
                s(0),
                s(9_999),
                Lead { last_renewed: s(0) },
            ),
            // At the deadline: step down.
            (Failed, s(9_000), s(0), s(10_000), StepDown),
            // A renewal that started before the deadline but ended after counts from its start.
            (
                Renewed,
                s(9_900),
                s(0),
                s(10_200),
                Lead {
                    last_renewed: s(9_900),
                },
            ),
            // Another holder: at once.
            (HeldByOther, s(5_000), s(0), s(5_100), StepDown),
        ];
        for (outcome, started, last, now, want) in cases {
            assert_eq!(
                after_renew(outcome, started, last, now, DEADLINE),
                want,
                "{outcome:?} at {:?}",
                now - t0
            );
        }
    }

    #[test]
    fn the_standard_settings_leave_a_margin_and_one_retry() {
        let c = LeaseConfig::standard("l".into(), "ns".into(), "me".into());
        assert!(c.renew_deadline < c.lease_duration);
        // After a failed renewal at one renew interval, at least one retry fits before the
        // deadline.
        assert!(c.renew_interval() + c.retry_period < c.renew_deadline);
    }
}
