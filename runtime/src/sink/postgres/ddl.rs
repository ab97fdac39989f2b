//! DDL replay in the target (`--track-ddl`): what the postgres sink does with a DDL change
//! that capture (`source::ddl`) put in the stream.
//!
//! A DDL change is a barrier: the statements before it are sent first. Its statement runs
//! under a savepoint in the open transaction, or, for `CREATE/DROP INDEX CONCURRENTLY`
//! ([`is_concurrent`]), after committing the open transaction at the previous message's
//! position, outside any transaction. Only errors that mean "the target already has this"
//! ([`error_verdict`]) are skipped, with a warning. A change refused at the source (no
//! statement could be singled out of its query) stops the worker with what to do
//! ([`refusal_step`]), unless `internal_pg_flo.ddl_applied_by_hand` records its LSN.

use crate::lsn::Lsn;
use crate::message::{ddl_replay, Change, ChangeBatch, DdlReplay, Position};
use crate::sink::SinkError;
use crate::statement::{split_statements, Statement};

use super::{sql, PostgresSink};

/// Whether a DDL change refused at the source was applied to the target by hand (the way on
/// that the refusal's error names, [`refusal_step`]).
const APPLIED_BY_HAND_SQL: &str = "SELECT 1 FROM internal_pg_flo.ddl_applied_by_hand \
     WHERE group_name = $1 AND ddl_lsn = $2::text::pg_lsn";

impl PostgresSink {
    /// Runs a DDL change. Inside the open target transaction, under a savepoint, so that a
    /// statement whose effect the target already has (a redelivered `CREATE INDEX
    /// CONCURRENTLY`, a `DROP` of something gone: [`error_verdict`]) is skipped
    /// with a warning instead of failing the batch; any other error stops the worker.
    /// `CREATE/DROP INDEX CONCURRENTLY` cannot run in a transaction: the open transaction
    /// (complete source transactions up to `before`) is committed first, and the statement
    /// runs on its own. A change refused at the source (no statement could be singled out of
    /// its query) stops the worker, unless `internal_pg_flo.ddl_applied_by_hand` records it.
    pub(super) async fn apply_ddl(
        &mut self,
        batch: &ChangeBatch,
        change: &Change,
        before: Option<Position>,
    ) -> Result<(), SinkError> {
        let rel = batch.relation(change);
        let table = sql::qualified(&rel.schema, &rel.table);
        let command = match ddl_replay(rel, change) {
            DdlReplay::Run(command) => command,
            DdlReplay::Nothing => return Ok(()),
            DdlReplay::Refused(reason) => {
                let lsn = Lsn(change.lsn).to_string();
                let step = "reading internal_pg_flo.ddl_applied_by_hand";
                let done = self
                    .client
                    .query_opt(APPLIED_BY_HAND_SQL, &[&self.cfg.group, &lsn])
                    .await
                    .map_err(|e| self.error(step, e))?;
                if done.is_some() {
                    tracing::warn!(table = %table, lsn, "DDL refused at the source was applied to the target by hand; going on");
                    return Ok(());
                }
                return Err(SinkError::Invalid(refusal_step(
                    &table,
                    &self.cfg.group,
                    &lsn,
                    &reason,
                )));
            }
        };
        let step = format!("applying DDL to {table}");
        let already_applied = |e: &tokio_postgres::Error| {
            e.code()
                .is_some_and(|c| error_verdict(c.code(), &command) == ErrorVerdict::AlreadyApplied)
        };
        if is_concurrent(&command) {
            if self.tx_open {
                // The worker's `pending` (messages after the DDL in this flush) stays pending.
                let pending = self.pending;
                match before {
                    Some(p) => {
                        self.commit_open(p).await?;
                        self.pending = pending;
                    }
                    None => {
                        self.client
                            .batch_execute("COMMIT")
                            .await
                            .map_err(|e| self.error(step.clone(), e))?;
                        self.tx_open = false;
                    }
                }
            }
            if let Err(e) = self.client.batch_execute(&command).await {
                if !already_applied(&e) {
                    return Err(self.error(step, e));
                }
                tracing::warn!(table = %table, error = %crate::redact::error_chain(&e), "DDL already applied in the target; skipping");
            }
            self.statements.clear();
            self.copy_eligible.clear();
            return Ok(());
        }
        if !self.tx_open {
            self.begin().await?;
        }
        self.client
            .batch_execute("SAVEPOINT pg_flo_ddl")
            .await
            .map_err(|e| self.error(step.clone(), e))?;
        match self.client.batch_execute(&command).await {
            Ok(()) => self
                .client
                .batch_execute("RELEASE SAVEPOINT pg_flo_ddl")
                .await
                .map_err(|e| self.error(step, e))?,
            Err(e) if already_applied(&e) => {
                tracing::warn!(table = %table, error = %crate::redact::error_chain(&e), "DDL already applied in the target; skipping");
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT pg_flo_ddl")
                    .await
                    .map_err(|e| self.error(step, e))?;
            }
            Err(e) => {
                return Err(self.error(
                    format!("{step} (the statement failed in the target; it is not a change the target already has)"),
                    e,
                ))
            }
        }
        // Prepared statements may refer to the old shape of the table.
        self.statements.clear();
        self.copy_eligible.clear();
        Ok(())
    }
}

/// Whether the DDL must run outside a transaction block.
pub fn is_concurrent(command: &str) -> bool {
    split_statements(command).iter().any(|s| {
        let st = Statement::parse(s);
        let words: Vec<&str> = st.words().take(4).collect();
        matches!(words.first(), Some(&"create" | &"drop")) && words.contains(&"concurrently")
    })
}

/// What a replayed DDL statement's error means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorVerdict {
    /// The target already has the change (a redelivery, or it was applied there by hand):
    /// skip it with a warning.
    AlreadyApplied,
    /// The change did not apply: stop.
    Failed,
}

/// Classifies the SQLSTATE of a replayed DDL statement's error. Only "already there" outcomes
/// are [`ErrorVerdict::AlreadyApplied`]: a duplicate column, table / relation or object; and an
/// undefined column, table or object only for a `DROP` of it (a `DROP ...`, or an `ALTER TABLE`
/// whose every action is a `DROP`, where a missing table still fails).
pub fn error_verdict(sqlstate: &str, command: &str) -> ErrorVerdict {
    const DUPLICATE_COLUMN: &str = "42701";
    const DUPLICATE_TABLE: &str = "42P07";
    const DUPLICATE_OBJECT: &str = "42710";
    const UNDEFINED_COLUMN: &str = "42703";
    const UNDEFINED_TABLE: &str = "42P01";
    const UNDEFINED_OBJECT: &str = "42704";
    let statement = split_statements(command)
        .first()
        .map(|s| Statement::parse(s))
        .unwrap_or_else(|| Statement::parse(""));
    let drop_statement = statement.words().next() == Some("drop");
    let drops = statement.is_drop();
    match sqlstate {
        DUPLICATE_COLUMN | DUPLICATE_TABLE | DUPLICATE_OBJECT => ErrorVerdict::AlreadyApplied,
        UNDEFINED_COLUMN | UNDEFINED_OBJECT if drops => ErrorVerdict::AlreadyApplied,
        UNDEFINED_TABLE if drop_statement => ErrorVerdict::AlreadyApplied,
        _ => ErrorVerdict::Failed,
    }
}

/// The error step of a refused DDL change: what happened and how to go on.
pub fn refusal_step(table: &str, group: &str, lsn: &str, reason: &str) -> String {
    format!(
        "DDL on {table} at source position {lsn} cannot be replayed: {reason}; nothing of its \
         query was run in the target. Apply the schema change to the target yourself, then \
         record that in the target with `INSERT INTO internal_pg_flo.ddl_applied_by_hand \
         (group_name, ddl_lsn) VALUES ('{}', '{lsn}')` and restart the worker. To avoid this, \
         run schema changes of tracked tables as plain statements, not inside DO blocks, \
         functions or procedures",
        group.replace('\'', "''")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_commands_are_recognised() {
        assert!(is_concurrent("CREATE INDEX CONCURRENTLY i ON t (c)"));
        assert!(is_concurrent("create unique index concurrently i on t (c)"));
        assert!(is_concurrent("DROP INDEX CONCURRENTLY i"));
        // What capture isolates of a `DROP INDEX CONCURRENTLY` (`source::ddl::isolate`).
        assert!(is_concurrent(
            "DROP INDEX CONCURRENTLY IF EXISTS public.users_a_idx"
        ));
        assert!(!is_concurrent("CREATE INDEX i ON t (c)"));
        assert!(!is_concurrent("ALTER TABLE t ADD concurrently int"));
    }

    #[test]
    fn only_already_applied_errors_are_skipped() {
        use ErrorVerdict::{AlreadyApplied as Skip, Failed as Stop};
        for (code, command, verdict) in [
            ("42701", "ALTER TABLE t ADD COLUMN a int", Skip),
            ("42P07", "CREATE INDEX i ON t (a)", Skip),
            ("42710", "ALTER TABLE t ADD CONSTRAINT c UNIQUE (a)", Skip),
            // Something already gone, for a DROP of it.
            ("42704", "DROP INDEX i", Skip),
            ("42P01", "DROP TABLE t", Skip),
            ("42703", "ALTER TABLE t DROP COLUMN a", Skip),
            (
                "42703",
                "ALTER TABLE ONLY public.t DROP COLUMN a, DROP COLUMN b",
                Skip,
            ),
            ("42704", "alter table \"T\" drop constraint c", Skip),
            // The DDL really failed.
            ("42703", "ALTER TABLE t RENAME COLUMN a TO b", Stop),
            ("42703", "ALTER TABLE t ALTER COLUMN a TYPE bigint", Stop),
            ("42703", "ALTER TABLE t ALTER COLUMN a DROP DEFAULT", Stop),
            ("42703", "ALTER TABLE t ADD b int, DROP COLUMN a", Stop),
            ("42703", "CREATE INDEX i ON t (missing)", Stop),
            ("42P01", "ALTER TABLE t ADD COLUMN a int", Stop),
            ("42P01", "ALTER TABLE t DROP COLUMN a", Stop),
            (
                "42704",
                "ALTER TABLE t ALTER COLUMN a TYPE no_such_type",
                Stop,
            ),
            ("23505", "CREATE UNIQUE INDEX i ON t (a)", Stop),
            ("42501", "DROP INDEX i", Stop),
        ] {
            assert_eq!(error_verdict(code, command), verdict, "{code} {command}");
        }
    }

    #[test]
    fn refusal_step_names_the_way_out() {
        let s = refusal_step("\"public\".\"t\"", "it's", "0/16B3F28", "why");
        assert!(s.contains("VALUES ('it''s', '0/16B3F28')"), "{s}");
        assert!(s.contains("internal_pg_flo.ddl_applied_by_hand"), "{s}");
    }
}
