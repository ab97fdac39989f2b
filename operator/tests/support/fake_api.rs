//! A fake Kubernetes API server for reconcile tests: an in-memory object store behind a tower
//! Service that `kube::Client` drives over HTTP semantics (paths, verbs, content types, status
//! codes). No API server can run on the test machines; this is the one faked component.
//!
//! What it implements, and how faithfully:
//! - GET object / list (with `labelSelector` equality terms; a cluster-wide list gathers every
//!   namespace's objects of the kind), POST (create, 409 on exists),
//!   PUT (replace, 409 on a stale `resourceVersion`), DELETE (404 when absent; with finalizers
//!   only sets `deletionTimestamp`, like the API server).
//! - PATCH: server-side apply (`application/apply-patch+yaml`) as a single-manager apply: the
//!   applied fields replace the object's, system metadata (uid, resourceVersion, generation,
//!   creationTimestamp, finalizers, deletionTimestamp) and status are kept; `generation` is
//!   bumped when anything besides metadata and status changed. JSON merge patch and JSON patch
//!   (the finalizer helper's `test`/`add`/`remove`) via the `json-patch` crate.
//! - `/status` subresource: apply / merge patch touch only `.status`.
//! - An object whose last finalizer is removed while `deletionTimestamp` is set disappears.
//!
//! - Watches (`?watch=true`): the changes after the requested `resourceVersion`, then live ones,
//!   filtered by label selector, so the real controllers (`controller::run`) can run on it.
//!
//! - The API server's refusal to change a StatefulSet's `volumeClaimTemplates`, `selector`,
//!   `serviceName` or `podManagementPolicy` (422), which once blocked every reconcile.
//! - Injected failures ([`FakeApi::fail`]): a status code for requests of a method whose path
//!   ends with a given suffix (a StorageClass without volume expansion, an API outage).
//!
//! - Authorization: [`FakeApi::client`] (the operator's client) may do only what the operator's
//!   RBAC table grants ([`pg_flo_operator::rbac`]); anything else gets `403 Forbidden`, as from
//!   a real API server, and is remembered ([`FakeApi::forbidden`]; the tests' `Env` fails a
//!   test that made such a request). A server-side apply that creates its object needs
//!   `create` too. [`FakeApi::admin_client`] (a user's `kubectl`) may do anything.
//! - Metadata-only reads (`Accept: ...;as=PartialObjectMetadata[List]`): lists and watches
//!   return `PartialObjectMetadata` objects (metadata, no data), as the API server does.
//!
//! Not implemented: field selectors, owner-reference garbage collection (tests that
//! need GC delete the children themselves), admission and schema validation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request the operator made.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// The `Accept` header.
    pub accept: String,
    pub body: Value,
}

/// One change, as a watch reports it: (resourceVersion, collection, type, object).
type WatchEvent = (u64, String, &'static str, Value);

struct State {
    /// Collection path (`/apis/apps/v1/namespaces/ns/deployments`) -> name -> object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    resource_version: u64,
    log: Vec<Recorded>,
    /// Every change so far, replayed to a watch that starts from an older resourceVersion.
    history: Vec<WatchEvent>,
    /// Live changes for open watches.
    changes: tokio::sync::broadcast::Sender<WatchEvent>,
    /// Injected failures: (method, path suffix, status code, message).
    failures: Vec<(String, String, u16, String)>,
    /// Requests of the operator's client its RBAC does not permit: `verb group/resource path`.
    forbidden: Vec<String>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            resource_version: 0,
            log: Vec::new(),
            history: Vec::new(),
            changes: tokio::sync::broadcast::channel(4096).0,
            failures: Vec::new(),
            forbidden: Vec::new(),
        }
    }
}

/// The fake API server.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

/// A JSON response with status `code`.
fn json_response(code: u16, body: &Value) -> Response<UnsyncBoxBody<Bytes, BoxError>> {
    let full =
        Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).map_err(|never| match never {});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(UnsyncBoxBody::new(full))
        .unwrap()
}

/// Splits `/api(s)/.../namespaces/<ns>/<plural>[/<name>[/<sub>]]` into (collection path, name,
/// subresource).
fn split_path(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ns_at = parts.iter().position(|p| *p == "namespaces")?;
    // parts[ns_at+1] = ns, parts[ns_at+2] = plural
    let plural_at = ns_at + 2;
    if parts.len() <= plural_at {
        return None;
    }
    let collection = format!("/{}", parts[..=plural_at].join("/"));
    let name = parts.get(plural_at + 1).map(|s| s.to_string());
    let sub = parts.get(plural_at + 2).map(|s| s.to_string());
    Some((collection, name, sub))
}

/// A cluster-wide collection path (`/apis/<g>/<v>/<plural>`, `/api/v1/<plural>`): the prefix of
/// its namespaced collections (`/apis/<g>/<v>/namespaces/`) and the plural.
fn cluster_path(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let base = match parts.as_slice() {
        ["api", v, _] => format!("/api/{v}"),
        ["apis", g, v, _] => format!("/apis/{g}/{v}"),
        _ => return None,
    };
    Some((format!("{base}/namespaces/"), parts.last()?.to_string()))
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `(API group, resource, verb)` a request is authorized as (`resource` is
/// `plural/subresource` for a subresource), as the API server's RBAC sees it.
pub fn authorization(method: &str, path: &str, query: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub] => (format!("{r}/{sub}"), true),
        _ => return None,
    };
    let watch = matches!(query_param(query, "watch").as_deref(), Some("true" | "1"));
    let verb = match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb.to_owned()))
}

/// Whether the operator's RBAC permits `verb` on `group`/`resource`.
fn operator_may(group: &str, resource: &str, verb: &str) -> bool {
    use pg_flo_operator::rbac::{permits, LEADER_ELECTION, WATCHED_NAMESPACES};
    permits(WATCHED_NAMESPACES, group, resource, verb)
        || permits(LEADER_ELECTION, group, resource, verb)
}

/// `obj` as the API server returns it to a metadata-only read.
fn metadata_only(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj["metadata"].clone(),
    })
}

fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let Some((k, v)) = term.split_once('=') else {
            return false;
        };
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn without_meta_and_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl State {
    fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Stores (or removes, for `DELETED`) an object and tells the watches.
    fn record(&mut self, collection: &str, type_: &'static str, obj: Value) {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let coll = self.objects.entry(collection.to_owned()).or_default();
        if type_ == "DELETED" {
            coll.remove(&name);
        } else {
            coll.insert(name, obj.clone());
        }
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.resource_version);
        let ev = (rv, collection.to_owned(), type_, obj);
        self.history.push(ev.clone());
        let _ = self.changes.send(ev);
    }

    fn create(&mut self, collection: &str, mut obj: Value) -> (u16, Value) {
        let Some(name) = obj["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "Invalid", "metadata.name is required".into());
        };
        if self
            .objects
            .get(collection)
            .is_some_and(|c| c.contains_key(&name))
        {
            return status(409, "AlreadyExists", format!("{name} already exists"));
        }
        let rv = self.next_rv();
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(format!("uid-{name}-{rv}"));
        meta["resourceVersion"] = json!(rv);
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!(now());
        if let Some(ns) = collection
            .split('/')
            .skip_while(|p| *p != "namespaces")
            .nth(1)
        {
            meta["namespace"] = json!(ns);
        }
        self.record(collection, "ADDED", obj.clone());
        (201, obj)
    }

    /// The API server's validation of an update: a StatefulSet's immutable spec fields.
    fn immutable_fields_changed(collection: &str, old: &Value, new: &Value) -> Option<String> {
        if !collection.ends_with("/statefulsets") {
            return None;
        }
        let templates = |v: &Value| {
            let mut t = v["spec"]["volumeClaimTemplates"].clone();
            if let Some(items) = t.as_array_mut() {
                for item in items {
                    if let Some(m) = item.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            t
        };
        let changed = templates(old) != templates(new)
            || ["selector", "serviceName", "podManagementPolicy"]
                .iter()
                .any(|k| old["spec"][k] != new["spec"][k]);
        changed.then(|| {
            format!(
                "StatefulSet.apps {:?} is invalid: spec: Forbidden: updates to statefulset spec for \
                 fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
                 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                old["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
    }

    /// Stores `new` as the next version of `old`, keeping system metadata.
    fn update(
        &mut self,
        collection: &str,
        old: &Value,
        mut new: Value,
        keep_status: bool,
    ) -> (u16, Value) {
        if let Some(message) = Self::immutable_fields_changed(collection, old, &new) {
            return status(422, "Invalid", message);
        }
        for k in ["uid", "creationTimestamp", "deletionTimestamp", "namespace"] {
            if old["metadata"].get(k).is_some() {
                new["metadata"][k] = old["metadata"][k].clone();
            }
        }
        if new["metadata"].get("finalizers").is_none()
            && old["metadata"].get("finalizers").is_some()
        {
            new["metadata"]["finalizers"] = old["metadata"]["finalizers"].clone();
        }
        if keep_status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        let mut generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        if without_meta_and_status(old) != without_meta_and_status(&new) {
            generation += 1;
        }
        new["metadata"]["generation"] = json!(generation);
        new["metadata"]["resourceVersion"] = json!(self.next_rv());
        if let Some(m) = new["metadata"].as_object_mut() {
            if m.get("finalizers")
                .is_some_and(|f| f.is_null() || f.as_array().is_some_and(|a| a.is_empty()))
            {
                m.remove("finalizers");
            }
        }
        let gone = new["metadata"].get("deletionTimestamp").is_some()
            && new["metadata"].get("finalizers").is_none();
        if gone {
            self.record(collection, "DELETED", new.clone());
        } else {
            self.record(collection, "MODIFIED", new.clone());
        }
        (200, new)
    }

    /// A watch on a collection: the changes after the requested `resourceVersion` (replayed),
    /// then live ones, as newline-delimited `{"type", "object"}` JSON; open until dropped.
    fn watch(
        &mut self,
        path: &str,
        query: &str,
        meta_only: bool,
    ) -> impl Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static {
        let collection = split_path(path).map(|(c, _, _)| c).unwrap_or_default();
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let selector = query_param(query, "labelSelector").unwrap_or_default();
        let wanted = move |ev: &WatchEvent| {
            ev.0 > since && ev.1 == collection && matches_selector(&ev.3, &selector)
        };
        let replay: Vec<WatchEvent> = self.history.iter().filter(|e| wanted(e)).cloned().collect();
        let rx = self.changes.subscribe();
        let frame = move |ev: WatchEvent| -> Result<Frame<Bytes>, BoxError> {
            let object = if meta_only {
                metadata_only(&ev.3)
            } else {
                ev.3
            };
            let mut line = serde_json::to_vec(&json!({"type": ev.2, "object": object})).unwrap();
            line.push(b'\n');
            Ok(Frame::data(Bytes::from(line)))
        };
        let replayed = futures_util::stream::iter(replay.into_iter().map(frame));
        let live = futures_util::stream::unfold((rx, wanted), move |(mut rx, wanted)| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) if wanted(&ev) => return Some((frame(ev), (rx, wanted))),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        futures_util::StreamExt::chain(replayed, live)
    }

    /// Why the operator may not make this request (`None`: it may): the verb it is authorized
    /// as is not in its RBAC table, or a server-side apply would create an object it may not
    /// create.
    fn refusal(&self, method: &str, path: &str, query: &str, content_type: &str) -> Option<String> {
        let Some((group, resource, verb)) = authorization(method, path, query) else {
            return Some(format!("{method} {path}: not a resource request"));
        };
        let mut needed = vec![verb];
        let creates = content_type.starts_with("application/apply-patch")
            && split_path(path).is_some_and(|(collection, name, sub)| {
                sub.is_none()
                    && !name.is_some_and(|n| {
                        self.objects
                            .get(&collection)
                            .is_some_and(|c| c.contains_key(&n))
                    })
            });
        if creates {
            needed.push("create".into());
        }
        let missing: Vec<String> = needed
            .into_iter()
            .filter(|v| !operator_may(&group, &resource, v))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "the operator may not {} {group}/{resource} ({method} {path})",
                missing.join(", ")
            )
        })
    }

    fn handle(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let Some((collection, name, sub)) = split_path(path) else {
            // A cluster-wide list: every namespace's objects of the kind.
            if let (true, Some((prefix, plural))) = (method == "GET", cluster_path(path)) {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(c, _)| {
                        c.strip_prefix(&prefix)
                            .and_then(|rest| rest.split_once('/'))
                            .is_some_and(|(_, p)| p == plural)
                    })
                    .flat_map(|(_, objs)| objs.values())
                    .filter(|o| matches_selector(o, &selector))
                    .cloned()
                    .collect();
                return (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.resource_version.to_string()}, "items": items}),
                );
            }
            return status(404, "NotFound", format!("unsupported path {path}"));
        };
        let current = name.as_ref().and_then(|n| {
            self.objects
                .get(&collection)
                .and_then(|c| c.get(n))
                .cloned()
        });
        match (method, name) {
            ("GET", None) => {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .objects
                    .get(&collection)
                    .map(|c| {
                        c.values()
                            .filter(|o| matches_selector(o, &selector))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.resource_version.to_string()}, "items": items}),
                )
            }
            ("GET", Some(n)) => match current {
                Some(o) => (200, o),
                None => status(404, "NotFound", format!("{n} not found")),
            },
            ("POST", None) => self.create(&collection, body),
            ("PUT", Some(n)) => match current {
                None => status(404, "NotFound", format!("{n} not found")),
                Some(old) => {
                    let sent = body["metadata"]["resourceVersion"].as_str();
                    if sent.is_some() && sent != old["metadata"]["resourceVersion"].as_str() {
                        return status(
                            409,
                            "Conflict",
                            format!("{n}: the object has been modified"),
                        );
                    }
                    self.update(&collection, &old, body, sub.as_deref() != Some("status"))
                }
            },
            ("DELETE", Some(n)) => match current {
                None => status(404, "NotFound", format!("{n} not found")),
                Some(mut old) => {
                    let has_finalizers = old["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty());
                    if has_finalizers {
                        if old["metadata"].get("deletionTimestamp").is_none() {
                            old["metadata"]["deletionTimestamp"] = json!(now());
                            old["metadata"]["resourceVersion"] = json!(self.next_rv());
                            self.record(&collection, "MODIFIED", old.clone());
                        }
                        (200, old)
                    } else {
                        old["metadata"]["resourceVersion"] = json!(self.next_rv());
                        self.record(&collection, "DELETED", old);
                        (
                            200,
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
                        )
                    }
                }
            },
            ("PATCH", Some(n)) => {
                let on_status = sub.as_deref() == Some("status");
                if content_type.starts_with("application/apply-patch") {
                    match current {
                        None if on_status => status(404, "NotFound", format!("{n} not found")),
                        None => {
                            let mut obj = body;
                            obj["metadata"]["name"] = json!(n);
                            self.create(&collection, obj)
                        }
                        Some(old) if on_status => {
                            let mut new = old.clone();
                            new["status"] = body["status"].clone();
                            self.update(&collection, &old, new, false)
                        }
                        Some(old) => {
                            let mut new = body;
                            // Labels/annotations applied replace ours; other metadata is system's.
                            let mut meta = old["metadata"].clone();
                            for k in ["labels", "annotations", "ownerReferences"] {
                                match new["metadata"].get(k) {
                                    Some(v) => meta[k] = v.clone(),
                                    None => {
                                        if let Some(m) = meta.as_object_mut() {
                                            m.remove(k);
                                        }
                                    }
                                }
                            }
                            new["metadata"] = meta;
                            self.update(&collection, &old, new, true)
                        }
                    }
                } else {
                    let Some(old) = current else {
                        return status(404, "NotFound", format!("{n} not found"));
                    };
                    let mut doc = old.clone();
                    if content_type.starts_with("application/merge-patch") {
                        if on_status {
                            json_patch::merge(&mut doc["status"], &body["status"]);
                        } else {
                            json_patch::merge(&mut doc, &body);
                        }
                    } else if content_type.starts_with("application/json-patch") {
                        if doc["metadata"].get("finalizers").is_none() {
                            doc["metadata"]["finalizers"] = Value::Null;
                        }
                        let patch: json_patch::Patch = match serde_json::from_value(body) {
                            Ok(p) => p,
                            Err(e) => return status(400, "BadRequest", e.to_string()),
                        };
                        if let Err(e) = json_patch::patch(&mut doc, &patch) {
                            return status(422, "Invalid", e.to_string());
                        }
                    } else {
                        return status(415, "UnsupportedMediaType", content_type.to_owned());
                    }
                    self.update(&collection, &old, doc, false)
                }
            }
            (m, _) => status(405, "MethodNotAllowed", format!("{m} {path}")),
        }
    }
}

impl FakeApi {
    /// An empty API server.
    pub fn new() -> Self {
        Self::default()
    }

    /// The operator's `kube::Client` on this fake: only what its RBAC permits (see the module
    /// documentation).
    pub fn client(&self) -> Client {
        self.client_with(true)
    }

    /// A `kube::Client` that may do anything (a user's `kubectl`).
    pub fn admin_client(&self) -> Client {
        self.client_with(false)
    }

    /// The operator's requests its RBAC does not permit (answered `403 Forbidden`).
    pub fn forbidden(&self) -> Vec<String> {
        self.state.lock().unwrap().forbidden.clone()
    }

    fn client_with(&self, enforce_rbac: bool) -> Client {
        let state = self.state.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let state = state.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await?.to_bytes();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes)
                        .unwrap_or_else(|_| serde_yaml::from_slice(&bytes).unwrap_or(Value::Null))
                };
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let accept = parts
                    .headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let meta_only = accept.contains("as=PartialObjectMetadata");
                let method = parts.method.as_str().to_owned();
                let path = parts.uri.path().to_owned();
                let query = parts.uri.query().unwrap_or("").to_owned();
                let mut st = state.lock().unwrap();
                st.log.push(Recorded {
                    method: method.clone(),
                    path: path.clone(),
                    query: query.clone(),
                    content_type: content_type.clone(),
                    accept: accept.clone(),
                    body: body.clone(),
                });
                if enforce_rbac {
                    if let Some(refused) = st.refusal(&method, &path, &query, &content_type) {
                        st.forbidden.push(refused.clone());
                        drop(st);
                        let (code, out) = status(403, "Forbidden", refused);
                        return Ok::<_, BoxError>(json_response(code, &out));
                    }
                }
                let watch = method == "GET"
                    && matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"));
                if watch {
                    let stream = st.watch(&path, &query, meta_only);
                    drop(st);
                    let resp = Response::builder()
                        .status(StatusCode::OK)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(UnsyncBoxBody::new(StreamBody::new(stream)))
                        .unwrap();
                    return Ok::<_, BoxError>(resp);
                }
                let failure = st
                    .failures
                    .iter()
                    .find(|(m, suffix, _, _)| *m == method && path.ends_with(suffix.as_str()))
                    .map(|(_, _, code, message)| (*code, message.clone()));
                let (code, mut out) = match failure {
                    Some((code, message)) => status(code, "Invalid", message),
                    None => st.handle(&method, &path, &query, &content_type, body),
                };
                if meta_only && code == 200 {
                    out = match out.get("items").and_then(Value::as_array) {
                        Some(items) => json!({
                            "apiVersion": "meta.k8s.io/v1",
                            "kind": "PartialObjectMetadataList",
                            "metadata": out["metadata"].clone(),
                            "items": items.iter().map(metadata_only).collect::<Vec<_>>(),
                        }),
                        None => metadata_only(&out),
                    };
                }
                drop(st);
                Ok::<_, BoxError>(json_response(code, &out))
            }
        });
        Client::new(svc, "default")
    }

    /// Makes every `method` request whose path ends with `path_suffix` fail with `code` and
    /// `message` (as an API server refusing it would), until [`FakeApi::clear_failures`].
    pub fn fail(&self, method: &str, path_suffix: &str, code: u16, message: &str) {
        self.state.lock().unwrap().failures.push((
            method.into(),
            path_suffix.into(),
            code,
            message.into(),
        ));
    }

    /// Removes the injected failures.
    pub fn clear_failures(&self) {
        self.state.lock().unwrap().failures.clear();
    }

    fn collection<K: Resource<DynamicType = ()>>(ns: &str) -> String {
        K::url_path(&(), Some(ns))
    }

    /// Creates `obj` (uid, resourceVersion, generation 1), as `kubectl apply` would.
    pub fn insert<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned>(
        &self,
        obj: &K,
    ) -> K {
        let out = self.create_object::<K>(&namespace_of(obj), serde_json::to_value(obj).unwrap());
        serde_json::from_value(out).unwrap()
    }

    /// Creates an object of kind `K` from raw JSON, bypassing the Rust type (an object the
    /// type cannot decode, as after a CRD upgrade the operator does not know yet).
    pub fn insert_json<K: Resource<DynamicType = ()>>(&self, ns: &str, mut v: Value) {
        v["metadata"]["namespace"] = json!(ns);
        self.create_object::<K>(ns, v);
    }

    /// Creates the object `v` of kind `K` in `ns` (sets `apiVersion` and `kind`); the stored
    /// object.
    fn create_object<K: Resource<DynamicType = ()>>(&self, ns: &str, mut v: Value) -> Value {
        v["apiVersion"] = json!(K::api_version(&()));
        v["kind"] = json!(K::kind(&()));
        let (code, out) = self
            .state
            .lock()
            .unwrap()
            .create(&Self::collection::<K>(ns), v);
        assert_eq!(code, 201, "insert failed: {out}");
        out
    }

    /// Replaces `obj` wholesale (a user's `kubectl apply` of a changed spec); bumps generation.
    pub fn replace<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned>(
        &self,
        obj: &K,
    ) -> K {
        let ns = namespace_of(obj);
        let name = obj.meta().name.clone().unwrap();
        let coll = Self::collection::<K>(&ns);
        let mut st = self.state.lock().unwrap();
        let old = st
            .objects
            .get(&coll)
            .and_then(|c| c.get(&name))
            .cloned()
            .expect("object exists");
        let mut v = serde_json::to_value(obj).unwrap();
        v["apiVersion"] = json!(K::api_version(&()));
        v["kind"] = json!(K::kind(&()));
        let (code, out) = st.update(&coll, &old, v, true);
        assert_eq!(code, 200);
        serde_json::from_value(out).unwrap()
    }

    /// The stored object, if any.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<K> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&Self::collection::<K>(ns))
            .and_then(|c| c.get(name))
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    /// Every stored object of a kind in `ns`, by name.
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, ns: &str) -> Vec<K> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&Self::collection::<K>(ns))
            .map(|c| {
                c.values()
                    .map(|v| serde_json::from_value(v.clone()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the stored objects of a kind in `ns`.
    pub fn names<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, ns: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&Self::collection::<K>(ns))
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes an object outright (what the garbage collector or kubelet would do).
    pub fn remove<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        let coll = Self::collection::<K>(ns);
        if let Some(mut obj) = st.objects.get(&coll).and_then(|c| c.get(name)).cloned() {
            obj["metadata"]["resourceVersion"] = json!(st.next_rv());
            st.record(&coll, "DELETED", obj);
        }
    }

    /// Sets `.status` of a stored object (what another controller would report).
    pub fn set_status<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str, status: Value) {
        let mut st = self.state.lock().unwrap();
        let rv = st.next_rv();
        let coll = Self::collection::<K>(ns);
        let mut obj = st
            .objects
            .get(&coll)
            .and_then(|c| c.get(name))
            .cloned()
            .expect("object exists");
        obj["status"] = status;
        obj["metadata"]["resourceVersion"] = json!(rv);
        st.record(&coll, "MODIFIED", obj);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().log.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The Events published in `ns`, oldest first: (type, reason, note).
    pub fn events(&self, ns: &str) -> Vec<(String, String, String)> {
        self.list::<k8s_openapi::api::events::v1::Event>(ns)
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// The namespace of `obj` (`default` when it names none).
fn namespace_of<K: Resource>(obj: &K) -> String {
    obj.meta()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}
