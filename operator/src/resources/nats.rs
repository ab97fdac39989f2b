//! Managed NATS JetStream: a StatefulSet with a volume per server, a client Service, a
//! headless Service (stable pod DNS for cluster routes) and a PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    labels, nats_headless_name, nats_name, selector_labels, BuildError, Valid, NATS_CLIENT_PORT,
    NATS_CLUSTER_PORT, NATS_MONITOR_PORT,
};
use crate::crd::{ReclaimPolicy, ReplicationGroup};

/// NATS server image used unless `nats.managed.image` is set.
pub const DEFAULT_NATS_IMAGE: &str = "nats:2.10-alpine";
/// UID/GID the NATS server runs as.
const NATS_UID: i64 = 1000;

/// The managed NATS objects of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct NatsObjects {
    /// StatefulSet `<group>-nats`.
    pub stateful_set: StatefulSet,
    /// Client Service `<group>-nats` (port 4222).
    pub client_service: Service,
    /// Headless Service `<group>-nats-headless` (all ports, not-ready addresses published).
    pub headless_service: Service,
    /// PodDisruptionBudget `<group>-nats` (at most one server down).
    pub pdb: PodDisruptionBudget,
}

fn port(name: &str, p: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: p,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn cport(name: &str, p: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The managed NATS objects, or `None` with external NATS.
pub fn nats(rg: &ReplicationGroup) -> Result<Option<NatsObjects>, BuildError> {
    let v = Valid::new(rg)?;
    let Some(m) = &rg.spec.nats.managed else {
        return Ok(None);
    };
    let name = nats_name(&v.name);
    let headless = nats_headless_name(&v.name);
    let replicas = i32::from(m.replicas.max(1));
    let selector = selector_labels(&v.name, "nats");

    let mut args: Vec<String> = vec![
        "--jetstream".into(),
        "--store_dir".into(),
        "/data".into(),
        "--port".into(),
        NATS_CLIENT_PORT.to_string(),
        "--http_port".into(),
        NATS_MONITOR_PORT.to_string(),
        "--server_name".into(),
        "$(POD_NAME)".into(),
    ];
    if replicas > 1 {
        let routes: Vec<String> = (0..replicas)
            .map(|i| {
                format!(
                    "nats://{name}-{i}.{headless}.{}.svc:{NATS_CLUSTER_PORT}",
                    v.namespace
                )
            })
            .collect();
        args.extend([
            "--cluster_name".into(),
            name.clone(),
            "--cluster".into(),
            format!("nats://0.0.0.0:{NATS_CLUSTER_PORT}"),
            "--routes".into(),
            routes.join(","),
        ]);
    }

    let container = Container {
        name: "nats".into(),
        image: Some(m.image.clone().unwrap_or_else(|| DEFAULT_NATS_IMAGE.into())),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["nats-server".into()]),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            cport("client", NATS_CLIENT_PORT),
            cport("cluster", NATS_CLUSTER_PORT),
            cport("monitor", NATS_MONITOR_PORT),
        ]),
        liveness_probe: Some(super::http_probe("/healthz", "monitor", 10)),
        readiness_probe: Some(super::http_probe(
            "/healthz?js-enabled-only=true",
            "monitor",
            5,
        )),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }]),
        security_context: Some(super::restricted_container()),
        ..Container::default()
    };

    let stateful_set = StatefulSet {
        metadata: v.meta(name.clone(), "nats"),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless.clone()),
            pod_management_policy: Some("Parallel".into()),
            // The JetStream volumes hold the group's stream: with `reclaimPolicy: delete` they go
            // with the group, with `retain` they stay (like the slot).
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(
                        match rg.spec.reclaim_policy {
                            ReclaimPolicy::Delete => "Delete",
                            ReclaimPolicy::Retain => "Retain",
                        }
                        .into(),
                    ),
                    when_scaled: Some("Retain".into()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&v.name, "nats")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(super::restricted_pod(NATS_UID)),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(labels(&v.name, "nats")),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: m.storage_class.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(m.storage_size.clone()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };

    let client_service = Service {
        metadata: v.meta(name.clone(), "nats"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector.clone()),
            ports: Some(vec![port("client", NATS_CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let headless_service = Service {
        metadata: v.meta(headless, "nats"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector.clone()),
            ports: Some(vec![
                port("client", NATS_CLIENT_PORT),
                port("cluster", NATS_CLUSTER_PORT),
                port("monitor", NATS_MONITOR_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: v.meta(name, "nats"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    Ok(Some(NatsObjects {
        stateful_set,
        client_service,
        headless_service,
        pdb,
    }))
}
