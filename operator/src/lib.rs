//! pg_flo Kubernetes operator: custom resources (and, next, their reconciliation).

pub mod crd;
pub mod resources;
