//! Names derived from a group: the NATS subject and the workers' durable consumer here, the
//! source database's slot and publication and the JetStream streams re-exported from
//! `pg_flo_source::names` (their one definition). pg_flo's strings, so an existing
//! deployment's slot, publication, stream and consumer are picked up.

pub use pg_flo_source::names::{publication_name, slot_name, stream_name, validate_group};

/// NATS subject the group's changes are published on: `pgflo.<group>`.
pub fn subject(group: &str) -> String {
    format!("pgflo.{group}")
}

/// Durable JetStream consumer of the workers: `pgflo_<group>_consumer`.
pub fn consumer_name(group: &str) -> String {
    format!("pgflo_{group}_consumer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derived_from_the_group() {
        assert_eq!(slot_name("my-group"), "pg_flo_my_group_publication");
        assert_eq!(publication_name("my-group"), "pg_flo_my_group_publication");
        assert_eq!(stream_name("my-group"), "pgflo_my-group_stream");
        assert_eq!(subject("my-group"), "pgflo.my-group");
        assert_eq!(consumer_name("my-group"), "pgflo_my-group_consumer");
    }
}
