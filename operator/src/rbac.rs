//! The Kubernetes API permissions the operator needs, as a table: the one list the chart's RBAC
//! rules (`charts/pg-flo-operator/templates/_helpers.tpl`, `pg-flo-operator.rules`, and the
//! leader-election Role in `rbac.yaml`) must grant exactly.
//!
//! How the table cannot drift silently:
//! - the chart test (`operator/tests/chart.rs`) renders the chart and compares its rules, verb
//!   by verb, with [`WATCHED_NAMESPACES`] and [`LEADER_ELECTION`]: a verb granted but not in the
//!   table, or in the table but not granted, fails it;
//! - the fake API server of the reconcile and controller tests (`operator/tests/support/
//!   fake_api.rs`) answers `403 Forbidden` to every request of the operator's client that
//!   [`permits`] does not allow, as a real API server would, and those tests fail on any
//!   forbidden request: a new API call without its permission fails them.
//!
//! An unused verb left in the table is what neither check catches; every entry therefore
//! names its callers (`used_by`), to review when a call goes.
//!
//! Choices (see docs/operator.md, "Permissions"):
//! - Secrets: read one by one (`get`) by the names the groups reference; `list`/`watch` only
//!   for a *metadata-only* watch (`PartialObjectMetadata`: names and resource versions, never
//!   the data), which re-reconciles a group when a Secret it references changes.
//! - Every object the operator makes is server-side applied: `patch`, plus `create` (an apply
//!   that creates the object is also authorized as a create); never `update`.
//! - Custom resources: only their `/status` is written (`patch`), and the group's finalizer
//!   (a JSON patch of the group itself).

/// One permission: `verbs` on `resource` (a plural, `plural/subresource` for a subresource)
/// of API group `group` (`""`: the core group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource (plural), or `plural/subresource`.
    pub resource: &'static str,
    /// Verbs (`get`, `list`, `watch`, `create`, `patch`, `update`, `delete`).
    pub verbs: &'static [&'static str],
    /// The calls that need them.
    pub used_by: &'static str,
}

const fn p(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    used_by: &'static str,
) -> Permission {
    Permission {
        group,
        resource,
        verbs,
        used_by,
    }
}

/// An object kind the operator only server-side applies and prunes: watched as owned (list,
/// watch), applied by apply::ssa (create, patch), pruned by apply::delete_orphans (list,
/// delete).
const fn owned(group: &'static str, resource: &'static str) -> Permission {
    p(
        group,
        resource,
        &["list", "watch", "create", "patch", "delete"],
        "owned watch (list, watch); apply::ssa (create, patch); apply::delete_orphans (list, \
         delete)",
    )
}

/// What the controllers need in every watched namespace (a ClusterRole when all namespaces
/// are watched, a Role in each otherwise).
pub const WATCHED_NAMESPACES: &[Permission] = &[
    p(
        "pgflo.io",
        "replicationgroups",
        &["get", "list", "watch", "patch"],
        "controllers (list, watch); attach::get_group and group::report_error (get); \
         group::other_claims (list); kube finalizer helper (JSON patch of metadata.finalizers)",
    ),
    p(
        "pgflo.io",
        "replicationgroups/status",
        &["patch"],
        "group::patch_status (server-side apply of /status)",
    ),
    p(
        "pgflo.io",
        "replicationgroups/finalizers",
        &["update"],
        "owner references with blockOwnerDeletion on the group's objects (checked by the \
         OwnerReferencesPermissionEnforcement admission plugin)",
    ),
    p(
        "pgflo.io",
        "rules",
        &["list", "watch"],
        "controllers (list, watch); validate::fetch (list)",
    ),
    p(
        "pgflo.io",
        "rules/status",
        &["patch"],
        "attach::patch_conditions (server-side apply of /status)",
    ),
    p(
        "pgflo.io",
        "routes",
        &["list", "watch"],
        "controllers (list, watch); validate::fetch and attach::reconcile_route (list)",
    ),
    p(
        "pgflo.io",
        "routes/status",
        &["patch"],
        "attach::patch_conditions (server-side apply of /status)",
    ),
    p(
        "",
        "configmaps",
        &["get", "list", "watch", "create", "patch", "delete"],
        "owned watch and Rule/Route controllers (list, watch); group::group_config_map, \
         attach (get); apply::ssa (create, patch); apply::delete_orphans \
         (list, delete)",
    ),
    owned("", "services"),
    owned("", "serviceaccounts"),
    p(
        "",
        "secrets",
        &["get", "list", "watch", "create", "patch"],
        "validate::fetch_secrets and group::ensure_nats_auth (get by name); the metadata-only \
         watch of run::run_scope (list, watch: names and versions, not data); \
         group::ensure_nats_auth (create, patch: server-side apply of <group>-nats-auth)",
    ),
    p(
        "",
        "persistentvolumeclaims",
        &["get", "patch"],
        "group::resize_volumes (get, merge patch of spec.resources)",
    ),
    p(
        "",
        "pods",
        &["list", "watch"],
        "label-selected pod watch (list, watch); apply::list_pods, attach, group cleanup (list)",
    ),
    p(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "kube::runtime::events::Recorder (create, merge patch of a repeated Event)",
    ),
    p(
        "apps",
        "deployments",
        &["list", "watch", "delete"],
        "owned watch (list, watch); apply::apply_desired: Deployments of earlier versions \
         (list, delete)",
    ),
    p(
        "apps",
        "statefulsets",
        &["get", "list", "watch", "create", "patch", "delete"],
        "owned watch (list, watch); group::running_nats (get); apply::ssa \
         (create, patch); apply::apply_nats, apply::delete_orphans and cleanup (delete)",
    ),
    p(
        "batch",
        "jobs",
        &["get", "list", "watch", "create", "patch", "delete"],
        "owned watch (list, watch); apply::ensure_job (get, create, patch: apply, merge patch \
         of spec.suspend); apply::delete_orphans (list, delete)",
    ),
    owned("policy", "poddisruptionbudgets"),
    owned("networking.k8s.io", "networkpolicies"),
];

/// What leader election needs in the Lease's namespace.
pub const LEADER_ELECTION: &[Permission] = &[p(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
    "leader::LeaderElector: get_opt (get), create, replace with resourceVersion (update)",
)];

/// Whether `table` grants `verb` on `resource` of `group`.
pub fn permits(table: &[Permission], group: &str, resource: &str, verb: &str) -> bool {
    table
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

/// Every `(group, resource, verb)` of `table`, sorted.
pub fn triples(table: &[Permission]) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = table
        .iter()
        .flat_map(|p| {
            p.verbs
                .iter()
                .map(|v| (p.group.to_owned(), p.resource.to_owned(), (*v).to_owned()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_resource_is_listed_twice_and_no_update_besides_finalizers_and_leases() {
        let mut seen = std::collections::BTreeSet::new();
        for p in WATCHED_NAMESPACES.iter().chain(LEADER_ELECTION) {
            assert!(seen.insert((p.group, p.resource)), "{p:?} twice");
            assert!(!p.verbs.is_empty() && !p.used_by.is_empty(), "{p:?}");
            if p.verbs.contains(&"update") {
                assert!(
                    matches!(p.resource, "replicationgroups/finalizers" | "leases"),
                    "server-side apply needs patch, not update: {p:?}"
                );
            }
        }
        // An apply can create: everything applied can be created.
        for p in WATCHED_NAMESPACES {
            if p.verbs.contains(&"create") {
                assert!(p.verbs.contains(&"patch"), "{p:?}");
            }
        }
    }

    #[test]
    fn permits_checks_group_resource_and_verb() {
        let cases = [
            ("", "secrets", "get", true),
            ("", "secrets", "delete", false),
            ("", "events", "create", false),
            ("events.k8s.io", "events", "create", true),
            ("pgflo.io", "rules", "patch", false),
            ("pgflo.io", "rules/status", "patch", true),
            ("pgflo.io", "replicationgroups", "update", false),
            ("apps", "statefulsets", "update", false),
        ];
        for (group, resource, verb, want) in cases {
            assert_eq!(
                permits(WATCHED_NAMESPACES, group, resource, verb),
                want,
                "{group}/{resource} {verb}"
            );
        }
        assert!(permits(
            LEADER_ELECTION,
            "coordination.k8s.io",
            "leases",
            "update"
        ));
        assert_eq!(triples(LEADER_ELECTION).len(), 3);
    }
}
