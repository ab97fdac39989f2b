//! Managed NATS JetStream: a StatefulSet with a volume per server, its configuration
//! (`nats.conf` in a ConfigMap), a client Service, a headless Service (stable pod DNS for
//! cluster routes), a PodDisruptionBudget, a NetworkPolicy, and the generated credentials
//! Secret ([`nats_auth_secret`], created once by the controller).
//!
//! What the configuration guarantees:
//! - **Durability**: with 3 replicas the cluster forms from the start (every server routes to
//!   every other) and the runtime creates the group's streams with 3 copies
//!   (`nats-stream-replicas`, rendered in `config.rs`); the PDB lets one server go at a time,
//!   which keeps the quorum of 2; the servers spread over nodes (topology spread,
//!   `DoNotSchedule` on the host name) and, when possible, zones.
//! - **Disk full is back-pressure**: JetStream may use [`FILE_STORE_PERCENT`] of the volume and
//!   the change stream [`STREAM_PERCENT`] (`nats-stream-max-bytes` with `discard: new`), so a
//!   stalled sink fills the stream, the replicator waits, and JetStream never runs out of disk.
//! - **Auth**: one user ([`RUNTIME_USER`]) whose password is in the Secret
//!   `<group>-nats-auth`; it may publish only on the group's subjects and use the JetStream API
//!   only for the group's three streams ([`runtime_permissions`]); routes authenticate with a
//!   second generated password. The passwords reach the server as env variables
//!   (`$NATS_RUNTIME_PASSWORD` in `nats.conf`), never in the ConfigMap.
//! - **TLS** (optional): client and route TLS from a `kubernetes.io/tls` Secret with `ca.crt`.
//! - **Probes and shutdown** as the official chart: startup probe `/healthz` (up to 15 min for
//!   a server recovering a large stream), readiness `/healthz?js-server-only=true`, liveness
//!   `/healthz?js-enabled-only=true`, a preStop lame-duck signal, 60 s grace period.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretVolumeSource, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use pg_flo_source::names::group_streams;

use super::quantity::{percent_of, quantity_bytes};
use super::{
    labels, nats_headless_name, nats_name, secret_env, selector_labels, BuildError, Valid,
    CONFIG_HASH_ANNOTATION, NATS_CLIENT_PORT, NATS_CLUSTER_PORT, NATS_MONITOR_PORT,
};
use crate::crd::{ManagedNats, ReclaimPolicy, ReplicationGroup};

/// NATS server image used unless `nats.managed.image` is set.
pub const DEFAULT_NATS_IMAGE: &str = "nats:2.10-alpine";
/// Image of the metrics sidecar (`spec.nats.managed.metrics`) unless the group names one.
pub const DEFAULT_NATS_EXPORTER_IMAGE: &str = "natsio/prometheus-nats-exporter:0.17.3";
/// Port of the metrics sidecar, named `prom-metrics` as in the official nats chart.
pub const NATS_EXPORTER_PORT: i32 = 7777;
/// UID/GID the NATS server runs as.
const NATS_UID: i64 = 1000;
/// Share of the volume JetStream may fill (`max_file_store`).
pub const FILE_STORE_PERCENT: u64 = 90;
/// Share of the volume the group's change stream may fill (`nats-stream-max-bytes`); the
/// rest of the file store is for the state and dead-letter streams.
pub const STREAM_PERCENT: u64 = 80;
/// Share of the memory limit given to the Go runtime as `GOMEMLIMIT`.
pub const GOMEMLIMIT_PERCENT: u64 = 80;
/// The user the replicator and worker connect as.
pub const RUNTIME_USER: &str = "pg-flo";
/// The user the servers' routes connect as.
pub const ROUTE_USER: &str = "route";
/// Key of the runtime user's name in the auth Secret.
pub const AUTH_USER_KEY: &str = "user";
/// Key of the runtime user's password in the auth Secret.
pub const AUTH_PASSWORD_KEY: &str = "password";
/// Key of the route password in the auth Secret.
pub const AUTH_ROUTE_PASSWORD_KEY: &str = "route-password";
/// File name of the server configuration in its ConfigMap.
pub const NATS_CONF_FILE: &str = "nats.conf";
/// Mount path of the server configuration.
pub const NATS_CONF_DIR: &str = "/etc/nats-config";
/// JetStream store directory (the volume).
pub const NATS_STORE_DIR: &str = "/data";
/// Directory of the pid file (lame-duck signal of the preStop hook).
pub const NATS_PID_DIR: &str = "/var/run/nats";
/// Mount path of the TLS Secret in the server pods.
pub const NATS_TLS_DIR: &str = "/etc/nats-tls";
/// Env variable of the runtime user's password in the server pods.
const RUNTIME_PASSWORD_ENV: &str = "NATS_RUNTIME_PASSWORD";
/// Env variable of the route password in the server pods.
const ROUTE_PASSWORD_ENV: &str = "NATS_ROUTE_PASSWORD";

/// The managed NATS objects of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct NatsObjects {
    /// StatefulSet `<group>-nats`.
    pub stateful_set: StatefulSet,
    /// ConfigMap `<group>-nats-config` with `nats.conf`.
    pub config_map: ConfigMap,
    /// Client Service `<group>-nats` (port 4222).
    pub client_service: Service,
    /// Headless Service `<group>-nats-headless` (all ports, not-ready addresses published).
    pub headless_service: Service,
    /// PodDisruptionBudget `<group>-nats` (at most one server down).
    pub pdb: PodDisruptionBudget,
    /// NetworkPolicy `<group>-nats`: clients only from the group's replicator and worker.
    pub network_policy: NetworkPolicy,
}

/// Name of the generated credentials Secret of a group's managed NATS.
pub fn nats_auth_name(group: &str) -> String {
    format!("{group}-nats-auth")
}

/// Name of the ConfigMap with the managed NATS server configuration.
pub fn nats_config_name(group: &str) -> String {
    format!("{group}-nats-config")
}

/// Name of the `i`th JetStream volume claim of a group's StatefulSet.
pub fn nats_volume_claim_name(group: &str, i: i32) -> String {
    format!("data-{}-{i}", nats_name(group))
}

/// Bytes JetStream may store on a volume of `storage_size` ([`FILE_STORE_PERCENT`]).
pub fn max_file_store(storage_size: &str) -> Option<u64> {
    quantity_bytes(storage_size).map(|b| percent_of(b, FILE_STORE_PERCENT))
}

/// Size limit of the group's change stream on a volume of `storage_size` ([`STREAM_PERCENT`]).
pub fn stream_max_bytes(storage_size: &str) -> Option<u64> {
    quantity_bytes(storage_size).map(|b| percent_of(b, STREAM_PERCENT))
}

/// The container resources of a server: the spec's, or requests 100m CPU / 256Mi and a 1Gi
/// memory limit.
pub fn nats_resources(m: &ManagedNats) -> ResourceRequirements {
    m.pod
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("256Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("1Gi".into()),
            )])),
            ..ResourceRequirements::default()
        })
}

/// `GOMEMLIMIT` (bytes) for a memory limit: [`GOMEMLIMIT_PERCENT`] of it; `None` without a
/// limit.
pub fn go_mem_limit(resources: &ResourceRequirements) -> Option<u64> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    quantity_bytes(&limit.0).map(|b| percent_of(b, GOMEMLIMIT_PERCENT))
}

/// The subjects the runtime user may publish to and subscribe on: the group's own subjects
/// (`pgflo.<group>`, `pgflo.<group>.>`: changes, state, dead letters) and the JetStream API
/// of the group's three streams (stream info/create/update/delete, message get, direct get,
/// consumers, acks). Replies come on `_INBOX.>`.
pub fn runtime_permissions(group: &str) -> (Vec<String>, Vec<String>) {
    let mut publish = vec![
        format!("pgflo.{group}"),
        format!("pgflo.{group}.>"),
        "$JS.API.INFO".to_string(),
    ];
    for s in group_streams(group) {
        publish.extend([
            format!("$JS.API.STREAM.*.{s}"),
            format!("$JS.API.STREAM.MSG.*.{s}"),
            format!("$JS.API.DIRECT.GET.{s}"),
            format!("$JS.API.DIRECT.GET.{s}.>"),
            format!("$JS.API.CONSUMER.*.{s}"),
            format!("$JS.API.CONSUMER.*.{s}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{s}.>"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{s}.>"),
            format!("$JS.ACK.{s}.>"),
        ]);
    }
    (publish, vec!["_INBOX.>".to_string()])
}

/// A NATS config string literal (JSON quoting: NATS reads quoted strings literally, so `$` in
/// a subject is not a variable).
fn lit(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    items.iter().map(|s| lit(s)).collect::<Vec<_>>().join(", ")
}

fn tls_block(indent: &str) -> String {
    format!(
        "{indent}tls {{\n{indent}  cert_file: {}\n{indent}  key_file: {}\n{indent}  ca_file: {}\n{indent}}}\n",
        lit(&format!("{NATS_TLS_DIR}/tls.crt")),
        lit(&format!("{NATS_TLS_DIR}/tls.key")),
        lit(&format!("{NATS_TLS_DIR}/ca.crt")),
    )
}

/// Env variable of the route URL to server `i` (the kubelet expands the route password in it).
fn route_env(i: i32) -> String {
    format!("NATS_ROUTE_{i}")
}

/// The server configuration (`nats.conf`) of a group's managed NATS. Passwords are
/// `$VARIABLES` the server reads from its environment. (The server name, the pod's, is a
/// command-line flag instead: the server parses a variable's value as a configuration value,
/// so a pod name starting with a digit, allowed for a group name, would be read as a number.)
pub fn nats_conf(group: &str, namespace: &str, m: &ManagedNats) -> Result<String, BuildError> {
    let max_file = max_file_store(&m.storage_size)
        .ok_or_else(|| BuildError::InvalidStorageSize(m.storage_size.clone()))?;
    let (publish, subscribe) = runtime_permissions(group);
    let mut c = format!(
        "# NATS of group {group} (namespace {namespace}), rendered by pg-flo-operator.\n\
         # server_name: the pod's name (--server_name).\n\
         port: {NATS_CLIENT_PORT}\n\
         http_port: {NATS_MONITOR_PORT}\n\
         pid_file: {pid}\n\
         lame_duck_duration: \"30s\"\n\
         lame_duck_grace_period: \"10s\"\n\
         \n\
         jetstream {{\n  store_dir: {store}\n  max_memory_store: 0\n  max_file_store: {max_file}\n}}\n\
         \n\
         authorization {{\n  users: [\n    {{\n      user: {user}\n      password: ${RUNTIME_PASSWORD_ENV}\n      \
         permissions: {{\n        publish: {{allow: [{publish}]}}\n        subscribe: {{allow: [{subscribe}]}}\n      }}\n    }}\n  ]\n}}\n",
        pid = lit(&format!("{NATS_PID_DIR}/nats.pid")),
        store = lit(NATS_STORE_DIR),
        user = lit(RUNTIME_USER),
        publish = list(&publish),
        subscribe = list(&subscribe),
    );
    if m.tls.is_some() {
        c.push('\n');
        c.push_str(&tls_block(""));
    }
    let replicas = i32::from(m.replicas.max(1));
    if replicas > 1 {
        let routes: Vec<String> = (0..replicas)
            .map(|i| format!("${}", route_env(i)))
            .collect();
        c.push_str(&format!(
            "\ncluster {{\n  name: {name}\n  port: {NATS_CLUSTER_PORT}\n  no_advertise: true\n  \
             authorization {{\n    user: {route_user}\n    password: ${ROUTE_PASSWORD_ENV}\n  }}\n  \
             routes: [\n    {routes}\n  ]\n",
            name = lit(&nats_name(group)),
            route_user = lit(ROUTE_USER),
            routes = routes.join("\n    "),
        ));
        if m.tls.is_some() {
            c.push_str(&tls_block("  "));
        }
        c.push_str("}\n");
    }
    Ok(c)
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

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

/// An HTTP probe of the monitoring port as the official chart has it.
fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("monitor".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(10),
        timeout_seconds: Some(5),
        period_seconds: Some(period),
        success_threshold: Some(1),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
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
    let auth = nats_auth_name(&v.name);
    let replicas = i32::from(m.replicas.max(1));
    let selector = selector_labels(&v.name, "nats");

    // The permissions name the runtime group's subjects and streams (`spec.groupName` or its
    // namespace-qualified default), not the object name.
    let conf = nats_conf(&v.group, &v.namespace, m)?;
    let config_map = ConfigMap {
        metadata: v.meta(nats_config_name(&v.name), "nats"),
        data: Some(BTreeMap::from([(NATS_CONF_FILE.to_string(), conf)])),
        ..ConfigMap::default()
    };
    let hash = super::config_hash(&config_map);

    let resources = nats_resources(m);
    let mut env_vars = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        secret_env(RUNTIME_PASSWORD_ENV, &auth, AUTH_PASSWORD_KEY),
    ];
    if let Some(limit) = go_mem_limit(&resources) {
        env_vars.push(env("GOMEMLIMIT", limit.to_string()));
    }
    if replicas > 1 {
        env_vars.push(secret_env(
            ROUTE_PASSWORD_ENV,
            &auth,
            AUTH_ROUTE_PASSWORD_KEY,
        ));
        let scheme = if m.tls.is_some() { "tls" } else { "nats" };
        for i in 0..replicas {
            env_vars.push(env(
                &route_env(i),
                format!(
                    "{scheme}://{ROUTE_USER}:$({ROUTE_PASSWORD_ENV})@{name}-{i}.{headless}.{}.svc:{NATS_CLUSTER_PORT}",
                    v.namespace
                ),
            ));
        }
    }

    let mut mounts = vec![
        mount("config", NATS_CONF_DIR, true),
        mount("pid", NATS_PID_DIR, false),
        mount("data", NATS_STORE_DIR, false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: nats_config_name(&v.name),
                default_mode: Some(0o444),
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "pid".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if let Some(tls) = &m.tls {
        mounts.push(mount("tls", NATS_TLS_DIR, true));
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                default_mode: Some(0o440),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: "nats".into(),
        image: Some(m.image.clone().unwrap_or_else(|| DEFAULT_NATS_IMAGE.into())),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["nats-server".into()]),
        args: Some(vec![
            "--config".into(),
            format!("{NATS_CONF_DIR}/{NATS_CONF_FILE}"),
            // The JetStream peer identity: stable across restarts (and as earlier versions).
            "--server_name".into(),
            "$(POD_NAME)".into(),
        ]),
        env: Some(env_vars),
        ports: Some(vec![
            cport("client", NATS_CLIENT_PORT),
            cport("cluster", NATS_CLUSTER_PORT),
            cport("monitor", NATS_MONITOR_PORT),
        ]),
        // A server recovering a large stream may take long to start: the startup probe
        // allows 15 minutes before liveness counts.
        startup_probe: Some(probe("/healthz", 10, 90)),
        readiness_probe: Some(probe("/healthz?js-server-only=true", 10, 3)),
        liveness_probe: Some(probe("/healthz?js-enabled-only=true", 30, 3)),
        lifecycle: Some(Lifecycle {
            // Lame-duck mode: clients move to the other servers before this one stops.
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "nats-server".into(),
                        format!("-sl=ldm={NATS_PID_DIR}/nats.pid"),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(resources),
        volume_mounts: Some(mounts),
        security_context: Some(super::restricted_container()),
        ..Container::default()
    };

    let exporter = m
        .metrics
        .as_ref()
        .filter(|x| x.enabled)
        .map(exporter_container);

    let spread = (replicas > 1).then(|| {
        let by = |key: &str, when: &str| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        };
        vec![
            // Never two servers on one node while another node has none: a node loss takes
            // at most one server, and the quorum stays.
            by("kubernetes.io/hostname", "DoNotSchedule"),
            by("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ]
    });

    let mut stateful_set = StatefulSet {
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
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: std::iter::once(container).chain(exporter).collect(),
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    // Lame duck (30 s) plus shutdown.
                    termination_grace_period_seconds: Some(60),
                    topology_spread_constraints: spread,
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

    // The group's pod settings, as for the replicator and worker (resources are above).
    if let Some(spec) = stateful_set.spec.as_mut() {
        super::workloads::apply_pod_settings(&m.pod, &mut spec.template);
    }

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
        metadata: v.meta(name.clone(), "nats"),
        spec: Some(PodDisruptionBudgetSpec {
            // One server at a time: 2 of 3 keep the quorum of the streams' 3 copies. (With one
            // server, a drain stops NATS for the time of the move; its volume keeps the data.)
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    let with_exporter = m.metrics.as_ref().is_some_and(|x| x.enabled);
    let network_policy = network_policy(&v, &name, &selector, with_exporter);
    Ok(Some(NatsObjects {
        stateful_set,
        config_map,
        client_service,
        headless_service,
        pdb,
        network_policy,
    }))
}

/// The prometheus-nats-exporter sidecar: the official nats chart's arguments (JetStream on, no
/// leaf nodes or gateways), reading the server's monitoring port on localhost.
fn exporter_container(x: &crate::crd::NatsMetrics) -> Container {
    let resources = x.resources.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("10m".into())),
            ("memory".to_string(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("128Mi".into()),
        )])),
        ..ResourceRequirements::default()
    });
    Container {
        name: "prom-exporter".into(),
        image: Some(
            x.image
                .clone()
                .unwrap_or_else(|| DEFAULT_NATS_EXPORTER_IMAGE.into()),
        ),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            format!("-port={NATS_EXPORTER_PORT}"),
            "-connz".into(),
            "-routez".into(),
            "-subz".into(),
            "-varz".into(),
            "-prefix=nats".into(),
            "-use_internal_server_id".into(),
            "-jsz=all".into(),
            format!("http://localhost:{NATS_MONITOR_PORT}/"),
        ]),
        ports: Some(vec![cport("prom-metrics", NATS_EXPORTER_PORT)]),
        resources: Some(resources),
        security_context: Some(super::restricted_container()),
        ..Container::default()
    }
}

fn tcp(p: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

/// NetworkPolicy `<group>-nats`: the client port admits only the group's replicator and worker
/// pods (the copy Job's pod is a replicator), the cluster port only the group's NATS servers;
/// the monitoring port (health checks, metrics; no message content) and, with the exporter,
/// its metrics port stay open. The reconciler adds the operator's pods to the client port
/// ([`admit_operator`]).
fn network_policy(
    v: &Valid,
    name: &str,
    nats_selector: &BTreeMap<String, String>,
    with_exporter: bool,
) -> NetworkPolicy {
    let mut group_pods = selector_labels(&v.name, "runtime");
    group_pods.remove("app.kubernetes.io/component");
    let runtime = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(group_pods),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app.kubernetes.io/component".into(),
                operator: "In".into(),
                values: Some(vec!["replicator".into(), "worker".into()]),
            }]),
        }),
        ..NetworkPolicyPeer::default()
    };
    let servers = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(nats_selector.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: v.meta(name.to_owned(), "nats"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(nats_selector.clone()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![runtime]),
                    ports: Some(vec![tcp(NATS_CLIENT_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![servers]),
                    ports: Some(vec![tcp(NATS_CLUSTER_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(
                        std::iter::once(NATS_MONITOR_PORT)
                            .chain(with_exporter.then_some(NATS_EXPORTER_PORT))
                            .map(tcp)
                            .collect(),
                    ),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The operator's own pods, as a NetworkPolicy can select them: their namespace and labels
/// (the Helm chart passes its selector labels and the release namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPods {
    /// Namespace of the operator's pods (selected by its `kubernetes.io/metadata.name` label).
    pub namespace: String,
    /// Labels every operator pod carries.
    pub labels: BTreeMap<String, String>,
}

/// Admits `operator`'s pods to the client port of the group's managed NATS (no-op without
/// one): the operator reads the worker's JetStream consumer there for `status.consumer`, which
/// a NetworkPolicy admitting only the group's pods would refuse where policies are enforced.
/// (The monitoring port is open to all already.)
pub fn admit_operator(desired: &mut super::Desired, operator: &OperatorPods) {
    let Some(policy) = desired
        .nats
        .as_mut()
        .and_then(|n| n.network_policy.spec.as_mut())
    else {
        return;
    };
    let peer = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                operator.namespace.clone(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(operator.labels.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    policy
        .ingress
        .get_or_insert_with(Vec::new)
        .push(NetworkPolicyIngressRule {
            from: Some(vec![peer]),
            ports: Some(vec![tcp(NATS_CLIENT_PORT)]),
        });
}

/// Generated credentials of a group's managed NATS.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsAuth {
    /// Password of [`RUNTIME_USER`].
    pub password: String,
    /// Password of the routes between the servers.
    pub route_password: String,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsAuth { .. }")
    }
}

/// Length of a generated password (about 190 bits).
const PASSWORD_LEN: usize = 32;

/// Whether `p` can be a password of the managed NATS: the server reads `$VARIABLE` values as
/// configuration values, so a value starting with a digit is a number (`1abc` fails to parse)
/// and punctuation could end it; and route passwords sit in URLs. A letter followed by letters
/// and digits is always read as the string itself. At least 16 characters.
pub fn is_safe_password(p: &str) -> bool {
    p.len() >= 16
        && p.starts_with(|c: char| c.is_ascii_alphabetic())
        && p.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// A random password from the system's CSPRNG: a letter, then letters and digits
/// ([`is_safe_password`]).
pub fn generate_password() -> Result<String, BuildError> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(PASSWORD_LEN);
    while out.len() < PASSWORD_LEN {
        let mut b = [0u8; 64];
        rng.fill(&mut b).map_err(|_| BuildError::Random)?;
        // Rejection sampling without bias: 208 = 4 * 52 for the first (a letter), 248 = 4 * 62
        // for the rest.
        for x in b {
            if out.len() == PASSWORD_LEN {
                break;
            }
            let letters_only = out.is_empty();
            let (limit, n) = if letters_only { (208, 52) } else { (248, 62) };
            if x < limit {
                out.push(char::from(ALPHABET[usize::from(x % n)]));
            }
        }
    }
    Ok(out)
}

impl NatsAuth {
    /// New random passwords.
    pub fn generate() -> Result<Self, BuildError> {
        Ok(Self {
            password: generate_password()?,
            route_password: generate_password()?,
        })
    }

    /// The credentials an existing Secret holds, with a new password for each key it lacks
    /// (or holds a value the server could not read, see [`is_safe_password`]); the second value
    /// says whether anything was generated.
    pub fn from_secret(secret: &Secret) -> Result<(Self, bool), BuildError> {
        let get = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        let password = |key: &str| get(key).filter(|v| is_safe_password(v));
        let mut generated = false;
        let mut take = |key: &str| match password(key) {
            Some(v) => Ok(v),
            None => {
                generated = true;
                generate_password()
            }
        };
        let password = take(AUTH_PASSWORD_KEY)?;
        let route_password = take(AUTH_ROUTE_PASSWORD_KEY)?;
        let user_ok = get(AUTH_USER_KEY).as_deref() == Some(RUNTIME_USER);
        Ok((
            Self {
                password,
                route_password,
            },
            generated || !user_ok,
        ))
    }
}

/// The Secret `<group>-nats-auth` holding `auth` (owned by the group: it goes with it).
pub fn nats_auth_secret(rg: &ReplicationGroup, auth: &NatsAuth) -> Result<Secret, BuildError> {
    let v = Valid::new(rg)?;
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Ok(Secret {
        metadata: v.meta(nats_auth_name(&v.name), "nats"),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (AUTH_USER_KEY.to_string(), bytes(RUNTIME_USER)),
            (AUTH_PASSWORD_KEY.to_string(), bytes(&auth.password)),
            (
                AUTH_ROUTE_PASSWORD_KEY.to_string(),
                bytes(&auth.route_password),
            ),
        ])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_random_and_readable_by_the_server() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        for _ in 0..200 {
            let p = generate_password().unwrap();
            assert!(is_safe_password(&p), "{p}");
        }
        for (p, safe) in [
            ("a234567890123456", true),
            ("1234567890123456", false),
            ("a23456789012345", false),
            ("a23456789012345-", false),
            ("a234567890123456 ", false),
        ] {
            assert_eq!(is_safe_password(p), safe, "{p}");
        }
    }

    #[test]
    fn a_secret_keeps_its_passwords_and_gets_the_missing_or_unreadable_ones() {
        let secret = |pairs: &[(&str, &str)]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let good = "Abcdefghij0123456789";
        let full = secret(&[
            ("user", "pg-flo"),
            ("password", good),
            ("route-password", good),
        ]);
        let (auth, generated) = NatsAuth::from_secret(&full).unwrap();
        assert_eq!((auth.password.as_str(), generated), (good, false));
        let (auth, generated) =
            NatsAuth::from_secret(&secret(&[("user", "pg-flo"), ("password", good)])).unwrap();
        assert_eq!(auth.password, good);
        assert!(generated && is_safe_password(&auth.route_password));
        let (auth, generated) = NatsAuth::from_secret(&secret(&[
            ("user", "pg-flo"),
            ("password", "1-not readable"),
            ("route-password", good),
        ]))
        .unwrap();
        assert!(generated && is_safe_password(&auth.password));
        assert_ne!(auth.password, "1-not readable");
    }

    #[test]
    fn go_mem_limit_is_80_percent_of_the_memory_limit() {
        let with = |limits: Option<&[(&str, &str)]>| ResourceRequirements {
            limits: limits.map(|l| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            }),
            ..ResourceRequirements::default()
        };
        assert_eq!(
            go_mem_limit(&with(Some(&[("memory", "1Gi")]))),
            Some(858_993_459)
        );
        assert_eq!(
            go_mem_limit(&with(Some(&[("memory", "8G")]))),
            Some(6_400_000_000)
        );
        assert_eq!(go_mem_limit(&with(Some(&[("cpu", "1")]))), None);
        assert_eq!(go_mem_limit(&with(None)), None);
    }
}
