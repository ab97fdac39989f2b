//! The ConfigMap: pg_flo's flat YAML config files, rendered from the runtime's own settings
//! model (`pg_flo_config::runtime::Settings`, which the runtime parses them with; absent
//! settings and secrets are never written), plus the rules and routing files rendered from the
//! group's Rule and Route resources into the runtime's own models (`pg_flo_config::rules` /
//! `routing`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use pg_flo_config::runtime::{
    ConnectionSettings, GroupSettings, PostgresSinkSettings, ReplicatorSettings, Settings,
    WorkerSettings,
};
use pg_flo_config::{routing as routing_file, rules as rules_file};

use super::nats::{stream_max_bytes, RUNTIME_USER};
use super::{config_map_name, BuildError, Valid, CONFIG_DIR};
use crate::crd::{Mode, NatsSpec, ReplicationGroup, Route, Rule, RuleItem};

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
/// Mount path of the NATS client certificate (external NATS, mutual TLS).
pub const NATS_CLIENT_CERT_PATH: &str = "/var/run/pg-flo/nats-client/tls.crt";
/// Mount path of the NATS client key (external NATS, mutual TLS).
pub const NATS_CLIENT_KEY_PATH: &str = "/var/run/pg-flo/nats-client/tls.key";
/// ConfigMap annotation holding the `spec.nats` the config was rendered with (JSON): what the
/// pods use, against which the controller judges a change of `spec.nats`.
pub const NATS_SPEC_ANNOTATION: &str = "pgflo.io/nats";

/// First NATS connection: how long the pods wait for NATS before exiting.
pub const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Replicator sessions that may fail in a row (pg_flo's default is 3, about 7 s): at the
/// runtime's 8 s maximum wait this rides out about two hours of a NATS or source outage inside
/// the process, with `/readyz` failing meanwhile, instead of exiting into the kubelet's
/// CrashLoopBackOff, whose growing delay (up to 5 min) would hold replication back after the
/// outage ends.
pub const REPLICATOR_RETRY_ATTEMPTS: u32 = 1000;

/// NATS URL the pods connect to: the managed client Service or the external URL.
pub(crate) fn nats_url(rg: &ReplicationGroup, v: &Valid) -> String {
    match &rg.spec.nats.external {
        Some(e) => e.url.clone(),
        None => super::managed_nats_url(&v.name, &v.namespace),
    }
}

/// The settings both config files share: the group, its NATS server and how to authenticate
/// (secrets come as env variables, see `nats_client.rs`), the admin address.
///
/// Managed NATS: user [`RUNTIME_USER`], the CA of `tls.secretName` when set, one stream copy
/// per server. External NATS: the files of its Secrets, `streamReplicas`.
fn common(rg: &ReplicationGroup, v: &Valid) -> GroupSettings {
    let ext = rg.spec.nats.external.as_ref();
    let managed = rg.spec.nats.managed.as_ref();
    let client_cert = ext.and_then(|e| e.client_cert_secret.as_ref()).is_some();
    GroupSettings {
        group: Some(v.group.clone()),
        nats_url: Some(nats_url(rg, v)),
        nats_ca_file: (ext.and_then(|e| e.ca_secret.as_ref()).is_some()
            || managed.and_then(|m| m.tls.as_ref()).is_some())
        .then(|| NATS_CA_PATH.into()),
        nats_creds_file: ext
            .and_then(|e| e.credentials_secret.as_ref())
            .map(|_| NATS_CREDS_PATH.into()),
        nats_user: managed.map(|_| RUNTIME_USER.to_owned()),
        nats_tls_cert_file: client_cert.then(|| NATS_CLIENT_CERT_PATH.into()),
        nats_tls_key_file: client_cert.then(|| NATS_CLIENT_KEY_PATH.into()),
        nats_stream_replicas: match (managed, ext) {
            (Some(m), _) => Some(u64::from(m.replicas.max(1))),
            (None, Some(e)) => e.stream_replicas.map(u64::from),
            (None, None) => None,
        },
        metrics_addr: Some(SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            super::METRICS_PORT,
        ))),
        // A managed NATS may still be starting (image pull, volume attach) when the pods do.
        nats_connect_timeout: Some(NATS_CONNECT_TIMEOUT),
        ..GroupSettings::default()
    }
}

/// The source database's settings (credentials come from env variables bound to Secrets).
fn source(rg: &ReplicationGroup) -> ConnectionSettings {
    let s = &rg.spec.source;
    ConnectionSettings {
        host: Some(s.host.clone()),
        port: Some(s.port),
        dbname: Some(s.database.clone()),
        sslmode: Some(s.ssl_mode),
        sslrootcert: s.ca_secret.as_ref().map(|_| SOURCE_CA_PATH.into()),
        ..ConnectionSettings::default()
    }
}

/// The replicator's config file.
pub(crate) fn replicator_config(rg: &ReplicationGroup, v: &Valid) -> Settings {
    let s = &rg.spec.source;
    Settings {
        group: common(rg, v),
        source: source(rg),
        replicator: ReplicatorSettings {
            schema: Some(s.schema.clone()),
            tables: s.tables.clone(),
            copy: (rg.spec.mode == Mode::Copy).then_some(true),
            copy_and_stream: (rg.spec.mode == Mode::CopyAndStream).then_some(true),
            max_copy_workers_per_table: (rg.spec.mode != Mode::Stream)
                .then_some(i64::from(rg.spec.copy_workers_per_table)),
            track_ddl: Some(rg.spec.track_ddl),
            retry_max_attempts: Some(REPLICATOR_RETRY_ATTEMPTS),
            // A managed NATS's stream fills at most its share of the volume: then the
            // replicator waits instead of JetStream running out of disk.
            nats_stream_max_bytes: rg
                .spec
                .nats
                .managed
                .as_ref()
                .and_then(|m| stream_max_bytes(&m.storage_size)),
            ..ReplicatorSettings::default()
        },
        ..Settings::default()
    }
}

/// The worker's config file.
pub(crate) fn worker_config(
    rg: &ReplicationGroup,
    v: &Valid,
    rules: bool,
    routes: bool,
) -> Settings {
    let sink = &rg.spec.sink;
    let mut c = Settings {
        group: common(rg, v),
        worker: WorkerSettings {
            rules_config: rules.then(|| format!("{CONFIG_DIR}/{RULES_FILE}").into()),
            routing_config: routes.then(|| format!("{CONFIG_DIR}/{ROUTING_FILE}").into()),
            batch_size: rg.spec.worker_batch_size.map(u64::from),
            dead_letter: Some(rg.spec.dead_letter),
            ..WorkerSettings::default()
        },
        ..Settings::default()
    };
    if let Some(f) = &sink.file {
        c.file.file_output_dir = Some(f.path.clone().into());
    }
    if let Some(w) = &sink.webhook {
        c.webhook.webhook_url = Some(w.url.clone());
        c.webhook.webhook_batch_size = w.batch_size.map(u64::from);
    }
    if let Some(p) = &sink.postgres {
        let source = if p.sync_schema {
            source(rg)
        } else {
            ConnectionSettings::default()
        };
        c.postgres = PostgresSinkSettings {
            target_host: Some(p.host.clone()),
            target_port: Some(p.port),
            target_dbname: Some(p.database.clone()),
            target_sslmode: Some(p.ssl_mode),
            target_sslrootcert: p.ca_secret.as_ref().map(|_| TARGET_CA_PATH.into()),
            target_sync_schema: Some(p.sync_schema),
            target_disable_foreign_keys: Some(p.disable_foreign_keys),
            target_fire_triggers: p.fire_triggers.then_some(true),
            source_host: source.host,
            source_port: source.port,
            source_dbname: source.dbname,
            source_sslmode: source.sslmode,
            source_sslrootcert: source.sslrootcert,
            ..PostgresSinkSettings::default()
        };
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

/// `<name>=<generation>` of `items`, comma-joined (the value of [`super::RULES_ANNOTATION`] and
/// [`super::ROUTES_ANNOTATION`]).
fn members<T: kube::Resource>(items: &[&T]) -> String {
    items
        .iter()
        .map(|i| {
            format!(
                "{}={}",
                i.meta().name.as_deref().unwrap_or_default(),
                i.meta().generation.unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The `(name, generation)` pairs an annotation written by [`config_map`] lists.
pub fn rendered_members(annotation: &str) -> Vec<(&str, i64)> {
    annotation
        .split(',')
        .filter_map(|m| {
            let (name, generation) = m.rsplit_once('=')?;
            Some((name, generation.parse().ok()?))
        })
        .collect()
}

/// The Routes rendered for `group`: the first by name of each source table (the Route
/// controller reports the conflict on the others).
fn rendered_routes<'a>(group: &str, routes: &'a [Route]) -> Vec<&'a Route> {
    let mut seen = std::collections::BTreeSet::new();
    sorted_by_name(routes, group, |r| r.spec.group_ref.name.as_str())
        .into_iter()
        .filter(|r| seen.insert(r.spec.source_table.clone()))
        .collect()
}

/// The rules file of the group's Rules `mine` (sorted by name).
fn rules_yaml(mine: &[&Rule]) -> Result<Option<String>, BuildError> {
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

/// The routing file of the Routes [`rendered_routes`] chose (one per source table).
fn routing_yaml(winners: &[&Route]) -> Result<Option<String>, BuildError> {
    if winners.is_empty() {
        return Ok(None);
    }
    let file: BTreeMap<String, routing_file::Route> = winners
        .iter()
        .map(|r| (r.spec.source_table.clone(), r.spec.file_route()))
        .collect();
    serde_yaml::to_string(&routing_file::RoutingFile::new(file))
        .map(Some)
        .map_err(|source| BuildError::Yaml {
            file: ROUTING_FILE,
            source,
        })
}

fn yaml(file: &'static str, c: &Settings) -> Result<String, BuildError> {
    serde_yaml::to_string(c).map_err(|source| BuildError::Yaml { file, source })
}

/// The ConfigMap `<group>-pg-flo-config`. `rules` / `routes` of other groups are ignored.
pub fn config_map(
    rg: &ReplicationGroup,
    rules: &[Rule],
    routes: &[Route],
) -> Result<ConfigMap, BuildError> {
    let v = Valid::new(rg)?;
    let my_rules = sorted_by_name(rules, &v.name, |r| r.spec.group_ref.name.as_str());
    let my_routes = rendered_routes(&v.name, routes);
    let rules = rules_yaml(&my_rules)?;
    let routes = routing_yaml(&my_routes)?;
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
    // Which generation of which Rule and Route the files contain (the hash covers `data`
    // only, so these never roll the pods by themselves), and the NATS spec the group runs.
    let mut annotations = BTreeMap::from([(
        NATS_SPEC_ANNOTATION.to_string(),
        serde_json::to_string(&rg.spec.nats).map_err(BuildError::Json)?,
    )]);
    if !my_rules.is_empty() {
        annotations.insert(super::RULES_ANNOTATION.to_string(), members(&my_rules));
    }
    if !my_routes.is_empty() {
        annotations.insert(super::ROUTES_ANNOTATION.to_string(), members(&my_routes));
    }
    let mut metadata = v.meta(config_map_name(&v.name), "config");
    metadata.annotations = Some(annotations);
    Ok(ConfigMap {
        metadata,
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// The `spec.nats` a ConfigMap of [`config_map`] was rendered with (`None` without the
/// annotation, e.g. rendered by an older operator, or when it cannot be read).
pub fn applied_nats(cm: &ConfigMap) -> Option<NatsSpec> {
    let json = cm
        .metadata
        .annotations
        .as_ref()?
        .get(NATS_SPEC_ANNOTATION)?;
    serde_json::from_str(json).ok()
}

/// Stable content hash of a ConfigMap's `data` and `binaryData` (FNV-1a 64, hex), independent
/// of its metadata. Keys are length-prefixed so `{"ab": "c"}` and `{"a": "bc"}` differ.
pub fn config_hash(cm: &ConfigMap) -> String {
    // `data` hashes as `pg_flo_config::files_hash`, so a runtime that read exactly these files
    // reports the same value in `pg_flo_config_info{hash}`.
    let mut h = pg_flo_config::FnvHasher::default();
    for (k, val) in cm.data.iter().flatten() {
        h.feed(b"d");
        h.feed(k.as_bytes());
        h.feed(val.as_bytes());
    }
    for (k, val) in cm.binary_data.iter().flatten() {
        h.feed(b"b");
        h.feed(k.as_bytes());
        h.feed(&val.0);
    }
    h.hex()
}
