//! Leader election on a `coordination.k8s.io/v1` Lease, so that several operator replicas can
//! run and exactly one reconciles.
//!
//! Contract: a replica reconciles only after [`LeaderElector::try_acquire_or_renew`] returned
//! `true`, and must stop (the process exits) as soon as a renewal fails or finds another holder.
//! A Lease whose `renewTime + leaseDurationSeconds` lies in the past may be taken over. Every
//! write carries the `resourceVersion` read just before (optimistic concurrency), so two
//! candidates never both win: the second write gets `409 Conflict` and counts as "not leader".
//! Renewing every `lease_duration / 3` leaves two renewals of slack before others may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
}

impl LeaseConfig {
    /// How often the holder renews: a third of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }
}

/// Acquires and renews the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl LeaderElector {
    /// An elector for `cfg` using `client`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
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

    /// One attempt: creates, renews or takes over the Lease. `Ok(true)` when this replica holds
    /// it afterwards, `Ok(false)` when another replica does (or won a race).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.cfg.identity {
            self.spec(now, spec.acquire_time.clone(), transitions)
        } else if holder.is_empty() || expired(&spec, now) {
            tracing::info!(previous = holder, "taking over the leader lease");
            self.spec(now, None, transitions.saturating_add(1))
        } else {
            return Ok(false);
        };
        let lease = Lease {
            metadata: current.metadata.clone(),
            spec: Some(next),
        };
        conflict_is_false(
            self.api
                .replace(&self.cfg.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Waits until this replica holds the Lease, trying every renew interval.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or write the leader lease"),
            }
            tokio::time::sleep(self.cfg.renew_interval()).await;
        }
    }

    /// Renews the Lease until that fails; returns when leadership is lost.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.cfg.renew_interval()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("another replica holds the leader lease");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot renew the leader lease");
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

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed
        .0
        .checked_add(SignedDuration::from_secs(secs))
        .map(|until| until < now)
        .unwrap_or(true)
}

fn conflict_is_false(r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
