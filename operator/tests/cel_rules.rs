//! The ReplicationGroup CRD's CEL rules evaluated client-side (kube-cel, the library kube's
//! `cel` feature uses): creation rules and the transition rules (`oldSelf`) that refuse unsafe
//! changes of `spec.nats` up front. Each case is an update (or a create) and the exact
//! messages the apiserver would answer with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use kube::CustomResourceExt;
use kube_cel::{ErrorKind, Validator};
use pg_flo_operator::crd::ReplicationGroup;
use serde_json::{json, Value};

fn schema() -> Value {
    let crd = ReplicationGroup::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// A group with `nats` (and the rest of a minimal spec).
fn group(nats: Value) -> Value {
    json!({
        "apiVersion": "pgflo.io/v1alpha1",
        "kind": "ReplicationGroup",
        "metadata": {"name": "orders", "namespace": "cdc"},
        "spec": {
            "source": {
                "host": "pg", "database": "shop",
                "user": {"name": "s", "key": "user"}, "password": {"name": "s", "key": "password"}
            },
            "sink": {"stdout": {}},
            "nats": nats
        }
    })
}

/// The messages of the rules that fail for `new` (an update of `old` when given).
fn failures(new: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), new, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                assert_eq!(e.kind, ErrorKind::ValidationFailure, "{e:?}");
                e.message.clone()
            })
            .collect(),
    }
}

const REPLICAS: &str = "nats.managed.replicas is immutable: a standalone server's streams are not carried into a cluster (nor back); delete the group and create it again (mode copyAndStream) to change it";
const CLASS: &str = "nats.managed.storageClass is immutable: the volumes holding the stream cannot move to another class";
const SHRINK: &str = "nats.managed.storageSize can only grow: a volume cannot shrink";
const SWITCH: &str = "nats cannot switch between managed and external: the current NATS holds the group's unconsumed changes and state; delete the group and create it again (mode copyAndStream) to move it";
const URL: &str = "nats.external.url is immutable: the servers it names hold the group's unconsumed changes and state; delete the group and create it again (mode copyAndStream) to move it";

#[test]
fn unsafe_nats_changes_are_refused_on_update() {
    let m = |v: Value| json!({"managed": v});
    let e = |v: Value| json!({"external": v});
    let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
        ("unchanged", m(json!({})), m(json!({})), vec![]),
        (
            "defaults made explicit",
            m(json!({})),
            m(json!({"replicas": 1, "storageSize": "1Gi"})),
            vec![],
        ),
        (
            "1 -> 3",
            m(json!({})),
            m(json!({"replicas": 3})),
            vec![REPLICAS],
        ),
        (
            "3 -> 1",
            m(json!({"replicas": 3})),
            m(json!({"replicas": 1})),
            vec![REPLICAS],
        ),
        (
            "class set",
            m(json!({})),
            m(json!({"storageClass": "fast"})),
            vec![CLASS],
        ),
        (
            "class changed",
            m(json!({"storageClass": "slow"})),
            m(json!({"storageClass": "fast"})),
            vec![CLASS],
        ),
        (
            "class dropped",
            m(json!({"storageClass": "slow"})),
            m(json!({})),
            vec![CLASS],
        ),
        (
            "grow",
            m(json!({"storageSize": "1Gi"})),
            m(json!({"storageSize": "10Gi"})),
            vec![],
        ),
        (
            "same size written otherwise",
            m(json!({"storageSize": "1Gi"})),
            m(json!({"storageSize": "1024Mi"})),
            vec![],
        ),
        (
            "shrink",
            m(json!({"storageSize": "10Gi"})),
            m(json!({"storageSize": "5Gi"})),
            vec![SHRINK],
        ),
        (
            "image, resources and TLS may change",
            m(json!({})),
            m(
                json!({"image": "nats:2.11-alpine", "tls": {"secretName": "t"},
                     "resources": {"limits": {"memory": "2Gi"}}}),
            ),
            vec![],
        ),
        (
            "managed -> external",
            m(json!({})),
            e(json!({"url": "nats://n:4222"})),
            vec![SWITCH],
        ),
        (
            "external -> managed",
            e(json!({"url": "nats://n:4222"})),
            m(json!({})),
            vec![SWITCH],
        ),
        (
            "url",
            e(json!({"url": "nats://a:4222"})),
            e(json!({"url": "nats://b:4222"})),
            vec![URL],
        ),
        (
            "external credentials may rotate",
            e(json!({"url": "nats://a:4222", "token": {"name": "t", "key": "a"}})),
            e(json!({"url": "nats://a:4222", "token": {"name": "t", "key": "b"}})),
            vec![],
        ),
    ];
    for (what, old, new, want) in cases {
        assert_eq!(failures(&group(new), Some(&group(old))), want, "{what}");
    }
}

#[test]
fn nats_specs_are_checked_on_create() {
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("managed", json!({"managed": {}}), vec![]),
        (
            "both",
            json!({"managed": {}, "external": {"url": "nats://n"}}),
            vec!["exactly one of nats.managed, nats.external must be set"],
        ),
        (
            "two servers",
            json!({"managed": {"replicas": 2}}),
            vec!["nats.managed.replicas must be 1 or 3"],
        ),
        (
            "not a quantity",
            json!({"managed": {"storageSize": "lots"}}),
            vec!["nats.managed.storageSize must be a positive quantity, e.g. 10Gi"],
        ),
        (
            "zero",
            json!({"managed": {"storageSize": "0"}}),
            vec!["nats.managed.storageSize must be a positive quantity, e.g. 10Gi"],
        ),
        (
            "user without password",
            json!({"external": {"url": "nats://n", "user": {"name": "u", "key": "u"}}}),
            vec!["nats.external.user and nats.external.password go together"],
        ),
        (
            "password and token",
            json!({"external": {"url": "nats://n", "user": {"name": "u", "key": "u"},
                   "password": {"name": "u", "key": "p"}, "token": {"name": "t", "key": "t"}}}),
            vec!["at most one of nats.external.password, nats.external.token, nats.external.credentialsSecret"],
        ),
        (
            "client certificate without a CA",
            json!({"external": {"url": "tls://n", "clientCertSecret": {"name": "c"}}}),
            vec!["nats.external.clientCertSecret needs nats.external.caSecret (the CA of the server's certificate)"],
        ),
        (
            "client certificate with a CA, password",
            json!({"external": {"url": "tls://n", "clientCertSecret": {"name": "c"},
                   "caSecret": {"name": "ca", "key": "ca.crt"},
                   "user": {"name": "u", "key": "u"}, "password": {"name": "u", "key": "p"},
                   "streamReplicas": 3}}),
            vec![],
        ),
    ];
    for (what, nats, want) in cases {
        assert_eq!(failures(&group(nats), None), want, "{what}");
    }
}
