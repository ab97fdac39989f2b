//! Replicator and worker Deployments and their ServiceAccount.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    KeyToPath, PodSpec, PodTemplateSpec, SecretKeySelector, SecretVolumeSource, ServiceAccount,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::config::{
    NATS_CA_PATH, NATS_CREDS_PATH, REPLICATOR_FILE, SOURCE_CA_PATH, TARGET_CA_PATH, WORKER_FILE,
};
use super::{
    config_map_name, labels, selector_labels, service_account_name, BuildError, Valid, CONFIG_DIR,
    CONFIG_HASH_ANNOTATION, METRICS_PORT,
};
use crate::crd::{DesiredState, Mode, ReplicationGroup, SecretKeyRef, WorkloadSpec};

/// UID/GID of the pg_flo image's `pgflo` user.
pub const RUNTIME_UID: i64 = 65532;

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

fn secret_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
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

fn deployment(
    rg: &ReplicationGroup,
    v: &Valid,
    image: &str,
    config_hash: &str,
    parts: PodParts<'_>,
) -> Deployment {
    let replicas = match rg.spec.state {
        DesiredState::Running => 1,
        DesiredState::Paused | DesiredState::Stopped => 0,
    };
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
    let mut pod_labels = labels(&v.name, parts.component);
    pod_labels.extend(selector_labels(&v.name, parts.component));
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
        liveness_probe: Some(super::http_probe("/healthz", "metrics", 10)),
        readiness_probe: Some(super::http_probe("/readyz", "metrics", 5)),
        resources: parts.workload.and_then(|w| w.resources.clone()),
        security_context: Some(super::restricted_container()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let node_selector = parts
        .workload
        .map(|w| w.node_selector.clone())
        .filter(|n| !n.is_empty());
    let tolerations = parts
        .workload
        .map(|w| w.tolerations.clone())
        .filter(|t| !t.is_empty());
    Deployment {
        metadata: v.meta(format!("{}-{}", v.name, parts.component), parts.component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            // Never two pods at once: the replicator owns the slot, the worker the consumer.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&v.name, parts.component)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account_name(&v.name)),
                    image_pull_secrets: Some(rg.spec.image_pull_secrets.clone())
                        .filter(|s| !s.is_empty()),
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector,
                    tolerations,
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(super::restricted_pod(RUNTIME_UID)),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Deployment `<group>-replicator`: one pod (zero when paused or stopped), `Recreate`
/// strategy so two replicators never compete for the slot. The source credentials come from
/// `PG_FLO_USER` / `PG_FLO_PASSWORD` bound to the source Secret keys.
pub fn replicator_deployment(
    rg: &ReplicationGroup,
    image: &str,
    config_hash: &str,
) -> Result<Deployment, BuildError> {
    let v = Valid::new(rg)?;
    let s = &rg.spec.source;
    let mut files = nats_files(rg);
    files.extend(SecretFile::ca("source-ca", &s.ca_secret, SOURCE_CA_PATH));
    let parts = PodParts {
        component: "replicator",
        args: vec![
            "replicator".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{REPLICATOR_FILE}"),
            "--metrics-addr".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ],
        env: vec![
            secret_env("PG_FLO_USER", &s.user),
            secret_env("PG_FLO_PASSWORD", &s.password),
        ],
        files,
        extra_volumes: Vec::new(),
        workload: rg.spec.replicator.as_ref(),
    };
    Ok(deployment(rg, &v, image, config_hash, parts))
}

/// The Deployment `<group>-worker`: `pg_flo worker <sink>`, same shape as the replicator.
///
/// - postgres sink: `PG_FLO_TARGET_USER` / `PG_FLO_TARGET_PASSWORD` from the sink's Secret
///   keys (and `PG_FLO_SOURCE_USER` / `PG_FLO_SOURCE_PASSWORD` with `syncSchema`);
/// - webhook sink with `headersSecret`: one env variable per key of `webhook_header_keys`
///   (`PG_FLO_WEBHOOK_HEADER_<n>`, from the Secret), and `PG_FLO_WEBHOOK_HEADER` =
///   `<key>: $(PG_FLO_WEBHOOK_HEADER_<n>)` lines, expanded by the kubelet, so no header value
///   ever appears in the pod spec;
/// - file sink: an `emptyDir` at the path (the files live as long as the pod; a
///   PersistentVolumeClaim is planned for a later version).
pub fn worker_deployment(
    rg: &ReplicationGroup,
    image: &str,
    config_hash: &str,
    webhook_header_keys: &[String],
) -> Result<Deployment, BuildError> {
    let v = Valid::new(rg)?;
    let sink = &rg.spec.sink;
    let mut files = nats_files(rg);
    let mut env = Vec::new();
    let mut extra_volumes = Vec::new();
    let sink_name = if let Some(p) = &sink.postgres {
        env.push(secret_env("PG_FLO_TARGET_USER", &p.user));
        env.push(secret_env("PG_FLO_TARGET_PASSWORD", &p.password));
        files.extend(SecretFile::ca("target-ca", &p.ca_secret, TARGET_CA_PATH));
        if p.sync_schema {
            let s = &rg.spec.source;
            env.push(secret_env("PG_FLO_SOURCE_USER", &s.user));
            env.push(secret_env("PG_FLO_SOURCE_PASSWORD", &s.password));
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
                env.push(secret_env(
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
        extra_volumes.push((
            Volume {
                name: "file-output".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
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
    Ok(deployment(rg, &v, image, config_hash, parts))
}

/// Name of the Job of a `mode: copy` group.
pub fn copy_job_name(group: &str) -> String {
    format!("{group}-copy")
}

/// With `mode: copy`, the replicator runs to completion as the Job `<group>-copy` (the pod of
/// [`replicator_deployment`], restarted on failure) instead of a Deployment, which would restart
/// a finished copy forever. `suspend` while the group is paused. `None` in the other modes.
///
/// A Job's pod template is immutable: the reconciler creates this Job once and afterwards only
/// changes `suspend`.
pub fn copy_job(
    rg: &ReplicationGroup,
    image: &str,
    config_hash: &str,
) -> Result<Option<Job>, BuildError> {
    if rg.spec.mode != Mode::Copy {
        return Ok(None);
    }
    let v = Valid::new(rg)?;
    let d = replicator_deployment(rg, image, config_hash)?;
    let mut template = d.spec.map(|s| s.template).unwrap_or_default();
    if let Some(pod) = template.spec.as_mut() {
        pod.restart_policy = Some("OnFailure".into());
    }
    Ok(Some(Job {
        metadata: v.meta(copy_job_name(&v.name), "replicator"),
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            suspend: Some(rg.spec.state != DesiredState::Running),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    }))
}
