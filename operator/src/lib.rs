//! pg_flo Kubernetes operator: custom resources, the objects they render to, the source
//! database's slot state (and, next, their reconciliation).

pub mod crd;
pub mod resources;
pub mod source;
