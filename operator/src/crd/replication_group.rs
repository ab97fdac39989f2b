//! The `ReplicationGroup` custom resource: one source database and slot, its NATS JetStream,
//! replicator, worker and sink.

// The repeated `type_ = ...` of `#[kube(printcolumn(...))]` are separate columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeyRef, SecretRef};

/// Pattern of a ReplicationGroup name: the replication slot, publication, stream and workload
/// names derive from it, so it is short and DNS-label-safe.
pub const GROUP_NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,42}[a-z0-9])?$";

/// CDC from one PostgreSQL database (one logical replication slot and publication) through a
/// NATS JetStream stream to one sink.
///
/// The runtime group name (`spec.groupName`, default `<namespace>_<name>` fitted to 44
/// characters, see `resources::default_group_name`) names the replication slot, publication and
/// streams; it is decided once, recorded in `status.groupName` and never changes afterwards, and
/// so are `spec.source.host` and `spec.source.database`: changing them would orphan the slot.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pgflo.io",
    version = "v1alpha1",
    kind = "ReplicationGroup",
    namespaced,
    doc = "CDC from one PostgreSQL database through NATS JetStream to one sink (pg_flo).",
    status = "ReplicationGroupStatus",
    shortname = "rg",
    shortname = "pgrg",
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([a-z0-9-]{0,42}[a-z0-9])?$')").message("metadata.name must match ^[a-z0-9]([a-z0-9-]{0,42}[a-z0-9])?$ (at most 44 characters: it names the group's workloads)"),
    validation = Rule::new("!has(self.spec.groupName) || !has(self.status) || !has(self.status.groupName) || self.spec.groupName == self.status.groupName").message("spec.groupName must equal status.groupName, the name the group already runs under (its slot, publication and streams)"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Slot", type_ = "string", json_path = ".status.slot.name"),
    printcolumn(name = "Lag Bytes", type_ = "integer", json_path = ".status.slot.lagBytes", description = "Bytes of source WAL after the position the replicator confirmed"),
    printcolumn(name = "Lag Seconds", type_ = "integer", json_path = ".status.consumer.lagSeconds", description = "End-to-end lag: seconds from the source commit of the oldest change the worker has not applied to when it was read (0: nothing waits in the stream)"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.consumer.pending", description = "Messages in the stream not yet delivered to the worker"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Restarts", type_ = "integer", json_path = ".status.pods[?(@.component==\"worker\")].restarts", description = "Restarts of the worker pod"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationGroupSpec {
    /// The runtime group name: the replication slot and publication are
    /// `pg_flo_<groupName, '-' as '_'>_publication`, the streams `pgflo_<groupName>_*`.
    /// Immutable. Default: `<namespace>_<name>`, cut to 35 characters plus `_` and 8 hex digits of
    /// a hash when longer than 44 (groups created before this field keep `metadata.name`). Set it
    /// to keep the slot and streams of an existing pg_flo group. Two groups of the cluster with
    /// the same name on the same source server or external NATS are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 44), regex(pattern = r"^[a-z0-9_-]+$"), extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "groupName is immutable (it names the replication slot, publication and streams)"}]))]
    pub group_name: Option<String>,
    /// The source PostgreSQL database.
    pub source: SourceSpec,
    /// What to replicate: `stream` (changes from now on), `copy` (a one-time copy of the
    /// tables) or `copyAndStream` (a consistent copy, then the changes after it).
    #[serde(default)]
    pub mode: Mode,
    /// Parallel copy workers per table (copy modes).
    #[serde(default = "default_copy_workers")]
    #[schemars(range(min = 1, max = 64))]
    pub copy_workers_per_table: u32,
    /// Replicate DDL (schema changes) of the source tables.
    #[serde(default, rename = "trackDDL")]
    pub track_ddl: bool,
    /// Where the changes go: exactly one of `postgres`, `webhook`, `file`, `stdout`.
    pub sink: SinkSpec,
    /// NATS JetStream between replicator and worker: exactly one of `managed`, `external`.
    pub nats: NatsSpec,
    /// Image of the replicator and worker (default: the operator's own image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Secrets (in the group's namespace) to pull the replicator and worker image with
    /// (default: the operator's `--runtime-image-pull-secrets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Resources and scheduling of the replicator pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicator: Option<WorkloadSpec>,
    /// Resources and scheduling of the worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkloadSpec>,
    /// Resources and scheduling of the copy Job's pod (`mode: copy`; default: `replicator`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_job: Option<WorkloadSpec>,
    /// Desired state: `running`, `paused` (workloads scaled to zero, slot kept) or `stopped`
    /// (workloads removed, slot kept).
    #[serde(default)]
    pub state: DesiredState,
    /// What happens to the replication slot, publication and stream when the group is
    /// deleted: `retain` keeps them, `delete` drops them.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    /// WAL the slot may retain on the source (a quantity, e.g. `20Gi`) before the group turns
    /// `Degraded/SlotRetainedWalHigh` with an Event: a warning before the source's disk fills
    /// (a stalled worker or sink, a stopped group). Unset: no limit. See docs/operations.md
    /// for the choices (fix what holds the group back, raise `max_slot_wal_keep_size`, drop
    /// the slot and copy again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-validations" = [{"rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))", "message": "maxRetainedWal must be a positive quantity, e.g. 20Gi"}]))]
    pub max_retained_wal: Option<String>,
    /// Changes per sink batch of the worker (default: the worker's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub worker_batch_size: Option<u32>,
    /// Park changes the sink rejects in a dead-letter stream instead of stopping.
    #[serde(default)]
    pub dead_letter: bool,
}

fn default_copy_workers() -> u32 {
    4
}

/// The source PostgreSQL database.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Host name or address of the server (immutable).
    #[schemars(length(min = 1), extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "source.host is immutable (the replication slot lives on that server)"}]))]
    pub host: String,
    /// Port of the server.
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Database name (immutable).
    #[schemars(length(min = 1), extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "source.database is immutable (the replication slot belongs to that database)"}]))]
    pub database: String,
    /// Schema of the tables.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Tables to replicate (empty: every table of the schema).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// User name (a role with REPLICATION).
    pub user: SecretKeyRef,
    /// Password.
    pub password: SecretKeyRef,
    /// TLS mode of the connection.
    #[serde(default)]
    pub ssl_mode: SslMode,
    /// CA certificate (PEM) to verify the server with (`verify-ca`, `verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

fn default_pg_port() -> u16 {
    5432
}

fn default_schema() -> String {
    "public".into()
}

/// TLS mode of a PostgreSQL connection (libpq's `sslmode`): the runtime's own type, so the
/// CRD accepts exactly the modes the runtime's config file does.
pub use pg_flo_config::SslMode;

/// What a group replicates.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Changes from the slot creation on.
    #[default]
    Stream,
    /// A one-time copy of the tables.
    Copy,
    /// A consistent copy of the tables, then the changes after it.
    CopyAndStream,
}

/// Desired state of a group.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DesiredState {
    /// Replicator and worker run.
    #[default]
    Running,
    /// Replicator and worker scaled to zero; slot and stream kept.
    Paused,
    /// Replicator and worker removed; slot and stream kept.
    Stopped,
}

/// What happens to the slot, publication and stream when the group is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ReclaimPolicy {
    /// Keep them.
    #[default]
    Retain,
    /// Drop them.
    Delete,
}

/// The sink: exactly one member is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "[has(self.postgres), has(self.webhook), has(self.file), has(self.stdout)].filter(x, x).size() == 1", "message": "exactly one of sink.postgres, sink.webhook, sink.file, sink.stdout must be set"}]))]
pub struct SinkSpec {
    /// Apply the changes to a PostgreSQL database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSink>,
    /// POST the changes to an HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSink>,
    /// Append the changes as JSON lines to files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSink>,
    /// Print the changes as JSON lines on the worker's standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSink>,
}

/// PostgreSQL sink.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSink {
    /// Host name or address of the target server.
    #[schemars(length(min = 1))]
    pub host: String,
    /// Port of the target server.
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Target database.
    #[schemars(length(min = 1))]
    pub database: String,
    /// User name.
    pub user: SecretKeyRef,
    /// Password.
    pub password: SecretKeyRef,
    /// TLS mode of the connection.
    #[serde(default)]
    pub ssl_mode: SslMode,
    /// CA certificate (PEM) to verify the server with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    /// Create and alter the target tables after the source's.
    #[serde(default)]
    pub sync_schema: bool,
    /// Disable foreign key checks while applying (`session_replication_role = replica`).
    /// Already the default unless `fireTriggers` is set; kept for pg_flo compatibility.
    #[serde(default)]
    pub disable_foreign_keys: bool,
    /// Let the target's triggers (and foreign key checks) fire for replicated changes, as
    /// pg_flo did. Off by default: the worker applies with `session_replication_role =
    /// replica`, like PostgreSQL's own apply worker, which needs a superuser target user or
    /// `GRANT SET ON PARAMETER session_replication_role TO <user>` (PostgreSQL 15+).
    #[serde(default)]
    pub fire_triggers: bool,
}

/// Webhook sink.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSink {
    /// Endpoint URL (`http://` or `https://`).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.startsWith('http://') || self.startsWith('https://')", "message": "sink.webhook.url must be an http:// or https:// URL"}]))]
    pub url: String,
    /// Secret whose keys and values are sent as HTTP headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret: Option<SecretRef>,
    /// Changes per request (default: the worker's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<u32>,
}

/// File sink.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSink {
    /// Directory of the output files, a volume mount path in the worker pod.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.startsWith('/')", "message": "sink.file.path must be absolute"}]))]
    pub path: String,
    /// PersistentVolumeClaim (in the group's namespace, created by you) mounted at `path`, so
    /// the written files outlive the pod. Without it the files go to an `emptyDir` and are lost
    /// when the worker pod is rescheduled (changes already acknowledged included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub claim_name: Option<String>,
}

/// Standard output sink (no settings).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct StdoutSink {}

/// NATS JetStream: exactly one member is set.
///
/// Switching between `managed` and `external` is refused (CEL transition rule): the current
/// NATS holds the group's unconsumed changes and its state (copy progress, source identity),
/// which the other would not have. To move a group, delete it and create it again
/// (`mode: copyAndStream`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.managed) != has(self.external)", "message": "exactly one of nats.managed, nats.external must be set"},
    {"rule": "has(self.managed) == has(oldSelf.managed)", "message": "nats cannot switch between managed and external: the current NATS holds the group's unconsumed changes and state; delete the group and create it again (mode copyAndStream) to move it"}
]))]
pub struct NatsSpec {
    /// A NATS server the operator runs for the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedNats>,
    /// An existing NATS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalNats>,
}

/// NATS JetStream run by the operator: a StatefulSet of `replicas` servers with a volume each,
/// clients authenticated with generated credentials (Secret `<group>-nats-auth`) and limited
/// to the group's subjects, a NetworkPolicy admitting only the group's pods.
///
/// `replicas` and `storageClass` are immutable and `storageSize` can only grow (CEL
/// transition rules): a standalone server's streams are not carried into a cluster (nor back),
/// and a volume cannot move to another class or shrink. A larger `storageSize` resizes the
/// volumes (the StorageClass must allow volume expansion).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.replicas == oldSelf.replicas", "message": "nats.managed.replicas is immutable: a standalone server's streams are not carried into a cluster (nor back); delete the group and create it again (mode copyAndStream) to change it"},
    {"rule": "(has(self.storageClass) ? self.storageClass : '') == (has(oldSelf.storageClass) ? oldSelf.storageClass : '')", "message": "nats.managed.storageClass is immutable: the volumes holding the stream cannot move to another class"},
    {"rule": "quantity(self.storageSize).compareTo(quantity(oldSelf.storageSize)) >= 0", "message": "nats.managed.storageSize can only grow: a volume cannot shrink"}
]))]
pub struct ManagedNats {
    /// Servers in the JetStream cluster (1 or 3); the group's streams keep one copy per
    /// server. Immutable.
    #[serde(default = "default_nats_replicas")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 1 || self == 3", "message": "nats.managed.replicas must be 1 or 3"}]))]
    pub replicas: u8,
    /// Size of each server's JetStream volume (a Kubernetes quantity, e.g. `10Gi`); can only
    /// grow. JetStream may use 90% of it, the group's change stream 80%: when the stream is
    /// full the replicator waits (back-pressure) instead of the disk filling up.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-validations" = [{"rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))", "message": "nats.managed.storageSize must be a positive quantity, e.g. 10Gi"}]))]
    pub storage_size: String,
    /// StorageClass of the volumes (default: the cluster's default). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class: Option<String>,
    /// NATS server image (default: the operator's pinned NATS image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    // (Before `tls`: `resources` serializes where it always did, so the `pgflo.io/nats`
    // annotation of existing groups does not change.)
    /// Resources, scheduling and metadata of the server pods, the same fields as
    /// `spec.replicator` and `spec.worker` (`resources`, `nodeSelector`, `tolerations`,
    /// `affinity`, `topologySpreadConstraints` (replacing the default spread of 3 servers over
    /// nodes), `priorityClassName`, `podAnnotations`, `podLabels`).
    #[serde(flatten)]
    pub pod: WorkloadSpec,
    /// TLS for clients and cluster routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NatsTls>,
    /// Prometheus metrics of the servers: a prometheus-nats-exporter sidecar in each server
    /// pod (port `prom-metrics`, 7777), what the Helm chart's `natsPodMonitor` scrapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<NatsMetrics>,
}

/// The prometheus-nats-exporter sidecar of the managed NATS servers, run as the official nats
/// Helm chart runs it: it reads the server's monitoring endpoint (`/varz`, `/connz`,
/// `/routez`, `/subz`, `/jsz`) on localhost and serves `nats_*` metrics on port `prom-metrics`
/// (7777). Turning it on or off restarts the servers one by one.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsMetrics {
    /// Run the exporter.
    #[serde(default)]
    pub enabled: bool,
    /// Exporter image (default: the operator's pinned prometheus-nats-exporter image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Container resources of the exporter (default: requests 10m CPU and 32Mi memory, limit
    /// 128Mi memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// TLS of the managed NATS servers, from a Secret in the group's namespace with the keys
/// `tls.crt`, `tls.key` and `ca.crt` (what cert-manager writes for a Certificate). The
/// certificate must name `<group>-nats.<namespace>.svc` (clients) and
/// `*.<group>-nats-headless.<namespace>.svc` (cluster routes); the pods verify it with
/// `ca.crt`. A renewed certificate restarts the servers one by one.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsTls {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

fn default_nats_replicas() -> u8 {
    1
}

fn default_storage_size() -> String {
    "1Gi".into()
}

/// Existing NATS server: the replicator and worker connect with the credentials given here
/// (at most one of `password`, `token`, `credentialsSecret`). The URL is immutable (CEL
/// transition rule): the servers it names hold the group's unconsumed changes and state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.url == oldSelf.url", "message": "nats.external.url is immutable: the servers it names hold the group's unconsumed changes and state; delete the group and create it again (mode copyAndStream) to move it"},
    {"rule": "has(self.user) == has(self.password)", "message": "nats.external.user and nats.external.password go together"},
    {"rule": "[has(self.password), has(self.token), has(self.credentialsSecret)].filter(x, x).size() <= 1", "message": "at most one of nats.external.password, nats.external.token, nats.external.credentialsSecret"},
    {"rule": "!has(self.clientCertSecret) || has(self.caSecret)", "message": "nats.external.clientCertSecret needs nats.external.caSecret (the CA of the server's certificate)"}
]))]
pub struct ExternalNats {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`). Immutable.
    #[schemars(length(min = 1, max = 4096))]
    pub url: String,
    /// User name (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SecretKeyRef>,
    /// Password of `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeyRef>,
    /// Authentication token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeyRef>,
    /// NATS credentials file (`.creds`: JWT and NKey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretKeyRef>,
    /// CA certificate (PEM) to verify the server with (turns on TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    /// Client certificate for mutual TLS: a Secret with `tls.crt` and `tls.key`
    /// (`kubernetes.io/tls`, as cert-manager writes it); needs `caSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret: Option<SecretRef>,
    /// Copies of each of the group's streams (1 to 5, at most the servers of the NATS
    /// cluster; default: the server's, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub stream_replicas: Option<u8>,
}

/// Resources, scheduling and metadata of a pod (each field is copied into the pod template).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Container resources. When set, replaces the defaults as a whole: replicator 100m CPU /
    /// 128Mi memory, worker 100m / 256Mi, copy Job 250m / 256Mi (no limits); managed NATS
    /// servers 100m / 256Mi with a 1Gi memory limit (their `GOMEMLIMIT` is 80% of the memory
    /// limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the pod must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pod (node, pod, anti-affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra annotations of the pod (the operator's own `pgflo.io/*` annotations win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Extra labels of the pod (the operator's `app.kubernetes.io/*` and `pgflo.io/group`
    /// labels win: they select the pods).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

/// Lifecycle phase of a group.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Being set up.
    Pending,
    /// Copying the tables.
    Copying,
    /// Streaming changes.
    Streaming,
    /// `mode: copy`: the copy finished (the slot is kept, so a later `stream` continues
    /// without a gap).
    Completed,
    /// Paused on request.
    Paused,
    /// Stopped on request.
    Stopped,
    /// Something is wrong; see the conditions.
    Degraded,
    /// Being deleted.
    Deleting,
}

/// Observed state of a group.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationGroupStatus {
    /// `metadata.generation` the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions (`Ready`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The replication slot on the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotStatus>,
    /// The runtime group name the group runs under (slot, publication, streams), recorded the
    /// first time it is applied and used from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 44))]
    pub group_name: Option<String>,
    /// `mode: copy`: when the copy was seen finished. A finished copy is never run again
    /// (stopping and resuming the group does not re-create the Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_completion_time: Option<Time>,
    /// Hash of the configuration last rendered into the group's ConfigMap (the pod templates'
    /// `pgflo.io/config-hash`); a pod in `pods` with another `configHash` runs an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The group's pods (replicator, worker, copy Job, managed NATS) as the kubelet reports
    /// them: readiness, restarts, container state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodState>,
    /// The worker's durable JetStream consumer: what is still to be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ConsumerStatus>,
}

/// One pod of the group, from its status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// `replicator`, `worker`, `copy` (the copy Job's pod) or `nats`.
    pub component: String,
    /// Pod name.
    pub name: String,
    /// The pod's `Ready` condition is true.
    pub ready: bool,
    /// Restarts of the pod's containers (summed).
    pub restarts: i32,
    /// State of the main container as `kubectl get pods` shows it: `Running`, a waiting reason
    /// (`ContainerCreating`, `CrashLoopBackOff`, `ImagePullBackOff`, ...), a terminated reason
    /// (`Completed`, `Error`, `OOMKilled`), `Pending` (no container started yet) or
    /// `Terminating`.
    pub state: String,
    /// The `pgflo.io/config-hash` the pod was created with (replicator, worker, copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// The worker's durable consumer on the group's stream (JetStream consumer info).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// Consumer name (`pgflo_<group>_consumer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stream name (`pgflo_<group>_stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Messages in the stream not yet delivered to the worker (`num_pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Messages delivered to the worker and not yet acknowledged, i.e. not yet applied to the
    /// sink (`num_ack_pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_pending: Option<i64>,
    /// Messages delivered more than once (`num_redelivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redelivered: Option<i64>,
    /// End-to-end lag at `readAt`, whole seconds: from the source commit of the oldest change
    /// the worker has not acknowledged (the first message after the consumer's ack floor; its
    /// `commit_time_us`, or the time JetStream stored it for a part of a large change after the
    /// first) to `readAt`; 0 when nothing is pending or unacknowledged. Changes the replicator
    /// has not published yet do not count: see `slot.lagBytes` for those. Clocks of the source
    /// and the operator. Unset when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// When the counts were read (kept with the counts when a later reading fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<Time>,
    /// Why the last reading failed (NATS unreachable, refused, ...); not set after a successful
    /// one. A failure only shows here: it does not degrade the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// State of the replication slot (from `pg_replication_slots`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotStatus {
    /// Slot name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Publication name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    /// Whether a replication connection uses the slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Oldest WAL position the slot holds (`X/Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_lsn: Option<String>,
    /// Position the replicator confirmed (`X/Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_flush_lsn: Option<String>,
    /// Apply lag: bytes of WAL between the server's current position and `confirmedFlushLsn`,
    /// the position up to which the replicator confirmed the changes (published to NATS and
    /// acknowledged). Changes older than that are no longer needed from the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Retained WAL: bytes of WAL between the server's current position and `restartLsn`, what
    /// the slot keeps on the source's disk (at least `lagBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_bytes: Option<i64>,
    /// `wal_status` of the slot (`reserved`, `extended`, `unreserved`, `lost`). `unreserved`
    /// (the slot will lose WAL at the next checkpoint unless it catches up) and `lost` degrade
    /// the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_wal_size: Option<i64>,
    /// When the slot was read (by the operator's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<Time>,
}
