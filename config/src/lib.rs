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

/// The hash of a set of configuration files, by name and content (FNV-1a 64, hex): the
/// operator's `pgflo.io/config-hash` of a ConfigMap's `data` (file name = key), and what a
/// `pg_flo` process reports in `pg_flo_config_info{hash}` for the files it read (file name =
/// the file's base name), so the two compare. Order-independent: entries are sorted by name.
/// Names and contents are length-prefixed, so `("ab", "c")` and `("a", "bc")` differ.
pub fn files_hash<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut files: Vec<(&str, &[u8])> = files.into_iter().collect();
    files.sort();
    let mut h = FnvHasher::default();
    for (name, content) in files {
        h.feed(b"d");
        h.feed(name.as_bytes());
        h.feed(content);
    }
    h.hex()
}

/// FNV-1a 64 over length-prefixed chunks (see [`files_hash`]).
#[derive(Clone, Copy, Debug)]
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl FnvHasher {
    /// Feeds the length of `bytes` (u64, little-endian), then `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        for chunk in [&(bytes.len() as u64).to_le_bytes()[..], bytes] {
            for b in chunk {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(PRIME);
            }
        }
    }

    /// The hash so far, 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hash_is_by_name_and_content_in_any_order() {
        let a = files_hash([("rules.yaml", &b"x"[..]), ("pg_flo.yaml", b"y")]);
        assert_eq!(
            a,
            files_hash([("pg_flo.yaml", &b"y"[..]), ("rules.yaml", b"x")])
        );
        assert_ne!(a, files_hash([("rules.yaml", &b"x"[..])]));
        assert_ne!(
            files_hash([("ab", &b"c"[..])]),
            files_hash([("a", &b"bc"[..])])
        );
        // FNV-1a 64 of nothing: the offset basis.
        assert_eq!(files_hash([]), "cbf29ce484222325");
    }
}
