//! Snapshot and property tests of the pure resource builders. Snapshots live in
//! `tests/snapshots/*.yaml`; regenerate with `UPDATE_SNAPSHOTS=1 cargo nextest run -p
//! pg-flo-operator --test builders` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::path::PathBuf;

use pg_flo_operator::crd::{
    DesiredState, FileSink, ManagedNats, NatsSpec, PostgresSink, ReplicationGroup, Route, Rule,
    SecretKeyRef, SecretRef, SinkSpec, StdoutSink, WebhookSink,
};
use pg_flo_operator::resources::{build, config_hash, config_map, Desired};
use serde::de::DeserializeOwned;
use support::{container, pod_hash, pod_spec};

const IMAGE: &str = "ghcr.io/pg-flo/pg-flo:test";

fn example<K: DeserializeOwned>(name: &str) -> K {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// An example group as read from the API server: namespace and uid set.
fn group(name: &str) -> ReplicationGroup {
    let mut rg: ReplicationGroup = example(name);
    rg.metadata.namespace = Some("cdc".into());
    rg.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    rg
}

fn minimal() -> ReplicationGroup {
    group("replicationgroup-minimal.yaml")
}

fn full() -> ReplicationGroup {
    group("replicationgroup-full.yaml")
}

fn rule() -> Rule {
    example("rule.yaml")
}

fn route() -> Route {
    example("route.yaml")
}

fn with_sink(mut rg: ReplicationGroup, sink: SinkSpec) -> ReplicationGroup {
    rg.spec.sink = sink;
    rg
}

fn key(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

fn render(d: &Desired) -> String {
    let mut docs = vec![
        serde_yaml::to_string(&d.config_map).unwrap(),
        serde_yaml::to_string(&d.service_account).unwrap(),
        serde_yaml::to_string(&d.replicator).unwrap(),
        serde_yaml::to_string(&d.worker).unwrap(),
    ];
    if let Some(j) = &d.copy_job {
        docs.push(serde_yaml::to_string(j).unwrap());
    }
    if let Some(n) = &d.nats {
        docs.push(serde_yaml::to_string(&n.config_map).unwrap());
        docs.push(serde_yaml::to_string(&n.stateful_set).unwrap());
        docs.push(serde_yaml::to_string(&n.client_service).unwrap());
        docs.push(serde_yaml::to_string(&n.headless_service).unwrap());
        docs.push(serde_yaml::to_string(&n.pdb).unwrap());
        docs.push(serde_yaml::to_string(&n.network_policy).unwrap());
    }
    docs.iter().map(|d| format!("---\n{d}")).collect()
}

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.yaml"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to write it",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  - {e}\n  + {a}", i + 1))
            .collect();
        panic!(
            "{} differs ({} vs {} lines):\n{}\nrerun with UPDATE_SNAPSHOTS=1 and review `git diff`",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

fn built(rg: &ReplicationGroup, keys: &[String]) -> Desired {
    let mut r = rule();
    r.spec.group_ref.name = rg.metadata.name.clone().unwrap();
    let mut rt = route();
    rt.spec.group_ref.name = rg.metadata.name.clone().unwrap();
    build(rg, &[r], &[rt], IMAGE, keys).unwrap()
}

#[test]
fn snapshot_minimal() {
    snapshot(
        "minimal",
        &render(&build(&minimal(), &[], &[], IMAGE, &[]).unwrap()),
    );
}

#[test]
fn snapshot_copy_mode_runs_the_replicator_as_a_job() {
    let mut rg = minimal();
    rg.spec.mode = pg_flo_operator::crd::Mode::Copy;
    rg.spec.state = pg_flo_operator::crd::DesiredState::Paused;
    let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
    let job = d.copy_job.as_ref().expect("copy mode has a Job");
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("orders-copy"));
    assert_eq!(spec.suspend, Some(true), "paused suspends the copy");
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
    assert_eq!(
        pod.containers[0].args,
        container(&d.replicator).args,
        "the same replicator command"
    );
    snapshot("copy-mode", &render(&d));
    assert!(build(&minimal(), &[], &[], IMAGE, &[])
        .unwrap()
        .copy_job
        .is_none());
}

#[test]
fn snapshot_full() {
    snapshot("full", &render(&built(&full(), &[])));
}

#[test]
fn snapshot_managed_nats_3() {
    let mut rg = minimal();
    rg.spec.nats = NatsSpec {
        managed: Some(ManagedNats {
            replicas: 3,
            storage_size: "10Gi".into(),
            storage_class: Some("fast".into()),
            image: None,
            tls: None,
            pod: Default::default(),
            metrics: Some(pg_flo_operator::crd::NatsMetrics {
                enabled: true,
                ..Default::default()
            }),
        }),
        external: None,
    };
    snapshot(
        "managed-nats-3",
        &render(&build(&rg, &[], &[], IMAGE, &[]).unwrap()),
    );
}

#[test]
fn snapshot_external_nats_stdout() {
    let rg = with_sink(
        full(),
        SinkSpec {
            stdout: Some(StdoutSink {}),
            ..SinkSpec::default()
        },
    );
    snapshot(
        "external-nats-stdout",
        &render(&build(&rg, &[], &[], IMAGE, &[]).unwrap()),
    );
}

#[test]
fn snapshot_postgres_sink_no_sync() {
    let rg = with_sink(
        minimal(),
        SinkSpec {
            postgres: Some(PostgresSink {
                host: "target.db.svc".into(),
                port: 5432,
                database: "dw".into(),
                user: key("dw", "user"),
                password: key("dw", "password"),
                ssl_mode: Default::default(),
                ca_secret: None,
                sync_schema: false,
                disable_foreign_keys: false,
                fire_triggers: false,
            }),
            ..SinkSpec::default()
        },
    );
    snapshot("sink-postgres", &render(&built(&rg, &[])));
}

fn webhook_group() -> ReplicationGroup {
    with_sink(
        minimal(),
        SinkSpec {
            webhook: Some(WebhookSink {
                url: "https://hooks.example.com/cdc".into(),
                headers_secret: Some(SecretRef {
                    name: "hook-headers".into(),
                }),
                batch_size: Some(50),
            }),
            ..SinkSpec::default()
        },
    )
}

#[test]
fn snapshot_webhook_sink() {
    let keys = ["X-Api-Key".to_string(), "Authorization".to_string()];
    snapshot("sink-webhook", &render(&built(&webhook_group(), &keys)));
}

fn file_group() -> ReplicationGroup {
    with_sink(
        minimal(),
        SinkSpec {
            file: Some(FileSink {
                path: "/var/lib/pg-flo/out".into(),
                claim_name: Some("cdc-output".into()),
            }),
            ..SinkSpec::default()
        },
    )
}

#[test]
fn snapshot_file_sink() {
    snapshot("sink-file", &render(&built(&file_group(), &[])));
}

#[test]
fn replicator_and_worker_are_one_pod_stateful_sets() {
    for rg in [minimal(), full()] {
        let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
        for sts in [&d.replicator, &d.worker] {
            let spec = sts.spec.as_ref().unwrap();
            assert_eq!(spec.replicas, Some(1));
            assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
            let strategy = spec.update_strategy.as_ref().unwrap();
            assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
            assert_eq!(strategy.rolling_update, None);
            assert_eq!(spec.service_name.as_deref(), Some(""));
            assert_eq!(spec.volume_claim_templates, None);
            let labels = spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap();
            for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
                assert_eq!(
                    labels.get(k),
                    Some(v),
                    "the pods carry the selector label {k}"
                );
            }
        }
    }
    let names = build(&minimal(), &[], &[], IMAGE, &[]).unwrap();
    assert_eq!(
        names.replicator.metadata.name.as_deref(),
        Some("orders-replicator")
    );
    assert_eq!(names.worker.metadata.name.as_deref(), Some("orders-worker"));
}

/// StatefulSet pods carry `controller-revision-hash: <name>-<10 chars>`, at most 63: the names
/// stay within 52 characters for every valid `metadata.name` (at most 44).
#[test]
fn workload_names_fit_the_stateful_set_limit() {
    use pg_flo_operator::resources::{workload_name, MAX_STATEFUL_SET_NAME};
    let name41 = "a".repeat(41);
    assert_eq!(
        workload_name(&name41, "replicator"),
        format!("{name41}-replicator")
    );
    for len in [42, 43, 44] {
        let name = "b".repeat(len);
        let got = workload_name(&name, "replicator");
        assert_eq!(got.len(), MAX_STATEFUL_SET_NAME, "{got}");
        assert!(got.starts_with(&format!("{name}-")), "{got}");
        assert_ne!(got, workload_name(&"b".repeat(len + 1), "replicator"));
        assert_eq!(workload_name(&name, "worker"), format!("{name}-worker"));
    }
}

/// The runtime drains for `SHUTDOWN_DRAIN_TIMEOUT` on SIGTERM; the kubelet must not kill it
/// earlier.
#[test]
fn pods_get_more_time_to_stop_than_the_runtime_drains() {
    use pg_flo_operator::resources::{RUNTIME_DRAIN_TIMEOUT, TERMINATION_GRACE_PERIOD_SECONDS};
    assert_eq!(
        RUNTIME_DRAIN_TIMEOUT,
        pg_flo::source::replicator::SHUTDOWN_DRAIN_TIMEOUT
    );
    assert_eq!(TERMINATION_GRACE_PERIOD_SECONDS, 60);
    assert!(
        TERMINATION_GRACE_PERIOD_SECONDS as u64 >= RUNTIME_DRAIN_TIMEOUT.as_secs() + 30,
        "room for the final confirmation, commit and lease release"
    );
    let mut rg = minimal();
    rg.spec.mode = pg_flo_operator::crd::Mode::Copy;
    let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
    let job = d.copy_job.unwrap().spec.unwrap().template.spec.unwrap();
    for pod in [pod_spec(&d.replicator), pod_spec(&d.worker), &job] {
        assert_eq!(pod.termination_grace_period_seconds, Some(60));
    }
}

#[test]
fn runtime_containers_report_their_last_log_lines_on_failure() {
    // The runtime writes no termination message file: the kubelet falls back to the last log
    // lines (`pg_flo stopped error=...`), which the status shows for a crash-looping pod.
    let mut rg = minimal();
    rg.spec.mode = pg_flo_operator::crd::Mode::Copy;
    let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
    let job = d.copy_job.unwrap().spec.unwrap().template.spec.unwrap();
    for pod in [pod_spec(&d.replicator), pod_spec(&d.worker), &job] {
        assert_eq!(
            pod.containers[0].termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }
}

fn quantities(r: &k8s_openapi::api::core::v1::ResourceRequirements) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .requests
        .iter()
        .flatten()
        .map(|(k, q)| (format!("requests.{k}"), q.0.clone()))
        .chain(
            r.limits
                .iter()
                .flatten()
                .map(|(k, q)| (format!("limits.{k}"), q.0.clone())),
        )
        .collect();
    v.sort();
    v
}

#[test]
fn default_requests_unless_the_group_sets_resources() {
    let mut rg = minimal();
    rg.spec.mode = pg_flo_operator::crd::Mode::Copy;
    let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
    let job = d.copy_job.unwrap().spec.unwrap().template.spec.unwrap();
    let pair = |cpu: &str, mem: &str| {
        vec![
            ("requests.cpu".to_string(), cpu.to_string()),
            ("requests.memory".to_string(), mem.to_string()),
        ]
    };
    for (what, c, want) in [
        (
            "replicator",
            container(&d.replicator).clone(),
            pair("100m", "128Mi"),
        ),
        (
            "worker",
            container(&d.worker).clone(),
            pair("100m", "256Mi"),
        ),
        ("copy Job", job.containers[0].clone(), pair("250m", "256Mi")),
    ] {
        assert_eq!(quantities(c.resources.as_ref().unwrap()), want, "{what}");
    }
    // The full example sets its own: they replace the defaults as a whole.
    let d = build(&full(), &[], &[], IMAGE, &[]).unwrap();
    assert_eq!(
        quantities(container(&d.replicator).resources.as_ref().unwrap()),
        vec![
            ("limits.memory".to_string(), "256Mi".to_string()),
            ("requests.cpu".to_string(), "100m".to_string()),
            ("requests.memory".to_string(), "128Mi".to_string()),
        ]
    );
    assert_eq!(
        quantities(container(&d.worker).resources.as_ref().unwrap()),
        pair("200m", "256Mi")
    );
}

/// Every pod override of `spec.replicator`, `spec.worker` and `spec.copyJob` lands in its pod
/// template; the operator's own labels and annotations win.
#[test]
fn pod_overrides_reach_each_component_the_copy_job_and_the_managed_nats() {
    use pg_flo_operator::crd::{Mode, WorkloadSpec};
    let spec = |who: &str| -> WorkloadSpec {
        serde_yaml::from_str(&format!(
            "resources: {{requests: {{cpu: 1, memory: 1Gi}}}}
nodeSelector: {{pool: {who}}}
tolerations: [{{key: dedicated, operator: Equal, value: {who}, effect: NoSchedule}}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{{matchExpressions: [{{key: zone, operator: In, values: [{who}]}}]}}]
topologySpreadConstraints:
  - {{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}}
priorityClassName: {who}-priority
podAnnotations: {{team: {who}, pgflo.io/config-hash: forged}}
podLabels: {{team: {who}, app.kubernetes.io/component: forged, pgflo.io/group: forged}}"
        ))
        .unwrap()
    };
    let mut rg = minimal();
    rg.spec.replicator = Some(spec("rep"));
    rg.spec.worker = Some(spec("wrk"));
    let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
    let mut copy = rg.clone();
    copy.spec.mode = Mode::Copy;
    let job_of = |rg: &ReplicationGroup| {
        build(rg, &[], &[], IMAGE, &[])
            .unwrap()
            .copy_job
            .unwrap()
            .spec
            .unwrap()
            .template
    };
    // Without spec.copyJob, the Job takes the replicator's; with it, its own.
    let job_default = job_of(&copy);
    copy.spec.copy_job = Some(spec("cpy"));
    let job_own = job_of(&copy);
    // The managed NATS takes the same fields at spec.nats.managed (3 servers: the group's
    // topology spread replaces the default one).
    let mut nats: ManagedNats = serde_yaml::from_str("replicas: 3").unwrap();
    nats.pod = spec("nts");
    let mut with_nats = minimal();
    with_nats.spec.nats.managed = Some(nats);
    let nats_template = build(&with_nats, &[], &[], IMAGE, &[])
        .unwrap()
        .nats
        .unwrap()
        .stateful_set
        .spec
        .unwrap()
        .template;
    assert_eq!(
        nats_template
            .spec
            .as_ref()
            .unwrap()
            .topology_spread_constraints
            .as_ref()
            .unwrap()
            .len(),
        1,
        "replaced, not added to"
    );
    let templates = [
        (
            "rep",
            "replicator",
            d.replicator.spec.clone().unwrap().template,
        ),
        ("wrk", "worker", d.worker.spec.clone().unwrap().template),
        ("rep", "replicator", job_default),
        ("cpy", "replicator", job_own),
        ("nts", "nats", nats_template),
    ];
    for (who, component, t) in templates {
        let meta = t.metadata.unwrap();
        let pod = t.spec.unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], who);
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].value.as_deref(),
            Some(who)
        );
        let terms = &pod
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(
            terms[0].match_expressions.as_ref().unwrap()[0].values,
            Some(vec![who.to_string()])
        );
        let spread = pod.topology_spread_constraints.as_ref().unwrap();
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(pod.priority_class_name, Some(format!("{who}-priority")));
        assert_eq!(
            quantities(pod.containers[0].resources.as_ref().unwrap()),
            vec![
                ("requests.cpu".to_string(), "1".to_string()),
                ("requests.memory".to_string(), "1Gi".to_string())
            ]
        );
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], who);
        assert_eq!(labels["app.kubernetes.io/component"], component);
        assert_eq!(labels["pgflo.io/group"], "orders");
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations["team"], who);
        assert_ne!(annotations["pgflo.io/config-hash"], "forged");
    }
}

#[test]
fn the_copy_job_replaces_only_failed_pods_and_has_no_probes() {
    let mut rg = minimal();
    rg.spec.mode = pg_flo_operator::crd::Mode::Copy;
    let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
    let spec = d.copy_job.unwrap().spec.unwrap();
    assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
    let c = &pod.containers[0];
    assert_eq!((&c.liveness_probe, &c.readiness_probe), (&None, &None));
    // The StatefulSets keep theirs.
    assert!(container(&d.worker).readiness_probe.is_some());
    assert!(container(&d.replicator).liveness_probe.is_some());
}

#[test]
fn the_file_sink_writes_to_its_claim_or_an_empty_dir() {
    let volume = |rg: &ReplicationGroup| {
        let d = build(rg, &[], &[], IMAGE, &[]).unwrap();
        let pod = pod_spec(&d.worker).clone();
        let mount = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "file-output")
            .unwrap()
            .clone();
        assert_eq!(mount.mount_path, "/var/lib/pg-flo/out");
        assert_ne!(mount.read_only, Some(true));
        pod.volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "file-output")
            .unwrap()
    };
    let claimed = volume(&file_group());
    assert_eq!(
        claimed.persistent_volume_claim.unwrap().claim_name,
        "cdc-output"
    );
    assert_eq!(claimed.empty_dir, None);
    let mut rg = file_group();
    rg.spec.sink.file.as_mut().unwrap().claim_name = None;
    let ephemeral = volume(&rg);
    assert!(ephemeral.empty_dir.is_some());
    assert_eq!(ephemeral.persistent_volume_claim, None);
}

/// The runtime group is `status.groupName`, else `spec.groupName`, else `<namespace>_<name>`;
/// Kubernetes object names stay `metadata.name`.
#[test]
fn the_rendered_group_name() {
    let group_of = |rg: &ReplicationGroup| -> String {
        let d = build(rg, &[], &[], IMAGE, &[]).unwrap();
        let cfg: serde_yaml::Value =
            serde_yaml::from_str(&d.config_map.data.as_ref().unwrap()["replicator.yaml"]).unwrap();
        let worker: serde_yaml::Value =
            serde_yaml::from_str(&d.config_map.data.as_ref().unwrap()["worker.yaml"]).unwrap();
        assert_eq!(cfg["group"], worker["group"]);
        assert_eq!(
            d.config_map.metadata.name.as_deref(),
            Some("orders-pg-flo-config")
        );
        cfg["group"].as_str().unwrap().to_owned()
    };
    let mut rg = minimal();
    assert_eq!(group_of(&rg), "cdc_orders");
    rg.spec.group_name = Some("orders".into());
    assert_eq!(group_of(&rg), "orders");
    rg.status = Some(pg_flo_operator::crd::ReplicationGroupStatus {
        group_name: Some("recorded".into()),
        ..Default::default()
    });
    assert_eq!(group_of(&rg), "recorded");
}

#[test]
fn paused_and_stopped_scale_to_zero() {
    for state in [DesiredState::Paused, DesiredState::Stopped] {
        let mut rg = minimal();
        rg.spec.state = state;
        let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
        assert_eq!(d.replicator.spec.as_ref().unwrap().replicas, Some(0));
        assert_eq!(d.worker.spec.as_ref().unwrap().replicas, Some(0));
    }
}

#[test]
fn config_hash_follows_rules_and_routes() {
    let rg = full();
    let a = built(&rg, &[]);
    let mut r = rule();
    r.spec.rules[0].column = "mail".into();
    let b = build(&rg, &[r], &[route()], IMAGE, &[]).unwrap();
    assert_ne!(a.config_hash, b.config_hash);
    assert_eq!(pod_hash(&a.worker), a.config_hash);
    assert_eq!(pod_hash(&b.replicator), b.config_hash);
    // Deterministic, metadata-independent.
    let mut cm = a.config_map.clone();
    cm.metadata.labels = None;
    assert_eq!(config_hash(&cm), a.config_hash);
    assert_eq!(built(&rg, &[]).config_hash, a.config_hash);
    // The hash a runtime reports for the files it read (each key is a file of the mounted
    // ConfigMap) is the same function.
    let data = b.config_map.data.as_ref().unwrap();
    assert!(data.len() >= 2, "{data:?}");
    assert_eq!(
        pg_flo_config::files_hash(data.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
        b.config_hash
    );
}

#[test]
fn the_config_map_lists_the_rendered_rules_and_routes_by_generation() {
    let rg = full();
    let group = rg.metadata.name.clone().unwrap();
    let with_gen = |mut r: Rule, name: &str, generation: i64| {
        r.metadata.name = Some(name.into());
        r.metadata.generation = Some(generation);
        r.spec.group_ref.name = group.clone();
        r
    };
    let mut route_b = route();
    route_b.metadata.name = Some("zz-loser".into());
    route_b.metadata.generation = Some(4);
    let mut route_a = route();
    route_a.metadata.generation = Some(2);
    let rules = [with_gen(rule(), "b-rule", 3), with_gen(rule(), "a-rule", 1)];
    let cm = config_map(&rg, &rules, &[route_b, route_a.clone()]).unwrap();
    let annotations = cm.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["pgflo.io/rules"], "a-rule=1,b-rule=3");
    // Two Routes of one table: only the one rendered (first by name).
    assert_eq!(
        annotations["pgflo.io/routes"],
        format!("{}=2", route_a.metadata.name.as_deref().unwrap())
    );
    assert_eq!(
        pg_flo_operator::resources::rendered_members(&annotations["pgflo.io/rules"]),
        [("a-rule", 1), ("b-rule", 3)]
    );
    // A new generation that renders the same files changes the list, not the hash.
    let bumped = [with_gen(rule(), "b-rule", 4), with_gen(rule(), "a-rule", 1)];
    let cm2 = config_map(&rg, &bumped, &[route_a]).unwrap();
    assert_eq!(
        cm2.metadata.annotations.as_ref().unwrap()["pgflo.io/rules"],
        "a-rule=1,b-rule=4"
    );
    assert_eq!(config_hash(&cm2), config_hash(&cm));
    // Nothing rendered: no rules or routes annotation (only the NATS spec it was rendered with).
    let annotations = config_map(&minimal(), &[], &[])
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        ["pgflo.io/nats"],
        "{annotations:?}"
    );
}

#[test]
fn rules_of_other_groups_are_ignored_and_absent_files_omitted() {
    let cm = config_map(&minimal(), &[rule()], &[route()]).unwrap();
    let data = cm.data.unwrap();
    assert!(!data.contains_key("rules.yaml"));
    assert!(!data.contains_key("routing.yaml"));
    assert!(!data["worker.yaml"].contains("rules-config"));
    let cm = config_map(&full(), &[rule()], &[route()]).unwrap();
    let data = cm.data.unwrap();
    assert!(data["rules.yaml"].contains("sales.customers"));
    assert!(data["routing.yaml"].contains("orders_archive"));
}

#[test]
fn no_secret_in_config_map_and_secrets_only_by_reference() {
    let groups = [full(), webhook_group(), file_group(), minimal()];
    for rg in groups {
        let keys = ["Authorization".to_string()];
        let d = built(&rg, &keys);
        // The managed NATS user's name is no secret (its password is).
        let cm = serde_yaml::to_string(&d.config_map)
            .unwrap()
            .replace("nats-user: pg-flo\n", "");
        for k in ["password", "user:", "Authorization"] {
            assert!(!cm.contains(k), "{k} in ConfigMap: {cm}");
        }
        for dep in [&d.replicator, &d.worker] {
            let c = container(dep);
            for e in c.env.iter().flatten() {
                let sensitive = e.name.ends_with("USER")
                    || e.name.ends_with("PASSWORD")
                    || e.name.starts_with("PG_FLO_WEBHOOK_HEADER_");
                if sensitive {
                    assert!(e.value.is_none(), "{} has a literal value", e.name);
                    assert!(
                        e.value_from.as_ref().unwrap().secret_key_ref.is_some(),
                        "{} not from a Secret",
                        e.name
                    );
                }
                if let Some(v) = &e.value {
                    assert!(!v.contains("Bearer"), "{}", e.name);
                }
            }
        }
    }
}

#[test]
fn owned_labelled_and_namespaced() {
    let d = built(&full(), &[]);
    let metas = [
        &d.config_map.metadata,
        &d.service_account.metadata,
        &d.replicator.metadata,
        &d.worker.metadata,
    ];
    for m in metas {
        assert_eq!(m.namespace.as_deref(), Some("cdc"));
        let o = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(o.kind, "ReplicationGroup");
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, Some(true));
        let l = m.labels.as_ref().unwrap();
        assert_eq!(l["pgflo.io/group"], "shop-to-warehouse");
        assert_eq!(l["app.kubernetes.io/managed-by"], "pg-flo-operator");
    }
}

#[test]
fn missing_namespace_or_uid_is_an_error() {
    let mut rg = minimal();
    rg.metadata.namespace = None;
    assert!(build(&rg, &[], &[], IMAGE, &[]).is_err());
    let mut rg = minimal();
    rg.metadata.uid = None;
    assert!(build(&rg, &[], &[], IMAGE, &[]).is_err());
}

#[test]
fn nats_volumes_follow_the_reclaim_policy() {
    let when_deleted = |policy| {
        let mut rg = minimal();
        rg.spec.reclaim_policy = policy;
        let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
        let sts = d.nats.unwrap().stateful_set;
        sts.spec
            .unwrap()
            .persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted
            .unwrap()
    };
    assert_eq!(
        when_deleted(pg_flo_operator::crd::ReclaimPolicy::Retain),
        "Retain"
    );
    assert_eq!(
        when_deleted(pg_flo_operator::crd::ReclaimPolicy::Delete),
        "Delete"
    );
}

#[test]
fn runtime_pods_get_the_operators_pull_secrets_unless_the_group_names_its_own() {
    use pg_flo_operator::resources::default_image_pull_secrets;
    let names = |d: &Desired| -> Vec<Vec<String>> {
        [&d.replicator, &d.worker]
            .iter()
            .map(|dep| {
                pod_spec(dep)
                    .image_pull_secrets
                    .iter()
                    .flatten()
                    .map(|s| s.name.clone())
                    .collect()
            })
            .collect()
    };
    let mut d = build(&minimal(), &[], &[], IMAGE, &[]).unwrap();
    assert_eq!(names(&d), vec![Vec::<String>::new(), vec![]]);
    default_image_pull_secrets(&mut d, &["regcred".into()]);
    assert_eq!(
        names(&d),
        vec![vec!["regcred".to_string()], vec!["regcred".to_string()]]
    );

    let mut d = build(&full(), &[], &[], IMAGE, &[]).unwrap();
    default_image_pull_secrets(&mut d, &["regcred".into()]);
    assert_eq!(
        names(&d),
        vec![vec!["ghcr-pull".to_string()], vec!["ghcr-pull".to_string()]],
        "spec.imagePullSecrets wins"
    );
}

fn env_of(d: &k8s_openapi::api::apps::v1::StatefulSet) -> Vec<(String, String)> {
    container(d)
        .env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => {
                    let r = f.secret_key_ref.as_ref().unwrap();
                    format!("secret {}/{}", r.name, r.key)
                }
                _ => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

/// The Secret volume `name` of a pod: (Secret, [(key, path)]), and where the container mounts it.
fn secret_volume(
    d: &k8s_openapi::api::apps::v1::StatefulSet,
    name: &str,
) -> (String, Vec<(String, String)>, String) {
    let pod = pod_spec(d);
    let v = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("volume {name}"));
    let s = v.secret.as_ref().unwrap();
    let mount = container(d)
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == name)
        .unwrap()
        .mount_path
        .clone();
    (
        s.secret_name.clone().unwrap(),
        s.items
            .iter()
            .flatten()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        mount,
    )
}

#[test]
fn managed_nats_with_tls_and_its_own_resources() {
    let mut rg = minimal();
    rg.spec.nats = serde_yaml::from_str(
        "managed: {replicas: 3, storageSize: 20Gi, tls: {secretName: orders-nats-tls}, \
         resources: {requests: {cpu: '2', memory: 8Gi}, limits: {cpu: '2', memory: 8Gi}}}",
    )
    .unwrap();
    let d = build(&rg, &[], &[], IMAGE, &[]).unwrap();
    let n = d.nats.as_ref().unwrap();
    let conf = &n.config_map.data.as_ref().unwrap()["nats.conf"];
    let tls = "tls {\n  cert_file: \"/etc/nats-tls/tls.crt\"\n  key_file: \"/etc/nats-tls/tls.key\"\n  ca_file: \"/etc/nats-tls/ca.crt\"\n}\n";
    assert!(conf.contains(&format!("\n{tls}")), "client TLS: {conf}");
    let route_tls: String = tls.lines().map(|l| format!("  {l}\n")).collect();
    assert!(conf.contains(&route_tls), "route TLS: {conf}");
    assert!(conf.contains("max_file_store: 19327352832\n"));
    let pod = n
        .stateful_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let c = &pod.containers[0];
    let env: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    assert!(
        env.contains(&("GOMEMLIMIT".into(), "6871947673".into())),
        "{env:?}"
    );
    assert!(env.contains(&(
        "NATS_ROUTE_2".into(),
        "tls://route:$(NATS_ROUTE_PASSWORD)@orders-nats-2.orders-nats-headless.cdc.svc:6222".into()
    )));
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "8Gi"
    );
    let tls_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "tls")
        .unwrap();
    assert_eq!(
        tls_volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("orders-nats-tls")
    );
    // The pods verify the servers with the Secret's CA.
    for dep in [&d.replicator, &d.worker] {
        assert_eq!(
            secret_volume(dep, "nats-ca"),
            (
                "orders-nats-tls".into(),
                vec![("ca.crt".into(), "ca.crt".into())],
                "/var/run/pg-flo/nats-ca".into()
            )
        );
    }
    let worker = &d.config_map.data.as_ref().unwrap()["worker.yaml"];
    assert!(worker.contains("nats-ca-file: /var/run/pg-flo/nats-ca/ca.crt\n"));
    snapshot("managed-nats-tls", &render(&d));
}

#[test]
fn external_nats_with_a_password_a_client_certificate_and_replicas() {
    let mut rg = full();
    rg.spec.nats = serde_yaml::from_str(
        "external: {url: 'tls://nats.messaging.svc:4222', user: {name: nats-user, key: user}, \
         password: {name: nats-user, key: password}, caSecret: {name: nats-ca, key: ca.crt}, \
         clientCertSecret: {name: pg-flo-client}, streamReplicas: 3}",
    )
    .unwrap();
    let d = built(&rg, &[]);
    assert!(d.nats.is_none());
    for dep in [&d.replicator, &d.worker] {
        let env = env_of(dep);
        assert!(env.contains(&("PG_FLO_NATS_USER".into(), "secret nats-user/user".into())));
        assert!(env.contains(&(
            "PG_FLO_NATS_PASSWORD".into(),
            "secret nats-user/password".into()
        )));
        assert_eq!(
            secret_volume(dep, "nats-client-cert"),
            (
                "pg-flo-client".into(),
                vec![
                    ("tls.crt".into(), "tls.crt".into()),
                    ("tls.key".into(), "tls.key".into())
                ],
                "/var/run/pg-flo/nats-client".into()
            )
        );
    }
    let data = d.config_map.data.as_ref().unwrap();
    for file in ["replicator.yaml", "worker.yaml"] {
        let c = &data[file];
        for line in [
            "nats-url: tls://nats.messaging.svc:4222\n",
            "nats-ca-file: /var/run/pg-flo/nats-ca/ca.crt\n",
            "nats-tls-cert-file: /var/run/pg-flo/nats-client/tls.crt\n",
            "nats-tls-key-file: /var/run/pg-flo/nats-client/tls.key\n",
            "nats-stream-replicas: 3\n",
        ] {
            assert!(c.contains(line), "{line:?} not in {file}:\n{c}");
        }
        assert!(
            !c.contains("nats-user"),
            "the user comes from its Secret: {c}"
        );
        assert!(
            !c.contains("nats-stream-max-bytes"),
            "no volume to size it from"
        );
    }
    snapshot("external-nats-auth", &render(&d));

    rg.spec.nats = serde_yaml::from_str(
        "external: {url: 'nats://nats:4222', token: {name: nats-token, key: token}}",
    )
    .unwrap();
    let d = built(&rg, &[]);
    let env = env_of(&d.worker);
    assert!(env.contains(&("PG_FLO_NATS_TOKEN".into(), "secret nats-token/token".into())));
    assert!(!env.iter().any(|(k, _)| k == "PG_FLO_NATS_PASSWORD"));
}

#[test]
fn the_operator_is_admitted_to_a_managed_nats_only() {
    use pg_flo_operator::resources::{admit_operator, OperatorPods};
    let operator = OperatorPods {
        namespace: "ops".into(),
        labels: std::collections::BTreeMap::from([("app".into(), "op".into())]),
    };
    let mut managed = build(&minimal(), &[], &[], IMAGE, &[]).unwrap();
    let before = managed.nats.as_ref().unwrap().network_policy.clone();
    admit_operator(&mut managed, &operator);
    let after = &managed.nats.as_ref().unwrap().network_policy;
    let ingress = |np: &k8s_openapi::api::networking::v1::NetworkPolicy| {
        np.spec.as_ref().unwrap().ingress.clone().unwrap()
    };
    // One rule more, the group's own unchanged.
    assert_eq!(ingress(after)[..3], ingress(&before)[..]);
    let added = &ingress(after)[3];
    let peer = &added.from.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector.as_ref().unwrap().match_labels,
        Some(std::collections::BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "ops".to_string()
        )]))
    );
    assert_eq!(
        peer.pod_selector.as_ref().unwrap().match_labels,
        Some(operator.labels.clone())
    );
    assert_eq!(
        serde_json::to_value(added.ports.as_ref().unwrap()).unwrap(),
        serde_json::json!([{"port": 4222, "protocol": "TCP"}])
    );

    // External NATS: nothing of the operator's to admit.
    let mut external = built(&full(), &[]);
    assert!(external.nats.is_none());
    admit_operator(&mut external, &operator);
    assert!(external.nats.is_none());
}
