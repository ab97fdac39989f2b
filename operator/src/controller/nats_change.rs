//! Changes of `spec.nats` on a running group: which are carried out and which are refused,
//! decided without IO ([`decide`]).
//!
//! The CRD refuses the unsafe ones up front (CEL transition rules); this is the same decision
//! for what reaches the controller anyway (a cluster with an older CRD, objects edited by
//! hand). A refused change is reverted in the spec the objects are rendered from (the
//! "effective" spec), reported as `Degraded / ChangeRefused`, and everything else of the
//! reconcile goes on (pause, stop, Rules, ...).
//!
//! | change | outcome |
//! |---|---|
//! | managed <-> external | refused: the current NATS holds the unconsumed changes and state |
//! | `external.url` | refused: same reason (the old servers keep being used) |
//! | `managed.replicas` | refused: a standalone server's streams are not carried into a cluster, nor back |
//! | `managed.storageClass` | refused: a volume cannot move to another class |
//! | `managed.storageSize` smaller | refused: a volume cannot shrink |
//! | `managed.storageSize` larger | done: the volume claims are resized, the StatefulSet re-created (its `volumeClaimTemplates` are immutable) |
//! | anything else (image, resources and the other pod settings, TLS, credentials, stream replicas of an external NATS) | applied |

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::crd::{ManagedNats, NatsSpec};
use crate::resources::quantity::quantity_bytes;

/// What a managed NATS's StatefulSet runs with (its immutable parts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunningNats {
    /// `spec.replicas` (judged only when the ConfigMap does not say what was applied).
    pub replicas: Option<i32>,
    /// `volumeClaimTemplates[0]`'s storage request.
    pub storage_size: Option<String>,
    /// `volumeClaimTemplates[0]`'s StorageClass.
    pub storage_class: Option<String>,
}

impl RunningNats {
    /// The volume template of `sts`.
    pub fn of(sts: &StatefulSet) -> Self {
        let claim = sts
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.as_ref())
            .and_then(|t| t.first())
            .and_then(|c| c.spec.as_ref());
        RunningNats {
            replicas: sts.spec.as_ref().and_then(|s| s.replicas),
            storage_size: claim
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            storage_class: claim.and_then(|c| c.storage_class_name.clone()),
        }
    }
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct NatsChange {
    /// The `spec.nats` to render: the desired one with every refused change reverted.
    pub effective: NatsSpec,
    /// One message per refused change: the field, why, and what to do.
    pub refused: Vec<String>,
    /// The volumes grow (from the size they have, to the new one): resize the claims and
    /// re-create the StatefulSet.
    pub grow: Option<Grow>,
}

/// A volume size change to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grow {
    /// The size the volumes have (what to render again if the resize is refused).
    pub from: String,
    /// The size asked for.
    pub to: String,
}

const RECREATE: &str = "set it back, or delete the group and create it again (mode copyAndStream)";

/// Decides a change of `spec.nats` from `applied` (what the pods use now, from the group's
/// ConfigMap; `None` for a new group) and `running` (the StatefulSet's volume template, when it
/// exists) to `desired`.
pub fn decide(
    desired: &NatsSpec,
    applied: Option<&NatsSpec>,
    running: Option<&RunningNats>,
) -> NatsChange {
    let mut effective = desired.clone();
    let mut refused = Vec::new();
    if let Some(applied) = applied {
        let kind = |n: &NatsSpec| {
            if n.managed.is_some() {
                "managed"
            } else {
                "external"
            }
        };
        if applied.managed.is_some() != desired.managed.is_some() {
            refused.push(format!(
                "spec.nats: switching from {} to {} NATS is refused (the current NATS holds the \
                 group's unconsumed changes and state; it keeps being used): {RECREATE}",
                kind(applied),
                kind(desired)
            ));
            effective = applied.clone();
        } else if let (Some(old), Some(new)) = (&applied.external, &mut effective.external) {
            if old.url != new.url {
                refused.push(format!(
                    "spec.nats.external.url: changing it is refused (the servers it names hold \
                     the group's unconsumed changes and state; the pods keep using {}): {RECREATE}",
                    old.url
                ));
                new.url = old.url.clone();
            }
        }
    }
    let mut grow = None;
    if let Some(m) = effective.managed.as_mut() {
        let before = applied.and_then(|a| a.managed.as_ref());
        grow = managed_change(m, before, running, &mut refused);
    }
    NatsChange {
        effective,
        refused,
        grow,
    }
}

/// The managed part of [`decide`]: reverts refused changes in `m`, returns the volume growth
/// to carry out.
fn managed_change(
    m: &mut ManagedNats,
    applied: Option<&ManagedNats>,
    running: Option<&RunningNats>,
    refused: &mut Vec<String>,
) -> Option<Grow> {
    // The servers that run: as applied (a StatefulSet scaled by hand is scaled back), else
    // the StatefulSet's.
    let before = applied.map(|a| a.replicas).or_else(|| {
        running
            .and_then(|r| r.replicas)
            .and_then(|n| u8::try_from(n).ok())
    });
    if let Some(before) = before.filter(|b| *b != m.replicas) {
        refused.push(format!(
            "spec.nats.managed.replicas: changing {before} to {} is refused (a standalone \
             server's streams are not carried into a cluster, nor back; {before} server(s) keep \
             running): {RECREATE}",
            m.replicas
        ));
        m.replicas = before;
    }
    // The volume template: the StatefulSet's when it exists, else what was applied.
    let (size, class) = match (running, applied) {
        (Some(r), _) => (r.storage_size.clone(), r.storage_class.clone()),
        (None, Some(a)) => (Some(a.storage_size.clone()), a.storage_class.clone()),
        (None, None) => return None,
    };
    if class != m.storage_class {
        refused.push(format!(
            "spec.nats.managed.storageClass: changing {} to {} is refused (the volumes holding \
             the stream cannot move to another class): set it back",
            class.as_deref().unwrap_or("the default class"),
            m.storage_class.as_deref().unwrap_or("the default class"),
        ));
        m.storage_class = class;
    }
    let size = size?;
    match (quantity_bytes(&size), quantity_bytes(&m.storage_size)) {
        (Some(old), Some(new)) if new < old => {
            refused.push(format!(
                "spec.nats.managed.storageSize: shrinking {size} to {} is refused (a volume \
                 cannot shrink): set it back",
                m.storage_size
            ));
            m.storage_size = size;
            None
        }
        (Some(old), Some(new)) if new > old => Some(Grow {
            from: size,
            to: m.storage_size.clone(),
        }),
        // Equal (perhaps written differently, `1Gi` / `1024Mi`), or unreadable: keep the
        // template as it is.
        _ => {
            m.storage_size = size;
            None
        }
    }
}

/// Copies the fields of a StatefulSet's spec the API server refuses to change
/// (`volumeClaimTemplates`, `selector`, `serviceName`, `podManagementPolicy`) from `running`
/// into `desired`, so that applying `desired` never fails with 422 and blocks the reconcile.
/// The decisions above make them equal anyway; this covers what they do not model.
pub fn keep_immutable_fields(desired: &mut StatefulSet, running: &StatefulSet) {
    let (Some(d), Some(r)) = (desired.spec.as_mut(), running.spec.as_ref()) else {
        return;
    };
    d.volume_claim_templates = r.volume_claim_templates.clone().map(|templates| {
        templates
            .into_iter()
            .map(|mut t| {
                // Status is not part of what the operator applies.
                t.status = None;
                t
            })
            .collect()
    });
    d.selector = r.selector.clone();
    d.service_name = r.service_name.clone();
    d.pod_management_policy = r.pod_management_policy.clone();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ExternalNats;

    fn managed(replicas: u8, size: &str, class: Option<&str>) -> NatsSpec {
        NatsSpec {
            managed: Some(ManagedNats {
                replicas,
                storage_size: size.into(),
                storage_class: class.map(Into::into),
                image: None,
                tls: None,
                pod: Default::default(),
                metrics: None,
            }),
            external: None,
        }
    }

    fn external(url: &str) -> NatsSpec {
        NatsSpec {
            managed: None,
            external: Some(ExternalNats {
                url: url.into(),
                user: None,
                password: None,
                token: None,
                credentials_secret: None,
                ca_secret: None,
                client_cert_secret: None,
                stream_replicas: None,
            }),
        }
    }

    fn running(size: &str, class: Option<&str>) -> RunningNats {
        RunningNats {
            replicas: Some(1),
            storage_size: Some(size.into()),
            storage_class: class.map(Into::into),
        }
    }

    /// (what, desired, applied, running) -> (effective, refused fields, grow_to).
    #[test]
    fn changes_are_done_or_refused() {
        let m1 = managed(1, "1Gi", None);
        type Case<'a> = (
            &'a str,
            NatsSpec,
            Option<NatsSpec>,
            Option<RunningNats>,
            NatsSpec,
            Vec<&'a str>,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "new group",
                m1.clone(),
                None,
                None,
                m1.clone(),
                vec![],
                None,
            ),
            (
                "unchanged",
                m1.clone(),
                Some(m1.clone()),
                Some(running("1Gi", None)),
                m1.clone(),
                vec![],
                None,
            ),
            (
                "1 -> 3",
                managed(3, "1Gi", None),
                Some(m1.clone()),
                Some(running("1Gi", None)),
                m1.clone(),
                vec!["spec.nats.managed.replicas: changing 1 to 3"],
                None,
            ),
            (
                "3 -> 1",
                m1.clone(),
                Some(managed(3, "1Gi", None)),
                Some(running("1Gi", None)),
                managed(3, "1Gi", None),
                vec!["spec.nats.managed.replicas: changing 3 to 1"],
                None,
            ),
            (
                "grow",
                managed(1, "2Gi", None),
                Some(m1.clone()),
                Some(running("1Gi", None)),
                managed(1, "2Gi", None),
                vec![],
                Some("1Gi->2Gi"),
            ),
            (
                "grow, StatefulSet gone (re-created after the resize)",
                managed(1, "2Gi", None),
                Some(managed(1, "2Gi", None)),
                None,
                managed(1, "2Gi", None),
                vec![],
                None,
            ),
            (
                "shrink",
                managed(1, "512Mi", None),
                Some(m1.clone()),
                Some(running("1Gi", None)),
                m1.clone(),
                vec!["spec.nats.managed.storageSize: shrinking 1Gi to 512Mi"],
                None,
            ),
            (
                "same size written otherwise",
                managed(1, "1024Mi", None),
                Some(m1.clone()),
                Some(running("1Gi", None)),
                m1.clone(),
                vec![],
                None,
            ),
            (
                "class",
                managed(1, "1Gi", Some("fast")),
                Some(m1.clone()),
                Some(running("1Gi", None)),
                m1.clone(),
                vec!["spec.nats.managed.storageClass: changing the default class to fast"],
                None,
            ),
            (
                "class and replicas and grow at once",
                managed(3, "4Gi", Some("fast")),
                Some(managed(1, "1Gi", Some("slow"))),
                Some(running("1Gi", Some("slow"))),
                managed(1, "4Gi", Some("slow")),
                vec![
                    "spec.nats.managed.replicas: changing 1 to 3",
                    "spec.nats.managed.storageClass: changing slow to fast",
                ],
                Some("1Gi->4Gi"),
            ),
            (
                "managed -> external",
                external("nats://n:4222"),
                Some(m1.clone()),
                Some(running("1Gi", None)),
                m1.clone(),
                vec!["spec.nats: switching from managed to external NATS"],
                None,
            ),
            (
                "no record of what was applied: the StatefulSet's replicas count",
                managed(3, "1Gi", None),
                None,
                Some(running("1Gi", None)),
                m1.clone(),
                vec!["spec.nats.managed.replicas: changing 1 to 3"],
                None,
            ),
            (
                "external -> managed",
                m1.clone(),
                Some(external("nats://n:4222")),
                None,
                external("nats://n:4222"),
                vec!["spec.nats: switching from external to managed NATS"],
                None,
            ),
            (
                "external url",
                external("nats://other:4222"),
                Some(external("nats://n:4222")),
                None,
                external("nats://n:4222"),
                vec!["spec.nats.external.url: changing it is refused"],
                None,
            ),
            (
                "external, same url",
                external("nats://n:4222"),
                Some(external("nats://n:4222")),
                None,
                external("nats://n:4222"),
                vec![],
                None,
            ),
        ];
        for (what, desired, applied, run, effective, refused, grow) in cases {
            let got = decide(&desired, applied.as_ref(), run.as_ref());
            assert_eq!(got.effective, effective, "{what}");
            assert_eq!(
                got.refused.len(),
                refused.len(),
                "{what}: {:?}",
                got.refused
            );
            for (msg, start) in got.refused.iter().zip(&refused) {
                assert!(msg.starts_with(start), "{what}: {msg}");
            }
            assert_eq!(
                got.grow.map(|g| g.from + "->" + &g.to).as_deref(),
                grow,
                "{what}"
            );
        }
    }
}
