//! The applied position in the target: `internal_pg_flo.applied_position` (one row per group:
//! the position and its source), created at start with `internal_pg_flo.ddl_applied_by_hand`;
//! reading the row back, and the statement `commit` writes it with in the data's transaction
//! (see "Transactions and the applied position" in the module docs of `sink::postgres`).

use crate::lsn::Lsn;
use crate::message::{Position, SourceId};
use crate::sink::SinkError;

use super::PostgresSink;

pub(super) const SETUP_SQL: &str = "CREATE SCHEMA IF NOT EXISTS internal_pg_flo; \
     CREATE TABLE IF NOT EXISTS internal_pg_flo.applied_position (\
       group_name text PRIMARY KEY, \
       commit_lsn pg_lsn NOT NULL, \
       seq bigint NOT NULL, \
       updated_at timestamptz NOT NULL DEFAULT now(), \
       source_system_identifier numeric, \
       source_slot_origin pg_lsn); \
     DO $$ BEGIN \
       IF NOT EXISTS (SELECT 1 FROM pg_attribute \
           WHERE attrelid = 'internal_pg_flo.applied_position'::regclass \
             AND attname = 'source_slot_origin' AND NOT attisdropped) THEN \
         ALTER TABLE internal_pg_flo.applied_position \
           ADD COLUMN IF NOT EXISTS source_system_identifier numeric, \
           ADD COLUMN IF NOT EXISTS source_slot_origin pg_lsn; \
       END IF; \
     END $$; \
     CREATE TABLE IF NOT EXISTS internal_pg_flo.ddl_applied_by_hand (\
       group_name text NOT NULL, \
       ddl_lsn pg_lsn NOT NULL, \
       recorded_at timestamptz NOT NULL DEFAULT now(), \
       PRIMARY KEY (group_name, ddl_lsn))";

const READ_POSITION_SQL: &str = "SELECT commit_lsn::text, seq, \
     source_system_identifier::text, source_slot_origin::text \
     FROM internal_pg_flo.applied_position WHERE group_name = $1";

/// Moves the position forward within one source; replaces it when the source changes (a copy
/// of another source starting over, or a row without source adopting one). A NULL source
/// (message of an older replicator) keeps the stored one.
pub(super) const WRITE_POSITION_SQL: &str = "INSERT INTO internal_pg_flo.applied_position AS p \
     (group_name, commit_lsn, seq, source_system_identifier, source_slot_origin, updated_at) \
     VALUES ($1, $2, $3, $4, $5, now()) \
     ON CONFLICT (group_name) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, \
     seq = EXCLUDED.seq, \
     source_system_identifier = \
       COALESCE(EXCLUDED.source_system_identifier, p.source_system_identifier), \
     source_slot_origin = COALESCE(EXCLUDED.source_slot_origin, p.source_slot_origin), \
     updated_at = now() \
     WHERE (p.commit_lsn, p.seq) < (EXCLUDED.commit_lsn, EXCLUDED.seq) \
       OR (EXCLUDED.source_system_identifier IS NOT NULL \
           AND (p.source_system_identifier, p.source_slot_origin) \
               IS DISTINCT FROM (EXCLUDED.source_system_identifier, EXCLUDED.source_slot_origin))";

impl PostgresSink {
    pub(super) async fn read_position(
        &mut self,
    ) -> Result<Option<(Position, Option<SourceId>)>, SinkError> {
        let step = "reading internal_pg_flo.applied_position";
        let row = self
            .client
            .query_opt(READ_POSITION_SQL, &[&self.cfg.group])
            .await
            .map_err(|e| self.error(step, e))?;
        let Some(row) = row else { return Ok(None) };
        let (lsn, seq): (String, i64) = match (row.try_get(0), row.try_get(1)) {
            (Ok(lsn), Ok(seq)) => (lsn, seq),
            (Err(e), _) | (_, Err(e)) => return Err(self.error(step, e)),
        };
        let lsn: Lsn = lsn
            .parse()
            .map_err(|e| SinkError::Invalid(format!("{step}: {e}")))?;
        let seq = u64::try_from(seq)
            .map_err(|_| SinkError::Invalid(format!("{step}: seq {seq} is out of range")))?;
        let (system, origin): (Option<String>, Option<String>) =
            match (row.try_get(2), row.try_get(3)) {
                (Ok(s), Ok(o)) => (s, o),
                (Err(e), _) | (_, Err(e)) => return Err(self.error(step, e)),
            };
        let source = match (system, origin) {
            (Some(system), Some(origin)) => Some(SourceId {
                system_identifier: system.parse().map_err(|_| {
                    SinkError::Invalid(format!("{step}: system identifier {system} is invalid"))
                })?,
                slot_origin: origin
                    .parse::<Lsn>()
                    .map_err(|e| SinkError::Invalid(format!("{step}: {e}")))?
                    .0,
            }),
            _ => None,
        };
        Ok(Some((
            Position {
                commit_lsn: lsn.0,
                seq,
            },
            source,
        )))
    }
}

/// A stored row as (position, source), each `None` without a row.
pub(super) fn split(
    row: Option<(Position, Option<SourceId>)>,
) -> (Option<Position>, Option<SourceId>) {
    match row {
        Some((p, s)) => (Some(p), s),
        None => (None, None),
    }
}
