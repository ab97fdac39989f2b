//! The runtime group name of a ReplicationGroup: what names its replication slot, publication,
//! DDL capture objects and NATS streams (`pg_flo_source::names`), as opposed to the Kubernetes
//! objects, which are named after `metadata.name` and live in the group's namespace.
//!
//! Contract:
//! - **Decided once, then fixed.** The name in `status.groupName` is used whenever it is set.
//!   Before that: `spec.groupName` when set; else the name a group created before
//!   `spec.groupName` existed already runs under (the `group:` of its rendered
//!   `replicator.yaml`, or `metadata.name` when its status already names a slot); else
//!   [`default_group_name`]. The controller records the result in `status.groupName` with the
//!   first status it writes after applying ([`decide`]).
//! - **Namespace-safe default.** `<namespace>_<name>` (neither part contains `_`), or, when
//!   longer than [`MAX_GROUP_NAME`], its first 35 characters plus `_` and 8 hex digits of a hash
//!   of `<namespace>/<name>`: deterministic, and valid for `pg_flo_source::names::validate_group`.
//! - **No two groups on one name.** Two groups collide when their slot names are equal on the
//!   same source server (slot names are unique per PostgreSQL instance; the slot name folds `-`
//!   into `_`), or their group names are equal with the same external NATS URL (streams and
//!   subjects). The group that recorded the name first keeps it; between two that did not (or
//!   both did), the older one (`creationTimestamp`, then `namespace/name`) ([`winner`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pg_flo_source::names::{slot_name, MAX_IDENTIFIER_BYTES};

use crate::crd::ReplicationGroup;

/// Longest group name whose slot name (`pg_flo_<group>_publication`) fits PostgreSQL's 63 bytes.
pub const MAX_GROUP_NAME: usize = MAX_IDENTIFIER_BYTES - "pg_flo__publication".len();

/// Characters of `<namespace>_<name>` kept before the hash suffix of a too-long default.
const DEFAULT_PREFIX: usize = MAX_GROUP_NAME - 9;

/// FNV-1a, 64 bits: a stable hash (no dependency, the same in every build).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The default group name of `namespace/name`: `<namespace>_<name>`, or when that is longer
/// than [`MAX_GROUP_NAME`] (44) characters, its first 35 characters (without trailing `-`/`_`)
/// followed by `_` and the first 8 hex digits of FNV-1a-64 of `<namespace>/<name>`.
pub fn default_group_name(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}_{name}");
    if full.len() <= MAX_GROUP_NAME {
        return full;
    }
    let hash = fnv1a64(format!("{namespace}/{name}").as_bytes());
    let prefix = full
        .get(..DEFAULT_PREFIX)
        .unwrap_or(&full)
        .trim_end_matches(['-', '_']);
    format!("{prefix}_{:08x}", hash >> 32)
}

/// The group name the builders render: `status.groupName`, else `spec.groupName`, else the
/// default. (The controller decides and records the name first, see [`decide`].)
pub fn group_name(rg: &ReplicationGroup) -> String {
    rg.status
        .as_ref()
        .and_then(|s| s.group_name.clone())
        .or_else(|| rg.spec.group_name.clone())
        .unwrap_or_else(|| default_group_name(&rg.namespace().unwrap_or_default(), &rg.name_any()))
}

/// Where a decided group name comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `status.groupName` (decided before).
    Recorded,
    /// `spec.groupName`.
    Spec,
    /// A group created before `spec.groupName`: the name it already runs under.
    Legacy,
    /// [`default_group_name`].
    Default,
}

/// Decides the group name of `rg` (see the module contract). `legacy_config_group` is the
/// `group:` of the group's existing `replicator.yaml` (read only when neither `status.groupName`
/// nor `spec.groupName` is set). An error names the field and the fix.
pub fn decide(
    rg: &ReplicationGroup,
    legacy_config_group: Option<&str>,
) -> Result<(String, Source), String> {
    let status = rg.status.as_ref();
    let recorded = status.and_then(|s| s.group_name.as_deref());
    let spec = rg.spec.group_name.as_deref();
    let (name, source) = match (recorded, spec) {
        (Some(r), Some(s)) if r != s => {
            return Err(format!(
                "spec.groupName: {s:?} differs from {r:?}, the name the group already runs under \
                 (status.groupName: its slot, publication and streams): set spec.groupName to \
                 {r:?} or remove it"
            ))
        }
        (Some(r), _) => (r.to_owned(), Source::Recorded),
        (None, Some(s)) => (s.to_owned(), Source::Spec),
        (None, None) => match legacy_config_group {
            Some(g) => (g.to_owned(), Source::Legacy),
            None if status
                .and_then(|s| s.slot.as_ref()?.name.as_ref())
                .is_some() =>
            {
                (rg.name_any(), Source::Legacy)
            }
            None => (
                default_group_name(&rg.namespace().unwrap_or_default(), &rg.name_any()),
                Source::Default,
            ),
        },
    };
    if let Err(e) = pg_flo_source::names::validate_group(&name) {
        let field = match source {
            Source::Recorded => "status.groupName",
            Source::Spec => "spec.groupName",
            Source::Legacy => "metadata.name",
            Source::Default => "the default group name (<namespace>_<name>)",
        };
        let fix = match source {
            Source::Spec => "",
            _ => ": set spec.groupName",
        };
        return Err(format!("{field}: {e}{fix}"));
    }
    Ok((name, source))
}

/// What one group claims: its group name where it replicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name` of the ReplicationGroup.
    pub id: String,
    /// The group name (recorded, or what it would decide without reading its ConfigMap).
    pub group: String,
    /// Whether `status.groupName` records it.
    pub recorded: bool,
    /// `creationTimestamp`.
    pub created: Option<Time>,
    /// Source server (`host` lower-cased, port): slot names are unique per instance.
    pub server: (String, u16),
    /// External NATS URL (normalized), `None` with a managed NATS (one per group).
    pub nats: Option<String>,
}

fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The claim of `rg` under `group` (for itself: the decided name; for others: [`claim_of`]).
pub fn claim(rg: &ReplicationGroup, group: String) -> Claim {
    let s = &rg.spec.source;
    Claim {
        id: format!("{}/{}", rg.namespace().unwrap_or_default(), rg.name_any()),
        recorded: rg.status.as_ref().and_then(|s| s.group_name.as_deref()) == Some(group.as_str()),
        group,
        // Whole seconds, as the API server stores them (a client's copy may carry more).
        created: rg
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| Timestamp::from_second(t.0.as_second()).ok())
            .map(Time),
        server: (s.host.to_ascii_lowercase(), s.port),
        nats: rg
            .spec
            .nats
            .external
            .as_ref()
            .map(|e| normalize_url(&e.url)),
    }
}

/// What another group claims, as far as its object tells: the recorded name, else
/// `spec.groupName`, else `metadata.name` when its status names a slot (a group from before
/// `spec.groupName`), else the default. `None` when that name is not a valid group name (such a
/// group never runs).
pub fn claim_of(rg: &ReplicationGroup) -> Option<Claim> {
    let (group, _) = decide(rg, None).ok()?;
    Some(claim(rg, group))
}

/// How two claims collide, if they do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collision {
    /// The same replication slot (and publication) on the same source server.
    Slot,
    /// The same streams on the same external NATS.
    Streams,
}

/// Whether `a` and `b` would share objects.
pub fn collision(a: &Claim, b: &Claim) -> Option<Collision> {
    if a.id == b.id {
        return None;
    }
    if a.server == b.server && slot_name(&a.group) == slot_name(&b.group) {
        return Some(Collision::Slot);
    }
    if a.nats.is_some() && a.nats == b.nats && a.group == b.group {
        return Some(Collision::Streams);
    }
    None
}

/// Which of two colliding claims keeps the name: the one that recorded it, else the older one
/// (creation time, a missing one counting as newest; then `namespace/name`, so both sides
/// agree).
pub fn winner<'a>(a: &'a Claim, b: &'a Claim) -> &'a Claim {
    match (a.recorded, b.recorded) {
        (true, false) => return a,
        (false, true) => return b,
        _ => {}
    }
    let key = |c: &'a Claim| (c.created.is_none(), c.created.as_ref().map(|t| t.0), &c.id);
    if key(b) < key(a) {
        b
    } else {
        a
    }
}

/// The first claim among `others` that collides with `mine` and wins over it, with how.
pub fn blocked_by<'a>(mine: &Claim, others: &'a [Claim]) -> Option<(&'a Claim, Collision)> {
    others.iter().find_map(|o| {
        let c = collision(mine, o)?;
        (winner(mine, o).id == o.id).then_some((o, c))
    })
}

/// The claims among `others` that may own an object of `mine` too: colliding ones that recorded
/// the name (they ran under it) or win over `mine`. A cleanup leaves those objects in place; a
/// colliding group that was refused never created anything.
pub fn co_owners<'a>(mine: &Claim, others: &'a [Claim]) -> Vec<(&'a Claim, Collision)> {
    others
        .iter()
        .filter_map(|o| {
            let c = collision(mine, o)?;
            (o.recorded || winner(mine, o).id == o.id).then_some((o, c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ReplicationGroupStatus, SlotStatus};

    fn group(ns: &str, name: &str, extra: &str) -> ReplicationGroup {
        let mut rg: ReplicationGroup = serde_yaml::from_str(&format!(
            "apiVersion: pgflo.io/v1alpha1
kind: ReplicationGroup
metadata: {{name: {name}, namespace: {ns}}}
spec:
  source: {{host: DB.example, database: shop, user: {{name: s, key: u}}, password: {{name: s, key: p}}}}
  sink: {{stdout: {{}}}}
  nats: {{managed: {{}}}}"
        ))
        .unwrap();
        if !extra.is_empty() {
            let v: serde_yaml::Value = serde_yaml::from_str(extra).unwrap();
            let mut spec = serde_yaml::to_value(&rg.spec).unwrap();
            for (k, val) in v.as_mapping().unwrap() {
                spec[k.as_str().unwrap()] = val.clone();
            }
            rg.spec = serde_yaml::from_value(spec).unwrap();
        }
        rg
    }

    #[test]
    fn default_names() {
        let hashed = |ns: &str, name: &str, prefix: &str| {
            format!(
                "{prefix}_{:08x}",
                fnv1a64(format!("{ns}/{name}").as_bytes()) >> 32
            )
        };
        for (ns, name, want) in [
            ("data", "orders", "data_orders".to_string()),
            ("team-a", "orders-v2", "team-a_orders-v2".to_string()),
            // 44 characters exactly: kept.
            (
                "n234567890123456789",
                "n2345678901234567890123a",
                "n234567890123456789_n2345678901234567890123a".to_string(),
            ),
            // 45: cut to 35, hash appended.
            (
                "n234567890123456789",
                "n2345678901234567890123ab",
                hashed(
                    "n234567890123456789",
                    "n2345678901234567890123ab",
                    "n234567890123456789_n23456789012345",
                ),
            ),
            // A cut ending in '-' drops it.
            (
                "production-workloads-eu",
                "orders-to--warehouse-nightly",
                hashed(
                    "production-workloads-eu",
                    "orders-to--warehouse-nightly",
                    "production-workloads-eu_orders-to",
                ),
            ),
        ] {
            let got = default_group_name(ns, name);
            assert_eq!(got, want);
            assert!(got.len() <= MAX_GROUP_NAME, "{got}");
            assert_eq!(pg_flo_source::names::validate_group(&got), Ok(()), "{got}");
        }
        // Namespace-sensitive.
        assert_ne!(
            default_group_name("n234567890123456789", "n2345678901234567890123ab"),
            default_group_name("n234567890123456780", "n2345678901234567890123ab")
        );
        // The longest inputs Kubernetes allows still fit.
        let long = default_group_name(&"n".repeat(63), &"m".repeat(44));
        assert_eq!(long.len(), 44);
        assert_eq!(pg_flo_source::names::validate_group(&long), Ok(()));
        // A pinned value: the hash must never change (it names existing slots).
        assert_eq!(fnv1a64(b"a/b"), 0xe620_c319_0468_cf61);
    }

    #[test]
    fn decisions() {
        let mut recorded = group("data", "orders", "{groupName: orders}");
        recorded.status = Some(ReplicationGroupStatus {
            group_name: Some("orders".into()),
            ..Default::default()
        });
        let mut legacy_slot = group("data", "orders", "");
        legacy_slot.status = Some(ReplicationGroupStatus {
            slot: Some(SlotStatus {
                name: Some("pg_flo_orders_publication".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut mismatch = recorded.clone();
        mismatch.spec.group_name = Some("other".into());
        type Case<'a> = (
            &'a str,
            ReplicationGroup,
            Option<&'a str>,
            Result<(String, Source), String>,
        );
        let cases: Vec<Case> = vec![
            ("default", group("data", "orders", ""), None, Ok(("data_orders".into(), Source::Default))),
            ("explicit", group("data", "orders", "{groupName: my_pg_flo}"), None, Ok(("my_pg_flo".into(), Source::Spec))),
            ("recorded", recorded.clone(), None, Ok(("orders".into(), Source::Recorded))),
            ("legacy config", group("data", "orders", ""), Some("orders"), Ok(("orders".into(), Source::Legacy))),
            ("legacy slot", legacy_slot.clone(), None, Ok(("orders".into(), Source::Legacy))),
            ("recorded wins over a ConfigMap", recorded.clone(), Some("x"), Ok(("orders".into(), Source::Recorded))),
            ("spec differs from recorded", mismatch.clone(), None, Err("spec.groupName: \"other\" differs from \"orders\", the name the group already runs under (status.groupName: its slot, publication and streams): set spec.groupName to \"orders\" or remove it".into())),
            ("invalid default", group("data", "orders.v2", ""), None, Err("the default group name (<namespace>_<name>): invalid group name \"data_orders.v2\": use only letters, digits, '_' and '-' (the group is part of NATS subjects and PostgreSQL object names): set spec.groupName".into())),
            ("invalid explicit", group("data", "orders", "{groupName: Orders}"), None, Err("spec.groupName: invalid group name \"Orders\": it gives the replication slot name \"pg_flo_Orders_publication\", but slot names allow only lower-case letters, digits and underscores: use the group name \"orders\"".into())),
        ];
        for (what, rg, legacy, want) in cases {
            assert_eq!(decide(&rg, legacy), want, "{what}");
        }
    }

    fn at(secs: i64) -> Option<Time> {
        Some(Time(Timestamp::from_second(secs).unwrap()))
    }

    fn c(
        id: &str,
        group: &str,
        recorded: bool,
        created: i64,
        host: &str,
        nats: Option<&str>,
    ) -> Claim {
        Claim {
            id: id.into(),
            group: group.into(),
            recorded,
            created: at(created),
            server: (host.into(), 5432),
            nats: nats.map(normalize_url),
        }
    }

    #[test]
    fn collisions() {
        let a = c("a/orders", "orders", false, 1, "db", None);
        for (what, b, want) in [
            (
                "same slot, same server",
                c("b/orders", "orders", false, 2, "db", None),
                Some(Collision::Slot),
            ),
            (
                "'-' and '_' fold into one slot",
                c("b/x", "orders", false, 2, "db", None),
                Some(Collision::Slot),
            ),
            (
                "other server",
                c("b/orders", "orders", false, 2, "db2", None),
                None,
            ),
            (
                "other name",
                c("b/orders", "b_orders", false, 2, "db", None),
                None,
            ),
            (
                "itself",
                c("a/orders", "orders", false, 2, "db", None),
                None,
            ),
        ] {
            assert_eq!(collision(&a, &b), want, "{what}");
        }
        let fold = c("b/x", "a-b", false, 2, "db", None);
        assert_eq!(
            collision(&c("a/y", "a_b", false, 1, "db", None), &fold),
            Some(Collision::Slot)
        );
        // Streams: same external NATS, same group name, different servers.
        let n1 = c("a/o", "o", false, 1, "db1", Some("nats://NATS:4222/"));
        let n2 = c("b/o", "o", false, 2, "db2", Some("nats://nats:4222"));
        assert_eq!(collision(&n1, &n2), Some(Collision::Streams));
        let managed = c("b/o", "o", false, 2, "db2", None);
        assert_eq!(collision(&n1, &managed), None);
    }

    #[test]
    fn winners() {
        let old = c("b/orders", "orders", false, 1, "db", None);
        let new = c("a/orders", "orders", false, 2, "db", None);
        assert_eq!(winner(&old, &new).id, "b/orders", "older wins");
        assert_eq!(winner(&new, &old).id, "b/orders", "symmetric");
        let new_recorded = Claim {
            recorded: true,
            ..new.clone()
        };
        assert_eq!(winner(&old, &new_recorded).id, "a/orders", "recorded wins");
        let tie_a = c("a/orders", "orders", false, 1, "db", None);
        let tie_b = c("b/orders", "orders", false, 1, "db", None);
        assert_eq!(
            winner(&tie_b, &tie_a).id,
            "a/orders",
            "then by namespace/name"
        );
        assert_eq!(
            blocked_by(&new, std::slice::from_ref(&old)).map(|(o, _)| o.id.as_str()),
            Some("b/orders")
        );
        assert_eq!(blocked_by(&old, std::slice::from_ref(&new)), None);
        // The winner's cleanup drops what a refused newcomer never used ...
        assert!(co_owners(&old, std::slice::from_ref(&new)).is_empty());
        // ... but not what a group that ran under the name may use.
        assert_eq!(
            co_owners(&old, std::slice::from_ref(&new_recorded)).len(),
            1
        );
        assert_eq!(co_owners(&new, std::slice::from_ref(&old)).len(), 1);
    }
}
