//! Runs rendered objects as local processes, as the kubelet would run their pods.

#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::path::Path;

use e2e::{free_port, pg_flo_bin, Process};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, EnvVar};

/// A container's environment as the kubelet builds it: `fieldRef: metadata.name` is
/// `pod_name`, `secretKeyRef`s come from `secrets` (`name/key`), and `$(VAR)` in a value is an
/// earlier variable's value.
pub fn pod_env(
    c: &Container,
    pod_name: &str,
    secrets: &HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.clone().unwrap_or_default()
    {
        let v = match (value, value_from) {
            (Some(mut v), _) => {
                for (k, val) in &out {
                    v = v.replace(&format!("$({k})"), val);
                }
                v
            }
            (None, Some(from)) => {
                if let Some(f) = from.field_ref {
                    assert_eq!(f.field_path, "metadata.name");
                    pod_name.to_owned()
                } else {
                    let r = from.secret_key_ref.expect("secretKeyRef");
                    secrets[&format!("{}/{}", r.name, r.key)].clone()
                }
            }
            (None, None) => String::new(),
        };
        out.push((name, v));
    }
    out
}

/// Turns a rendered runtime StatefulSet into a local process: config files under `dir`,
/// secrets from `secrets` (`name/key` -> value), the admin port on a free loopback port.
pub fn spawn_runtime(
    name: &str,
    d: &StatefulSet,
    dir: &Path,
    secrets: &HashMap<String, String>,
) -> Process {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.command.as_deref(), Some(&["pg_flo".to_owned()][..]));
    let port = free_port().unwrap();
    let args: Vec<String> = c
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| {
            a.replace("/etc/pg-flo/", &format!("{}/", dir.display()))
                .replace("0.0.0.0:9100", &format!("127.0.0.1:{port}"))
        })
        .collect();
    let mut cmd = std::process::Command::new(pg_flo_bin().unwrap());
    cmd.args(&args).env_clear().env("PG_FLO_LOG_LEVEL", "info");
    for (k, v) in pod_env(c, name, secrets) {
        cmd.env(k, v);
    }
    Process::spawn(name, cmd).unwrap()
}
