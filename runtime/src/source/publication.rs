//! The group's publication in the source database: created with `publish_via_partition_root
//! = true` (see the partition notes in `source::catalog`), or an existing one (pg_flo's, an
//! earlier version's) brought in line: published via the root, the group's tables added,
//! ancestors of the group's tables that the group does not name removed.
//!
//! Ownership: the publication's comment names the group that owns it and the slot of the
//! same name (`pg_flo_source::names`), so group `a_b` never uses or drops the slot of group
//! `a-b`.

use tokio_postgres::Client;

use pg_flo_source::names::{self, Ownership};

use crate::source::catalog::{ancestors, q, CatalogError, TableName};
use pg_flo_source::sql::quote_ident;

/// What [`ensure_publication`] found of an existing publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationState {
    /// Its comment (the owner mark, see `pg_flo_source::names::ownership`).
    pub comment: Option<String>,
    /// `publish_via_partition_root`.
    pub via_root: bool,
    /// Whether the connected role may alter it (owns it or is a member of its owner).
    pub may_alter: bool,
    /// Its member tables.
    pub members: Vec<TableName>,
    /// Members that are partition ancestors of one of the group's tables.
    pub ancestors_of_tables: Vec<TableName>,
}

/// The SQL that brings an existing publication in line with the group, or why it cannot be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationPlan {
    /// Statements to run, in order, in one transaction.
    pub statements: Vec<String>,
    /// `publish_via_partition_root` is turned on.
    pub via_root_set: bool,
    /// Tables added.
    pub added: usize,
    /// Ancestors removed.
    pub removed: Vec<TableName>,
    /// The group adopts an unmarked publication.
    pub adopted: bool,
}

/// The statements that create the group's publication for `tables`: published via the root,
/// marked as the group's.
pub fn create_publication_sql(group: &str, publication: &str, tables: &[TableName]) -> Vec<String> {
    vec![
        format!(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
            quote_ident(publication),
            table_list(tables.iter())
        ),
        names::mark_owner_sql(publication, group),
    ]
}

fn table_list<'a>(tables: impl Iterator<Item = &'a TableName>) -> String {
    tables.map(|t| t.quoted()).collect::<Vec<_>>().join(", ")
}

/// Decides what to do with the existing publication `state` of `group`: refuse another group's
/// publication; adopt an unmarked one (write the mark); publish via the root; add the tables it
/// lacks; remove members that are ancestors of the group's tables but not the group's own
/// (PostgreSQL would publish the partition's rows under them). `partitioned`: some of `tables`
/// is a partitioned table (then publishing via the root is required, not only wanted).
pub fn plan_publication(
    group: &str,
    publication: &str,
    tables: &[TableName],
    partitioned: bool,
    state: &PublicationState,
) -> Result<PublicationPlan, CatalogError> {
    let adopted = match names::ownership(group, state.comment.as_deref()) {
        Ownership::Other(owner) => {
            return Err(CatalogError::OtherGroup(names::foreign_owner_message(
                group, &owner,
            )))
        }
        Ownership::Own => false,
        Ownership::Unmarked => true,
    };
    let missing: Vec<&TableName> = tables
        .iter()
        .filter(|t| !state.members.contains(t))
        .collect();
    let mut removed: Vec<TableName> = state
        .ancestors_of_tables
        .iter()
        .filter(|a| state.members.contains(a) && !tables.contains(a))
        .cloned()
        .collect();
    removed.sort();
    removed.dedup();
    let mut statements = Vec::new();
    let changes = !state.via_root || !missing.is_empty() || !removed.is_empty() || adopted;
    if changes && !state.may_alter {
        let needed = !missing.is_empty() || !removed.is_empty() || (!state.via_root && partitioned);
        if needed {
            let fix = alter_sql(publication, state.via_root, &missing, &removed);
            return Err(CatalogError::Publication(format!(
                "publication {publication} needs changes that only its owner can make: run {} \
                 as its owner, or grant its owner role to the replicator's user",
                fix.join("; ")
            )));
        }
        // Only the mark (and publishing via the root, which changes nothing without
        // partitioned tables) are missing: go on without them.
        return Ok(PublicationPlan {
            statements,
            via_root_set: false,
            added: 0,
            removed: Vec::new(),
            adopted: false,
        });
    }
    statements.extend(alter_sql(publication, state.via_root, &missing, &removed));
    if adopted {
        statements.push(names::mark_owner_sql(publication, group));
    }
    Ok(PublicationPlan {
        statements,
        via_root_set: !state.via_root,
        added: missing.len(),
        removed,
        adopted,
    })
}

/// The statements that publish `publication` via the root (unless `via_root`), drop the
/// `removed` ancestors and add the `missing` tables, in that order.
fn alter_sql(
    publication: &str,
    via_root: bool,
    missing: &[&TableName],
    removed: &[TableName],
) -> Vec<String> {
    let qp = quote_ident(publication);
    let mut statements = Vec::new();
    if !via_root {
        statements.push(format!(
            "ALTER PUBLICATION {qp} SET (publish_via_partition_root = true)"
        ));
    }
    if !removed.is_empty() {
        statements.push(format!(
            "ALTER PUBLICATION {qp} DROP TABLE {}",
            table_list(removed.iter())
        ));
    }
    if !missing.is_empty() {
        statements.push(format!(
            "ALTER PUBLICATION {qp} ADD TABLE {}",
            table_list(missing.iter().copied())
        ));
    }
    statements
}

/// Creates the group's publication for `tables` (published via the partition root, marked as
/// the group's), or brings an existing one in line ([`plan_publication`]). Runs in one
/// transaction under an advisory lock on the publication's name, so two groups that map to
/// the same name (`a-b`, `a_b`) starting together cannot both claim it.
pub async fn ensure_publication(
    client: &Client,
    group: &str,
    publication: &str,
    tables: &[TableName],
) -> Result<(), CatalogError> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(q("starting the publication transaction"))?;
    let result = ensure_publication_in_tx(client, group, publication, tables).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client
        .batch_execute(end)
        .await
        .map_err(q("ending the publication transaction"));
    result?;
    ended
}

async fn ensure_publication_in_tx(
    client: &Client,
    group: &str,
    publication: &str,
    tables: &[TableName],
) -> Result<(), CatalogError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('pg_flo publication ' || $1::text))",
            &[&publication],
        )
        .await
        .map_err(q("locking the publication's name"))?;
    let (schemas, names): (Vec<&str>, Vec<&str>) = tables
        .iter()
        .map(|t| (t.schema.as_str(), t.table.as_str()))
        .unzip();
    let partitioned = client
        .query_one(
            "SELECT count(*) > 0 FROM unnest($1::text[], $2::text[]) AS t(s, t)
             JOIN pg_namespace n ON n.nspname = t.s
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.t AND c.relkind = 'p'",
            &[&schemas, &names],
        )
        .await
        .map_err(q("looking for partitioned tables"))?
        .get::<_, bool>(0);
    let row = client
        .query_opt(
            "SELECT obj_description(p.oid, 'pg_publication'), p.pubviaroot,
                    pg_has_role(p.pubowner, 'USAGE')
             FROM pg_publication p WHERE p.pubname = $1",
            &[&publication],
        )
        .await
        .map_err(q("looking up the publication"))?;
    let Some(row) = row else {
        for sql in create_publication_sql(group, publication, tables) {
            client
                .batch_execute(&sql)
                .await
                .map_err(q("creating the publication"))?;
        }
        tracing::info!(
            publication,
            tables = tables.len(),
            "created publication (publish_via_partition_root)"
        );
        return Ok(());
    };
    let pair = |r: &tokio_postgres::Row| TableName {
        schema: r.get(0),
        table: r.get(1),
    };
    // pg_publication_rel holds the members (pg_publication_tables hides partitions whose root
    // is published via the root); pg_publication_tables adds FOR ALL TABLES / IN SCHEMA ones.
    let members = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_publication_rel pr
             JOIN pg_publication p ON p.oid = pr.prpubid
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE p.pubname = $1
             UNION
             SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(q("reading the publication's tables"))?
        .iter()
        .map(pair)
        .collect();
    let ancestors_of_tables = ancestors(client, tables)
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let state = PublicationState {
        comment: row.get(0),
        via_root: row.get(1),
        may_alter: row.get(2),
        members,
        ancestors_of_tables,
    };
    let plan = plan_publication(group, publication, tables, partitioned, &state)?;
    for sql in &plan.statements {
        client
            .batch_execute(sql)
            .await
            .map_err(q("altering the publication"))?;
    }
    if plan.via_root_set {
        tracing::info!(
            publication,
            "publication now publishes partitions via their root (publish_via_partition_root)"
        );
    }
    if plan.added > 0 {
        tracing::info!(
            publication,
            added = plan.added,
            "added tables to existing publication"
        );
    }
    for t in &plan.removed {
        tracing::warn!(publication, table = %t, "removed a partitioned table the group does not name from the publication: its partitions named by the group would be published under it");
    }
    if plan.adopted {
        tracing::info!(
            publication,
            group,
            "marked the existing publication as the group's"
        );
    } else if names::ownership(group, state.comment.as_deref()) == Ownership::Unmarked {
        tracing::warn!(publication, "the publication belongs to another role: it cannot be marked as the group's, so a group whose name differs only in '-' versus '_' would not be detected");
    }
    Ok(())
}

/// Who owns the group's publication and slot, read from the publication's comment; `None`
/// when the publication does not exist.
pub async fn publication_ownership(
    client: &Client,
    group: &str,
    publication: &str,
) -> Result<Option<Ownership>, CatalogError> {
    let row = client
        .query_opt(names::PUBLICATION_COMMENT_SQL, &[&publication])
        .await
        .map_err(q("reading the publication's owner mark"))?;
    Ok(row.map(|r| names::ownership(group, r.get::<_, Option<&str>>(0))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::table as t;

    #[test]
    fn a_new_publication_is_published_via_the_root_and_marked() {
        assert_eq!(
            create_publication_sql("a-b", "pg_flo_a_b_publication", &[t("public.c"), t("s.x")]),
            vec![
                "CREATE PUBLICATION \"pg_flo_a_b_publication\" FOR TABLE \"public\".\"c\", \"s\".\"x\" \
                 WITH (publish_via_partition_root = true)"
                    .to_owned(),
                "COMMENT ON PUBLICATION \"pg_flo_a_b_publication\" IS 'pg_flo group a-b'".to_owned(),
            ]
        );
    }

    fn state(
        comment: Option<&str>,
        via_root: bool,
        may_alter: bool,
        members: &[&str],
    ) -> PublicationState {
        PublicationState {
            comment: comment.map(str::to_owned),
            via_root,
            may_alter,
            members: members.iter().map(|m| t(m)).collect(),
            ancestors_of_tables: Vec::new(),
        }
    }

    #[test]
    fn existing_publications() {
        const P: &str = "pg_flo_a_b_publication";
        let tables = [t("public.c"), t("public.d")];
        let plan = |group: &str, partitioned: bool, st: &PublicationState| {
            plan_publication(group, P, &tables, partitioned, st)
        };
        // Ours, up to date: nothing to do.
        let st = state(
            Some("pg_flo group a-b"),
            true,
            true,
            &["public.c", "public.d"],
        );
        assert_eq!(
            plan("a-b", true, &st).unwrap().statements,
            Vec::<String>::new()
        );
        // Another group's: refused, naming both groups.
        let err = plan("a_b", true, &st).unwrap_err().to_string();
        assert!(err.contains("group \"a_b\" and group \"a-b\""), "{err}");
        assert!(err.contains("belong to group \"a-b\""), "{err}");
        // Of an earlier version: via the root, the missing table, and the mark.
        let st = state(None, false, true, &["public.c"]);
        let p = plan("a-b", true, &st).unwrap();
        assert_eq!(
            p.statements,
            vec![
                format!("ALTER PUBLICATION \"{P}\" SET (publish_via_partition_root = true)"),
                format!("ALTER PUBLICATION \"{P}\" ADD TABLE \"public\".\"d\""),
                format!("COMMENT ON PUBLICATION \"{P}\" IS 'pg_flo group a-b'"),
            ]
        );
        assert!(p.adopted && p.via_root_set);
        assert_eq!(p.added, 1);
        // A member that is an ancestor of one of the group's tables (the group names only a
        // partition now) is removed; other extra members stay.
        let mut st = state(
            Some("pg_flo group a-b"),
            true,
            true,
            &["public.c", "public.d", "public.root", "public.x"],
        );
        st.ancestors_of_tables = vec![t("public.root"), t("public.root")];
        let p = plan("a-b", true, &st).unwrap();
        assert_eq!(
            p.statements,
            vec![format!(
                "ALTER PUBLICATION \"{P}\" DROP TABLE \"public\".\"root\""
            )]
        );
        assert_eq!(p.removed, vec![t("public.root")]);
        // Not ours to alter: needed changes are refused with the statements to run...
        let st = state(None, false, false, &["public.c", "public.d"]);
        let err = plan("a-b", true, &st).unwrap_err().to_string();
        assert!(
            err.contains(&format!("run ALTER PUBLICATION \"{P}\" SET (publish_via_partition_root = true) as its owner")),
            "{err}"
        );
        let st = state(None, true, false, &["public.c"]);
        let err = plan("a-b", false, &st).unwrap_err().to_string();
        assert!(err.contains("ADD TABLE \"public\".\"d\""), "{err}");
        // ...while the mark alone (and via-root without partitioned tables) is skipped.
        let st = state(None, false, false, &["public.c", "public.d"]);
        let p = plan("a-b", false, &st).unwrap();
        assert!(p.statements.is_empty() && !p.adopted);
    }
}
