//! pg_flo Kubernetes operator: custom resources, the builders of their Kubernetes objects, and
//! the controllers that reconcile them.

pub mod controller;
pub mod crd;
pub mod group_name;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod resources;
pub mod source;
