//! postgres sink: applies changes to a target PostgreSQL database, effectively once.
//!
//! Place in the pipeline: NATS message -> decode -> rules -> routing -> **this sink**.
//!
//! # Statements
//! Identifiers are always quoted (`"schema"."table"`, `"column"`). Values are sent as
//! text-format parameters holding the source's text output (`NULL` stays `NULL`, `''` stays
//! `''`, no column is ever omitted); the server infers each parameter's type from the target
//! column when the statement is prepared and parses the text with that type's input function.
//! Statements are prepared once per shape (the SQL text) and cached. The key of a table is
//! its primary key or replica-identity index ([`KeyKind::PrimaryKey`] / [`KeyKind::Unique`]);
//! a key value that is `NULL` is matched with `IS NULL`.
//! - INSERT: `INSERT INTO t (every column) OVERRIDING SYSTEM VALUE VALUES (...) ON CONFLICT
//!   (key) DO UPDATE SET c = EXCLUDED.c` for the non-key columns (`DO NOTHING` when every
//!   column is in the key), so a replayed insert converges. Without a key
//!   ([`KeyKind::Full`]): plain `INSERT`. `OVERRIDING SYSTEM VALUE`: the source's value of a
//!   `GENERATED ALWAYS` identity column is written as it is, as the apply worker does.
//! - A run of at least 32 consecutive source INSERTs into one table (an initial copy, a bulk
//!   load; no key repeating in the run) goes in as one `COPY t (every column) FROM STDIN` in
//!   text format: on a target without those keys that is exactly what the upserts would do,
//!   at a fraction of the cost. A key that already exists there (a target filled by hand, an
//!   earlier copy, a route merging two tables) fails the COPY with a unique violation: that
//!   table's inserts are upserted from then on (until a restarted copy empties it) and the error is
//!   transient, so the worker rolls back and the redelivered messages converge. Only plain and
//!   partitioned tables without rewrite rules are copied into (asked once per table and
//!   connection): `COPY` refuses a view and fires no rules, where `INSERT` works and fires them.
//! - UPDATE without unchanged-TOAST values: the same upsert; when the key changed (the old key
//!   differs from the new one), first `DELETE ... WHERE key = old key`.
//! - UPDATE with unchanged-TOAST values: `UPDATE t SET c = $n` for every other column, `WHERE`
//!   key = old key (the old tuple's when sent, else the new row's), so the target keeps the
//!   large value it has.
//! - DELETE: `DELETE FROM t WHERE key = old key`.
//! - Without a key (`REPLICA IDENTITY FULL`), UPDATE and DELETE find one row by its old
//!   values: `... WHERE ctid = (SELECT ctid FROM t WHERE c::text IS NOT DISTINCT FROM $n AND
//!   ... LIMIT 1)`, comparing text forms so types without an equality operator work, and
//!   skipping old values that are unchanged TOAST.
//! - TRUNCATE: `TRUNCATE t1, t2 [RESTART IDENTITY]`, the listed tables in one statement and
//!   never `CASCADE`, like PostgreSQL's apply worker (`apply_handle_truncate`: the listed
//!   relations, `DROP_RESTRICT`, the source's CASCADE ignored). A target table outside them
//!   that references one by a foreign key makes it fail (TRUNCATE checks foreign keys whatever
//!   the replication role), with an error naming that cause.
//! - The reset of a restarted copy (a TRUNCATE in a copy message, [`ChangeBatch::is_copy`]) is
//!   `TRUNCATE`, falling back to `DELETE FROM` each table (under a savepoint) when such a
//!   foreign key refuses it: in replica mode a DELETE fires no foreign-key trigger.
//! - Conflicts: an UPDATE or DELETE that matches no row (the target has drifted) is counted,
//!   once its transaction commits, in `pg_flo_worker_conflicts_total{table,kind}`
//!   (`update_missing`, `delete_missing`) and logged (warn) with the table and the key column
//!   names, never values. An update with the full new row is an upsert: a missing row is
//!   inserted, and not seen. A key change whose old row is missing inserts the new row and
//!   counts as `update_missing`.
//!
//! The statements of one [`ChangeBatch`] are pipelined: all are sent in order, then their
//! results are awaited in order, so a batch costs one round trip, not one per change.
//! `apply` buffers messages; they are sent at the commit, or earlier (into the open
//! transaction) once [`FLUSH_CHANGES`] changes or [`FLUSH_BYTES`] bytes of values wait.
//!
//! # Session: applied as a replica
//! The session runs with `session_replication_role = replica` (set at connect), as PostgreSQL's
//! apply worker does: the target's ordinary triggers, rules and foreign-key triggers do not
//! fire for replicated changes. Setting it needs a superuser or, on PostgreSQL 15+,
//! `GRANT SET ON PARAMETER session_replication_role`; without it `connect` fails with an error
//! naming the fixes. `--target-fire-triggers` keeps the default role (triggers fire), unless
//! `--target-disable-foreign-keys` (pg_flo's flag, which meant replica mode) is set too.
//!
//! # Transactions and the applied position (effectively-once)
//! [`Sink::apply`] opens a target transaction if none is open (`BEGIN`) and leaves it open;
//! [`Sink::commit`], which the worker calls only at source transaction boundaries, writes
//! `through` into `internal_pg_flo.applied_position` (one row per group) in the same
//! transaction and then `COMMIT`s: the position statement is prepared once per connection, so
//! its execution and the `COMMIT` are pipelined in that order (a statement still needing a
//! Parse round trip would let `COMMIT` overtake it). So a source transaction is applied
//! atomically, many small ones may share one target transaction, and the stored position
//! always names exactly what the target holds. On start (and after a reconnect) the sink
//! reads that position back; [`Sink::applied_position`] reports it, and `apply` skips any
//! message at or below it, so a message redelivered by NATS after a crash is not applied
//! twice. The stored position never moves backwards. [`Sink::rollback`] rolls the open transaction back.
//!
//! # The source of the position
//! The row also stores the source the position belongs to (`source_system_identifier`,
//! `source_slot_origin`: the message's [`SourceId`]; columns added to tables of older versions
//! on start), since positions of two sources cannot be compared (a group re-created against a
//! restored or different source starts at lower LSNs). [`crate::sink::position_verdict`]
//! decides each message against the stored position and source: a streamed message of another
//! source is refused with [`SinkError::SourceMismatch`] (nothing applied, the error names the
//! remedy); a copy message of another source starts over, replacing the stored position and
//! source in the same transaction as the copied rows. A row without source (older version)
//! adopts the source of the next applied message; a message without source (older
//! replicator) is compared by position and leaves the stored source as it is. The row stays in
//! the target when the group is removed (`--cleanup` touches only the source and NATS).
//!
//! # Errors
//! Connection failures, SQLSTATE class 08, `40001`, `40P01`, `57P01`-`57P03` and class 53
//! are [`Retry::Transient`]; after a lost connection the sink reconnects on the next call (when
//! it was built by [`PostgresSink::connect`]). Everything else (constraint violations, a
//! missing table or column: the target schema must match, e.g. with `--target-sync-schema`)
//! is [`Retry::Permanent`].

mod ddl;
mod position;
mod schema_sync;
mod session;
mod sql;

use std::collections::{HashMap, HashSet};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use crate::config::PostgresSinkConfig;
use crate::lsn::Lsn;
use crate::message::{ChangeBatch, Op, Position, SourceId};
use crate::sink::{position_verdict, Sink, SinkError, Verdict};

#[cfg(doc)]
use crate::message::KeyKind;
use crate::sink::Retry;

use position::{split, WRITE_POSITION_SQL};
use session::{is_connection_error, open, pg_error, pipeline};
use sql::TextParam;

/// Bytes of `COPY` data sent in one piece.
const COPY_CHUNK: usize = 256 << 10;

/// Prepared statements kept per connection before the cache is flushed.
const MAX_CACHED_STATEMENTS: usize = 4096;

/// Added to the error of a replicated TRUNCATE that a foreign key from another table refuses.
const TRUNCATE_FK_HINT: &str = " (a table outside the replicated ones references them by a \
     foreign key: like PostgreSQL's logical replication, the sink truncates only the tables the \
     source truncated and published, never CASCADE; drop or change that foreign key, or \
     replicate the referencing table too)";

/// Writes changes into a target PostgreSQL database. See the module docs.
pub struct PostgresSink {
    client: Client,
    cfg: PostgresSinkConfig,
    /// Built by [`PostgresSink::connect`], so it may open a new connection after losing one.
    can_reconnect: bool,
    /// A connection-level error was seen; the connection is (about to be) gone.
    broken: bool,
    /// `BEGIN` was sent on the current connection and not yet ended.
    tx_open: bool,
    /// The position stored in the target, as last read or committed.
    durable: Option<Position>,
    /// The source `durable` belongs to (`None`: unknown, a row of an older version).
    durable_source: Option<SourceId>,
    /// Position of the last message applied since the last commit.
    pending: Option<Position>,
    /// The source of the messages applied since the last commit, when they carry one.
    pending_source: Option<SourceId>,
    /// The open transaction started over from a copy of another source: its commit replaces
    /// the stored position instead of moving it forward.
    reset: bool,
    statements: HashMap<String, Statement>,
    /// [`WRITE_POSITION_SQL`] prepared on the current connection (kept apart from
    /// `statements`, which DDL and rollbacks clear), so that the position write and `COMMIT`
    /// are sent in order in one round trip.
    position_stmt: Option<Statement>,
    /// Messages applied but not yet sent: sent together (merged, pipelined) at the next
    /// commit or once [`FLUSH_CHANGES`] changes or `flush_bytes` bytes wait.
    buffer: Vec<ChangeBatch>,
    buffered_changes: usize,
    /// [`approx_bytes`] of `buffer`.
    buffered_bytes: usize,
    /// [`FLUSH_BYTES`] (tests lower it).
    flush_bytes: usize,
    /// Position of the last message whose statements were sent in the open transaction.
    sent: Option<Position>,
    /// Conflicts (row missing in the target) met in the open transaction, with their counts:
    /// counted and logged once it commits (a rolled-back attempt is retried and met again).
    conflicts: HashMap<sql::Conflict, u64>,
    /// Target tables (`"schema"."table"`) into which a `COPY` of inserted rows met a row that
    /// already exists: their inserts are upserted from then on, until a restarted copy empties them.
    upsert_only: HashSet<String>,
    /// Target tables (`"schema"."table"`) checked for `COPY`: true for a plain or partitioned
    /// table without rewrite rules (a view cannot be copied into, and `COPY` fires no rules).
    /// Asked once per table and connection.
    copy_eligible: HashMap<String, bool>,
}

/// Buffered changes that trigger sending them before the commit (bounds memory for large
/// source transactions).
const FLUSH_CHANGES: usize = 5000;

/// Buffered bytes (row values, [`approx_bytes`]) that trigger sending them before the commit:
/// memory stays bounded by bytes, whatever the row size.
const FLUSH_BYTES: usize = 32 << 20;

/// Bytes a buffered message holds, roughly: its values plus a small overhead per value and
/// per change.
fn approx_bytes(batch: &ChangeBatch) -> usize {
    let values = |vals: &[crate::message::Value]| -> usize {
        vals.iter()
            .map(|v| 8 + v.as_bytes().map_or(0, <[u8]>::len))
            .sum()
    };
    batch
        .changes
        .iter()
        .map(|c| {
            64 + c.new.as_deref().map_or(0, values)
                + c.old.as_ref().map_or(0, |(_, old)| values(old))
        })
        .sum()
}

/// Whether the buffered messages must be sent now, before the commit.
fn must_flush(changes: usize, bytes: usize, flush_bytes: usize) -> bool {
    changes >= FLUSH_CHANGES || bytes >= flush_bytes
}

impl PostgresSink {
    /// Connects to `cfg.target` (after copying the schema with `--target-sync-schema`) and
    /// prepares the applied-position table.
    pub async fn connect(cfg: PostgresSinkConfig) -> Result<Self, SinkError> {
        if cfg.sync_schema {
            schema_sync::sync_schema(&cfg).await?;
        }
        let client = open(&cfg).await?;
        Self::init(client, cfg, true).await
    }

    /// Uses an already-connected client (which the sink cannot replace if it is lost). Runs
    /// the schema sync too when `cfg.sync_schema` is set.
    pub async fn with_client(client: Client, cfg: PostgresSinkConfig) -> Result<Self, SinkError> {
        if cfg.sync_schema {
            schema_sync::sync_schema(&cfg).await?;
        }
        Self::init(client, cfg, false).await
    }

    async fn init(
        client: Client,
        cfg: PostgresSinkConfig,
        can_reconnect: bool,
    ) -> Result<Self, SinkError> {
        let mut sink = PostgresSink {
            client,
            cfg,
            can_reconnect,
            broken: false,
            tx_open: false,
            durable: None,
            durable_source: None,
            pending: None,
            pending_source: None,
            reset: false,
            statements: HashMap::new(),
            position_stmt: None,
            buffer: Vec::new(),
            buffered_changes: 0,
            buffered_bytes: 0,
            flush_bytes: FLUSH_BYTES,
            sent: None,
            conflicts: HashMap::new(),
            upsert_only: HashSet::new(),
            copy_eligible: HashMap::new(),
        };
        sink.setup().await?;
        Ok(sink)
    }

    /// Maps a database error, remembering when the connection is lost.
    fn error(&mut self, step: impl Into<String>, e: tokio_postgres::Error) -> SinkError {
        if is_connection_error(&e) {
            self.broken = true;
        }
        pg_error(step.into(), e)
    }

    /// Opens a new connection if the current one is lost and no transaction was open on it
    /// (lost uncommitted work must keep failing until the worker rolls back).
    async fn ensure_connected(&mut self) -> Result<(), SinkError> {
        let lost = self.broken || self.client.is_closed();
        if !lost || !self.can_reconnect || self.tx_open {
            return Ok(());
        }
        tracing::info!(target = %self.cfg.target.describe(), "reconnecting to the target database");
        self.client = open(&self.cfg).await?;
        self.broken = false;
        self.statements.clear();
        self.copy_eligible.clear();
        self.position_stmt = None;
        self.setup().await
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| self.error("beginning a transaction", e))?;
        self.tx_open = true;
        Ok(())
    }

    /// The last applied position (pending, else stored) and its source.
    fn applied(&self) -> Option<(Position, Option<SourceId>)> {
        match self.pending {
            Some(p) => Some((p, self.pending_source.or(self.durable_source))),
            None => self.durable.map(|d| (d, self.durable_source)),
        }
    }

    /// Prepares the statements not yet cached (pipelined).
    async fn prepare_missing(&mut self, planned: &[sql::Planned<'_>]) -> Result<(), SinkError> {
        let mut seen = HashSet::new();
        let missing: Vec<&sql::Planned<'_>> = planned
            .iter()
            .filter(|p| !self.statements.contains_key(&p.sql) && seen.insert(p.sql.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if self.statements.len() + missing.len() > MAX_CACHED_STATEMENTS {
            self.statements.clear();
        }
        let client = &self.client;
        let result = pipeline(missing.iter().map(|p| client.prepare(&p.sql))).await;
        match result {
            Ok(stmts) => {
                for (p, stmt) in missing.iter().zip(stmts) {
                    self.statements.insert(p.sql.clone(), stmt);
                }
                Ok(())
            }
            Err((i, e)) => {
                let step = missing
                    .get(i)
                    .map(|p| format!("preparing a statement for {}", p.step()))
                    .unwrap_or_default();
                Err(self.error(step, e))
            }
        }
    }

    /// Runs the planned statements, pipelined, and returns how many rows each affected. A
    /// `COPY` ([`sql::Action::Copy`]) waits for the statements before it and is followed by
    /// the next ones: the protocol's copy mode does not let others interleave.
    async fn execute(&mut self, planned: &[sql::Planned<'_>]) -> Result<Vec<u64>, SinkError> {
        let mut counts = Vec::with_capacity(planned.len());
        let mut from = 0;
        while from < planned.len() {
            let copy_at = planned[from..]
                .iter()
                .position(|p| p.action == sql::Action::Copy)
                .map_or(planned.len(), |i| from + i);
            if copy_at > from {
                counts.extend(self.execute_statements(&planned[from..copy_at]).await?);
            }
            if let Some(copy) = planned.get(copy_at) {
                counts.push(self.execute_copy(copy).await?);
            }
            from = copy_at + 1;
        }
        Ok(counts)
    }

    /// Runs statements (no `COPY`) pipelined.
    async fn execute_statements(
        &mut self,
        planned: &[sql::Planned<'_>],
    ) -> Result<Vec<u64>, SinkError> {
        let mut stmts = Vec::with_capacity(planned.len());
        for p in planned {
            let stmt = self.statements.get(&p.sql).ok_or_else(|| {
                SinkError::Invalid(format!("statement for {} was not prepared", p.step()))
            })?;
            stmts.push(stmt);
        }
        let client = &self.client;
        let result = pipeline(
            stmts
                .iter()
                .zip(planned)
                .map(|(stmt, p)| client.execute_raw(*stmt, p.params.iter().copied())),
        )
        .await;
        result.map_err(|(i, e)| {
            let mut step = planned.get(i).map(|p| p.step()).unwrap_or_default();
            if planned
                .get(i)
                .is_some_and(|p| p.action == sql::Action::Truncate)
                && e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
            {
                step.push_str(TRUNCATE_FK_HINT);
            }
            self.error(step, e)
        })
    }

    /// Asks the target, in one query, which tables of the planned inserts not yet checked may
    /// be written with `COPY`: a plain or partitioned table without rewrite rules (`INSERT`
    /// into a view or a table with rules works, `COPY` refuses the view and skips the rules).
    /// A table the target does not have is not eligible: its statements report it.
    async fn check_copy_eligible(&mut self, planned: &[sql::Planned<'_>]) -> Result<(), SinkError> {
        // Only tables with enough inserts for a run, not yet asked, not upsert-only.
        let mut inserts: HashMap<&str, usize> = HashMap::new();
        for p in planned.iter().filter(|p| p.insert) {
            *inserts.entry(p.table.as_str()).or_default() += 1;
        }
        let unknown: Vec<&str> = inserts
            .into_iter()
            .filter(|&(t, n)| {
                n >= sql::COPY_MIN_ROWS
                    && !self.copy_eligible.contains_key(t)
                    && !self.upsert_only.contains(t)
            })
            .map(|(t, _)| t)
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let rows = self
            .client
            .query(
                "SELECT t, coalesce(c.relkind IN ('r', 'p') AND NOT c.relhasrules, false) \
                 FROM unnest($1::text[]) AS t LEFT JOIN pg_class c ON c.oid = to_regclass(t)",
                &[&unknown],
            )
            .await
            .map_err(|e| self.error("checking which target tables take COPY", e))?;
        for row in rows {
            self.copy_eligible.insert(row.get(0), row.get(1));
        }
        Ok(())
    }

    /// Sends a run of inserted rows with `COPY ... FROM STDIN` (text format, in pieces of
    /// about [`COPY_CHUNK`] bytes) and returns how many rows it wrote. A row whose key already
    /// exists in the target fails it with a unique violation: the table is then applied with
    /// upserts only, and the error is transient, so the worker rolls back and the redelivered
    /// messages converge as upserts (one retry per table, ever).
    async fn execute_copy(&mut self, copy: &sql::Planned<'_>) -> Result<u64, SinkError> {
        use futures_util::SinkExt as _;
        let stmt = self
            .statements
            .get(&copy.sql)
            .ok_or_else(|| {
                SinkError::Invalid(format!("statement for {} was not prepared", copy.step()))
            })?
            .clone();
        let Some(columns) = copy.row.as_ref().map(|shape| shape.columns.max(1)) else {
            return Err(SinkError::Invalid(format!(
                "{} without the shape of its rows",
                copy.step()
            )));
        };
        let result = async {
            let sink = self.client.copy_in::<_, bytes::Bytes>(&stmt).await?;
            let mut sink = std::pin::pin!(sink);
            let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
            for row in copy.params.chunks(columns) {
                sql::copy_text_row(&mut buf, row);
                if buf.len() >= COPY_CHUNK {
                    let chunk = std::mem::replace(&mut buf, Vec::with_capacity(COPY_CHUNK + 4096));
                    sink.send(bytes::Bytes::from(chunk)).await?;
                }
            }
            if !buf.is_empty() {
                sink.send(bytes::Bytes::from(buf)).await?;
            }
            sink.as_mut().finish().await
        }
        .await;
        match result {
            Ok(n) => Ok(n),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tracing::warn!(
                    table = %copy.table,
                    "a row copied into the target table already exists there; applying the \
                     table's inserts as upserts from now on and retrying"
                );
                self.upsert_only.insert(copy.table.clone());
                Err(SinkError::Postgres {
                    step: format!(
                        "{} (a row already exists: retrying with upserts)",
                        copy.step()
                    ),
                    retry: Retry::Transient,
                    source: e,
                })
            }
            Err(e) => Err(self.error(copy.step(), e)),
        }
    }

    /// The stored position (re-read from the target).
    async fn stored_position(&mut self) -> Result<Option<Position>, SinkError> {
        self.ensure_connected().await?;
        let (pos, source) = split(self.read_position().await?);
        if !self.tx_open {
            (self.durable, self.durable_source) = (pos, source);
        }
        Ok(pos)
    }

    async fn do_apply(&mut self, batch: ChangeBatch) -> Result<(), SinkError> {
        self.ensure_connected().await?;
        let pos = batch.position();
        match position_verdict(self.applied(), batch.source, batch.copy, pos) {
            Verdict::Skip => {
                tracing::debug!(position = %pos, "message already applied to the target; skipping");
                return Ok(());
            }
            Verdict::Mismatch { stored, got } => {
                return Err(SinkError::SourceMismatch {
                    group: self.cfg.group.clone(),
                    stored,
                    got,
                });
            }
            Verdict::Reset => {
                if let (Some((from, stored)), Some(to)) = (self.applied(), batch.source) {
                    tracing::warn!(
                        group = self.cfg.group,
                        position = %from,
                        stored = %stored.map_or("unknown".to_owned(), |s| s.to_string()),
                        source = %to,
                        "a copy of another source starts over: its rows replace the applied position"
                    );
                }
                self.reset = true;
                self.pending_source = batch.source;
            }
            Verdict::Apply => {
                self.pending_source = batch.source.or(self.pending_source);
            }
        }
        self.buffered_changes += batch.changes.len();
        self.buffered_bytes += approx_bytes(&batch);
        self.buffer.push(batch);
        self.pending = Some(pos);
        if must_flush(self.buffered_changes, self.buffered_bytes, self.flush_bytes) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the buffered messages' statements: consecutive inserts / upserts of one table
    /// merged into multi-row statements, everything pipelined in one round trip.
    async fn flush(&mut self) -> Result<(), SinkError> {
        let batches = std::mem::take(&mut self.buffer);
        self.buffered_changes = 0;
        self.buffered_bytes = 0;
        let mut planned = Vec::new();
        let mut shapes = sql::InsertShapes::default();
        for (i, batch) in batches.iter().enumerate() {
            for change in &batch.changes {
                if change.op == Op::Ddl {
                    // DDL is a barrier: what came before is sent first.
                    self.run_planned(std::mem::take(&mut planned)).await?;
                    let before = match i {
                        0 => self.sent,
                        _ => Some(batches[i - 1].position()),
                    };
                    self.apply_ddl(batch, change, before).await?;
                } else if change.op == Op::Truncate && batch.is_copy() {
                    self.run_planned(std::mem::take(&mut planned)).await?;
                    self.reset_copied_tables(batch, change).await?;
                } else {
                    sql::plan_with(batch, change, &mut planned, &mut shapes)?;
                }
            }
        }
        self.run_planned(planned).await?;
        if let Some(last) = batches.last() {
            self.sent = Some(last.position());
        }
        Ok(())
    }

    /// Empties the tables of a restarted copy in the open transaction: `TRUNCATE` (only these
    /// tables, never CASCADE), or, when a table outside them references one by a foreign key
    /// (TRUNCATE refuses that whatever the replication role), `DELETE FROM` each, which fires
    /// no foreign-key trigger in replica mode. The copy refills them in the same transaction
    /// or the next ones.
    async fn reset_copied_tables(
        &mut self,
        batch: &ChangeBatch,
        change: &crate::message::Change,
    ) -> Result<(), SinkError> {
        let (truncate, delete) = sql::copy_reset(batch, change)?;
        if truncate.is_empty() {
            return Ok(());
        }
        if !self.tx_open {
            self.begin().await?;
        }
        let step = "resetting the tables of a restarted copy";
        self.client
            .batch_execute("SAVEPOINT pg_flo_reset")
            .await
            .map_err(|e| self.error(step, e))?;
        match self.client.batch_execute(&truncate).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) => {
                tracing::warn!(
                    tables = %truncate.trim_start_matches("TRUNCATE "),
                    "a table outside the group references the copied tables by a foreign key; \
                     resetting them with DELETE instead of TRUNCATE"
                );
                self.client
                    .batch_execute(&format!("ROLLBACK TO SAVEPOINT pg_flo_reset; {delete}"))
                    .await
                    .map_err(|e| self.error(step, e))?;
            }
            Err(e) => return Err(self.error(step, e)),
        }
        self.client
            .batch_execute("RELEASE SAVEPOINT pg_flo_reset")
            .await
            .map_err(|e| self.error(step, e))?;
        // Emptied: the copy refills them, by COPY again (if this transaction rolls back, a
        // COPY meets the old rows once more and marks the table again: a transient error).
        let indexes = change.truncate.iter().flat_map(|t| &t.relations);
        for rel in indexes.filter_map(|&i| batch.relations.get(usize::from(i))) {
            self.upsert_only
                .remove(&sql::qualified(&rel.schema, &rel.table));
        }
        Ok(())
    }

    /// Sends planned statements (merged, pipelined) in the open transaction.
    async fn run_planned(&mut self, planned: Vec<sql::Planned<'_>>) -> Result<(), SinkError> {
        self.check_copy_eligible(&planned).await?;
        let (upsert_only, eligible) = (&self.upsert_only, &self.copy_eligible);
        let planned = sql::coalesce(planned, sql::COPY_MIN_ROWS, |t| {
            !upsert_only.contains(t) && eligible.get(t).copied().unwrap_or(false)
        });
        let pos = self.pending.unwrap_or(Position {
            commit_lsn: 0,
            seq: 0,
        });
        if !planned.is_empty() {
            self.prepare_missing(&planned).await?;
            if !self.tx_open {
                self.begin().await?;
            }
            let counts = self.execute(&planned).await?;
            for (p, n) in planned.iter().zip(counts) {
                if let (0, Some(conflict)) = (n, &p.conflict) {
                    tracing::debug!(table = %conflict.table, kind = %conflict.kind, position = %pos, "row missing in the target");
                    *self.conflicts.entry(conflict.clone()).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    async fn do_commit(&mut self, through: Position) -> Result<(), SinkError> {
        self.flush().await?;
        self.commit_open(through).await
    }

    /// Stores `through` and commits the open transaction (opening one when needed).
    async fn commit_open(&mut self, through: Position) -> Result<(), SinkError> {
        if !self.tx_open {
            if !self.reset && self.durable.is_some_and(|d| through <= d) {
                self.pending = None;
                self.pending_source = None;
                return Ok(());
            }
            self.ensure_connected().await?;
            self.begin().await?;
        }
        let step = "storing the applied position and committing";
        let stmt = match &self.position_stmt {
            Some(stmt) => stmt.clone(),
            None => {
                let prepared = self.client.prepare(WRITE_POSITION_SQL).await;
                let stmt = match prepared {
                    Ok(stmt) => stmt,
                    Err(e) => {
                        // The transaction is still open: the worker rolls it back.
                        return Err(self.error(step, e));
                    }
                };
                self.position_stmt = Some(stmt.clone());
                stmt
            }
        };
        let lsn = Lsn(through.commit_lsn).to_string();
        let seq = through.seq.to_string();
        let source = self.pending_source.or(self.durable_source);
        let system = source.map(|s| s.system_identifier.to_string());
        let origin = source.map(|s| Lsn(s.slot_origin).to_string());
        let params = [
            TextParam(Some(self.cfg.group.as_bytes())),
            TextParam(Some(lsn.as_bytes())),
            TextParam(Some(seq.as_bytes())),
            TextParam(system.as_deref().map(str::as_bytes)),
            TextParam(origin.as_deref().map(str::as_bytes)),
        ];
        let client = &self.client;
        // The statement is prepared, so its first poll sends Bind/Execute at once, before
        // COMMIT is queued: both are pipelined and the position is written in the data's
        // transaction. (With SQL text, the Parse round trip let COMMIT overtake it.)
        let (stored, committed) = futures_util::future::join(
            client.execute_raw(&stmt, params.iter().copied()),
            client.batch_execute("COMMIT"),
        )
        .await;
        // Either way the transaction has ended (a failed statement makes COMMIT roll back).
        self.tx_open = false;
        stored.map_err(|e| self.error(step, e))?;
        committed.map_err(|e| self.error(step, e))?;
        self.pending = None;
        self.durable = match self.durable {
            Some(d) if !self.reset => Some(d.max(through)),
            _ => Some(through),
        };
        self.durable_source = source;
        self.pending_source = None;
        self.reset = false;
        report_conflicts(std::mem::take(&mut self.conflicts), through);
        Ok(())
    }

    async fn do_rollback(&mut self) -> Result<(), SinkError> {
        if self.tx_open && !self.client.is_closed() {
            if let Err(e) = self.client.batch_execute("ROLLBACK").await {
                tracing::debug!(error = %e, "ROLLBACK on the target failed");
                if is_connection_error(&e) {
                    self.broken = true;
                }
            }
        }
        self.tx_open = false;
        self.pending = None;
        self.pending_source = None;
        self.reset = false;
        self.buffer.clear();
        self.buffered_changes = 0;
        self.buffered_bytes = 0;
        self.conflicts.clear();
        // A fix to the target schema between retries must not meet stale statements.
        self.statements.clear();
        self.copy_eligible.clear();
        Ok(())
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn applied_position(&mut self) -> Result<Option<Position>, SinkError> {
        self.stored_position().await
    }

    fn applied_source(&self) -> Option<SourceId> {
        self.durable_source
    }

    async fn apply(&mut self, batch: &ChangeBatch) -> Result<(), SinkError> {
        self.do_apply(batch.clone()).await
    }

    /// Buffers the message itself, without a copy.
    async fn apply_owned(&mut self, batch: ChangeBatch) -> Result<(), SinkError> {
        self.do_apply(batch).await
    }

    async fn commit(&mut self, through: Position) -> Result<(), SinkError> {
        self.do_commit(through).await
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        self.do_rollback().await
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        PostgresSink::flush(self).await
    }
}

/// Counts committed conflicts in `pg_flo_worker_conflicts_total{table,kind}` and logs each
/// (table, kind) once, with the key column names and never a value (like PostgreSQL 17's
/// conflict log, minus the values).
fn report_conflicts(conflicts: HashMap<sql::Conflict, u64>, through: Position) {
    for (c, n) in conflicts {
        crate::metrics::get()
            .worker_conflicts
            .with_label_values(&[c.table.as_str(), c.kind])
            .inc_by(n);
        let what = if c.kind == sql::Conflict::DELETE_MISSING {
            "the row to delete is missing in the target: nothing deleted"
        } else {
            "the row to update is missing in the target: an UPDATE of unchanged TOAST values or \
             of a table without a key changed nothing; a key change inserted the new row"
        };
        tracing::warn!(
            table = %c.table,
            conflict = %c.kind,
            key = %c.key,
            count = n,
            through = %through,
            "conflict: {what}"
        );
    }
}

/// Access for the tests against a real server (`runtime/tests/postgres_sink.rs`, through the
/// `testing` feature).
#[cfg(any(test, feature = "testing"))]
impl PostgresSink {
    /// The target session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Buffered bytes that make the sink send what it holds.
    pub fn set_flush_bytes(&mut self, bytes: usize) {
        self.flush_bytes = bytes;
    }
}

#[cfg(test)]
mod tests;
