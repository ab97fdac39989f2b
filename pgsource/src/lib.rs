//! What a pg_flo group creates in its source PostgreSQL database, and how to reach that
//! database over TLS: shared by the runtime (`pg_flo replicator` creates and uses these
//! objects) and the operator (reports the slot's state, drops the objects when a group is
//! deleted), so both name and remove exactly the same things.
//!
//! - [`names`]: the replication slot and publication of a group;
//! - [`ddl`]: the SQL that creates and removes the group's DDL capture objects
//!   (`--track-ddl`);
//! - [`sql`]: identifier and literal quoting;
//! - [`oid`]: the OIDs of PostgreSQL's built-in types;
//! - [`tls`]: rustls client configurations with libpq's `sslmode` semantics.
//!
//! No IO here: callers read CA files or Secrets and run the SQL on their own connections.

pub mod ddl;
pub mod names;
pub mod oid;
pub mod sql;
pub mod tls;
