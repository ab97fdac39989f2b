//! Names of the objects a group owns: in the source database (slot, publication; pg_flo's
//! strings, so an existing pg_flo deployment's slot and publication are picked up) and in NATS
//! JetStream (its streams). The runtime creates them, the operator reports and deletes them:
//! one definition keeps the two in agreement.

/// The publication: `pg_flo_<group, '-' replaced by '_'>_publication`.
pub fn publication_name(group: &str) -> String {
    format!("pg_flo_{}_publication", group.replace('-', "_"))
}

/// The logical replication slot: the same string as [`publication_name`] (as pg_flo).
pub fn slot_name(group: &str) -> String {
    publication_name(group)
}

/// The JetStream stream of the group's changes: `pgflo_<group>_stream`.
pub fn stream_name(group: &str) -> String {
    format!("pgflo_{group}_stream")
}

/// The stream holding the group's state (one message per subject `pgflo.<group>.state.*`).
pub fn state_stream(group: &str) -> String {
    format!("pgflo_{group}_state")
}

/// The stream holding the group's dead-lettered messages.
pub fn dead_letter_stream(group: &str) -> String {
    format!("pgflo_{group}_dlq")
}

/// Every stream a group owns: its changes, its state and its dead letters.
pub fn group_streams(group: &str) -> [String; 3] {
    [
        stream_name(group),
        state_stream(group),
        dead_letter_stream(group),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_flo_names() {
        assert_eq!(slot_name("my-group"), "pg_flo_my_group_publication");
        assert_eq!(publication_name("my-group"), "pg_flo_my_group_publication");
        assert_eq!(slot_name("orders"), "pg_flo_orders_publication");
    }

    #[test]
    fn stream_names() {
        assert_eq!(
            group_streams("my-group"),
            [
                "pgflo_my-group_stream".to_string(),
                "pgflo_my-group_state".to_string(),
                "pgflo_my-group_dlq".to_string()
            ]
        );
    }
}
