//! Custom resource definitions of the operator: group `pgflo.io`, version `v1alpha1`.
//!
//! - [`ReplicationGroup`]: one source database (one replication slot), its NATS JetStream, its
//!   replicator and worker, and the sink.
//! - [`Rule`]: per-table transforms, filters and column exclusions (pg_flo's rules file).
//! - [`Route`]: per-table renames of the table and its columns (pg_flo's routing file).
//!
//! The Rust field docs are the schema descriptions of the generated CRDs (`pg-flo-operator crd`).

mod replication_group;
mod route;
mod rule;

pub use replication_group::*;
pub use route::*;
pub use rule::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every custom resource of the operator.
pub const GROUP: &str = "pgflo.io";
/// API version of every custom resource of the operator.
pub const VERSION: &str = "v1alpha1";

/// The current time as the API server stores a `Time` (whole seconds, RFC 3339): a status
/// holding a finer time would never equal the one read back, and be written again on every
/// reconcile.
pub fn time_now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
    )
}

/// A key of a Secret in the namespace of the custom resource.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A Secret (as a whole) in the namespace of the custom resource.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Reference to the ReplicationGroup (same namespace) a Rule or a Route belongs to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupRef {
    /// Name of the ReplicationGroup.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Kind of change a rule or a route applies to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Row inserts.
    Insert,
    /// Row updates.
    Update,
    /// Row deletes.
    Delete,
}

impl From<Operation> for pg_flo_config::operation::Operation {
    fn from(op: Operation) -> Self {
        match op {
            Operation::Insert => pg_flo_config::operation::Operation::Insert,
            Operation::Update => pg_flo_config::operation::Operation::Update,
            Operation::Delete => pg_flo_config::operation::Operation::Delete,
        }
    }
}

/// The CustomResourceDefinitions of the operator, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![ReplicationGroup::crd(), Rule::crd(), Route::crd()]
}

/// File name (`<plural>.<group>.yaml`) of a generated CRD.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Error of rendering a CRD.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// serde_yaml could not serialize the CRD.
    #[error("cannot serialize CRD to YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// One CRD as a YAML document (no leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, RenderError> {
    Ok(serde_yaml::to_string(crd)?)
}

/// All CRDs as one multi-document YAML stream.
pub fn all_crds_yaml() -> Result<String, RenderError> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}
