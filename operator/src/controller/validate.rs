//! What a group references outside its own spec (Rules, Routes, Secrets), fetched from the API
//! ([`fetch`]) and checked without IO ([`validate`]).
//!
//! A problem found here is the user's to fix: the group gets `Degraded` / `InvalidSpec` and an
//! Event naming the field and the fix, and no object is created or changed until it is fixed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use secrecy::SecretString;

use super::{Context, Error};
use crate::crd::{ReplicationGroup, Route, Rule, SecretKeyRef};
use crate::resources::nats_auth_name;
use crate::source::SourceConnection;

/// Everything a group references, as read from the API.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    /// Rules of the namespace (the builders keep those of the group).
    pub rules: Vec<Rule>,
    /// Routes of the namespace (the builders keep those of the group).
    pub routes: Vec<Route>,
    /// Referenced Secrets by name; `None` when the Secret does not exist.
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// Rules or Routes naming this group (or no readable group) that cannot be decoded: the
    /// group must not run without them (a Rule left out could be a mask).
    pub unreadable: Vec<String>,
}

/// Lists the `K`s of `ns` one by one: the decodable ones, and a problem for each one naming
/// `group` (or no readable group) that cannot be decoded.
async fn list_decoded<K>(
    ctx: &Context,
    ns: &str,
    group: &str,
) -> Result<(Vec<K>, Vec<String>), Error>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let kind = K::kind(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &ApiResource::erase::<K>(&()));
    let items = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", &kind, ns))?
        .items;
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for obj in items {
        let name = obj.name_any();
        let named = obj.data["spec"]["groupRef"]["name"]
            .as_str()
            .map(str::to_owned);
        match serde_json::to_value(&obj).and_then(serde_json::from_value::<K>) {
            Ok(k) => ok.push(k),
            Err(e) if named.as_deref().is_none_or(|g| g == group) => problems.push(format!(
                "{kind} {name} cannot be read ({e}): fix it (the previous configuration stays in place)"
            )),
            Err(_) => {}
        }
    }
    Ok((ok, problems))
}

/// One Secret reference of a group spec: the field that holds it, the Secret, and the key
/// (`None` for a whole-Secret reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    /// Spec field, e.g. `spec.source.password`.
    pub field: &'static str,
    /// Secret name.
    pub secret: String,
    /// Key inside the Secret.
    pub key: Option<String>,
}

fn key_use(field: &'static str, r: &SecretKeyRef) -> SecretUse {
    SecretUse {
        field,
        secret: r.name.clone(),
        key: Some(r.key.clone()),
    }
}

/// Every Secret the group's pods need.
pub fn secret_uses(rg: &ReplicationGroup) -> Vec<SecretUse> {
    let s = &rg.spec.source;
    let mut uses = vec![
        key_use("spec.source.user", &s.user),
        key_use("spec.source.password", &s.password),
    ];
    if let Some(ca) = &s.ca_secret {
        uses.push(key_use("spec.source.caSecret", ca));
    }
    let sink = &rg.spec.sink;
    if let Some(p) = &sink.postgres {
        uses.push(key_use("spec.sink.postgres.user", &p.user));
        uses.push(key_use("spec.sink.postgres.password", &p.password));
        if let Some(ca) = &p.ca_secret {
            uses.push(key_use("spec.sink.postgres.caSecret", ca));
        }
    }
    if let Some(h) = sink
        .webhook
        .as_ref()
        .and_then(|w| w.headers_secret.as_ref())
    {
        uses.push(SecretUse {
            field: "spec.sink.webhook.headersSecret",
            secret: h.name.clone(),
            key: None,
        });
    }
    if let Some(tls) = rg.spec.nats.managed.as_ref().and_then(|m| m.tls.as_ref()) {
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            uses.push(SecretUse {
                field: "spec.nats.managed.tls.secretName",
                secret: tls.secret_name.clone(),
                key: Some(key.into()),
            });
        }
    }
    if let Some(e) = &rg.spec.nats.external {
        for (field, r) in [
            ("spec.nats.external.user", &e.user),
            ("spec.nats.external.password", &e.password),
            ("spec.nats.external.token", &e.token),
            (
                "spec.nats.external.credentialsSecret",
                &e.credentials_secret,
            ),
            ("spec.nats.external.caSecret", &e.ca_secret),
        ] {
            if let Some(r) = r {
                uses.push(key_use(field, r));
            }
        }
        if let Some(c) = &e.client_cert_secret {
            for key in ["tls.crt", "tls.key"] {
                uses.push(SecretUse {
                    field: "spec.nats.external.clientCertSecret",
                    secret: c.name.clone(),
                    key: Some(key.into()),
                });
            }
        }
    }
    uses
}

/// Whether the group references the Secret `name` (or it is the group's generated NATS
/// credentials Secret).
pub fn references_secret(rg: &ReplicationGroup, name: &str) -> bool {
    (rg.spec.nats.managed.is_some() && nats_auth_name(&rg.name_any()) == name)
        || secret_uses(rg).iter().any(|u| u.secret == name)
}

/// Reads the Rules and Routes of the group's namespace and the Secrets it references.
pub async fn fetch(ctx: &Context, rg: &ReplicationGroup) -> Result<Refs, Error> {
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let group = rg.name_any();
    let (rules, mut unreadable) = list_decoded::<Rule>(ctx, &ns, &group).await?;
    let (routes, unreadable_routes) = list_decoded::<Route>(ctx, &ns, &group).await?;
    unreadable.extend(unreadable_routes);
    Ok(Refs {
        rules,
        routes,
        unreadable,
        ..fetch_secrets(ctx, rg).await?
    })
}

/// Reads only the Secrets the group references (what its cleanup needs).
pub async fn fetch_secrets(ctx: &Context, rg: &ReplicationGroup) -> Result<Refs, Error> {
    let ns = rg.namespace().ok_or(Error::Unnamed)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut found = BTreeMap::new();
    for u in secret_uses(rg) {
        if found.contains_key(&u.secret) {
            continue;
        }
        let s = secrets
            .get_opt(&u.secret)
            .await
            .map_err(Error::kube("get", "Secret", &u.secret))?;
        found.insert(u.secret, s);
    }
    Ok(Refs {
        secrets: found,
        ..Refs::default()
    })
}

fn secret_value<'a>(refs: &'a Refs, secret: &str, key: &str) -> Option<&'a [u8]> {
    let s = refs.secrets.get(secret)?.as_ref()?;
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
        return Some(&v.0);
    }
    s.string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes())
}

fn secret_keys(refs: &Refs, secret: &str) -> Vec<String> {
    let Some(Some(s)) = refs.secrets.get(secret) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = s
        .data
        .iter()
        .flat_map(|d| d.keys().cloned())
        .chain(s.string_data.iter().flat_map(|d| d.keys().cloned()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `name=resourceVersion` of every referenced Secret, sorted (see
/// `resources::annotate_secret_versions`).
pub fn secret_versions(refs: &Refs) -> String {
    refs.secrets
        .iter()
        .map(|(name, s)| {
            let rv = s
                .as_ref()
                .and_then(|s| s.metadata.resource_version.clone())
                .unwrap_or_default();
            format!("{name}={rv}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The key names of `spec.sink.webhook.headersSecret` (header names; the values stay in the
/// Secret and reach the pod through `secretKeyRef`).
pub fn webhook_header_keys(rg: &ReplicationGroup, refs: &Refs) -> Vec<String> {
    rg.spec
        .sink
        .webhook
        .as_ref()
        .and_then(|w| w.headers_secret.as_ref())
        .map(|h| secret_keys(refs, &h.name))
        .unwrap_or_default()
}

/// Checks the group against what it references. Returns every problem at once, each naming
/// the field and the fix.
pub fn validate(rg: &ReplicationGroup, refs: &Refs) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let ns = rg.namespace().unwrap_or_default();
    if let Err(e) = crate::resources::check(rg) {
        problems.push(e.to_string());
    }
    for u in secret_uses(rg) {
        match (refs.secrets.get(&u.secret), &u.key) {
            (Some(Some(_)), None) => {}
            (Some(Some(_)), Some(key)) => {
                if secret_value(refs, &u.secret, key).is_none() {
                    problems.push(format!(
                        "{}: Secret {} has no key {key}: add the key to the Secret or fix the reference",
                        u.field, u.secret
                    ));
                }
            }
            _ => problems.push(format!(
                "{}: Secret {} not found in namespace {ns}: create it or fix the reference",
                u.field, u.secret
            )),
        }
    }
    if let Some(m) = &rg.spec.nats.managed {
        if crate::resources::max_file_store(&m.storage_size).is_none_or(|b| b == 0) {
            problems.push(format!(
                "spec.nats.managed.storageSize: {:?} is not a positive quantity: use one such as 10Gi",
                m.storage_size
            ));
        }
    }
    if let Some(limit) = &rg.spec.max_retained_wal {
        if crate::resources::quantity::quantity_bytes(limit).is_none_or(|b| b == 0) {
            problems.push(format!(
                "spec.maxRetainedWal: {limit:?} is not a positive quantity: use one such as 20Gi"
            ));
        }
    }
    problems.extend(refs.unreadable.iter().cloned());
    let group = rg.name_any();
    for rule in refs.rules.iter().filter(|r| r.spec.group_ref.name == group) {
        for p in super::attach::rule_problems(rule) {
            problems.push(format!(
                "Rule {}: {p}: fix the Rule (the previous configuration stays in place)",
                rule.name_any()
            ));
        }
    }
    // The Routes the worker would get (the first by name of each source table).
    let routes: Vec<Route> = refs
        .routes
        .iter()
        .filter(|r| r.spec.group_ref.name == group)
        .cloned()
        .collect();
    for route in &routes {
        if super::attach::conflicting_route(route, &routes).is_some() {
            continue;
        }
        for p in super::attach::route_problems(route) {
            problems.push(format!(
                "Route {}: {p}: fix the Route (the previous configuration stays in place)",
                route.name_any()
            ));
        }
    }
    if let Some(w) = &rg.spec.sink.webhook {
        if let Some(h) = &w.headers_secret {
            if matches!(refs.secrets.get(&h.name), Some(Some(_)))
                && secret_keys(refs, &h.name).is_empty()
            {
                problems.push(format!(
                    "spec.sink.webhook.headersSecret: Secret {} has no keys: add one key per HTTP header",
                    h.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The source connection of a valid group, credentials taken from its Secrets.
pub fn source_connection(rg: &ReplicationGroup, refs: &Refs) -> Option<SourceConnection> {
    let s = &rg.spec.source;
    let text = |r: &SecretKeyRef| {
        secret_value(refs, &r.name, &r.key).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some(SourceConnection {
        host: s.host.clone(),
        port: s.port,
        database: s.database.clone(),
        user: text(&s.user)?,
        password: SecretString::from(
            secret_value(refs, &s.password.name, &s.password.key)
                .map(|v| String::from_utf8_lossy(v).into_owned())?,
        ),
        ssl_mode: s.ssl_mode,
        ca_pem: s
            .ca_secret
            .as_ref()
            .and_then(|c| secret_value(refs, &c.name, &c.key))
            .map(<[u8]>::to_vec),
    })
}

/// Credentials and CA of an external NATS server, from the group's Secrets.
#[derive(Clone, Default)]
pub struct NatsAccess {
    /// Server URL.
    pub url: String,
    /// Content of the `.creds` file.
    pub credentials: Option<String>,
    /// User and password.
    pub user: Option<(String, SecretString)>,
    /// Authentication token.
    pub token: Option<SecretString>,
    /// CA certificate PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key PEM (mutual TLS).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

/// How the operator reaches the group's NATS: the external one, or the managed one's client
/// Service with the generated credentials (the Secret `<group>-nats-auth`, in `refs` once the
/// reconcile read or created it) and, with TLS, the CA of its TLS Secret.
pub fn nats_access(rg: &ReplicationGroup, refs: &Refs) -> NatsAccess {
    if let Some(external) = external_nats(rg, refs) {
        return external;
    }
    let auth = crate::resources::nats_auth_name(&rg.name_any());
    let text =
        |key: &str| secret_value(refs, &auth, key).map(|v| String::from_utf8_lossy(v).into_owned());
    let user = text(crate::resources::AUTH_USER_KEY)
        .zip(text(crate::resources::AUTH_PASSWORD_KEY).map(SecretString::from));
    let ca_pem = rg
        .spec
        .nats
        .managed
        .as_ref()
        .and_then(|m| m.tls.as_ref())
        .and_then(|t| secret_value(refs, &t.secret_name, "ca.crt"))
        .map(<[u8]>::to_vec);
    NatsAccess {
        url: crate::resources::managed_nats_url(
            &rg.name_any(),
            &rg.namespace().unwrap_or_default(),
        ),
        credentials: None,
        user,
        token: None,
        ca_pem,
        client_cert: None,
    }
}

/// How the operator reaches the group's external NATS (`None` with managed NATS).
pub fn external_nats(rg: &ReplicationGroup, refs: &Refs) -> Option<NatsAccess> {
    let e = rg.spec.nats.external.as_ref()?;
    let text = |r: &Option<SecretKeyRef>| {
        r.as_ref()
            .and_then(|c| secret_value(refs, &c.name, &c.key))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let user = text(&e.user).zip(text(&e.password).map(SecretString::from));
    let client_cert = e.client_cert_secret.as_ref().and_then(|c| {
        Some((
            secret_value(refs, &c.name, "tls.crt")?.to_vec(),
            secret_value(refs, &c.name, "tls.key")?.to_vec(),
        ))
    });
    Some(NatsAccess {
        url: e.url.clone(),
        credentials: text(&e.credentials_secret),
        user,
        token: text(&e.token).map(SecretString::from),
        ca_pem: e
            .ca_secret
            .as_ref()
            .and_then(|c| secret_value(refs, &c.name, &c.key))
            .map(<[u8]>::to_vec),
        client_cert,
    })
}
