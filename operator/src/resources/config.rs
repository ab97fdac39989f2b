//! The ConfigMap: pg_flo's flat YAML config files, rendered from typed structs, plus the rules
//! and routing files rendered from the group's Rule and Route resources into the runtime's own
//! models (`pg_flo_config::rules` / `routing`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use pg_flo_config::{routing as routing_file, rules as rules_file};
use serde::Serialize;

use super::{config_map_name, nats_name, BuildError, Valid, CONFIG_DIR, NATS_CLIENT_PORT};
use crate::crd::{Mode, ReplicationGroup, Route, Rule, RuleItem, SslMode};

/// File name of the replicator config in the ConfigMap.
pub const REPLICATOR_FILE: &str = "replicator.yaml";
/// File name of the worker config in the ConfigMap.
pub const WORKER_FILE: &str = "worker.yaml";
/// File name of the rules in the ConfigMap.
pub const RULES_FILE: &str = "rules.yaml";
/// File name of the routing in the ConfigMap.
pub const ROUTING_FILE: &str = "routing.yaml";

/// Mount path of the source CA certificate.
pub const SOURCE_CA_PATH: &str = "/var/run/pg-flo/source-ca/ca.crt";
/// Mount path of the target CA certificate.
pub const TARGET_CA_PATH: &str = "/var/run/pg-flo/target-ca/ca.crt";
/// Mount path of the NATS CA certificate.
pub const NATS_CA_PATH: &str = "/var/run/pg-flo/nats-ca/ca.crt";
/// Mount path of the NATS credentials file.
pub const NATS_CREDS_PATH: &str = "/var/run/pg-flo/nats-creds/nats.creds";

/// First NATS connection: how long the pods wait for NATS before exiting.
pub const NATS_CONNECT_TIMEOUT: &str = "5m";
/// Replicator sessions that may fail in a row (pg_flo's default is 3, about 7 s): at the
/// runtime's 8 s maximum wait this rides out about two hours of a NATS or source outage inside
/// the process, with `/readyz` failing meanwhile, instead of exiting into the kubelet's
/// CrashLoopBackOff, whose growing delay (up to 5 min) would hold replication back after the
/// outage ends.
pub const REPLICATOR_RETRY_ATTEMPTS: u32 = 1000;

/// pg_flo's flat config file (`--config`): kebab-case keys, absent keys omitted. Credentials
/// are never set here (they come from `PG_FLO_*` env variables bound to Secrets).
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct RuntimeConfig {
    /// Replication group name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// NATS server URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// NATS CA file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_ca_file: Option<String>,
    /// NATS credentials file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_creds_file: Option<String>,
    /// Source host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Source port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Source database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    /// Source sslmode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// Source CA file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
    /// Schema of the tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Tables (empty: all of the schema).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Copy only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<bool>,
    /// Copy, then stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_and_stream: Option<bool>,
    /// Copy workers per table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_copy_workers_per_table: Option<u32>,
    /// Replicate DDL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_ddl: Option<bool>,
    /// Admin server address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// How long to keep retrying the first NATS connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_connect_timeout: Option<String>,
    /// Consecutive failed replication sessions (without progress) before the replicator exits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_attempts: Option<u32>,
    /// Rules file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_config: Option<String>,
    /// Routing file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<String>,
    /// Changes per sink batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Dead-letter stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<bool>,
    /// File sink directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_output_dir: Option<String>,
    /// Webhook URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Webhook batch size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_batch_size: Option<u32>,
    /// Target host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// Target port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// Target database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_dbname: Option<String>,
    /// Target sslmode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_sslmode: Option<SslMode>,
    /// Target CA file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_sslrootcert: Option<String>,
    /// Create/alter target tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_sync_schema: Option<bool>,
    /// Disable FK checks on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_disable_foreign_keys: Option<bool>,
    /// Fire the target's triggers for replicated changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_fire_triggers: Option<bool>,
    /// Source host (schema sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    /// Source port (schema sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// Source database (schema sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_dbname: Option<String>,
    /// Source sslmode (schema sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_sslmode: Option<SslMode>,
    /// Source CA (schema sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_sslrootcert: Option<String>,
}

/// NATS URL the pods connect to: the managed client Service or the external URL.
pub(crate) fn nats_url(rg: &ReplicationGroup, v: &Valid) -> String {
    match &rg.spec.nats.external {
        Some(e) => e.url.clone(),
        None => format!(
            "nats://{}.{}.svc:{NATS_CLIENT_PORT}",
            nats_name(&v.name),
            v.namespace
        ),
    }
}

fn common(rg: &ReplicationGroup, v: &Valid) -> RuntimeConfig {
    let ext = rg.spec.nats.external.as_ref();
    RuntimeConfig {
        group: Some(v.name.clone()),
        nats_url: Some(nats_url(rg, v)),
        nats_ca_file: ext
            .and_then(|e| e.ca_secret.as_ref())
            .map(|_| NATS_CA_PATH.into()),
        nats_creds_file: ext
            .and_then(|e| e.credentials_secret.as_ref())
            .map(|_| NATS_CREDS_PATH.into()),
        metrics_addr: Some(format!("0.0.0.0:{}", super::METRICS_PORT)),
        // A managed NATS may still be starting (image pull, volume attach) when the pods do.
        nats_connect_timeout: Some(NATS_CONNECT_TIMEOUT.into()),
        ..RuntimeConfig::default()
    }
}

/// The replicator's config file.
pub(crate) fn replicator_config(rg: &ReplicationGroup, v: &Valid) -> RuntimeConfig {
    let s = &rg.spec.source;
    RuntimeConfig {
        host: Some(s.host.clone()),
        port: Some(s.port),
        dbname: Some(s.database.clone()),
        sslmode: Some(s.ssl_mode),
        sslrootcert: s.ca_secret.as_ref().map(|_| SOURCE_CA_PATH.into()),
        schema: Some(s.schema.clone()),
        tables: s.tables.clone(),
        copy: (rg.spec.mode == Mode::Copy).then_some(true),
        copy_and_stream: (rg.spec.mode == Mode::CopyAndStream).then_some(true),
        max_copy_workers_per_table: (rg.spec.mode != Mode::Stream)
            .then_some(rg.spec.copy_workers_per_table),
        track_ddl: Some(rg.spec.track_ddl),
        retry_max_attempts: Some(REPLICATOR_RETRY_ATTEMPTS),
        ..common(rg, v)
    }
}

/// The worker's config file.
pub(crate) fn worker_config(
    rg: &ReplicationGroup,
    v: &Valid,
    rules: bool,
    routes: bool,
) -> RuntimeConfig {
    let mut c = RuntimeConfig {
        rules_config: rules.then(|| format!("{CONFIG_DIR}/{RULES_FILE}")),
        routing_config: routes.then(|| format!("{CONFIG_DIR}/{ROUTING_FILE}")),
        batch_size: rg.spec.worker_batch_size,
        dead_letter: Some(rg.spec.dead_letter),
        ..common(rg, v)
    };
    let sink = &rg.spec.sink;
    if let Some(f) = &sink.file {
        c.file_output_dir = Some(f.path.clone());
    }
    if let Some(w) = &sink.webhook {
        c.webhook_url = Some(w.url.clone());
        c.webhook_batch_size = w.batch_size;
    }
    if let Some(p) = &sink.postgres {
        c.target_host = Some(p.host.clone());
        c.target_port = Some(p.port);
        c.target_dbname = Some(p.database.clone());
        c.target_sslmode = Some(p.ssl_mode);
        c.target_sslrootcert = p.ca_secret.as_ref().map(|_| TARGET_CA_PATH.into());
        c.target_sync_schema = Some(p.sync_schema);
        c.target_disable_foreign_keys = Some(p.disable_foreign_keys);
        c.target_fire_triggers = p.fire_triggers.then_some(true);
        if p.sync_schema {
            let s = &rg.spec.source;
            c.source_host = Some(s.host.clone());
            c.source_port = Some(s.port);
            c.source_dbname = Some(s.database.clone());
            c.source_sslmode = Some(s.ssl_mode);
            c.source_sslrootcert = s.ca_secret.as_ref().map(|_| SOURCE_CA_PATH.into());
        }
    }
    c
}

fn sorted_by_name<'a, T: kube::Resource>(
    items: &'a [T],
    group: &str,
    group_of: impl Fn(&T) -> &str,
) -> Vec<&'a T> {
    let mut v: Vec<&T> = items.iter().filter(|i| group_of(i) == group).collect();
    v.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    v
}

fn rules_yaml(group: &str, rules: &[Rule]) -> Result<Option<String>, BuildError> {
    let mine = sorted_by_name(rules, group, |r| r.spec.group_ref.name.as_str());
    if mine.is_empty() {
        return Ok(None);
    }
    // Sorted by table; the rules of several Rule resources of one table are concatenated in
    // resource-name order.
    let mut tables: BTreeMap<String, Vec<rules_file::Rule>> = BTreeMap::new();
    for r in mine {
        tables
            .entry(r.spec.table.clone())
            .or_default()
            .extend(r.spec.rules.iter().map(RuleItem::file_rule));
    }
    serde_yaml::to_string(&rules_file::RulesFile::new(tables))
        .map(Some)
        .map_err(|source| BuildError::Yaml {
            file: RULES_FILE,
            source,
        })
}

fn routing_yaml(group: &str, routes: &[Route]) -> Result<Option<String>, BuildError> {
    let mine = sorted_by_name(routes, group, |r| r.spec.group_ref.name.as_str());
    if mine.is_empty() {
        return Ok(None);
    }
    // Two Routes of one source table: the first by name wins (the Route controller reports
    // the conflict on the other).
    let mut file: BTreeMap<String, routing_file::Route> = BTreeMap::new();
    for r in mine {
        file.entry(r.spec.source_table.clone())
            .or_insert_with(|| r.spec.file_route());
    }
    serde_yaml::to_string(&routing_file::RoutingFile::new(file))
        .map(Some)
        .map_err(|source| BuildError::Yaml {
            file: ROUTING_FILE,
            source,
        })
}

fn yaml(file: &'static str, c: &RuntimeConfig) -> Result<String, BuildError> {
    serde_yaml::to_string(c).map_err(|source| BuildError::Yaml { file, source })
}

/// The ConfigMap `<group>-pg-flo-config`. `rules` / `routes` of other groups are ignored.
pub fn config_map(
    rg: &ReplicationGroup,
    rules: &[Rule],
    routes: &[Route],
) -> Result<ConfigMap, BuildError> {
    let v = Valid::new(rg)?;
    let rules = rules_yaml(&v.name, rules)?;
    let routes = routing_yaml(&v.name, routes)?;
    let mut data = BTreeMap::new();
    data.insert(
        REPLICATOR_FILE.to_string(),
        yaml(REPLICATOR_FILE, &replicator_config(rg, &v))?,
    );
    data.insert(
        WORKER_FILE.to_string(),
        yaml(
            WORKER_FILE,
            &worker_config(rg, &v, rules.is_some(), routes.is_some()),
        )?,
    );
    if let Some(r) = rules {
        data.insert(RULES_FILE.to_string(), r);
    }
    if let Some(r) = routes {
        data.insert(ROUTING_FILE.to_string(), r);
    }
    Ok(ConfigMap {
        metadata: v.meta(config_map_name(&v.name), "config"),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// Stable content hash of a ConfigMap's `data` and `binaryData` (FNV-1a 64, hex), independent
/// of its metadata. Keys are length-prefixed so `{"ab": "c"}` and `{"a": "bc"}` differ.
pub fn config_hash(cm: &ConfigMap) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for chunk in [&(bytes.len() as u64).to_le_bytes()[..], bytes] {
            for b in chunk {
                h ^= u64::from(*b);
                h = h.wrapping_mul(PRIME);
            }
        }
    };
    for (k, val) in cm.data.iter().flatten() {
        feed(b"d");
        feed(k.as_bytes());
        feed(val.as_bytes());
    }
    for (k, val) in cm.binary_data.iter().flatten() {
        feed(b"b");
        feed(k.as_bytes());
        feed(&val.0);
    }
    format!("{h:016x}")
}
