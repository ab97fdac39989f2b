//! The configuration contract shared by the runtime (`pg_flo`, which parses it) and the
//! operator (which renders it): one definition of every config-file key, of the rules and
//! routing files, and of the enums both sides use.
//!
//! - [`runtime`]: the settings of `pg_flo` (config file keys, flags, `PG_FLO_*` variables).
//! - [`value`]: the value grammar of those settings (ports, durations, sizes, booleans), for
//!   flags, variables and file alike.
//! - [`names`]: the NATS subject, consumer, streams, slot and publication of a group.
//! - [`rules`]: the rules file (`--rules-config`) and its validation.
//! - [`routing`]: the routing file (`--routing-config`) and its validation.
//! - [`operation`]: the kinds of change both files name; [`lenient`]: how the two files keep
//!   what they hold so that validation reports every problem at once.
//! - [`SslMode`]: libpq's `sslmode`, defined with the TLS code that interprets it
//!   (`pg_flo_source::tls`) and re-exported here.

pub mod lenient;
pub mod names;
pub mod operation;
pub mod routing;
pub mod rules;
pub mod runtime;
pub mod value;

pub use pg_flo_source::tls::SslMode;
