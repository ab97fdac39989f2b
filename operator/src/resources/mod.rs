//! Pure builders of the Kubernetes objects a [`ReplicationGroup`] owns: `build(&valid) ->
//! Desired`. Nothing here talks to the API server; the reconciler applies [`Desired`].
//!
//! Objects (all in the group's namespace, owned by the group, labelled with [`labels`]):
//! - ConfigMap `<group>-pg-flo-config` ([`config_map`]): `replicator.yaml`, `worker.yaml`
//!   (pg_flo's flat kebab-case keys, no secrets), `rules.yaml` / `routing.yaml` (from the
//!   group's Rule / Route resources, only when there are some);
//! - ServiceAccount `<group>-pg-flo` ([`service_account`]);
//! - with `mode: copy`, the Job `<group>-copy` instead of the replicator StatefulSet;
//! - StatefulSets `<group>-replicator` and `<group>-worker` ([`replicator_stateful_set`],
//!   [`worker_stateful_set`], one pod each), pod template annotated with [`config_hash`] so a
//!   config change rolls the pods;
//! - with managed NATS: StatefulSet `<group>-nats`, its ConfigMap `<group>-nats-config`
//!   (`nats.conf`), client Service `<group>-nats`, headless Service `<group>-nats-headless`,
//!   PodDisruptionBudget and NetworkPolicy `<group>-nats` ([`nats`]); the credentials Secret
//!   `<group>-nats-auth` ([`nats_auth_secret`]) is created once by the controller.
//!
//! Secrets never enter the ConfigMap: credentials reach the pods as `PG_FLO_*` env variables
//! with `valueFrom.secretKeyRef`, CA certificates and NATS credentials as Secret volumes.

mod config;
mod nats;
mod nats_client;
pub mod quantity;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{ReplicationGroup, Route, Rule};

pub use config::{
    applied_nats, config_hash, config_map, rendered_members, NATS_SPEC_ANNOTATION, REPLICATOR_FILE,
};
pub use nats::{
    admit_operator, go_mem_limit, max_file_store, nats, nats_auth_name, nats_auth_secret,
    nats_conf, nats_config_name, nats_resources, nats_volume_claim_name, runtime_permissions,
    stream_max_bytes, NatsAuth, NatsObjects, OperatorPods, AUTH_PASSWORD_KEY,
    AUTH_ROUTE_PASSWORD_KEY, AUTH_USER_KEY, DEFAULT_NATS_IMAGE, FILE_STORE_PERCENT, NATS_CONF_FILE,
    RUNTIME_USER, STREAM_PERCENT,
};
pub use workloads::{
    copy_job, copy_job_name, default_resources, replicator_name, replicator_stateful_set,
    service_account, worker_name, worker_stateful_set, workload_name, Role, MAX_STATEFUL_SET_NAME,
    RUNTIME_DRAIN_TIMEOUT, TERMINATION_GRACE_PERIOD_SECONDS,
};

/// Label/annotation prefix of the operator.
pub const CONFIG_HASH_ANNOTATION: &str = "pgflo.io/config-hash";
/// Pod annotation naming the versions of the Secrets the pod reads: a rotated password rolls
/// the pods.
pub const SECRETS_VERSION_ANNOTATION: &str = "pgflo.io/secrets-version";
/// ConfigMap annotation listing the Rules rendered into it, `<name>=<generation>` comma-joined
/// by name: a Rule is `Accepted=True` once a ready worker runs this ConfigMap's hash.
pub const RULES_ANNOTATION: &str = "pgflo.io/rules";
/// ConfigMap annotation listing the Routes rendered into it (as [`RULES_ANNOTATION`]).
pub const ROUTES_ANNOTATION: &str = "pgflo.io/routes";
/// Label naming the group of an object.
pub const GROUP_LABEL: &str = "pgflo.io/group";
/// Mount path of the ConfigMap in the replicator and worker pods.
pub const CONFIG_DIR: &str = "/etc/pg-flo";
/// Port of the admin server (`/metrics`, `/healthz`, `/readyz`) of replicator and worker.
pub const METRICS_PORT: u16 = 9100;
/// Client port of NATS.
pub const NATS_CLIENT_PORT: i32 = 4222;
/// Cluster (route) port of NATS.
pub const NATS_CLUSTER_PORT: i32 = 6222;
/// Monitoring port of NATS.
pub const NATS_MONITOR_PORT: i32 = 8222;

/// Error of building the desired objects of a group.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The group has no `metadata.namespace`.
    #[error("ReplicationGroup {0} has no namespace")]
    MissingNamespace(String),
    /// The group has no `metadata.name`.
    #[error("ReplicationGroup has no name")]
    MissingName,
    /// The group has no `metadata.uid` (not read from the API server): no owner reference.
    #[error("ReplicationGroup {0} has no uid (cannot own objects)")]
    MissingUid(String),
    /// Not exactly one sink is set.
    #[error("ReplicationGroup {0}: exactly one of sink.postgres, sink.webhook, sink.file, sink.stdout must be set")]
    InvalidSink(String),
    /// Not exactly one of `nats.managed` / `nats.external` is set.
    #[error("ReplicationGroup {0}: exactly one of nats.managed, nats.external must be set")]
    InvalidNats(String),
    /// `nats.managed.storageSize` is not a Kubernetes quantity.
    #[error("spec.nats.managed.storageSize {0:?} is not a quantity such as 10Gi")]
    InvalidStorageSize(String),
    /// The system's random number generator failed (generating NATS passwords).
    #[error("cannot generate a random password: the system's random number generator failed")]
    Random,
    /// `spec.nats` could not be written as JSON (the ConfigMap annotation).
    #[error("cannot render spec.nats as JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A rules or routing file could not be rendered.
    #[error("cannot render {file}: {source}")]
    Yaml {
        /// File being rendered.
        file: &'static str,
        /// serde_yaml's error.
        #[source]
        source: serde_yaml::Error,
    },
}

/// Everything the operator wants to exist for one group.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// `<group>-pg-flo-config`.
    pub config_map: ConfigMap,
    /// [`config_hash`] of `config_map`.
    pub config_hash: String,
    /// `<group>-pg-flo`.
    pub service_account: ServiceAccount,
    /// `<group>-replicator` (not applied with `mode: copy`, see `copy_job`).
    pub replicator: StatefulSet,
    /// `<group>-copy`: the replicator as a Job with `mode: copy`.
    pub copy_job: Option<Job>,
    /// `<group>-worker`.
    pub worker: StatefulSet,
    /// Managed NATS objects (`None` with external NATS).
    pub nats: Option<NatsObjects>,
}

impl Desired {
    /// The pod templates that run the runtime image: replicator, worker, copy Job.
    fn runtime_pods(&mut self) -> impl Iterator<Item = &mut PodTemplateSpec> {
        [
            self.replicator.spec.as_mut().map(|s| &mut s.template),
            self.worker.spec.as_mut().map(|s| &mut s.template),
            self.copy_job
                .as_mut()
                .and_then(|j| j.spec.as_mut())
                .map(|s| &mut s.template),
        ]
        .into_iter()
        .flatten()
    }
}

/// Builds every object of a group. `rules` and `routes` may contain resources of other groups
/// (they are filtered by `spec.groupRef.name`); `default_image` is used unless `spec.image`
/// is set. `webhook_header_keys` are the key names of `sink.webhook.headersSecret` (names only,
/// the values stay in the Secret; see [`worker_stateful_set`]). The runtime group name is
/// [`crate::group_name::group_name`] (the controller records it in `status.groupName` first).
pub fn build(
    rg: &ReplicationGroup,
    rules: &[Rule],
    routes: &[Route],
    default_image: &str,
    webhook_header_keys: &[String],
) -> Result<Desired, BuildError> {
    Valid::new(rg)?;
    let config_map = config_map(rg, rules, routes)?;
    let hash = config_hash(&config_map);
    let mut desired = Desired {
        replicator: replicator_stateful_set(rg, default_image, &hash)?,
        copy_job: copy_job(rg, default_image, &hash)?,
        worker: worker_stateful_set(rg, default_image, &hash, webhook_header_keys)?,
        service_account: service_account(rg)?,
        nats: nats(rg)?,
        config_hash: hash,
        config_map,
    };
    nats_client::add_nats_client(&mut desired, rg)?;
    Ok(desired)
}

/// Annotates the managed NATS pod template with `versions` (the auth and TLS Secrets'
/// `name=resourceVersion`), so that new passwords or a renewed certificate restart the
/// servers.
pub fn annotate_nats_secret_versions(desired: &mut Desired, versions: &str) {
    if let Some(t) = desired
        .nats
        .as_mut()
        .and_then(|n| n.stateful_set.spec.as_mut())
        .map(|s| &mut s.template)
    {
        t.metadata
            .get_or_insert_with(ObjectMeta::default)
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(SECRETS_VERSION_ANNOTATION.into(), versions.into());
    }
}

/// Checks what the builders need of a group (name, namespace, uid, one sink, one NATS).
pub fn check(rg: &ReplicationGroup) -> Result<(), BuildError> {
    Valid::new(rg).map(|_| ())
}

/// Annotates the pod templates of the replicator, the worker and the copy Job with `versions`
/// (the referenced Secrets' `name=resourceVersion`, never their content), so that a changed
/// Secret rolls the pods that read it through env or volumes.
pub fn annotate_secret_versions(desired: &mut Desired, versions: &str) {
    for t in desired.runtime_pods() {
        t.metadata
            .get_or_insert_with(ObjectMeta::default)
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(SECRETS_VERSION_ANNOTATION.into(), versions.into());
    }
}

/// Gives the replicator, worker and copy Job pods the pull Secrets `names` when the group
/// names none itself (`spec.imagePullSecrets` wins): the operator's default for the runtime
/// image, which is its own.
pub fn default_image_pull_secrets(desired: &mut Desired, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let secrets: Vec<k8s_openapi::api::core::v1::LocalObjectReference> = names
        .iter()
        .map(|n| k8s_openapi::api::core::v1::LocalObjectReference { name: n.clone() })
        .collect();
    for pod in desired.runtime_pods().filter_map(|t| t.spec.as_mut()) {
        if pod.image_pull_secrets.as_ref().is_none_or(|s| s.is_empty()) {
            pod.image_pull_secrets = Some(secrets.clone());
        }
    }
}

/// Standard labels of an object of `group` with the given component (`replicator`, `worker`,
/// `nats`, `config`).
pub fn labels(group: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(group, component);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "pg-flo-operator".into(),
    );
    l.insert(GROUP_LABEL.into(), group.into());
    l
}

/// The immutable subset of [`labels`] used in selectors.
pub fn selector_labels(group: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "pg-flo".to_string()),
        ("app.kubernetes.io/instance".to_string(), group.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

/// Name of the ConfigMap of a group.
pub fn config_map_name(group: &str) -> String {
    format!("{group}-pg-flo-config")
}

/// Name of the ServiceAccount of a group.
pub fn service_account_name(group: &str) -> String {
    format!("{group}-pg-flo")
}

/// Name of the managed NATS StatefulSet and client Service of a group.
pub fn nats_name(group: &str) -> String {
    format!("{group}-nats")
}

/// Client URL of the managed NATS of group `name` in `namespace` (its client Service).
pub fn managed_nats_url(name: &str, namespace: &str) -> String {
    format!(
        "nats://{}.{namespace}.svc:{NATS_CLIENT_PORT}",
        nats_name(name)
    )
}

/// Name of the managed NATS headless Service of a group.
pub fn nats_headless_name(group: &str) -> String {
    format!("{group}-nats-headless")
}

/// The checked identity of a group: name, namespace, owner reference, runtime group name.
pub(crate) struct Valid {
    /// `metadata.name`: names the Kubernetes objects.
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    /// The runtime group name (slot, publication, streams).
    pub group: String,
}

impl Valid {
    pub(crate) fn new(rg: &ReplicationGroup) -> Result<Self, BuildError> {
        let name = rg.metadata.name.clone().ok_or(BuildError::MissingName)?;
        let namespace = rg
            .namespace()
            .ok_or_else(|| BuildError::MissingNamespace(name.clone()))?;
        let mut owner = rg
            .controller_owner_ref(&())
            .ok_or_else(|| BuildError::MissingUid(name.clone()))?;
        owner.block_owner_deletion = Some(true);
        let s = &rg.spec.sink;
        let sinks = [
            s.postgres.is_some(),
            s.webhook.is_some(),
            s.file.is_some(),
            s.stdout.is_some(),
        ];
        if sinks.iter().filter(|x| **x).count() != 1 {
            return Err(BuildError::InvalidSink(name));
        }
        if rg.spec.nats.managed.is_some() == rg.spec.nats.external.is_some() {
            return Err(BuildError::InvalidNats(name));
        }
        Ok(Self {
            group: crate::group_name::group_name(rg),
            name,
            namespace,
            owner,
        })
    }

    /// Metadata of an owned object.
    pub(crate) fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name, component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// The container security context of every workload: no privilege escalation, read-only root
/// filesystem, non-root, no capabilities.
pub(crate) fn restricted_container() -> k8s_openapi::api::core::v1::SecurityContext {
    use k8s_openapi::api::core::v1::{Capabilities, SecurityContext};
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// The pod security context of every workload: non-root as `uid` (user, group and fs group),
/// the runtime's default seccomp profile.
pub(crate) fn restricted_pod(uid: i64) -> k8s_openapi::api::core::v1::PodSecurityContext {
    use k8s_openapi::api::core::v1::{PodSecurityContext, SeccompProfile};
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// An HTTP GET probe on the named container port (every 10 s, 5 s timeout, 3 failures).
pub(crate) fn http_probe(
    path: &str,
    port_name: &str,
    initial_delay: i32,
) -> k8s_openapi::api::core::v1::Probe {
    use k8s_openapi::api::core::v1::{HTTPGetAction, Probe};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port_name.into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// An env variable read from key `key` of Secret `secret` (which must have it).
pub(crate) fn secret_env(
    name: &str,
    secret: &str,
    key: &str,
) -> k8s_openapi::api::core::v1::EnvVar {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An env variable read from the Secret key a spec references.
pub(crate) fn ref_env(
    name: &str,
    r: &crate::crd::SecretKeyRef,
) -> k8s_openapi::api::core::v1::EnvVar {
    secret_env(name, &r.name, &r.key)
}
