//! The source identity of a group ([`SourceId`]) and where the replicator records it.
//!
//! Place in the pipeline: the replicator settles the identity at start, before it publishes
//! anything, and puts it in every [`crate::message::ChangeBatch`]; the postgres sink stores it
//! with its applied position and refuses messages of another source (see `sink::postgres`).
//!
//! Contract:
//! - `system_identifier` comes from `IDENTIFY_SYSTEM` on the replication connection;
//!   `slot_origin` is the consistent point of `CREATE_REPLICATION_SLOT` when this replicator
//!   creates the group's slot.
//! - The identity is recorded in the group's state stream `pgflo_<group>_state`, subject
//!   `pgflo.<group>.state.source` (one message per subject), when the slot is created, and read
//!   back when an existing slot is reused ([`decide`]).
//! - Adoption: a slot that exists without a record of this cluster (state written by a version
//!   without identities, or a lost state stream) gets `slot_origin` = the slot's confirmed flush
//!   LSN, recorded from then on. A target that stored the identity of the same slot under its
//!   original origin then refuses the adopted one (the sink cannot tell adoption from a
//!   re-created slot); its error names the remedy.
//! - A lost slot is never a silent gap: in stream mode, a missing slot of a group that has a
//!   record (it published before) stops the replicator ([`on_missing_slot`]) unless
//!   `--accept-lost-slot`; `--copy-and-stream` copies again on a new slot instead.

use async_nats::jetstream;
use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;
use crate::message::SourceId;
use crate::source::ReplicatorError;

/// The recorded identity, as JSON on [`subject`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub system_identifier: u64,
    /// `X/Y`.
    pub slot_origin: String,
}

impl SourceRecord {
    pub fn from_id(id: SourceId) -> Self {
        SourceRecord {
            system_identifier: id.system_identifier,
            slot_origin: Lsn(id.slot_origin).to_string(),
        }
    }

    /// `None` when the record is malformed (then it counts as missing).
    pub fn id(&self) -> Option<SourceId> {
        let lsn: Lsn = self.slot_origin.parse().ok()?;
        Some(SourceId {
            system_identifier: self.system_identifier,
            slot_origin: lsn.0,
        })
    }
}

/// The subject of the group's identity record in its state stream.
pub fn subject(group: &str) -> String {
    format!("pgflo.{group}.state.source")
}

/// What the replicator found of the group's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// This replicator just created it.
    Created { consistent_point: Lsn },
    /// It existed already.
    Existing { confirmed_flush: Lsn },
    /// It was lost and this replicator created it again under `--accept-lost-slot`: the
    /// group goes on with its recorded identity (same cluster: its positions stay comparable,
    /// with the accepted gap between them).
    Recreated { consistent_point: Lsn },
}

/// The identity the replicator goes on with, and how it got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// A new slot: a new identity, to be recorded.
    Created(SourceId),
    /// The existing slot's recorded identity.
    Recorded(SourceId),
    /// An existing slot without a record of this cluster: adopted, to be recorded. `replaced`
    /// holds a record of another cluster that it replaces.
    Adopted {
        id: SourceId,
        replaced: Option<SourceId>,
    },
}

impl Identity {
    pub fn id(self) -> SourceId {
        match self {
            Identity::Created(id) | Identity::Recorded(id) | Identity::Adopted { id, .. } => id,
        }
    }

    /// Whether the record must be (re)written.
    pub fn must_record(self) -> bool {
        !matches!(self, Identity::Recorded(_))
    }
}

/// Decides the group's identity from the cluster's system identifier, the slot and the record.
pub fn decide(system_identifier: u64, slot: Slot, recorded: Option<SourceId>) -> Identity {
    match slot {
        Slot::Recreated { .. }
            if recorded.is_some_and(|r| r.system_identifier == system_identifier) =>
        {
            recorded.map_or(
                Identity::Created(SourceId {
                    system_identifier,
                    slot_origin: 0,
                }),
                Identity::Recorded,
            )
        }
        Slot::Created { consistent_point } | Slot::Recreated { consistent_point } => {
            Identity::Created(SourceId {
                system_identifier,
                slot_origin: consistent_point.0,
            })
        }
        Slot::Existing { confirmed_flush } => match recorded {
            Some(r) if r.system_identifier == system_identifier => Identity::Recorded(r),
            other => Identity::Adopted {
                id: SourceId {
                    system_identifier,
                    slot_origin: confirmed_flush.0,
                },
                replaced: other,
            },
        },
    }
}

/// What stream mode does when the group's slot does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingSlot {
    /// A new group (nothing recorded), or `--accept-lost-slot`: create the slot.
    Create,
    /// The group published from a slot that is gone: the changes since are lost to it.
    Refuse { recorded: SourceId },
}

/// Decides what to do about a missing slot from the group's record.
pub fn on_missing_slot(recorded: Option<SourceId>, accept_lost_slot: bool) -> MissingSlot {
    match recorded {
        Some(recorded) if !accept_lost_slot => MissingSlot::Refuse { recorded },
        _ => MissingSlot::Create,
    }
}

/// Reads the group's record from NATS (`None` when missing or malformed).
pub async fn recorded(
    js: &jetstream::Context,
    group: &str,
) -> Result<Option<SourceId>, ReplicatorError> {
    let store = crate::source::copy::state_store(js, group).await?;
    read(&store, group).await
}

/// Reads the record (`None` when missing or malformed).
pub async fn read(
    store: &jetstream::stream::Stream,
    group: &str,
) -> Result<Option<SourceId>, ReplicatorError> {
    match store.get_last_raw_message_by_subject(&subject(group)).await {
        Ok(msg) => Ok(serde_json::from_slice::<SourceRecord>(&msg.payload)
            .ok()
            .and_then(|r| r.id())),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(None)
        }
        Err(e) => Err(ReplicatorError::Publish(format!(
            "reading the source identity: {e}"
        ))),
    }
}

/// Writes the record and waits for its PubAck.
pub async fn write(
    js: &jetstream::Context,
    group: &str,
    id: SourceId,
) -> Result<(), ReplicatorError> {
    let bytes = serde_json::to_vec(&SourceRecord::from_id(id))
        .map_err(|e| ReplicatorError::Publish(format!("encoding the source identity: {e}")))?;
    let fail = |e: &dyn std::fmt::Display| {
        ReplicatorError::Publish(format!("writing the source identity: {e}"))
    };
    js.publish(subject(group), bytes.into())
        .await
        .map_err(|e| fail(&e))?
        .await
        .map_err(|e| fail(&e))?;
    Ok(())
}

/// Reads the record, decides ([`decide`]), records a new or adopted identity, and logs how it
/// was settled. Returns the identity every message of this run carries.
pub async fn settle(
    js: &jetstream::Context,
    group: &str,
    system_identifier: u64,
    slot: Slot,
) -> Result<SourceId, ReplicatorError> {
    let store = crate::source::copy::state_store(js, group).await?;
    let recorded = read(&store, group).await?;
    let identity = decide(system_identifier, slot, recorded);
    if identity.must_record() {
        write(js, group, identity.id()).await?;
    }
    let id = identity.id();
    match identity {
        Identity::Created(_) => {
            tracing::info!(source = %id, "recorded the source identity of the new slot")
        }
        Identity::Recorded(_) => tracing::info!(source = %id, "source identity"),
        Identity::Adopted { replaced: None, .. } => {
            tracing::info!(source = %id, "the existing slot had no recorded source identity (state from an older version, or a lost state stream): adopted one with the slot's confirmed position as its origin")
        }
        Identity::Adopted {
            replaced: Some(old),
            ..
        } => {
            tracing::warn!(source = %id, replaced = %old, "the recorded source identity belongs to another cluster: adopted the existing slot with its confirmed position as its origin")
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: u64 = 7_300_000_000_000_000_001;

    fn id(system_identifier: u64, slot_origin: u64) -> SourceId {
        SourceId {
            system_identifier,
            slot_origin,
        }
    }

    #[test]
    fn a_missing_slot_of_a_group_that_published_is_refused() {
        let r = id(SYS, 0x500);
        for (recorded, accept, want) in [
            (None, false, MissingSlot::Create),
            (None, true, MissingSlot::Create),
            (Some(r), false, MissingSlot::Refuse { recorded: r }),
            (Some(r), true, MissingSlot::Create),
        ] {
            assert_eq!(
                on_missing_slot(recorded, accept),
                want,
                "{recorded:?} {accept}"
            );
        }
    }

    #[test]
    fn a_slot_recreated_on_purpose_keeps_the_identity_of_its_cluster() {
        let re = Slot::Recreated {
            consistent_point: Lsn(0x900),
        };
        assert_eq!(
            decide(SYS, re, Some(id(SYS, 0x500))),
            Identity::Recorded(id(SYS, 0x500))
        );
        assert_eq!(
            decide(SYS, re, Some(id(SYS + 1, 0x500))),
            Identity::Created(id(SYS, 0x900))
        );
        assert_eq!(decide(SYS, re, None), Identity::Created(id(SYS, 0x900)));
    }

    #[test]
    fn decide_table() {
        let created = Slot::Created {
            consistent_point: Lsn(0x500),
        };
        let existing = Slot::Existing {
            confirmed_flush: Lsn(0x900),
        };
        let cases = [
            // A new slot gets a new identity, whatever was recorded.
            (created, None, Identity::Created(id(SYS, 0x500))),
            (
                created,
                Some(id(SYS, 0x100)),
                Identity::Created(id(SYS, 0x500)),
            ),
            (
                created,
                Some(id(1, 0x100)),
                Identity::Created(id(SYS, 0x500)),
            ),
            // An existing slot keeps its record.
            (
                existing,
                Some(id(SYS, 0x100)),
                Identity::Recorded(id(SYS, 0x100)),
            ),
            // No record: adopted at the confirmed position.
            (
                existing,
                None,
                Identity::Adopted {
                    id: id(SYS, 0x900),
                    replaced: None,
                },
            ),
            // A record of another cluster does not describe this slot.
            (
                existing,
                Some(id(1, 0x100)),
                Identity::Adopted {
                    id: id(SYS, 0x900),
                    replaced: Some(id(1, 0x100)),
                },
            ),
        ];
        for (slot, recorded, want) in cases {
            let got = decide(SYS, slot, recorded);
            assert_eq!(got, want, "{slot:?} {recorded:?}");
            assert_eq!(got.must_record(), !matches!(want, Identity::Recorded(_)));
        }
    }

    #[test]
    fn record_round_trips_and_rejects_garbage() {
        let r = SourceRecord::from_id(id(SYS, 0x16_B374_D848));
        assert_eq!(r.slot_origin, "16/B374D848");
        let json = serde_json::to_vec(&r).unwrap();
        let back: SourceRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.id(), Some(id(SYS, 0x16_B374_D848)));
        let bad = SourceRecord {
            system_identifier: SYS,
            slot_origin: "nope".into(),
        };
        assert_eq!(bad.id(), None);
    }
}
