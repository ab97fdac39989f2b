//! The configuration contract shared by the runtime (`pg_flo`, which parses it) and the
//! operator (which renders it): one definition of every config-file key, of the rules and
//! routing files, and of the enums both sides use.
//!
//! - [`runtime`]: the runtime's config file (`--config`), flags' third layer.
//! - [`rules`]: the rules file (`--rules-config`) and its validation.
//! - [`routing`]: the routing file (`--routing-config`) and its validation.
//! - [`operation`]: the kinds of change both files name; [`lenient`]: how the two files keep
//!   what they hold so that validation reports every problem at once.

pub mod lenient;
pub mod operation;
pub mod routing;
pub mod rules;
pub mod runtime;
