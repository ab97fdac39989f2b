//! Names of the objects a group owns in the source database. They are pg_flo's strings, so an
//! existing pg_flo deployment's slot and publication are picked up.

/// The publication: `pg_flo_<group, '-' replaced by '_'>_publication`.
pub fn publication_name(group: &str) -> String {
    format!("pg_flo_{}_publication", group.replace('-', "_"))
}

/// The logical replication slot: the same string as [`publication_name`] (as pg_flo).
pub fn slot_name(group: &str) -> String {
    publication_name(group)
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
}
