//! Replicator and worker StatefulSets, the copy Job and their ServiceAccount.
//!
//! Why StatefulSets (replicas 1, `podManagementPolicy: Parallel`, `RollingUpdate`): a
//! StatefulSet creates the pod `<name>-0` only when no pod of that name exists, so a replacement
//! starts only after the previous pod object is gone: after its graceful shutdown (rollout,
//! eviction, delete) or, for a pod on an unreachable node, only once the node is confirmed gone or
//! the pod is force-deleted. A Deployment, even with `Recreate`, replaces an evicted or lost pod
//! at once. `Parallel` only lets the controller replace a pod that is not Ready during a rollout
//! (with `OrderedReady` a crash-looping pod blocks the fixed template forever); with one replica
//! it never runs two pods. The runtime guards the rest (docs/operator.md, "One pod per group").

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretVolumeSource, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::config::{
    NATS_CA_PATH, NATS_CREDS_PATH, REPLICATOR_FILE, SOURCE_CA_PATH, TARGET_CA_PATH, WORKER_FILE,
};
use super::{
    config_map_name, labels, ref_env, selector_labels, service_account_name, BuildError, Valid,
    CONFIG_DIR, CONFIG_HASH_ANNOTATION, METRICS_PORT,
};
use crate::crd::{DesiredState, Mode, ReplicationGroup, SecretKeyRef, WorkloadSpec};

/// UID/GID of the pg_flo image's `pgflo` user.
pub const RUNTIME_UID: i64 = 65532;

/// How long the runtime waits on shutdown for what it has in flight: the replicator for its
/// publish acknowledgements (`pg_flo::source::replicator::SHUTDOWN_DRAIN_TIMEOUT`), after which
/// it confirms its position to the slot and closes; the worker commits its open batch and
/// releases its lease.
pub const RUNTIME_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `terminationGracePeriodSeconds` of the replicator, worker and copy Job pods: the drain
/// timeout plus 30 s for the final slot confirmation, batch commit and lease release, so the
/// kubelet's SIGKILL never cuts a drain short.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 60;

/// Longest StatefulSet name whose pods can be created: the pods get the label
/// `controller-revision-hash: <name>-<10 characters>`, and label values have at most 63.
pub const MAX_STATEFUL_SET_NAME: usize = 52;

/// Name of the replicator or worker StatefulSet: `<group>-<component>`, or, when that is longer
/// than [`MAX_STATEFUL_SET_NAME`] (only `-replicator` of a `metadata.name` of 42 to 44
/// characters), its first 46 characters (without a trailing `-`) plus `-` and 5 hex digits of
/// a hash of the full name.
pub fn workload_name(group: &str, component: &str) -> String {
    let full = format!("{group}-{component}");
    if full.len() <= MAX_STATEFUL_SET_NAME {
        return full;
    }
    let hash = crate::group_name::fnv1a64(full.as_bytes());
    let prefix = full
        .get(..MAX_STATEFUL_SET_NAME - 6)
        .unwrap_or(&full)
        .trim_end_matches('-');
    format!("{prefix}-{:05x}", hash >> 44)
}

/// Name of the replicator StatefulSet of a group.
pub fn replicator_name(group: &str) -> String {
    workload_name(group, "replicator")
}

/// Name of the worker StatefulSet of a group.
pub fn worker_name(group: &str) -> String {
    workload_name(group, "worker")
}

/// Which runtime pod a template is for: decides the default resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The streaming replicator.
    Replicator,
    /// The worker.
    Worker,
    /// The replicator of `mode: copy`, as a Job.
    Copy,
}

/// Resource requests of a pod whose `WorkloadSpec` sets no `resources`: enough for the
/// scheduler to place the pod on a node with room for it; no limits (a memory limit kills a
/// worker holding a large transaction, a CPU limit throttles a copy; set them per group).
pub fn default_resources(role: Role) -> ResourceRequirements {
    let (cpu, memory) = match role {
        Role::Replicator => ("100m", "128Mi"),
        Role::Worker => ("100m", "256Mi"),
        Role::Copy => ("250m", "256Mi"),
    };
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// The ServiceAccount `<group>-pg-flo` of the replicator and worker pods (they need no API
/// access; the token is not mounted).
pub fn service_account(rg: &ReplicationGroup) -> Result<ServiceAccount, BuildError> {
    let v = Valid::new(rg)?;
    Ok(ServiceAccount {
        metadata: v.meta(service_account_name(&v.name), "service-account"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// A Secret key mounted as a single file at `path` (`<dir>/<file>`).
struct SecretFile<'a> {
    volume: &'static str,
    secret: &'a SecretKeyRef,
    path: &'static str,
}

impl<'a> SecretFile<'a> {
    /// The CA certificate file of a connection, when it names a CA Secret.
    fn ca(
        volume: &'static str,
        secret: &'a Option<SecretKeyRef>,
        path: &'static str,
    ) -> Option<Self> {
        secret.as_ref().map(|secret| SecretFile {
            volume,
            secret,
            path,
        })
    }

    fn split(&self) -> (&'static str, &'static str) {
        self.path.rsplit_once('/').unwrap_or(("/", self.path))
    }

    fn volume(&self) -> Volume {
        Volume {
            name: self.volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: self.secret.key.clone(),
                    path: self.split().1.into(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        }
    }

    fn mount(&self) -> VolumeMount {
        VolumeMount {
            name: self.volume.into(),
            mount_path: self.split().0.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }
}

/// Inputs of one pg_flo pod.
struct PodParts<'a> {
    role: Role,
    component: &'static str,
    args: Vec<String>,
    env: Vec<EnvVar>,
    files: Vec<SecretFile<'a>>,
    extra_volumes: Vec<(Volume, VolumeMount)>,
    workload: Option<&'a WorkloadSpec>,
}

fn nats_files(rg: &ReplicationGroup) -> Vec<SecretFile<'_>> {
    let mut files = Vec::new();
    if let Some(e) = &rg.spec.nats.external {
        if let Some(c) = &e.ca_secret {
            files.push(SecretFile {
                volume: "nats-ca",
                secret: c,
                path: NATS_CA_PATH,
            });
        }
        if let Some(c) = &e.credentials_secret {
            files.push(SecretFile {
                volume: "nats-creds",
                secret: c,
                path: NATS_CREDS_PATH,
            });
        }
    }
    files
}

fn pod_template(
    rg: &ReplicationGroup,
    v: &Valid,
    image: &str,
    config_hash: &str,
    parts: PodParts<'_>,
) -> PodTemplateSpec {
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&v.name),
            default_mode: Some(0o444),
            optional: Some(false),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    for f in &parts.files {
        volumes.push(f.volume());
        mounts.push(f.mount());
    }
    for (vol, mount) in parts.extra_volumes {
        volumes.push(vol);
        mounts.push(mount);
    }
    let w = parts.workload.cloned().unwrap_or_default();
    let mut pod_labels = labels(&v.name, parts.component);
    pod_labels.extend(selector_labels(&v.name, parts.component));
    let annotations =
        BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string())]);
    let probes = parts.role != Role::Copy;
    let container = Container {
        name: parts.component.into(),
        image: Some(rg.spec.image.clone().unwrap_or_else(|| image.to_string())),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["pg_flo".into()]),
        args: Some(parts.args),
        env: Some(parts.env),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: i32::from(METRICS_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // A Job's pod needs no readiness, and a liveness probe could kill a long copy.
        liveness_probe: probes.then(|| super::http_probe("/healthz", "metrics", 10)),
        readiness_probe: probes.then(|| super::http_probe("/readyz", "metrics", 5)),
        resources: Some(
            w.resources
                .clone()
                .unwrap_or_else(|| default_resources(parts.role)),
        ),
        security_context: Some(super::restricted_container()),
        volume_mounts: Some(mounts),
        // The runtime writes no termination message file: on a failure the kubelet takes the
        // last log lines, whose last one is `pg_flo stopped error=...` (never row values), and
        // the operator shows it in the Degraded condition.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(service_account_name(&v.name)),
            image_pull_secrets: Some(rg.spec.image_pull_secrets.clone()).filter(|s| !s.is_empty()),
            automount_service_account_token: Some(false),
            containers: vec![container],
            volumes: Some(volumes),
            restart_policy: (parts.role == Role::Copy).then(|| "OnFailure".into()),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
            security_context: Some(super::restricted_pod(RUNTIME_UID)),
            ..PodSpec::default()
        }),
    };
    apply_pod_settings(&w, &mut template);
    template
}

/// Applies a group's pod settings (`spec.replicator`, `spec.worker`, `spec.copyJob`,
/// `spec.nats.managed`) to a pod template the operator built: the scheduling fields the
/// group sets (node selector, tolerations, affinity, topology spread constraints, priority
/// class) replace the template's, and its extra labels and annotations are added under the
/// template's own, which win (they select the pods and roll them). Container resources are
/// the caller's (each container has its own defaults).
pub(crate) fn apply_pod_settings(w: &WorkloadSpec, template: &mut PodTemplateSpec) {
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    for (extra, own) in [
        (&w.pod_labels, &mut meta.labels),
        (&w.pod_annotations, &mut meta.annotations),
    ] {
        if !extra.is_empty() {
            let mut merged = extra.clone();
            merged.extend(own.take().unwrap_or_default());
            *own = Some(merged);
        }
    }
    let spec = template.spec.get_or_insert_with(PodSpec::default);
    if !w.node_selector.is_empty() {
        spec.node_selector = Some(w.node_selector.clone());
    }
    if !w.tolerations.is_empty() {
        spec.tolerations = Some(w.tolerations.clone());
    }
    if w.affinity.is_some() {
        spec.affinity = w.affinity.clone();
    }
    if !w.topology_spread_constraints.is_empty() {
        spec.topology_spread_constraints = Some(w.topology_spread_constraints.clone());
    }
    if w.priority_class_name.is_some() {
        spec.priority_class_name = w.priority_class_name.clone();
    }
}

fn stateful_set(
    rg: &ReplicationGroup,
    v: &Valid,
    component: &'static str,
    template: PodTemplateSpec,
) -> StatefulSet {
    let replicas = match rg.spec.state {
        DesiredState::Running => 1,
        DesiredState::Paused | DesiredState::Stopped => 0,
    };
    StatefulSet {
        metadata: v.meta(workload_name(&v.name, component), component),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            // No Service: the pods need no stable DNS name, only the stable pod identity.
            service_name: Some(String::new()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: None,
            }),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&v.name, component)),
                ..LabelSelector::default()
            },
            template,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn replicator_parts(rg: &ReplicationGroup, role: Role) -> PodParts<'_> {
    let s = &rg.spec.source;
    let mut files = nats_files(rg);
    files.extend(SecretFile::ca("source-ca", &s.ca_secret, SOURCE_CA_PATH));
    let workload = match role {
        Role::Copy => rg.spec.copy_job.as_ref().or(rg.spec.replicator.as_ref()),
        _ => rg.spec.replicator.as_ref(),
    };
    PodParts {
        role,
        component: "replicator",
        args: vec![
            "replicator".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{REPLICATOR_FILE}"),
            "--metrics-addr".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ],
        env: vec![
            ref_env("PG_FLO_USER", &s.user),
            ref_env("PG_FLO_PASSWORD", &s.password),
        ],
        files,
        extra_volumes: Vec::new(),
        workload,
    }
}

/// The StatefulSet `<group>-replicator` (see [`workload_name`]): one pod (zero when paused or
/// stopped). The source credentials come from `PG_FLO_USER` / `PG_FLO_PASSWORD` bound to the
/// source Secret keys.
pub fn replicator_stateful_set(
    rg: &ReplicationGroup,
    image: &str,
    config_hash: &str,
) -> Result<StatefulSet, BuildError> {
    let v = Valid::new(rg)?;
    let template = pod_template(
        rg,
        &v,
        image,
        config_hash,
        replicator_parts(rg, Role::Replicator),
    );
    Ok(stateful_set(rg, &v, "replicator", template))
}

/// The StatefulSet `<group>-worker`: `pg_flo worker <sink>`, same shape as the replicator.
///
/// - postgres sink: `PG_FLO_TARGET_USER` / `PG_FLO_TARGET_PASSWORD` from the sink's Secret
///   keys (and `PG_FLO_SOURCE_USER` / `PG_FLO_SOURCE_PASSWORD` with `syncSchema`);
/// - webhook sink with `headersSecret`: one env variable per key of `webhook_header_keys`
///   (`PG_FLO_WEBHOOK_HEADER_<n>`, from the Secret), and `PG_FLO_WEBHOOK_HEADER` =
///   `<key>: $(PG_FLO_WEBHOOK_HEADER_<n>)` lines, expanded by the kubelet, so no header value
///   ever appears in the pod spec;
/// - file sink: the PersistentVolumeClaim `sink.file.claimName` at the path, or an `emptyDir`
///   (the files live as long as the pod).
pub fn worker_stateful_set(
    rg: &ReplicationGroup,
    image: &str,
    config_hash: &str,
    webhook_header_keys: &[String],
) -> Result<StatefulSet, BuildError> {
    let v = Valid::new(rg)?;
    let sink = &rg.spec.sink;
    let mut files = nats_files(rg);
    let mut env = Vec::new();
    let mut extra_volumes = Vec::new();
    let sink_name = if let Some(p) = &sink.postgres {
        env.push(ref_env("PG_FLO_TARGET_USER", &p.user));
        env.push(ref_env("PG_FLO_TARGET_PASSWORD", &p.password));
        files.extend(SecretFile::ca("target-ca", &p.ca_secret, TARGET_CA_PATH));
        if p.sync_schema {
            let s = &rg.spec.source;
            env.push(ref_env("PG_FLO_SOURCE_USER", &s.user));
            env.push(ref_env("PG_FLO_SOURCE_PASSWORD", &s.password));
            files.extend(SecretFile::ca("source-ca", &s.ca_secret, SOURCE_CA_PATH));
        }
        "postgres"
    } else if let Some(w) = &sink.webhook {
        if let Some(secret) = &w.headers_secret {
            let mut keys: Vec<&String> = webhook_header_keys.iter().collect();
            keys.sort();
            keys.dedup();
            let mut lines = Vec::new();
            for (i, key) in keys.into_iter().enumerate() {
                let var = format!("PG_FLO_WEBHOOK_HEADER_{i}");
                env.push(ref_env(
                    &var,
                    &SecretKeyRef {
                        name: secret.name.clone(),
                        key: key.clone(),
                    },
                ));
                lines.push(format!("{key}: $({var})"));
            }
            if !lines.is_empty() {
                env.push(EnvVar {
                    name: "PG_FLO_WEBHOOK_HEADER".into(),
                    value: Some(lines.join("\n")),
                    ..EnvVar::default()
                });
            }
        }
        "webhook"
    } else if let Some(f) = &sink.file {
        let volume = match &f.claim_name {
            Some(claim) => Volume {
                name: "file-output".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            },
            None => Volume {
                name: "file-output".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        };
        extra_volumes.push((
            volume,
            VolumeMount {
                name: "file-output".into(),
                mount_path: f.path.clone(),
                ..VolumeMount::default()
            },
        ));
        "file"
    } else {
        "stdout"
    };
    let parts = PodParts {
        role: Role::Worker,
        component: "worker",
        args: vec![
            "worker".into(),
            sink_name.into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{WORKER_FILE}"),
            "--metrics-addr".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ],
        env,
        files,
        extra_volumes,
        workload: rg.spec.worker.as_ref(),
    };
    let template = pod_template(rg, &v, image, config_hash, parts);
    Ok(stateful_set(rg, &v, "worker", template))
}

/// Name of the Job of a `mode: copy` group.
pub fn copy_job_name(group: &str) -> String {
    format!("{group}-copy")
}

/// With `mode: copy`, the replicator runs to completion as the Job `<group>-copy` instead of a
/// StatefulSet, which would restart a finished copy forever: the replicator's pod, labelled as
/// the replicator (so nothing else takes the slot while it runs), restarted in place on failure
/// (`OnFailure`), without probes, with `spec.copyJob`'s scheduling and resources (default:
/// `spec.replicator`'s) and `podReplacementPolicy: Failed` (a replacement pod only once the
/// previous one has terminated, never next to a terminating one). `suspend` while the group is
/// paused. `None` in the other modes.
///
/// A Job's pod template is immutable: the reconciler creates this Job once, afterwards only
/// changes `suspend`, and never creates it again once the copy finished
/// (`status.copyCompletionTime`).
pub fn copy_job(
    rg: &ReplicationGroup,
    image: &str,
    config_hash: &str,
) -> Result<Option<Job>, BuildError> {
    if rg.spec.mode != Mode::Copy {
        return Ok(None);
    }
    let v = Valid::new(rg)?;
    let template = pod_template(rg, &v, image, config_hash, replicator_parts(rg, Role::Copy));
    Ok(Some(Job {
        metadata: v.meta(copy_job_name(&v.name), "replicator"),
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            pod_replacement_policy: Some("Failed".into()),
            suspend: Some(rg.spec.state != DesiredState::Running),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    }))
}
