//! Initial load (`--copy`, `--copy-and-stream`): copies the group's tables under the slot's
//! exported snapshot and publishes the rows before any streamed change.
//!
//! Contract (gap-free handoff):
//! - The slot is created with an exported snapshot; every copy connection imports that snapshot
//!   (`SET TRANSACTION SNAPSHOT`) while the replication connection that exported it stays idle.
//!   A transaction committed before the slot's consistent point is in the snapshot; one
//!   committed after it is streamed. None is both, none is neither.
//! - Tables are split into `ctid` page ranges from their real size (`pg_relation_size`, not
//!   `relpages`, which is 0 on a never-analysed table); `--max-copy-workers-per-table`
//!   connections copy ranges in parallel with `COPY (SELECT ...) TO STDOUT` in text form, so a
//!   copied value is byte-identical to the streamed one.
//! - A partitioned table is copied through its leaf partitions (as listed when the copy
//!   starts): each leaf's pages are split into ranges the same way (a leaf that is not a heap,
//!   a foreign table, is read whole), selecting the root's columns by name, and every row is
//!   published under the partitioned table, the name its streamed changes carry
//!   (`publish_via_partition_root`, see `source::catalog`).
//! - Copy sessions run with `statement_timeout` and `idle_in_transaction_session_timeout` off
//!   (`SET LOCAL`): a range's COPY waits while the publisher applies back-pressure, and a
//!   server or role default must not cut it.
//! - One publisher numbers the rows' messages `(consistent_point - 1, seq)`, marked `copy` and
//!   carrying the slot's new source identity (`identity`): below every
//!   streamed transaction (their commit LSN is at or after the consistent point), in publish
//!   order, with the same in-flight window and PubAck rule as streaming. Streaming starts only
//!   after every copy message is acknowledged.
//! - Restart: the group's state stream `pgflo_<group>_state` records the copy as in progress or
//!   done (with the consistent point). A copy that did not finish is started over: the slot is
//!   dropped and recreated (new snapshot), and the first message truncates the copied tables,
//!   so rows deleted in between cannot survive in the target. A finished copy is not repeated.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::config::ReplicatorConfig;
use crate::lsn::Lsn;
use crate::message::{self, Change, Op, Relation, ReplicationKey, Value};
use crate::metrics;
use crate::postgres::connection;
use crate::source::batching::{Batcher, Envelope, Limits};
use crate::source::catalog::{self, CatalogError, TableName};
use crate::source::copy_text::{self, RowSplitter};
use crate::source::identity;
use crate::source::publish::{AckFuture, PublishedStats, Publisher};
use crate::source::replication::{ReplicationConnection, ReplicationError, SlotSnapshot};
use crate::source::ReplicatorError;
use pg_flo_source::sql::quote_literal;

/// A `[start, end)` page range; `None` as end: to the end of the table.
type PageRange = (u64, Option<u64>);

/// Pages per copy range at most (about 8 MiB of heap).
const MAX_RANGE_PAGES: u64 = 1024;

/// The copy's progress, kept in the group's state stream on [`state_subject`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyState {
    /// `in_progress` or `done`.
    pub status: String,
    /// The slot's consistent point the copy belongs to (`X/Y`).
    pub consistent_point: String,
}

/// Where the group's copy state lives: the last message on this subject of the group's state
/// stream `pgflo_<group>_state` (a plain stream keeping one message per subject; used instead
/// of a KV bucket so that NATS servers before 2.10 work too).
pub fn state_subject(group: &str) -> String {
    format!("pgflo.{group}.state.copy")
}

/// The group's state stream, created if missing.
pub async fn state_store(
    js: &jetstream::Context,
    group: &str,
) -> Result<jetstream::stream::Stream, ReplicatorError> {
    crate::nats::ensure_state_stream(js, group, None)
        .await
        .map_err(|e| ReplicatorError::Publish(e.to_string()))
}

pub async fn read_state(
    store: &jetstream::stream::Stream,
    group: &str,
) -> Result<Option<CopyState>, ReplicatorError> {
    match store
        .get_last_raw_message_by_subject(&state_subject(group))
        .await
    {
        Ok(msg) => Ok(serde_json::from_slice(&msg.payload).ok()),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(None)
        }
        Err(e) => Err(ReplicatorError::Publish(format!(
            "reading the copy state: {e}"
        ))),
    }
}

pub async fn write_state(
    js: &jetstream::Context,
    group: &str,
    state: &CopyState,
) -> Result<(), ReplicatorError> {
    let bytes = serde_json::to_vec(state).unwrap_or_default();
    let ack = js
        .publish(state_subject(group), bytes.into())
        .await
        .map_err(|e| ReplicatorError::Publish(format!("writing the copy state: {e}")))?;
    ack.await
        .map_err(|e| ReplicatorError::Publish(format!("writing the copy state: {e}")))?;
    Ok(())
}

/// A table to copy.
struct CopyTable {
    name: TableName,
    relation: Arc<Relation>,
    /// What is read: the table itself, or the leaf partitions of a partitioned table.
    parts: Vec<CopySource>,
}

/// A relation whose rows are read for a [`CopyTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct CopySource {
    name: TableName,
    /// Heap pages (0: empty, copied as one range).
    pages: u64,
    /// A heap (ordinary table), split into `ctid` ranges; otherwise read whole.
    heap: bool,
}

/// One unit of copy work: a page range of one source relation, or all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    /// Index into [`CopyTable::parts`].
    part: usize,
    /// `None`: the whole relation (not a heap).
    range: Option<PageRange>,
}

/// Ranges not yet taken by a copy worker of a table.
type PieceQueue = Arc<Mutex<VecDeque<Piece>>>;

/// The pieces of `parts`, each heap split into [`ranges`] for `workers` workers.
fn pieces(parts: &[CopySource], workers: u64) -> Vec<Piece> {
    parts
        .iter()
        .enumerate()
        .flat_map(|(part, p)| {
            if p.heap {
                ranges(p.pages, workers)
                    .into_iter()
                    .map(|r| Piece {
                        part,
                        range: Some(r),
                    })
                    .collect::<Vec<_>>()
            } else {
                vec![Piece { part, range: None }]
            }
        })
        .collect()
}

/// `COPY` of one piece: `select` (`SELECT <columns> FROM`) applied to the piece's relation.
fn piece_sql(select: &str, source: &TableName, range: Option<PageRange>) -> String {
    let from = source.quoted();
    match range {
        None => format!("COPY ({select} {from}) TO STDOUT"),
        Some((start, Some(end))) => format!(
            "COPY ({select} {from} WHERE ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid) TO STDOUT"
        ),
        Some((start, None)) => {
            format!("COPY ({select} {from} WHERE ctid >= '({start},0)'::tid) TO STDOUT")
        }
    }
}

/// The initial copy (see the module docs): creates the slot with an exported snapshot, copies
/// every table under it and publishes the rows. Returns the slot's consistent point, where
/// streaming continues. A copy already done for the existing slot is not repeated; an
/// unfinished one is started over on a new slot. `conn` (on which nothing ran but
/// `IDENTIFY_SYSTEM`) creates the slot and holds its exported snapshot during the copy. Returns
/// the source identity too (see [`identity`]).
pub(super) async fn initial_load(
    load: InitialLoad<'_>,
    mut conn: ReplicationConnection,
    system_identifier: u64,
) -> Result<(Lsn, message::SourceId), ReplicatorError> {
    let InitialLoad {
        cfg,
        js,
        slot,
        catalog_client,
        tables,
        ..
    } = load;
    let store = state_store(js, &cfg.group).await?;
    let state = read_state(&store, &cfg.group).await?;
    let existing = catalog::find_slot(catalog_client, slot).await?;
    if let (Some(info), Some(st)) = (&existing, &state) {
        if st.status == "done" {
            let lsn = info.confirmed_flush.unwrap_or_default();
            tracing::info!(
                slot,
                consistent_point = st.consistent_point,
                "initial copy already done; not copying again"
            );
            drop(conn);
            let found = identity::Slot::Existing {
                confirmed_flush: lsn,
            };
            let source = identity::settle(js, &cfg.group, system_identifier, found).await?;
            return Ok((lsn, source));
        }
    }
    let reset = existing.is_some() || state.is_some();
    if existing.is_some() {
        tracing::warn!(slot, "the previous copy did not finish: dropping the slot and copying again under a new snapshot");
        catalog_client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(|source| CatalogError::Query {
                step: "dropping the slot of an unfinished copy",
                source,
            })?;
    }
    let created = conn.create_slot(slot, SlotSnapshot::Export).await?;
    let snapshot = created.snapshot_name.clone().ok_or_else(|| {
        ReplicatorError::Replication(ReplicationError::Protocol(
            "CREATE_REPLICATION_SLOT exported no snapshot".into(),
        ))
    })?;
    let cp = created.consistent_point;
    tracing::info!(slot, consistent_point = %cp, snapshot, "created replication slot with exported snapshot");
    let found = identity::Slot::Created {
        consistent_point: cp,
    };
    let source = identity::settle(js, &cfg.group, system_identifier, found).await?;
    write_state(
        js,
        &cfg.group,
        &CopyState {
            status: "in_progress".into(),
            consistent_point: cp.to_string(),
        },
    )
    .await?;
    let rows = run(CopyJob {
        load,
        snapshot: &snapshot,
        consistent_point: cp,
        source,
        reset,
    })
    .await?;
    write_state(
        js,
        &cfg.group,
        &CopyState {
            status: "done".into(),
            consistent_point: cp.to_string(),
        },
    )
    .await?;
    // The exported snapshot ends with this connection; every copy transaction is done.
    drop(conn);
    tracing::info!(
        rows,
        tables = tables.len(),
        "initial copy published and acknowledged"
    );
    Ok((cp, source))
}

/// What [`initial_load`] reads.
#[derive(Clone, Copy)]
pub(super) struct InitialLoad<'a> {
    pub(super) cfg: &'a ReplicatorConfig,
    pub(super) limits: Limits,
    pub(super) stream_max_bytes: Option<u64>,
    pub(super) js: &'a jetstream::Context,
    pub(super) subject: &'a str,
    pub(super) slot: &'a str,
    pub(super) catalog_client: &'a Client,
    pub(super) tables: &'a [TableName],
    pub(super) keys: &'a HashMap<TableName, message::ReplicationKey>,
}

/// Everything [`run`] needs.
struct CopyJob<'a> {
    load: InitialLoad<'a>,
    snapshot: &'a str,
    consistent_point: Lsn,
    /// Carried by every copy message.
    source: message::SourceId,
    /// Truncate the tables first (a restarted copy).
    reset: bool,
}

/// A chunk of copied rows of one table.
struct Chunk {
    relation: Arc<Relation>,
    rows: Vec<Vec<Value>>,
}

/// Copies every table and publishes the rows; returns the number of rows copied.
async fn run(job: CopyJob<'_>) -> Result<u64, ReplicatorError> {
    let planner = connection::connect(&job.load.cfg.source, "pg_flo_copy").await?;
    let mut tables = Vec::new();
    for name in job.load.tables {
        tables.push(describe(&planner, name, job.load.keys).await?);
    }
    drop(planner);
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let relations: Vec<Arc<Relation>> = tables.iter().map(|t| t.relation.clone()).collect();
    let readers = async {
        for table in &tables {
            copy_table(&job, table, &tx).await?;
        }
        drop(tx);
        Ok::<(), ReplicatorError>(())
    };
    let publisher = publish_all(&job, relations, rx);
    let ((), rows) = tokio::try_join!(readers, publisher)?;
    Ok(rows)
}

async fn describe(
    client: &tokio_postgres::Client,
    name: &TableName,
    keys: &HashMap<TableName, ReplicationKey>,
) -> Result<CopyTable, ReplicatorError> {
    let q = |step: &'static str| move |source| CatalogError::Query { step, source };
    let rows = client
        .query(
            "SELECT c.oid, a.attname::text, a.atttypid, a.atttypmod, c.relkind::text,
                    pg_relation_size(c.oid) / current_setting('block_size')::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&name.schema, &name.table],
        )
        .await
        .map_err(q("reading the columns of a table to copy"))?;
    let first = rows
        .first()
        .ok_or_else(|| CatalogError::MissingTables(name.to_string()))?;
    let key = keys.get(name).cloned().unwrap_or(ReplicationKey {
        kind: message::KeyKind::Full,
        columns: Vec::new(),
    });
    let columns = rows
        .iter()
        .map(|r| {
            let col: String = r.get(1);
            message::Column {
                identity: key.kind == message::KeyKind::Full || key.columns.contains(&col),
                name: col,
                type_oid: r.get(2),
                type_modifier: r.get(3),
            }
        })
        .collect();
    let oid: u32 = first.get(0);
    let relkind: String = first.get(4);
    let pages: i64 = first.get(5);
    let parts = if relkind == "p" {
        client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.relkind = 'r',
                        pg_relation_size(c.oid) / current_setting('block_size')::bigint
                 FROM pg_partition_tree($1::oid::regclass) t
                 JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE t.isleaf AND c.relkind IN ('r', 'f')
                 ORDER BY n.nspname, c.relname",
                &[&oid],
            )
            .await
            .map_err(q("listing the partitions of a table to copy"))?
            .iter()
            .map(|r| CopySource {
                name: TableName {
                    schema: r.get(0),
                    table: r.get(1),
                },
                heap: r.get(2),
                pages: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            })
            .collect()
    } else {
        vec![CopySource {
            name: name.clone(),
            pages: u64::try_from(pages).unwrap_or(0),
            heap: true,
        }]
    };
    Ok(CopyTable {
        relation: Arc::new(Relation {
            oid,
            schema: name.schema.clone(),
            table: name.table.clone(),
            columns,
            key,
        }),
        name: name.clone(),
        parts,
    })
}

/// `[start, end)` page ranges; the last one is open-ended so pages added since the size was
/// read are copied too (the snapshot decides which rows are visible).
fn ranges(pages: u64, workers: u64) -> Vec<PageRange> {
    if pages == 0 {
        return vec![(0, None)];
    }
    let per = pages.div_ceil(workers.max(1) * 4).clamp(1, MAX_RANGE_PAGES);
    let mut out = Vec::new();
    let mut start = 0;
    while start + per < pages {
        out.push((start, Some(start + per)));
        start += per;
    }
    out.push((start, None));
    out
}

async fn copy_table(
    job: &CopyJob<'_>,
    table: &CopyTable,
    tx: &mpsc::Sender<Chunk>,
) -> Result<(), ReplicatorError> {
    let workers = u64::from(job.load.cfg.max_copy_workers_per_table.max(1));
    let queue = pieces(&table.parts, workers);
    let total = queue.len();
    let label = table.name.to_string();
    let m = metrics::get();
    m.copy_ranges_total
        .with_label_values(&[&label])
        .set(total as i64);
    // Rows and finished ranges exist at 0 from here on: a copy stuck in its first range shows
    // as planned ranges with none done and rows that do not grow, not as missing series.
    m.copy_rows.with_label_values(&[&label]);
    m.copy_ranges_done.with_label_values(&[&label]);
    let pages: u64 = table.parts.iter().map(|p| p.pages).sum();
    let partitions = match table.parts.as_slice() {
        [only] if only.name == table.name => 0,
        parts => parts.len(),
    };
    tracing::info!(table = %table.name, pages, partitions, ranges = total, workers, "copying table");
    let queue = Arc::new(Mutex::new(VecDeque::from(queue)));
    let mut tasks = Vec::new();
    for _ in 0..workers.min(total as u64) {
        tasks.push(copy_worker(job, table, queue.clone(), tx.clone()));
    }
    futures_util::future::try_join_all(tasks).await?;
    tracing::info!(table = %table.name, rows = m.copy_rows.with_label_values(&[&label]).get(), "table copied");
    Ok(())
}

async fn copy_worker(
    job: &CopyJob<'_>,
    table: &CopyTable,
    queue: PieceQueue,
    tx: mpsc::Sender<Chunk>,
) -> Result<(), ReplicatorError> {
    let client = connection::connect(&job.load.cfg.source, "pg_flo_copy").await?;
    let q = |step: &'static str| move |source| CatalogError::Query { step, source };
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; \
             SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0",
            quote_literal(job.snapshot)
        ))
        .await
        .map_err(q("importing the slot's snapshot"))?;
    let columns: Vec<String> = table
        .relation
        .columns
        .iter()
        .map(|c| pg_flo_source::sql::quote_ident(&c.name))
        .collect();
    let ncols = columns.len();
    let select = format!("SELECT {} FROM", columns.join(", "));
    let label = table.name.to_string();
    let m = metrics::get();
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(piece) = next else { break };
        let Some(source) = table.parts.get(piece.part) else {
            break;
        };
        let sql = piece_sql(&select, &source.name, piece.range);
        let stream = client
            .copy_out(sql.as_str())
            .await
            .map_err(q("starting COPY of a table range"))?;
        futures_util::pin_mut!(stream);
        let mut splitter = RowSplitter::default();
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut bytes = 0usize;
        let mut copied = 0u64;
        while let Some(data) = stream.next().await {
            let data = data.map_err(q("reading COPY data"))?;
            let mut full = Vec::new();
            splitter.feed(&data, |line| {
                let values = copy_text::parse_row(line, ncols).map_err(|e| {
                    ReplicatorError::Publish(format!("copy of {}: {e}", table.name))
                })?;
                bytes += line.len() + 24;
                rows.push(values);
                if rows.len() >= job.load.cfg.max_batch_changes.max(1)
                    || bytes >= job.load.cfg.max_batch_bytes
                {
                    full.push(std::mem::take(&mut rows));
                    bytes = 0;
                }
                Ok::<(), ReplicatorError>(())
            })?;
            for chunk in full {
                copied += chunk.len() as u64;
                send(&tx, &table.relation, chunk).await?;
            }
        }
        if splitter.pending() > 0 {
            return Err(ReplicatorError::Publish(format!(
                "copy of {} ended in the middle of a row",
                table.name
            )));
        }
        if !rows.is_empty() {
            copied += rows.len() as u64;
            send(&tx, &table.relation, rows).await?;
        }
        m.copy_rows.with_label_values(&[&label]).inc_by(copied);
        m.copy_ranges_done.with_label_values(&[&label]).inc();
        tracing::debug!(table = %table.name, source = %source.name, range = ?piece.range, rows = copied, "copied range");
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(q("ending the copy transaction"))?;
    Ok(())
}

async fn send(
    tx: &mpsc::Sender<Chunk>,
    relation: &Arc<Relation>,
    rows: Vec<Vec<Value>>,
) -> Result<(), ReplicatorError> {
    tx.send(Chunk {
        relation: relation.clone(),
        rows,
    })
    .await
    .map_err(|_| ReplicatorError::Publish("the copy publisher stopped".into()))
}

/// Publishes the chunks in arrival order, cut by the [`Batcher`] into messages at
/// `consistent_point - 1` whose seq counts the rows (the reset first), and waits for every
/// PubAck.
async fn publish_all(
    job: &CopyJob<'_>,
    relations: Vec<Arc<Relation>>,
    mut rx: mpsc::Receiver<Chunk>,
) -> Result<u64, ReplicatorError> {
    let mut batcher = Batcher::new(job.load.limits);
    batcher.begin(Envelope {
        commit_lsn: job.consistent_point.0.saturating_sub(1),
        commit_time_us: 0,
        xid: 0,
        source: Some(job.source),
        copy: true,
    });
    let mut publisher = Publisher::new(
        job.load.js.clone(),
        job.load.subject,
        job.load.slot,
        job.load.stream_max_bytes,
    );
    let mut seq = 0u64;
    let mut in_flight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
    let max_in_flight = job.load.cfg.max_in_flight.max(1);
    let mut rows = 0u64;
    let mut closed = Vec::new();
    if job.reset && !relations.is_empty() {
        let reset = Change {
            op: Op::Truncate,
            lsn: 0,
            relation: 0,
            new: None,
            old: None,
            truncate: Some(message::Truncate {
                relations: Vec::new(),
                cascade: false,
                restart_identity: false,
            }),
        };
        let rels: Vec<&Relation> = relations.iter().map(|r| r.as_ref()).collect();
        closed.extend(batcher.push(reset, &rels, seq)?);
        closed.extend(batcher.cut());
        seq += 1;
        tracing::info!(
            tables = relations.len(),
            "restarted copy: truncating the copied tables first"
        );
    }
    let done = |result: Result<Option<PublishedStats>, ReplicatorError>| {
        if let Some(stats) = result? {
            stats.count();
        }
        Ok::<(), ReplicatorError>(())
    };
    loop {
        for c in closed.drain(..) {
            in_flight.push_back(publisher.send(c).await?);
        }
        tokio::select! {
            Some(result) = in_flight.next(), if !in_flight.is_empty() => done(result)?,
            chunk = rx.recv(), if in_flight.len() < max_in_flight => {
                let Some(chunk) = chunk else { break };
                rows += chunk.rows.len() as u64;
                for values in chunk.rows {
                    let change = Change {
                        op: Op::Insert,
                        lsn: 0,
                        relation: 0,
                        new: Some(values),
                        old: None,
                        truncate: None,
                    };
                    closed.extend(batcher.push(change, &[&chunk.relation], seq)?);
                    seq += 1;
                }
            }
        }
    }
    closed.extend(batcher.commit());
    for c in closed.drain(..) {
        in_flight.push_back(publisher.send(c).await?);
    }
    while let Some(result) = in_flight.next().await {
        done(result)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_page_and_end_open() {
        assert_eq!(ranges(0, 4), vec![(0, None)]);
        assert_eq!(ranges(3, 4), vec![(0, Some(1)), (1, Some(2)), (2, None)]);
        let r = ranges(100_000, 4);
        assert_eq!(r.first(), Some(&(0, Some(1024))));
        assert_eq!(r.last().map(|x| x.1), Some(None));
        for w in r.windows(2) {
            assert_eq!(w[0].1, Some(w[1].0));
        }
        let r = ranges(160, 4);
        assert_eq!(r.len(), 16);
    }

    fn source(name: &str, pages: u64, heap: bool) -> CopySource {
        CopySource {
            name: TableName {
                schema: "public".into(),
                table: name.into(),
            },
            pages,
            heap,
        }
    }

    #[test]
    fn a_partitioned_table_is_copied_through_its_leaves() {
        let parts = [
            source("c_2023", 3, true),
            source("c_remote", 0, false),
            source("c_2024", 0, true),
        ];
        let p = |part, range| Piece { part, range };
        assert_eq!(
            pieces(&parts, 4),
            vec![
                p(0, Some((0, Some(1)))),
                p(0, Some((1, Some(2)))),
                p(0, Some((2, None))),
                p(1, None),
                p(2, Some((0, None))),
            ]
        );
        assert!(pieces(&[], 4).is_empty());
        let select = "SELECT \"id\", \"email\" FROM";
        let leaf = &parts[0].name;
        assert_eq!(
            piece_sql(select, leaf, Some((1, Some(2)))),
            "COPY (SELECT \"id\", \"email\" FROM \"public\".\"c_2023\" WHERE ctid >= '(1,0)'::tid AND ctid < '(2,0)'::tid) TO STDOUT"
        );
        assert_eq!(
            piece_sql(select, leaf, Some((2, None))),
            "COPY (SELECT \"id\", \"email\" FROM \"public\".\"c_2023\" WHERE ctid >= '(2,0)'::tid) TO STDOUT"
        );
        assert_eq!(
            piece_sql(select, &parts[1].name, None),
            "COPY (SELECT \"id\", \"email\" FROM \"public\".\"c_remote\") TO STDOUT"
        );
    }
}
