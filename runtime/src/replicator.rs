//! `pg_flo replicator`: PostgreSQL logical replication -> NATS JetStream.
//!
//! Contract (when an LSN may be confirmed):
//! - Changes are grouped per source transaction into [`ChangeBatch`]es of at most
//!   `max_batch_changes` changes / about `max_batch_bytes` bytes, published in WAL order with
//!   `Nats-Msg-Id = {slot}:{commit_lsn}:{seq}`, at most `max_in_flight` awaiting their PubAck.
//! - The slot's confirmed (flush) LSN moves to a transaction's commit end LSN only once every
//!   message of that transaction and of all earlier ones is PubAck'ed. Between transactions,
//!   with nothing in flight, a keepalive's WAL end is confirmed too (an idle group does not pin
//!   WAL).
//! - Standby status goes out every `status_interval` whatever the traffic, and at once when the
//!   server asks.
//! - Any publish failure ends the session: the replication connection is dropped and streaming
//!   restarts from the slot's confirmed LSN, so nothing unacknowledged is ever skipped. Messages
//!   that JetStream already stored are dropped by the duplicate window, and `prev` lets the
//!   worker put a message re-published after a newer one back in order.
//! - SIGTERM/SIGINT: stop reading, wait for the PubAcks in flight, confirm what they cover, exit.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::config::{self, ReplicationMode, ReplicatorConfig};
use crate::copy;
use crate::ddl;
use crate::identity;
use crate::lsn::Lsn;
use crate::message::{self, Change, ChangeBatch, Op, Position, Relation};
use crate::metrics;
use crate::nats::{self as nats_setup, NatsError};
use crate::postgres::catalog::{self, CatalogError, TableName};
use crate::postgres::connection::{self, ConnectError};
use crate::postgres::pgoutput::{self, PgOutput, RelationInfo};
use crate::postgres::replication::{
    pg_to_unix_us, ReplicationConnection, ReplicationError, StreamMessage, Writer,
};
use crate::redact::error_chain;

/// Why the replicator stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    #[error("could not connect to the source database")]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("replication connection failed")]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("publishing to jetstream failed: {0}")]
    Publish(String),
    #[error("jetstream stream is full (max bytes reached); waiting for the worker to consume")]
    StreamFull,
    #[error("could not decode the replication stream")]
    Decode(#[from] pgoutput::DecodeError),
    #[error("could not encode a change message")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("replication stream refers to unknown relation {0}")]
    UnknownRelation(u32),
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ReplicatorError>,
    },
}

impl ReplicatorError {
    fn is_transient(&self) -> bool {
        match self {
            ReplicatorError::Replication(e) => e.is_transient(),
            ReplicatorError::Connect(e) => e.is_transient(),
            ReplicatorError::Publish(_) | ReplicatorError::StreamFull => true,
            ReplicatorError::Catalog(CatalogError::Query { source, .. }) => source.is_closed(),
            _ => false,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            ReplicatorError::Connect(_) => "source_connect",
            ReplicatorError::Catalog(_) => "catalog",
            ReplicatorError::Replication(_) => "replication",
            ReplicatorError::Nats(_) => "nats",
            ReplicatorError::Publish(_) => "publish",
            ReplicatorError::StreamFull => "stream_full",
            ReplicatorError::Decode(_) => "decode",
            ReplicatorError::Encode(_) => "encode",
            ReplicatorError::UnknownRelation(_) => "protocol",
            ReplicatorError::GaveUp { .. } => "gave_up",
        }
    }
}

/// Everything that survives a reconnect.
struct Shared {
    cfg: ReplicatorConfig,
    slot: String,
    publication: String,
    subject: String,
    js: jetstream::Context,
    catalog: Client,
    keys: HashMap<TableName, message::ReplicationKey>,
    /// Highest LSN confirmed to the slot.
    confirmed: Lsn,
    /// Carried by every message.
    source: message::SourceId,
    /// `--track-ddl`: the group's capture (prefix, signing key, tables).
    ddl: Option<ddl::Capture>,
}

/// Runs the replicator until `shutdown` turns true or a permanent error occurs.
pub async fn run(
    cfg: ReplicatorConfig,
    mut shutdown: watch::Receiver<bool>,
    health: crate::http::Health,
) -> Result<(), ReplicatorError> {
    let slot = config::slot_name(&cfg.group);
    let publication = config::publication_name(&cfg.group);
    let catalog_client = connection::connect(&cfg.source, "pg_flo_replicator").await?;
    if cfg.cleanup {
        return cleanup(&cfg, &catalog_client, &slot, &publication).await;
    }
    catalog::check_wal_level(&catalog_client).await?;
    let tables = catalog::resolve_tables(&catalog_client, &cfg.schema, &cfg.tables).await?;
    let keys = catalog::table_keys(&catalog_client, &tables).await?;
    catalog::ensure_publication(&catalog_client, &publication, &tables).await?;
    let ddl_capture = if cfg.track_ddl {
        let capture = ddl::Capture::setup(&catalog_client, &cfg.group, &tables).await?;
        tracing::info!(group = cfg.group, tables = tables.len(), "DDL tracking on");
        Some(capture)
    } else {
        None
    };
    let nats = nats_setup::connect(&cfg.nats, "pg_flo_replicator").await?;
    let js = nats_setup::jetstream(nats, cfg.max_in_flight);
    let subject = config::subject(&cfg.group);
    nats_setup::ensure_stream(
        &js,
        &config::stream_name(&cfg.group),
        &subject,
        cfg.stream_max_bytes,
    )
    .await?;
    // The source's identity (see `identity`), settled before anything is published.
    let mut conn = ReplicationConnection::connect(&cfg.source, "pg_flo_replicator").await?;
    let system_identifier = conn.identify_system().await?;
    let (confirmed, source) = match cfg.mode {
        ReplicationMode::Stream => {
            let (confirmed, found) = match catalog::find_slot(&catalog_client, &slot).await? {
                Some(info) => {
                    let lsn = info.confirmed_flush.unwrap_or_default();
                    tracing::info!(slot, confirmed = %lsn, "reusing replication slot");
                    (
                        lsn,
                        identity::Slot::Existing {
                            confirmed_flush: lsn,
                        },
                    )
                }
                None => {
                    let created = conn.create_slot(&slot, "nothing").await?;
                    let cp = created.consistent_point;
                    tracing::info!(slot, consistent_point = %cp, "created replication slot");
                    (
                        cp,
                        identity::Slot::Created {
                            consistent_point: cp,
                        },
                    )
                }
            };
            drop(conn);
            let source = identity::settle(&js, &cfg.group, system_identifier, found).await?;
            (confirmed, source)
        }
        ReplicationMode::Copy | ReplicationMode::CopyAndStream => {
            initial_load(
                InitialLoad {
                    cfg: &cfg,
                    js: &js,
                    subject: &subject,
                    slot: &slot,
                    catalog_client: &catalog_client,
                    tables: &tables,
                    keys: &keys,
                },
                conn,
                system_identifier,
            )
            .await?
        }
    };
    if cfg.mode == ReplicationMode::Copy {
        tracing::info!(slot, consistent_point = %confirmed, "copy finished; the slot is kept so that a later --stream run continues without a gap (it retains WAL until then)");
        return Ok(());
    }
    tracing::info!(group = cfg.group, tables = tables.len(), "replicator ready");
    metrics::get()
        .replicator_confirmed_lsn
        .set(confirmed.0 as i64);

    let mut shared = Shared {
        cfg,
        slot,
        publication,
        subject,
        js,
        catalog: catalog_client,
        keys,
        confirmed,
        source,
        ddl: ddl_capture,
    };
    let mut attempts = 0u32;
    let mut wait = shared.cfg.retry.initial_wait;
    loop {
        let before = shared.confirmed;
        match stream_session(&mut shared, &mut shutdown, &health).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                health.set_ready(false);
                metrics::error(e.category());
                if shared.confirmed > before {
                    attempts = 0;
                    wait = shared.cfg.retry.initial_wait;
                }
                // A full stream is back-pressure, not a failure: wait as long as it takes.
                if !matches!(e, ReplicatorError::StreamFull) {
                    attempts += 1;
                }
                if attempts >= shared.cfg.retry.max_attempts.max(1) {
                    return Err(ReplicatorError::GaveUp {
                        attempts,
                        last: Box::new(e),
                    });
                }
                tracing::warn!(error = %error_chain(&e), retry_in = ?wait, attempt = attempts, "replication interrupted; resuming from the slot");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                wait = (wait * 2).min(shared.cfg.retry.max_wait);
                if shared.catalog.is_closed() {
                    if let Ok(c) =
                        connection::connect(&shared.cfg.source, "pg_flo_replicator").await
                    {
                        shared.catalog = c;
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The initial copy (see [`crate::copy`]): creates the slot with an exported snapshot, copies
/// every table under it and publishes the rows. Returns the slot's consistent point, where
/// streaming continues. A copy already done for the existing slot is not repeated; an
/// unfinished one is started over on a new slot. `conn` (on which nothing ran but
/// `IDENTIFY_SYSTEM`) creates the slot and holds its exported snapshot during the copy. Returns
/// the source identity too (see [`identity`]).
async fn initial_load(
    load: InitialLoad<'_>,
    mut conn: ReplicationConnection,
    system_identifier: u64,
) -> Result<(Lsn, message::SourceId), ReplicatorError> {
    let InitialLoad {
        cfg,
        js,
        subject,
        slot,
        catalog_client,
        tables,
        keys,
    } = load;
    let store = copy::state_store(js, &cfg.group).await?;
    let state = copy::read_state(&store, &cfg.group).await?;
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
    let created = conn.create_slot(slot, "export").await?;
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
    copy::write_state(
        js,
        &cfg.group,
        &copy::CopyState {
            status: "in_progress".into(),
            consistent_point: cp.to_string(),
        },
    )
    .await?;
    let rows = copy::run(copy::CopyJob {
        cfg,
        js,
        subject,
        slot,
        snapshot: &snapshot,
        consistent_point: cp,
        source,
        reset,
        tables,
        keys,
    })
    .await?;
    copy::write_state(
        js,
        &cfg.group,
        &copy::CopyState {
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
struct InitialLoad<'a> {
    cfg: &'a ReplicatorConfig,
    js: &'a jetstream::Context,
    subject: &'a str,
    slot: &'a str,
    catalog_client: &'a Client,
    tables: &'a [TableName],
    keys: &'a HashMap<TableName, message::ReplicationKey>,
}

/// `--cleanup`: removes what the group created in the source (slot, publication, DDL capture
/// objects) and in NATS (its streams). Objects already gone count as removed. A slot still in
/// use by a running replicator is refused: stop it first.
async fn cleanup(
    cfg: &ReplicatorConfig,
    client: &Client,
    slot: &str,
    publication: &str,
) -> Result<(), ReplicatorError> {
    let q = |step: &'static str| move |source| CatalogError::Query { step, source };
    client
        .batch_execute(&ddl::cleanup_sql(&cfg.group))
        .await
        .map_err(q("removing the DDL capture objects"))?;
    if let Some(info) = catalog::find_slot(client, slot).await? {
        if info.active {
            return Err(CatalogError::Slot {
                slot: slot.to_owned(),
                problem: "is in use by a running replicator: stop it before --cleanup".to_owned(),
            }
            .into());
        }
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(q("dropping the replication slot"))?;
        tracing::info!(slot, "dropped replication slot");
    }
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            crate::postgres::replication::quote_ident(publication)
        ))
        .await
        .map_err(q("dropping the publication"))?;
    tracing::info!(publication, "dropped publication (if it existed)");
    let nats = nats_setup::connect(&cfg.nats, "pg_flo_cleanup").await?;
    let js = jetstream::new(nats);
    for stream in nats_setup::group_streams(&cfg.group) {
        match js.delete_stream(&stream).await {
            Ok(_) => tracing::info!(stream, "deleted stream"),
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => {
                return Err(ReplicatorError::Publish(format!(
                    "deleting stream {stream}: {e}"
                )))
            }
        }
    }
    tracing::info!(group = cfg.group, "cleanup done");
    Ok(())
}

pub(crate) type AckFuture = Pin<
    Box<dyn Future<Output = (Result<Option<PublishedStats>, ReplicatorError>, Option<Lsn>)> + Send>,
>;

#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishedStats {
    pub(crate) changes: u64,
}

/// The transaction being read.
struct TxBuilder {
    commit_lsn: Lsn,
    commit_time_us: i64,
    xid: u32,
    seq: u32,
    relations: Vec<Relation>,
    relation_index: HashMap<u32, u16>,
    changes: Vec<Change>,
    bytes: usize,
    /// What the DDL already captured in this transaction replays ([`ddl::Accepted::key`]).
    ddl_queries: Vec<String>,
}

impl TxBuilder {
    fn relation_idx(&mut self, rel: &Arc<Relation>) -> u16 {
        if let Some(&i) = self.relation_index.get(&rel.oid) {
            return i;
        }
        let i = u16::try_from(self.relations.len()).unwrap_or(u16::MAX);
        self.relations.push(Relation::clone(rel));
        self.relation_index.insert(rel.oid, i);
        i
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn stream_session(
    shared: &mut Shared,
    shutdown: &mut watch::Receiver<bool>,
    health: &crate::http::Health,
) -> Result<(), ReplicatorError> {
    let conn = ReplicationConnection::connect(&shared.cfg.source, "pg_flo_replicator").await?;
    let (mut rx, mut tx) = conn
        .start_replication(
            &shared.slot,
            &shared.publication,
            Lsn(0),
            shared.cfg.track_ddl,
        )
        .await?;
    tracing::info!(slot = shared.slot, from = %shared.confirmed, "streaming changes");
    health.set_ready(true);

    let mut session = Session::default();
    let mut status = tokio::time::interval(shared.cfg.status_interval);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lag = tokio::time::interval(Duration::from_secs(5));
    let max_in_flight = shared.cfg.max_in_flight.max(1);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                return drain_and_close(shared, session.in_flight, tx).await;
            }
            Some((result, confirm)) = session.in_flight.next(), if !session.in_flight.is_empty() => {
                if let Some(stats) = result? {
                    let m = metrics::get();
                    m.replicator_messages_published.inc();
                    m.replicator_changes_published.inc_by(stats.changes);
                }
                if let Some(lsn) = confirm {
                    shared.confirm(lsn);
                }
            }
            _ = status.tick() => {
                tx.send_status(shared.confirmed, false).await?;
            }
            _ = lag.tick() => {
                if let Ok(bytes) = catalog::lag_bytes(&shared.catalog, shared.confirmed).await {
                    metrics::get().replicator_lag_bytes.set(bytes);
                }
            }
            msg = rx.recv(), if session.in_flight.len() < max_in_flight => {
                match msg? {
                    StreamMessage::Keepalive { wal_end, reply_requested } => {
                        // Between transactions with nothing in flight, everything the server
                        // sent before this keepalive is handled.
                        if session.current.is_none() && session.in_flight.is_empty() {
                            shared.confirm(wal_end);
                        }
                        if reply_requested {
                            tx.send_status(shared.confirmed, false).await?;
                        }
                    }
                    StreamMessage::XLogData { wal_start, data, .. } => {
                        let out = pgoutput::decode(data)?;
                        session.handle(shared, out, wal_start).await?;
                    }
                }
            }
        }
    }
}

impl Shared {
    fn confirm(&mut self, lsn: Lsn) {
        if lsn > self.confirmed {
            self.confirmed = lsn;
            metrics::get().replicator_confirmed_lsn.set(lsn.0 as i64);
        }
    }
}

/// State of one replication session (one connection); a reconnect starts a new one.
#[derive(Default)]
struct Session {
    relations: HashMap<u32, Arc<Relation>>,
    /// Publishes awaiting their PubAck, in publish order, with the LSN each lets us confirm.
    in_flight: FuturesOrdered<AckFuture>,
    /// The transaction being read.
    current: Option<TxBuilder>,
    /// Position of the last message this session published.
    prev: Option<Position>,
}

impl Session {
    async fn handle(
        &mut self,
        shared: &mut Shared,
        out: PgOutput,
        wal_start: Lsn,
    ) -> Result<(), ReplicatorError> {
        match out {
            PgOutput::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.current = Some(TxBuilder {
                    commit_lsn: final_lsn,
                    commit_time_us: pg_to_unix_us(commit_time),
                    xid,
                    seq: 0,
                    relations: Vec::new(),
                    relation_index: HashMap::new(),
                    changes: Vec::new(),
                    bytes: 0,
                    ddl_queries: Vec::new(),
                });
            }
            PgOutput::Commit { end_lsn, .. } => {
                let Some(mut txb) = self.current.take() else {
                    return Ok(());
                };
                metrics::get().replicator_transactions.inc();
                if txb.seq == 0 && txb.changes.is_empty() {
                    // Nothing of ours in it: confirm once everything before it is acked.
                    self.in_flight
                        .push_back(Box::pin(async move { (Ok(None), Some(end_lsn)) }));
                } else {
                    self.publish(shared, &mut txb, true, Some(end_lsn)).await?;
                }
            }
            PgOutput::Relation(info) => {
                let rel = relation_from(shared, info).await?;
                self.relations.insert(rel.oid, Arc::new(rel));
            }
            PgOutput::Insert { relation, new } => {
                self.push_change(shared, relation, Op::Insert, wal_start, Some(new), None)
                    .await?;
            }
            PgOutput::Update { relation, old, new } => {
                self.push_change(shared, relation, Op::Update, wal_start, Some(new), old)
                    .await?;
            }
            PgOutput::Delete { relation, old } => {
                self.push_change(shared, relation, Op::Delete, wal_start, None, Some(old))
                    .await?;
            }
            PgOutput::Truncate {
                relations: rel_ids,
                cascade,
                restart_identity,
            } => {
                let Some(txb) = self.current.as_mut() else {
                    return Ok(());
                };
                let mut idxs = Vec::new();
                for id in &rel_ids {
                    let rel = self
                        .relations
                        .get(id)
                        .ok_or(ReplicatorError::UnknownRelation(*id))?;
                    idxs.push(txb.relation_idx(rel));
                }
                let Some(&first) = idxs.first() else {
                    return Ok(());
                };
                txb.changes.push(Change {
                    op: Op::Truncate,
                    lsn: wal_start.0,
                    relation: first,
                    new: None,
                    old: None,
                    truncate: Some(message::Truncate {
                        relations: idxs,
                        cascade,
                        restart_identity,
                    }),
                });
                metrics::get().replicator_changes_read.inc();
            }
            PgOutput::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if shared.ddl.as_ref().is_some_and(|d| prefix == d.prefix()) => {
                let (Some(txb), Some(capture)) = (self.current.as_mut(), shared.ddl.as_ref())
                else {
                    return Ok(());
                };
                let accepted = match capture.accept(&content, txb.xid, wal_start.0) {
                    Ok(a) => a,
                    // Never its content: anyone can write it.
                    Err(ddl::Rejected::Forged(why)) => {
                        tracing::warn!(lsn = %wal_start, why, "dropping a DDL message the capture trigger did not produce");
                        metrics::error("ddl_forged");
                        return Ok(());
                    }
                    Err(ddl::Rejected::Malformed(why)) => {
                        tracing::warn!(lsn = %wal_start, why, "skipping a malformed DDL capture message");
                        metrics::error("ddl_malformed");
                        return Ok(());
                    }
                };
                if let Some(why) = &accepted.refused {
                    tracing::warn!(table = %ddl::quoted(&accepted.table), lsn = %wal_start, reason = %why, "DDL that cannot be replayed: the postgres sink will stop at it");
                }
                // Several commands of one statement (ALTER TABLE ... ADD UNIQUE may report the
                // index too): replay it once per transaction.
                if txb.ddl_queries.contains(&accepted.key) {
                    return Ok(());
                }
                txb.ddl_queries.push(accepted.key);
                // The table's key may have changed: look it up again at its next Relation.
                shared.keys.remove(&accepted.table);
                let mut change = accepted.change;
                change.relation = u16::try_from(txb.relations.len()).unwrap_or(u16::MAX);
                txb.relations.push(accepted.relation);
                txb.changes.push(change);
                metrics::get().replicator_changes_read.inc();
            }
            PgOutput::Origin | PgOutput::Type | PgOutput::Message { .. } => {}
        }
        Ok(())
    }

    async fn push_change(
        &mut self,
        shared: &Shared,
        relation: u32,
        op: Op,
        wal_start: Lsn,
        new: Option<Vec<message::Value>>,
        old: Option<(message::OldKind, Vec<message::Value>)>,
    ) -> Result<(), ReplicatorError> {
        let rel = self
            .relations
            .get(&relation)
            .ok_or(ReplicatorError::UnknownRelation(relation))?;
        let Some(mut txb) = self.current.take() else {
            return Ok(());
        };
        let idx = txb.relation_idx(rel);
        let size = |vals: Option<&Vec<message::Value>>| -> usize {
            vals.into_iter()
                .flatten()
                .map(|v| v.as_bytes().map_or(1, |b| b.len() + 5))
                .sum()
        };
        txb.bytes += 24 + size(new.as_ref()) + size(old.as_ref().map(|(_, v)| v));
        txb.changes.push(Change {
            op,
            lsn: wal_start.0,
            relation: idx,
            new,
            old,
            truncate: None,
        });
        metrics::get().replicator_changes_read.inc();
        let full = txb.changes.len() >= shared.cfg.max_batch_changes.max(1)
            || txb.bytes >= shared.cfg.max_batch_bytes;
        let result = if full {
            self.publish(shared, &mut txb, false, None).await
        } else {
            Ok(())
        };
        self.current = Some(txb);
        result
    }

    /// Publishes the changes gathered so far as the next message of the transaction.
    async fn publish(
        &mut self,
        shared: &Shared,
        txb: &mut TxBuilder,
        last: bool,
        confirm: Option<Lsn>,
    ) -> Result<(), ReplicatorError> {
        let batch = ChangeBatch {
            version: message::FORMAT_VERSION,
            commit_lsn: txb.commit_lsn.0,
            commit_time_us: txb.commit_time_us,
            xid: txb.xid,
            seq: txb.seq,
            last,
            prev: self.prev,
            emitted_at_us: now_us(),
            relations: std::mem::take(&mut txb.relations),
            changes: std::mem::take(&mut txb.changes),
            source: Some(shared.source),
            copy: false,
        };
        txb.relation_index.clear();
        txb.bytes = 0;
        txb.seq += 1;
        self.prev = Some(batch.position());
        let ack = send_batch(&shared.js, &shared.subject, &shared.slot, &batch, confirm).await?;
        self.in_flight.push_back(ack);
        Ok(())
    }
}

/// Publishes one message and returns the future of its PubAck, tagged with the LSN it lets
/// the replicator confirm.
pub(crate) async fn send_batch(
    js: &jetstream::Context,
    subject: &str,
    slot: &str,
    batch: &ChangeBatch,
    confirm: Option<Lsn>,
) -> Result<AckFuture, ReplicatorError> {
    let changes = batch.changes.len() as u64;
    let payload = batch.encode()?;
    let publish = Publish::build()
        .payload(payload.into())
        .message_id(batch.message_id(slot))
        .header(message::FORMAT_HEADER, message::FORMAT_VERSION.to_string());
    let ack = js
        .send_publish(subject.to_owned(), publish)
        .await
        .map_err(|e| ReplicatorError::Publish(e.to_string()))?;
    Ok(Box::pin(async move {
        let result = match ack.await {
            Ok(_) => Ok(Some(PublishedStats { changes })),
            Err(e) => {
                let text = e.to_string();
                if text.contains("maximum bytes") || text.contains("maximum messages") {
                    Err(ReplicatorError::StreamFull)
                } else {
                    Err(ReplicatorError::Publish(text))
                }
            }
        };
        (result, confirm)
    }))
}

async fn relation_from(
    shared: &mut Shared,
    info: RelationInfo,
) -> Result<Relation, ReplicatorError> {
    let name = TableName {
        schema: info.schema.clone(),
        table: info.table.clone(),
    };
    let key = match shared.keys.get(&name) {
        Some(k) => k.clone(),
        None => {
            // A table we did not know at start (added to the publication later).
            let keys = catalog::table_keys(&shared.catalog, std::slice::from_ref(&name)).await?;
            let k = keys.get(&name).cloned().unwrap_or(message::ReplicationKey {
                kind: message::KeyKind::Full,
                columns: Vec::new(),
            });
            shared.keys.insert(name, k.clone());
            k
        }
    };
    Ok(Relation {
        oid: info.oid,
        schema: info.schema,
        table: info.table,
        columns: info
            .columns
            .into_iter()
            .map(|c| message::Column {
                name: c.name,
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                identity: c.identity,
            })
            .collect(),
        key,
    })
}

async fn drain_and_close(
    shared: &mut Shared,
    mut in_flight: FuturesOrdered<AckFuture>,
    mut tx: Writer,
) -> Result<(), ReplicatorError> {
    tracing::info!(
        in_flight = in_flight.len(),
        "shutting down: waiting for publish acks"
    );
    let drain = async {
        while let Some((result, confirm)) = in_flight.next().await {
            if result.is_err() {
                break;
            }
            if let Some(lsn) = confirm {
                shared.confirmed = shared.confirmed.max(lsn);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), drain).await;
    tx.send_status(shared.confirmed, false).await?;
    let _ = tx.close().await;
    tracing::info!(confirmed = %shared.confirmed, "replicator stopped");
    Ok(())
}
