//! Reconcile scenarios of a managed (and external) NATS against the fake Kubernetes API
//! (tests/support/fake_api.rs, which refuses StatefulSet volume template changes with 422 as
//! the API server does) and a real PostgreSQL source: generated credentials, the NetworkPolicy,
//! stream replicas and size limits in the runtime config, and every `spec.nats` transition:
//! done safely (a larger volume) or refused with `Degraded / ChangeRefused` while the rest of
//! the reconcile (pause, Rules) still applies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PersistentVolumeClaimSpec, Secret, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::controller::Action;
use pg_flo_operator::crd::{DesiredState, Phase, ReplicationGroup, Rule};
use support::{condition, container, cr, pod_annotation, secret, Env, MASK_EMAIL, NS};

fn config(env: &Env, file: &str) -> String {
    let cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    cm.data.unwrap()[file].clone()
}

fn nats_conf(env: &Env) -> String {
    let cm: ConfigMap = env.api.get(NS, "orders-nats-config").unwrap();
    cm.data.unwrap()["nats.conf"].clone()
}

fn sts(env: &Env) -> StatefulSet {
    env.api.get(NS, "orders-nats").unwrap()
}

fn sts_replicas(env: &Env) -> i32 {
    sts(env).spec.unwrap().replicas.unwrap()
}

/// Storage class and size of the StatefulSet's volume template.
fn sts_volume(env: &Env) -> (Option<String>, String) {
    let spec = sts(env).spec.unwrap();
    let claim = spec.volume_claim_templates.unwrap()[0]
        .spec
        .clone()
        .unwrap();
    (
        claim.storage_class_name,
        claim.resources.unwrap().requests.unwrap()["storage"]
            .0
            .clone(),
    )
}

fn deployment_replicas(env: &Env) -> Vec<i32> {
    env.api
        .list::<StatefulSet>(NS)
        .iter()
        .filter(|d| {
            !d.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .ends_with("-nats")
        })
        .map(|d| d.spec.as_ref().unwrap().replicas.unwrap())
        .collect()
}

fn auth(env: &Env) -> BTreeMap<String, String> {
    let s: Secret = env.api.get(NS, "orders-nats-auth").unwrap();
    s.data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// A volume claim of the StatefulSet as the StatefulSet controller would have made it.
fn claim(name: &str, size: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn claim_size(env: &Env, name: &str) -> String {
    let c: PersistentVolumeClaim = env.api.get(NS, name).unwrap();
    c.spec.unwrap().resources.unwrap().requests.unwrap()["storage"]
        .0
        .clone()
}

fn requests_to(env: &Env, method: &str, path_part: &str) -> Vec<serde_json::Value> {
    env.api
        .requests()
        .into_iter()
        .filter(|r| r.method == method && r.path.contains(path_part))
        .map(|r| r.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_policy_admits_the_operator_to_the_client_port() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    let ingress = |env: &Env| {
        let np: NetworkPolicy = env.api.get(NS, "orders-nats").unwrap();
        serde_json::to_value(np.spec.unwrap().ingress.unwrap()).unwrap()
    };
    // An operator that does not know its pods: only the group's pods and servers.
    assert_eq!(ingress(&env).as_array().unwrap().len(), 3);

    let ctx = support::context_with_operator_pods(
        &env.api,
        pg_flo_operator::resources::OperatorPods {
            namespace: "pgflo-system".into(),
            labels: BTreeMap::from([
                ("app.kubernetes.io/instance".into(), "flo".into()),
                ("app.kubernetes.io/name".into(), "pg-flo-operator".into()),
            ]),
        },
    );
    env.reconcile_with(&ctx, "orders").await.unwrap();
    let rules = ingress(&env);
    assert_eq!(rules.as_array().unwrap().len(), 4);
    // The operator's pods, in its namespace, on the client port (the consumer status); the
    // group's rules stay as they were.
    assert_eq!(
        rules[3],
        serde_json::json!({
            "from": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "pgflo-system"}},
                "podSelector": {"matchLabels": {
                    "app.kubernetes.io/instance": "flo",
                    "app.kubernetes.io/name": "pg-flo-operator"
                }}
            }],
            "ports": [{"port": 4222, "protocol": "TCP"}]
        })
    );
    assert_eq!(
        rules[0]["ports"],
        serde_json::json!([{"port": 4222, "protocol": "TCP"}])
    );
    assert_eq!(rules[0]["from"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_with_generated_credentials_quorum_and_a_network_policy() {
    let env = Env::start().await;
    env.source_secret();
    let action = env
        .create(&env.group(
            "orders",
            "nats: {managed: {replicas: 3, storageSize: 10Gi}}",
        ))
        .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    // The cluster forms from the start, one server per node, at most one down at a time.
    assert_eq!(sts_replicas(&env), 3);
    // The runtime user's permissions name the runtime group (namespace-qualified by default),
    // not the object name.
    let conf = nats_conf(&env);
    assert!(!conf.contains("\"pgflo.orders"), "{conf}");
    for needle in [
        "max_file_store: 9663676416\n",
        "  no_advertise: true\n",
        "  routes: [\n    $NATS_ROUTE_0\n    $NATS_ROUTE_1\n    $NATS_ROUTE_2\n  ]\n",
        "      password: $NATS_RUNTIME_PASSWORD\n",
        "publish: {allow: [\"pgflo.data_orders\", \"pgflo.data_orders.>\", \"$JS.API.INFO\", \"$JS.API.STREAM.*.pgflo_data_orders_stream\",",
    ] {
        assert!(conf.contains(needle), "{needle:?} not in:\n{conf}");
    }
    let pdb: PodDisruptionBudget = env.api.get(NS, "orders-nats").unwrap();
    assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    let pod = sts(&env).spec.unwrap().template.spec.unwrap();
    let spread: Vec<(String, String)> = pod
        .topology_spread_constraints
        .unwrap()
        .into_iter()
        .map(|t| (t.topology_key, t.when_unsatisfiable))
        .collect();
    assert_eq!(
        spread,
        [
            ("kubernetes.io/hostname".into(), "DoNotSchedule".into()),
            (
                "topology.kubernetes.io/zone".into(),
                "ScheduleAnyway".into()
            )
        ]
    );
    let np: NetworkPolicy = env.api.get(NS, "orders-nats").unwrap();
    let ingress = np.spec.unwrap().ingress.unwrap();
    let peers = serde_json::to_value(&ingress[0].from).unwrap();
    assert_eq!(
        peers,
        serde_json::json!([{"podSelector": {
            "matchLabels": {"app.kubernetes.io/instance": "orders", "app.kubernetes.io/name": "pg-flo"},
            "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["replicator", "worker"]}]
        }}])
    );

    // Generated credentials: the runtime pods and the servers read them from the Secret.
    let creds = auth(&env);
    assert_eq!(
        creds.keys().collect::<Vec<_>>(),
        ["password", "route-password", "user"]
    );
    assert_eq!(creds["user"], "pg-flo");
    assert_eq!(creds["password"].len(), 32);
    assert_ne!(creds["password"], creds["route-password"]);
    let replicator: StatefulSet = env.api.get(NS, "orders-replicator").unwrap();
    let env_var = container(&replicator)
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "PG_FLO_NATS_PASSWORD")
        .unwrap();
    let from = env_var.value_from.unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("orders-nats-auth", "password")
    );
    assert!(config(&env, "replicator.yaml").contains(
        "nats-url: nats://orders-nats.data.svc:4222\nnats-user: pg-flo\nnats-stream-replicas: 3\n"
    ));
    assert!(config(&env, "replicator.yaml").contains("nats-stream-max-bytes: 8589934592\n"));
    assert!(config(&env, "worker.yaml").contains("nats-stream-replicas: 3\n"));
    assert!(!config(&env, "worker.yaml").contains("nats-stream-max-bytes"));

    // Later reconciles read the Secret, never rewrite it.
    let version = |env: &Env| pod_annotation(&sts(env), "pgflo.io/secrets-version");
    let before = version(&env);
    env.api.clear_requests();
    env.reconcile("orders").await.unwrap();
    assert!(requests_to(&env, "PATCH", "/secrets/").is_empty());
    assert_eq!(auth(&env), creds);
    assert_eq!(version(&env), before);

    // A deleted Secret gets new passwords, and the servers and pods restart with them.
    env.api.remove::<Secret>(NS, "orders-nats-auth");
    env.reconcile("orders").await.unwrap();
    assert_ne!(auth(&env)["password"], creds["password"]);
    assert_ne!(version(&env), before);
    let replicator: StatefulSet = env.api.get(NS, "orders-replicator").unwrap();
    assert!(pod_annotation(&replicator, "pgflo.io/secrets-version").contains(&version(&env)));
}

/// The bug this fixes: every reconcile hit 422 on the StatefulSet and stopped before the
/// Deployments, so `state: paused` was silently ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_volume_change_still_lets_pause_and_rules_through() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "nats: {managed: {storageClass: standard}}"))
        .await;
    let sts_before = sts(&env);

    env.edit("orders", |rg| {
        rg.spec.nats.managed.as_mut().unwrap().storage_class = Some("fast".into());
        rg.spec.state = DesiredState::Paused;
    });
    env.api.insert(&cr::<Rule>(MASK_EMAIL));
    env.reconcile("orders").await.unwrap();
    assert_eq!(deployment_replicas(&env), [0, 0], "the pause went through");
    assert!(config(&env, "rules.yaml").contains("email"), "the Rule too");
    assert_eq!(
        sts(&env).spec,
        sts_before.spec,
        "the NATS servers are untouched"
    );
    let got = env.stored("orders");
    assert_eq!(got.status.as_ref().unwrap().phase, Some(Phase::Paused));
    let (status, reason, message) = condition(&got, "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ChangeRefused")
    );
    assert_eq!(
        message,
        "spec.nats.managed.storageClass: changing standard to fast is refused (the volumes \
         holding the stream cannot move to another class): set it back"
    );
    let events = env.api.events(NS);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.0 == "Warning" && e.1 == "ChangeRefused")
            .count(),
        1,
        "{events:?}"
    );

    // Set back: healthy again, once.
    env.edit("orders", |rg| {
        rg.spec.nats.managed.as_mut().unwrap().storage_class = Some("standard".into());
    });
    env.reconcile("orders").await.unwrap();
    let got = env.stored("orders");
    assert_eq!(condition(&got, "Degraded").0, "False");
    assert!(env
        .api
        .events(NS)
        .iter()
        .any(|e| e.0 == "Normal" && e.1 == "Healthy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_number_of_servers_is_refused_either_way() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    // Both workloads are up: a refused change leaves the group ready.
    for d in ["orders-replicator", "orders-worker"] {
        env.set_available(d, 1);
    }

    env.edit("orders", |rg| {
        rg.spec.nats.managed.as_mut().unwrap().replicas = 3
    });
    env.reconcile("orders").await.unwrap();
    assert_eq!(sts_replicas(&env), 1);
    assert!(!nats_conf(&env).contains("cluster {"));
    assert!(config(&env, "worker.yaml").contains("nats-stream-replicas: 1\n"));
    let got = env.stored("orders");
    let (status, reason, message) = condition(&got, "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ChangeRefused")
    );
    assert!(
        message.starts_with("spec.nats.managed.replicas: changing 1 to 3 is refused"),
        "{message}"
    );
    assert_eq!(condition(&got, "Ready").0, "True", "still streaming");
    assert_eq!(got.status.as_ref().unwrap().phase, Some(Phase::Streaming));

    // The other way round, from a cluster.
    let env3 = Env::start().await;
    env3.source_secret();
    env3.create(&env3.group("orders", "nats: {managed: {replicas: 3}}"))
        .await;
    env3.edit("orders", |rg| {
        rg.spec.nats.managed.as_mut().unwrap().replicas = 1
    });
    env3.reconcile("orders").await.unwrap();
    assert_eq!(sts_replicas(&env3), 3);
    assert!(nats_conf(&env3).contains("cluster {"));
    let (_, reason, message) = condition(&env3.stored("orders"), "Degraded");
    assert_eq!(reason, "ChangeRefused");
    assert!(message.starts_with("spec.nats.managed.replicas: changing 3 to 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_volume_resizes_the_claims_and_recreates_the_statefulset() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    env.api.insert(&claim("data-orders-nats-0", "1Gi"));

    env.edit("orders", |rg| {
        rg.spec.nats.managed.as_mut().unwrap().storage_size = "2Gi".into();
    });
    env.api.clear_requests();
    let action = env.reconcile("orders").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert_eq!(claim_size(&env, "data-orders-nats-0"), "2Gi");
    assert_eq!(
        requests_to(&env, "PATCH", "/persistentvolumeclaims/data-orders-nats-0"),
        [serde_json::json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})]
    );
    // Deleted leaving its pods and volumes, to be created again with the new template.
    let deletes = requests_to(&env, "DELETE", "/statefulsets/orders-nats");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["propagationPolicy"], "Orphan");
    assert!(env.api.get::<StatefulSet>(NS, "orders-nats").is_none());
    assert!(nats_conf(&env).contains("max_file_store: 1932735283\n"));
    assert!(config(&env, "replicator.yaml").contains("nats-stream-max-bytes: 1717986918\n"));
    assert_eq!(deployment_replicas(&env), [1, 1]);
    assert_eq!(condition(&env.stored("orders"), "Degraded").0, "False");

    let action = env.reconcile("orders").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert_eq!(sts_volume(&env), (None, "2Gi".into()));
    // Settled: nothing more to resize or re-create.
    env.api.clear_requests();
    env.reconcile("orders").await.unwrap();
    assert!(requests_to(&env, "DELETE", "/statefulsets/").is_empty());
    assert!(requests_to(&env, "PATCH", "/persistentvolumeclaims/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_that_cannot_grow_or_shrink_is_refused() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "nats: {managed: {storageSize: 4Gi}}"))
        .await;
    env.api.insert(&claim("data-orders-nats-0", "4Gi"));
    env.api.fail(
        "PATCH",
        "/persistentvolumeclaims/data-orders-nats-0",
        403,
        "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
    );

    env.edit("orders", |rg| {
        rg.spec.nats.managed.as_mut().unwrap().storage_size = "8Gi".into();
    });
    let action = env.reconcile("orders").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert_eq!(sts_volume(&env), (None, "4Gi".into()));
    assert_eq!(claim_size(&env, "data-orders-nats-0"), "4Gi");
    assert!(nats_conf(&env).contains("max_file_store: 3865470566\n"));
    let (_, reason, message) = condition(&env.stored("orders"), "Degraded");
    assert_eq!(reason, "ChangeRefused");
    assert_eq!(
        message,
        "spec.nats.managed.storageSize: the volume claim data-orders-nats-0 cannot grow to 8Gi \
         (only dynamically provisioned pvc can be resized and the storageclass that provisions \
         the pvc must support resize): the servers keep their volumes as they are; use a \
         StorageClass with allowVolumeExpansion, or set it back"
    );

    env.api.clear_failures();
    env.edit("orders", |rg| {
        rg.spec.nats.managed.as_mut().unwrap().storage_size = "2Gi".into();
    });
    env.reconcile("orders").await.unwrap();
    assert_eq!(sts_volume(&env), (None, "4Gi".into()));
    let (_, reason, message) = condition(&env.stored("orders"), "Degraded");
    assert_eq!(reason, "ChangeRefused");
    assert_eq!(
        message,
        "spec.nats.managed.storageSize: shrinking 4Gi to 2Gi is refused (a volume cannot \
         shrink): set it back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_nats_or_moving_its_url_is_refused_and_the_old_one_kept() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    env.edit("orders", |rg| {
        rg.spec.nats =
            serde_yaml::from_str("external: {url: 'nats://nats.shared.svc:4222'}").unwrap();
    });
    env.reconcile("orders").await.unwrap();
    assert_eq!(
        env.api.names::<StatefulSet>(NS),
        ["orders-nats", "orders-replicator", "orders-worker"]
    );
    assert!(
        config(&env, "replicator.yaml").contains("nats-url: nats://orders-nats.data.svc:4222\n")
    );
    let (_, reason, message) = condition(&env.stored("orders"), "Degraded");
    assert_eq!(reason, "ChangeRefused");
    assert!(
        message.starts_with("spec.nats: switching from managed to external NATS is refused"),
        "{message}"
    );

    let ext = Env::start().await;
    ext.source_secret();
    ext.api
        .insert(&secret("nats", &[("user", "cdc"), ("password", "pw")]));
    ext.create(&ext.group(
        "orders",
        "nats: {external: {url: 'nats://a:4222', user: {name: nats, key: user}, password: {name: nats, key: password}, streamReplicas: 3}}",
    ))
    .await;
    assert_eq!(
        ext.api.names::<StatefulSet>(NS),
        ["orders-replicator", "orders-worker"]
    );
    assert!(ext.api.get::<Secret>(NS, "orders-nats-auth").is_none());
    let worker: StatefulSet = ext.api.get(NS, "orders-worker").unwrap();
    let vars: Vec<(String, String)> = container(&worker)
        .env
        .clone()
        .unwrap()
        .into_iter()
        .filter(|e| e.name.starts_with("PG_FLO_NATS_"))
        .map(|e| {
            let r = e.value_from.unwrap().secret_key_ref.unwrap();
            (e.name, format!("{}/{}", r.name, r.key))
        })
        .collect();
    assert_eq!(
        vars,
        [
            ("PG_FLO_NATS_USER".into(), "nats/user".into()),
            ("PG_FLO_NATS_PASSWORD".into(), "nats/password".into())
        ]
    );
    assert!(config(&ext, "worker.yaml").contains("nats-stream-replicas: 3\n"));
    ext.edit("orders", |rg| {
        rg.spec.nats.external.as_mut().unwrap().url = "nats://b:4222".into();
    });
    ext.reconcile("orders").await.unwrap();
    assert!(config(&ext, "worker.yaml").contains("nats-url: nats://a:4222\n"));
    let (_, reason, message) = condition(&ext.stored("orders"), "Degraded");
    assert_eq!(reason, "ChangeRefused");
    assert!(
        message.starts_with("spec.nats.external.url: changing it is refused"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_nats_apply_does_not_block_the_workloads() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    env.api.fail(
        "PATCH",
        "/statefulsets/orders-nats",
        500,
        "etcdserver: request timed out",
    );
    env.edit("orders", |rg| rg.spec.state = DesiredState::Paused);
    let err = env.reconcile("orders").await.unwrap_err();
    assert_eq!(err.category(), "kube-api");
    assert_eq!(deployment_replicas(&env), [0, 0]);
    let got = env.stored("orders");
    assert_eq!(got.status.as_ref().unwrap().phase, Some(Phase::Paused));
    env.api.clear_failures();
    env.reconcile("orders").await.unwrap();
}

/// `reclaimPolicy: delete` on an external NATS that requires a password: the operator logs in
/// with the group's Secret to delete the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_of_a_password_protected_external_nats_are_deleted_with_the_group() {
    let env = Env::start().await;
    env.source_secret();
    let nats = e2e::NatsServer::start_with_password("cdc", "Secretpw1234567890")
        .await
        .unwrap();
    env.api.insert(&secret(
        "nats",
        &[("user", "cdc"), ("password", "Secretpw1234567890")],
    ));
    env.create(&env.group(
        "orders",
        &format!(
            "{{reclaimPolicy: delete, nats: {{external: {{url: '{}', user: {{name: nats, key: user}}, \
             password: {{name: nats, key: password}}}}}}}}",
            nats.url()
        ),
    ))
    .await;
    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::with_user_and_password(
            "cdc".into(),
            "Secretpw1234567890".into(),
        )
        .connect(nats.url())
        .await
        .unwrap(),
    );
    for s in ["pgflo_data_orders_stream", "pgflo_data_orders_state"] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: s.into(),
            subjects: vec![format!("{s}.x")],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let groups: kube::Api<ReplicationGroup> = kube::Api::namespaced(env.api.admin_client(), NS);
    groups.delete("orders", &Default::default()).await.unwrap();
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    for s in ["pgflo_data_orders_stream", "pgflo_data_orders_state"] {
        assert!(js.get_stream(s).await.is_err(), "stream {s} deleted");
    }
    assert!(env.api.get::<ReplicationGroup>(NS, "orders").is_none());
}

/// A group whose NATS objects an earlier operator made (another volume template, no record of
/// the applied `spec.nats` in the ConfigMap) is taken over without a 422 and without refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_an_earlier_operator_are_taken_over() {
    let env = Env::start().await;
    env.source_secret();
    env.create(&env.group("orders", "")).await;
    // What an earlier version left: no annotation, a volume template without labels.
    let mut cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    cm.metadata.annotations = None;
    env.api.replace(&cm);
    let mut old = sts(&env);
    old.spec
        .as_mut()
        .unwrap()
        .volume_claim_templates
        .as_mut()
        .unwrap()[0]
        .metadata
        .labels = None;
    env.api.remove::<StatefulSet>(NS, "orders-nats");
    old.metadata.resource_version = None;
    env.api.insert(&old);

    env.reconcile("orders").await.unwrap();
    let templates = sts(&env).spec.unwrap().volume_claim_templates.unwrap();
    assert_eq!(templates[0].metadata.labels, None, "the template is kept");
    assert_eq!(condition(&env.stored("orders"), "Degraded").0, "False");
    let cm: ConfigMap = env.api.get(NS, "orders-pg-flo-config").unwrap();
    assert_eq!(
        cm.metadata.annotations.unwrap()["pgflo.io/nats"],
        r#"{"managed":{"replicas":1,"storageSize":"1Gi"}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_secret_without_its_ca_is_an_invalid_spec() {
    let env = Env::start().await;
    env.source_secret();
    env.api.insert(&secret(
        "nats-tls",
        &[("tls.crt", "cert"), ("tls.key", "key")],
    ));
    env.api
        .insert(&env.group("orders", "nats: {managed: {tls: {secretName: nats-tls}}}"));
    env.reconcile("orders").await.unwrap();
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    let (status, reason, message) = condition(&env.stored("orders"), "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert_eq!(
        message,
        "spec.nats.managed.tls.secretName: Secret nats-tls has no key ca.crt: add the key to \
         the Secret or fix the reference"
    );
    assert!(env.api.get::<StatefulSet>(NS, "orders-nats").is_none());
}

/// After a refused URL change the pods still use the old servers: a delete with
/// `reclaimPolicy: delete` removes the streams there, not on the URL the spec names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_after_a_refused_url_change_cleans_the_servers_in_use() {
    let env = Env::start().await;
    env.source_secret();
    let used = e2e::NatsServer::start().await.unwrap();
    let other = e2e::NatsServer::start().await.unwrap();
    env.create(&env.group(
        "orders",
        &format!(
            "{{reclaimPolicy: delete, nats: {{external: {{url: '{}'}}}}}}",
            used.url()
        ),
    ))
    .await;
    let js = async_nats::jetstream::new(async_nats::connect(used.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        // The runtime group is the namespace-qualified default.
        name: "pgflo_data_orders_stream".into(),
        subjects: vec!["pgflo.data_orders".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    env.edit("orders", |rg| {
        rg.spec.nats.external.as_mut().unwrap().url = other.url();
    });
    env.reconcile("orders").await.unwrap();
    assert_eq!(
        condition(&env.stored("orders"), "Degraded").1,
        "ChangeRefused"
    );

    let groups: kube::Api<ReplicationGroup> = kube::Api::namespaced(env.api.admin_client(), NS);
    groups.delete("orders", &Default::default()).await.unwrap();
    assert_eq!(
        env.reconcile("orders").await.unwrap(),
        Action::await_change()
    );
    assert!(
        js.get_stream("pgflo_data_orders_stream").await.is_err(),
        "deleted where it lived"
    );
}
