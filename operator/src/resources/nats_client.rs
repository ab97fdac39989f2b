//! The NATS client secrets of the replicator, worker and copy Job pods (the config files name
//! the user and the file paths, `config.rs`; the external NATS's CA and `.creds` files are
//! mounted by `workloads.rs`):
//! - managed NATS: `PG_FLO_NATS_PASSWORD` from `<group>-nats-auth`, and with TLS the Secret's
//!   `ca.crt` at [`NATS_CA_PATH`];
//! - external NATS: `PG_FLO_NATS_USER` / `PG_FLO_NATS_PASSWORD` / `PG_FLO_NATS_TOKEN` from
//!   the referenced keys, and the client certificate Secret's `tls.crt` / `tls.key` at
//!   [`NATS_CLIENT_CERT_PATH`] / [`NATS_CLIENT_KEY_PATH`].

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};

use super::config::{NATS_CA_PATH, NATS_CLIENT_CERT_PATH, NATS_CLIENT_KEY_PATH};
use super::nats::{nats_auth_name, AUTH_PASSWORD_KEY};
use super::{ref_env, secret_env, BuildError, Desired, Valid};
use crate::crd::ReplicationGroup;

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(d, _)| d)
}

fn file_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, f)| f)
}

/// A Secret volume with `items` (`key` -> file name).
fn secret_volume(name: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).into(),
                        path: (*path).into(),
                        mode: None,
                    })
                    .collect(),
            ),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn read_only(name: &str, dir: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: dir.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Adds the NATS client env variables and Secret files to every runtime pod of `desired`.
pub(crate) fn add_nats_client(
    desired: &mut Desired,
    rg: &ReplicationGroup,
) -> Result<(), BuildError> {
    let v = Valid::new(rg)?;
    let mut env = Vec::new();
    let mut files: Vec<(Volume, VolumeMount)> = Vec::new();
    if let Some(m) = &rg.spec.nats.managed {
        env.push(secret_env(
            "PG_FLO_NATS_PASSWORD",
            &nats_auth_name(&v.name),
            AUTH_PASSWORD_KEY,
        ));
        if let Some(tls) = &m.tls {
            files.push((
                secret_volume(
                    "nats-ca",
                    &tls.secret_name,
                    &[("ca.crt", file_of(NATS_CA_PATH))],
                ),
                read_only("nats-ca", dir_of(NATS_CA_PATH)),
            ));
        }
    }
    if let Some(e) = &rg.spec.nats.external {
        if let Some(u) = &e.user {
            env.push(ref_env("PG_FLO_NATS_USER", u));
        }
        if let Some(p) = &e.password {
            env.push(ref_env("PG_FLO_NATS_PASSWORD", p));
        }
        if let Some(t) = &e.token {
            env.push(ref_env("PG_FLO_NATS_TOKEN", t));
        }
        if let Some(c) = &e.client_cert_secret {
            files.push((
                secret_volume(
                    "nats-client-cert",
                    &c.name,
                    &[
                        ("tls.crt", file_of(NATS_CLIENT_CERT_PATH)),
                        ("tls.key", file_of(NATS_CLIENT_KEY_PATH)),
                    ],
                ),
                read_only("nats-client-cert", dir_of(NATS_CLIENT_CERT_PATH)),
            ));
        }
    }
    for pod in desired.runtime_pods().filter_map(|t| t.spec.as_mut()) {
        for (volume, _) in &files {
            pod.volumes
                .get_or_insert_with(Vec::new)
                .push(volume.clone());
        }
        for c in &mut pod.containers {
            c.env
                .get_or_insert_with(Vec::new)
                .extend(env.iter().cloned());
            for (_, mount) in &files {
                c.volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(mount.clone());
            }
        }
    }
    Ok(())
}
