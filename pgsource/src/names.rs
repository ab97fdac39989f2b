//! Names of the objects a group owns: in the source database (slot, publication; pg_flo's
//! strings, so an existing pg_flo deployment's slot and publication are picked up) and in NATS
//! JetStream (its streams). The runtime creates them, the operator reports and deletes them:
//! one definition keeps the two in agreement.
//!
//! Two group names can map to the same slot and publication: `a-b` and `a_b` (PostgreSQL
//! slot names allow only `[a-z0-9_]`, so `-` becomes `_`; upper-case group names are refused by
//! [`validate_group`]). pg_flo's names are kept for existing groups, so the clash is settled by
//! ownership instead: the publication's comment names the group that owns it and the slot of
//! the same name ([`owner_comment`], [`ownership`]). The runtime writes the mark when it
//! creates (or first adopts) the publication and refuses to run, or to clean up, a group whose
//! publication another group owns; the operator refuses to drop another group's objects.

use crate::sql::{quote_ident, quote_literal};

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

/// PostgreSQL's limit on identifier (and slot name) length, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Checks that `group` can name NATS subjects and the replication slot: letters, digits, `_`
/// and `-`, no upper case (slot names allow only `[a-z0-9_]`, and a group `A` next to a group
/// `a` would share one slot), and a slot name of at most 63 bytes.
///
/// The error text says what to change; it does not say which setting carries the group.
pub fn validate_group(group: &str) -> Result<(), String> {
    if group.is_empty() {
        return Err("the group name must not be empty".to_owned());
    }
    if !group
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "invalid group name {group:?}: use only letters, digits, '_' and '-' (the group is \
             part of NATS subjects and PostgreSQL object names)"
        ));
    }
    let slot = slot_name(group);
    if !slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "invalid group name {group:?}: it gives the replication slot name {slot:?}, but slot \
             names allow only lower-case letters, digits and underscores: use the group name {:?}",
            group.to_ascii_lowercase()
        ));
    }
    if slot.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "invalid group name {group:?}: it gives the replication slot name {slot:?} of {} \
             bytes, but PostgreSQL allows at most {MAX_IDENTIFIER_BYTES}: use a group name of at \
             most {} characters",
            slot.len(),
            MAX_IDENTIFIER_BYTES - slot_name("").len()
        ));
    }
    Ok(())
}

/// What the owner mark on a publication starts with.
const OWNER_PREFIX: &str = "pg_flo group ";

/// The comment that marks the group's publication (and the slot of the same name) as owned
/// by `group`: `pg_flo group <group>`.
pub fn owner_comment(group: &str) -> String {
    format!("{OWNER_PREFIX}{group}")
}

/// `COMMENT ON PUBLICATION` that marks `publication` as owned by `group`.
pub fn mark_owner_sql(publication: &str, group: &str) -> String {
    format!(
        "COMMENT ON PUBLICATION {} IS {}",
        quote_ident(publication),
        quote_literal(&owner_comment(group))
    )
}

/// Reads a publication's comment: one row (`comment`, possibly NULL) when the publication
/// exists, none otherwise. `$1` is the publication name.
pub const PUBLICATION_COMMENT_SQL: &str =
    "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1";

/// Whose a group's publication (and slot) is, from the publication's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The comment names this group.
    Own,
    /// No owner mark (created by pg_flo or an earlier version, or the comment was changed):
    /// the group may adopt it by writing its mark.
    Unmarked,
    /// Another group owns it: this group must neither use nor drop it.
    Other(String),
}

/// Decides the ownership of a publication whose comment is `comment`, for `group`.
pub fn ownership(group: &str, comment: Option<&str>) -> Ownership {
    match comment.and_then(|c| c.strip_prefix(OWNER_PREFIX)) {
        Some(owner) if owner == group => Ownership::Own,
        Some(owner) if !owner.is_empty() => Ownership::Other(owner.to_owned()),
        _ => Ownership::Unmarked,
    }
}

/// The message for a group whose slot and publication belong to `owner`: which names clash,
/// and the fix.
pub fn foreign_owner_message(group: &str, owner: &str) -> String {
    format!(
        "group {group:?} and group {owner:?} map to the same replication slot and publication \
         {:?}, which belong to group {owner:?}: choose a group name that differs from {owner:?} \
         in more than '-' versus '_'",
        publication_name(group)
    )
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

    #[test]
    fn group_names() {
        for (group, needle) in [
            ("", "must not be empty"),
            ("My-Group", "use the group name \"my-group\""),
            ("A", "use the group name \"a\""),
            ("a.b", "only letters, digits"),
            ("a b", "only letters, digits"),
            ("é", "only letters, digits"),
            (&"x".repeat(45), "at most 44 characters"),
        ] {
            let err = validate_group(group).unwrap_err();
            assert!(err.contains(needle), "{group}: {err}");
        }
        for group in ["a", "my-group_1", "a-b", "a_b", &"x".repeat(44)] {
            assert_eq!(validate_group(group), Ok(()), "{group}");
        }
    }

    #[test]
    fn owner_marks() {
        assert_eq!(owner_comment("a-b"), "pg_flo group a-b");
        assert_eq!(
            mark_owner_sql("pg_flo_a_b_publication", "it's"),
            "COMMENT ON PUBLICATION \"pg_flo_a_b_publication\" IS 'pg_flo group it''s'"
        );
        for (group, comment, expected) in [
            ("a-b", Some("pg_flo group a-b"), Ownership::Own),
            (
                "a_b",
                Some("pg_flo group a-b"),
                Ownership::Other("a-b".into()),
            ),
            (
                "a-b",
                Some("pg_flo group a_b"),
                Ownership::Other("a_b".into()),
            ),
            ("a-b", None, Ownership::Unmarked),
            ("a-b", Some("created by the DBA"), Ownership::Unmarked),
            ("a-b", Some("pg_flo group "), Ownership::Unmarked),
            (
                "a-b",
                Some("pg_flo group a-bc"),
                Ownership::Other("a-bc".into()),
            ),
        ] {
            assert_eq!(ownership(group, comment), expected, "{group} {comment:?}");
        }
        let m = foreign_owner_message("a_b", "a-b");
        assert!(m.contains("\"pg_flo_a_b_publication\""), "{m}");
        assert!(m.contains("belong to group \"a-b\""), "{m}");
    }
}
