//! The worker's state in the group's NATS state stream (`pgflo_<group>_state`, one message per
//! subject): the lease that lets at most one worker apply a group, and the applied position of
//! sinks that cannot store one at their destination (stdout, webhook).
//!
//! Lease contract:
//! - Subject `pgflo.<group>.state.worker-lease` holds `{holder, expires_unix_ms}`. Every write is
//!   a compare-and-set on the subject's last sequence (`Nats-Expected-Last-Subject-Sequence`),
//!   so two workers can never both take or renew it.
//! - A worker takes the lease when none exists, when it expired, or when it is its own; it
//!   renews it every [`LEASE_TTL`]/3. Before a renewal is acknowledged by the server, the worker
//!   only trusts the lease until `sent + LEASE_TTL - LEASE_SAFETY` by its own monotonic clock:
//!   past that, it stops applying ([`Lease::lost`]), so a worker cut off from NATS (a partitioned
//!   node, a paused process) stops before another may take over.
//! - A second worker waits, not ready, until the lease is free; on shutdown the holder releases
//!   the lease so a successor starts at once.
//!
//! Position contract: subject `pgflo.<group>.state.worker-position` holds the last committed
//! [`Position`] of a sink without its own store. It is written after the sink's commit and
//! before the messages are acked (a failed write fails the session, nothing is acked), so a
//! restarted worker knows what it applied even when NATS re-delivers or re-orders messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::message::Position;
use crate::nats::NatsError;

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// Margin for clock differences and the time a renewal takes to reach the server.
pub const LEASE_SAFETY: Duration = Duration::from_secs(5);

fn lease_subject(group: &str) -> String {
    format!("pgflo.{group}.state.worker-lease")
}

fn position_subject(group: &str) -> String {
    format!("pgflo.{group}.state.worker-position")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    expires_unix_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `holder` may take a lease found as `current` at wall-clock time `now_ms`:
/// no lease, our own, an expired or released one, or one held by a process that is provably
/// gone (`gone`, see [`holder_gone`]).
fn may_take(
    current: Option<&LeaseRecord>,
    holder: &str,
    now_ms: u64,
    gone: impl Fn(&str) -> bool,
) -> bool {
    match current {
        None => true,
        Some(r) => r.holder == holder || r.expires_unix_ms <= now_ms || gone(&r.holder),
    }
}

/// Whether the process named `other` has ended, as far as `me` can prove it: both ids are
/// `host/boot-id/pid/nonce`; only a holder on this very machine (same host name and kernel boot
/// id) can be checked: it is gone when its pid is ours (a restarted container) or no longer
/// exists. A holder elsewhere (a node cut off from the network) is never taken over early.
fn holder_gone(me: &str, other: &str, pid_alive: impl Fn(u32) -> bool) -> bool {
    let mut a = me.split('/');
    let mut b = other.split('/');
    let (Some(host), Some(boot), Some(pid)) = (a.next(), a.next(), a.next()) else {
        return false;
    };
    let (Some(o_host), Some(o_boot), Some(o_pid)) = (b.next(), b.next(), b.next()) else {
        return false;
    };
    if host != o_host || boot != o_boot || boot.is_empty() || me == other {
        return false;
    }
    match o_pid.parse::<u32>() {
        Ok(o) => o.to_string() == pid || !pid_alive(o),
        Err(_) => false,
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// This process's name in the lease: `host/boot-id/pid/nonce`.
fn holder_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().replace('/', "_"))
            .filter(|s| !s.is_empty())
    };
    let host = std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.replace('/', "_"))
        .filter(|h| !h.is_empty())
        .or_else(|| read("/etc/hostname"))
        .unwrap_or_else(|| "unknown-host".into());
    let boot = read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_ms() as u128);
    format!(
        "{host}/{boot}/{}/{:08x}",
        std::process::id(),
        h.finish() as u32
    )
}

/// The last message on `subject`, with its stream sequence (0: none).
async fn read_last<T: for<'de> Deserialize<'de>>(
    state: &stream::Stream,
    subject: &str,
    step: &'static str,
) -> Result<(Option<T>, u64), NatsError> {
    match state.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok((serde_json::from_slice(&m.payload).ok(), m.sequence)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok((None, 0)),
        Err(e) => Err(NatsError::JetStream {
            step,
            message: e.to_string(),
        }),
    }
}

/// Publishes `value` on `subject` if the subject's last sequence is still `expected` (`None`:
/// unconditionally). `Ok(None)`: someone else wrote first.
async fn write(
    js: &jetstream::Context,
    subject: String,
    value: &impl Serialize,
    expected: Option<u64>,
    step: &'static str,
) -> Result<Option<u64>, NatsError> {
    let fail = |message: String| NatsError::JetStream { step, message };
    let payload = serde_json::to_vec(value).map_err(|e| fail(e.to_string()))?;
    let mut msg = PublishMessage::build().payload(payload.into());
    if let Some(seq) = expected {
        msg = msg.expected_last_subject_sequence(seq);
    }
    let ack = js
        .send_publish(subject, msg)
        .await
        .map_err(|e| fail(e.to_string()))?;
    match ack.await {
        Ok(ack) => Ok(Some(ack.sequence)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The applied position stored for sinks without their own store.
pub async fn read_position(
    state: &stream::Stream,
    group: &str,
) -> Result<Option<Position>, NatsError> {
    Ok(read_last(
        state,
        &position_subject(group),
        "reading the worker position",
    )
    .await?
    .0)
}

/// Stores the applied position (after the sink's commit, before the acks).
pub async fn write_position(
    js: &jetstream::Context,
    group: &str,
    position: Position,
) -> Result<(), NatsError> {
    write(
        js,
        position_subject(group),
        &position,
        None,
        "storing the worker position",
    )
    .await
    .map(|_| ())
}

/// A held lease; renewed in the background until dropped or released.
pub struct Lease {
    lost: watch::Receiver<bool>,
    valid_until: watch::Receiver<Instant>,
    task: tokio::task::JoinHandle<()>,
    js: jetstream::Context,
    group: String,
    holder: String,
    seq: watch::Receiver<u64>,
}

impl Lease {
    /// Waits until this worker holds the group's lease (or `shutdown` turns true: `None`).
    pub async fn acquire(
        js: &jetstream::Context,
        state: &stream::Stream,
        group: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Lease>, NatsError> {
        let holder = holder_id();
        let subject = lease_subject(group);
        let mut announced = None;
        loop {
            let (current, seq) =
                read_last::<LeaseRecord>(state, &subject, "reading the worker lease").await?;
            let now = now_ms();
            if may_take(current.as_ref(), &holder, now, |other| {
                holder_gone(&holder, other, pid_alive)
            }) {
                let sent = Instant::now();
                let record = LeaseRecord {
                    holder: holder.clone(),
                    expires_unix_ms: now + LEASE_TTL.as_millis() as u64,
                };
                if let Some(seq) =
                    write(js, subject.clone(), &record, Some(seq), "taking the lease").await?
                {
                    tracing::info!(holder = %holder, "holding the group's worker lease");
                    return Ok(Some(Lease::start(js, group, holder, seq, sent)));
                }
                continue;
            }
            if let Some(r) = &current {
                if announced.as_ref() != Some(&r.holder) {
                    tracing::warn!(
                        holder = %r.holder,
                        "another worker applies this group; waiting until its lease is released or expires (at most one worker applies a group)"
                    );
                    announced = Some(r.holder.clone());
                }
            }
            let wait = current
                .map(|r| Duration::from_millis(r.expires_unix_ms.saturating_sub(now)))
                .unwrap_or_default()
                .clamp(Duration::from_millis(200), Duration::from_secs(2));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return Ok(None),
            }
            if *shutdown.borrow() {
                return Ok(None);
            }
        }
    }

    fn start(
        js: &jetstream::Context,
        group: &str,
        holder: String,
        seq: u64,
        sent: Instant,
    ) -> Lease {
        let (lost_tx, lost) = watch::channel(false);
        let (valid_tx, valid_until_rx) = watch::channel(sent + LEASE_TTL - LEASE_SAFETY);
        let (seq_tx, seq_rx) = watch::channel(seq);
        let js2 = js.clone();
        let subject = lease_subject(group);
        let me = holder.clone();
        let task = tokio::spawn(async move {
            let mut seq = seq;
            let mut valid_until = sent + LEASE_TTL - LEASE_SAFETY;
            loop {
                let next = (Instant::now() + LEASE_TTL / 3).min(valid_until);
                tokio::time::sleep_until(next).await;
                if Instant::now() >= valid_until {
                    tracing::error!(
                        "the worker lease could not be renewed in time; stopping to apply changes"
                    );
                    let _ = lost_tx.send(true);
                    return;
                }
                let sent = Instant::now();
                let record = LeaseRecord {
                    holder: me.clone(),
                    expires_unix_ms: now_ms() + LEASE_TTL.as_millis() as u64,
                };
                let renewed = tokio::time::timeout(
                    valid_until.saturating_duration_since(Instant::now()),
                    write(
                        &js2,
                        subject.clone(),
                        &record,
                        Some(seq),
                        "renewing the lease",
                    ),
                )
                .await;
                match renewed {
                    Ok(Ok(Some(s))) => {
                        seq = s;
                        let _ = seq_tx.send(s);
                        valid_until = sent + LEASE_TTL - LEASE_SAFETY;
                        let _ = valid_tx.send(valid_until);
                    }
                    Ok(Ok(None)) => {
                        tracing::error!(
                            "another worker took the group's lease; stopping to apply changes"
                        );
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not renew the worker lease; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(_) => {}
                }
            }
        });
        Lease {
            lost,
            valid_until: valid_until_rx,
            task,
            js: js.clone(),
            group: group.to_owned(),
            holder,
            seq: seq_rx,
        }
    }

    /// Resolves when the lease is lost (not renewed in time, or taken by another worker).
    pub async fn lost(&mut self) {
        while !*self.lost.borrow() {
            if self.lost.changed().await.is_err() {
                // The renewal task ended without a verdict: treat as lost.
                return;
            }
        }
    }

    /// A cheap handle that tells, at the moment of asking, whether the lease still holds.
    pub fn view(&self) -> LeaseView {
        LeaseView {
            lost: self.lost.clone(),
            valid_until: self.valid_until.clone(),
        }
    }

    /// Gives the lease up, so that a successor takes over at once.
    pub async fn release(self) {
        self.task.abort();
        if *self.lost.borrow() {
            return;
        }
        let record = LeaseRecord {
            holder: self.holder.clone(),
            expires_unix_ms: 0,
        };
        let seq = *self.seq.borrow();
        if let Err(e) = write(
            &self.js,
            lease_subject(&self.group),
            &record,
            Some(seq),
            "releasing the lease",
        )
        .await
        {
            tracing::warn!(error = %e, "could not release the worker lease; it expires by itself");
        }
    }
}

/// Asked right before every write to the sink: a worker that was paused (SIGSTOP, a frozen VM)
/// past its lease's validity must not write, even before the renewal task has noticed.
#[derive(Clone)]
pub struct LeaseView {
    lost: watch::Receiver<bool>,
    valid_until: watch::Receiver<Instant>,
}

impl LeaseView {
    pub fn holds(&self) -> bool {
        !*self.lost.borrow() && Instant::now() < *self.valid_until.borrow()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_take_the_lease() {
        let rec = |holder: &str, expires| LeaseRecord {
            holder: holder.into(),
            expires_unix_ms: expires,
        };
        let cases = [
            ("no lease yet", None, 1_000, false, true),
            ("our own", Some(rec("me", 5_000)), 1_000, false, true),
            (
                "another's, valid",
                Some(rec("other", 5_000)),
                1_000,
                false,
                false,
            ),
            (
                "another's, valid, gone",
                Some(rec("other", 5_000)),
                1_000,
                true,
                true,
            ),
            (
                "another's, expired",
                Some(rec("other", 5_000)),
                5_000,
                false,
                true,
            ),
            (
                "another's, released",
                Some(rec("other", 0)),
                1_000,
                false,
                true,
            ),
        ];
        for (name, current, now, gone, want) in cases {
            assert_eq!(
                may_take(current.as_ref(), "me", now, |_| gone),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn only_a_holder_on_this_machine_can_be_proven_gone() {
        let me = "pod-a/boot1/1/aaaa";
        let alive = |pid| pid == 42;
        let cases = [
            (
                "restarted container: same host, boot, pid",
                "pod-a/boot1/1/bbbb",
                true,
            ),
            ("same machine, pid ended", "pod-a/boot1/77/bbbb", true),
            ("same machine, pid alive", "pod-a/boot1/42/bbbb", false),
            ("same host name, other machine", "pod-a/boot2/1/bbbb", false),
            ("other host", "pod-b/boot1/77/bbbb", false),
            ("ourselves", me, false),
            ("unreadable id", "something", false),
            ("no boot id known", "pod-a//77/bbbb", false),
        ];
        for (name, other, want) in cases {
            assert_eq!(holder_gone(me, other, alive), want, "{name}");
        }
        assert!(
            !holder_gone("pod-a//1/a", "pod-a//77/b", alive),
            "no boot id: never"
        );
    }
}
