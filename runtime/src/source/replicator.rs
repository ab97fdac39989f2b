//! `pg_flo replicator`: PostgreSQL logical replication -> NATS JetStream.
//!
//! Contract (when an LSN may be confirmed):
//! - Changes are grouped per source transaction into [`ChangeBatch`](crate::message::ChangeBatch)es of at most
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
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::config::{self, ReplicationMode, ReplicatorConfig};
use crate::lsn::Lsn;
use crate::message::{self, Change, Op, Relation};
use crate::metrics;
use crate::nats as nats_setup;
use crate::postgres::connection;
use crate::redact::error_chain;
use crate::retry::Backoff;
use crate::source::batching::{Batcher, Closed, Envelope, Limits};
use crate::source::catalog::{self, TableName};
use crate::source::cleanup;
use crate::source::confirm::ConfirmWindow;
use crate::source::copy;
use crate::source::ddl;
use crate::source::identity;
use crate::source::pgoutput::{self, PgOutput};
use crate::source::publication;
use crate::source::publish::{AckFuture, Publisher};
use crate::source::relations;
use crate::source::replication::{
    pg_to_unix_us, ReplicationConnection, SlotSnapshot, StreamMessage, Writer,
};
use crate::source::ReplicatorError;

/// Everything that survives a reconnect.
struct Shared {
    cfg: ReplicatorConfig,
    slot: String,
    publication: String,
    subject: String,
    js: jetstream::Context,
    /// The keys the catalog gave at start (see [`relations`]).
    keys: HashMap<TableName, message::ReplicationKey>,
    /// Partitions of the group's partitioned tables, mapped to them (see
    /// `catalog::partition_roots`).
    partition_roots: HashMap<TableName, TableName>,
    /// Highest LSN confirmed to the slot.
    confirmed: Lsn,
    /// Follows `confirmed` for the lag reader.
    confirmed_tx: watch::Sender<Lsn>,
    /// Carried by every message.
    source: message::SourceId,
    limits: Limits,
    stream_max_bytes: Option<u64>,
    /// `--track-ddl`: the group's capture (prefix, signing key, tables).
    ddl: Option<ddl::Capture>,
}

/// Runs the replicator until `shutdown` turns true or a permanent error occurs.
///
/// A transient failure while starting (the source, a link or NATS still coming back: a
/// connection closed in the middle of a catalog query, a refused connection) is retried as one
/// while streaming is: up to `--retry-max-attempts` in a row, with the backoff. Found by the
/// chaos run, where such a blip at start made the replicator exit and wait for a supervisor.
pub async fn run(
    cfg: ReplicatorConfig,
    mut shutdown: watch::Receiver<bool>,
    health: crate::http::Health,
) -> Result<(), ReplicatorError> {
    let mut retries = Retries::new(&cfg.retry);
    loop {
        // Errors of the streaming loop come back as `GaveUp` or permanent: only a start fails
        // transiently here.
        match run_once(cfg.clone(), shutdown.clone(), health.clone()).await {
            Err(e) if e.is_transient() => {
                let wait = retries.failed(e, "replicator could not start; retrying")?;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            done => return done,
        }
    }
}

/// Transient failures in a row, at most `--retry-max-attempts`, with a doubling backoff
/// between them.
struct Retries {
    attempts: u32,
    max: u32,
    backoff: Backoff,
}

impl Retries {
    fn new(cfg: &config::RetryConfig) -> Retries {
        Retries {
            attempts: 0,
            max: cfg.max_attempts.max(1),
            backoff: Backoff::new(cfg.initial_wait, cfg.max_wait),
        }
    }

    /// After progress: the count and the backoff start over.
    fn progressed(&mut self) {
        self.attempts = 0;
        self.backoff.reset();
    }

    /// Counts the transient failure `e` (a full stream is back-pressure, not a failure: it is
    /// waited out without counting) and logs `what`: the wait before the next attempt, or
    /// [`ReplicatorError::GaveUp`] after the last one.
    fn failed(&mut self, e: ReplicatorError, what: &str) -> Result<Duration, ReplicatorError> {
        metrics::error(e.category());
        if !matches!(e, ReplicatorError::StreamFull) {
            self.attempts += 1;
        }
        if self.attempts >= self.max {
            return Err(ReplicatorError::GaveUp {
                attempts: self.attempts,
                last: Box::new(e),
            });
        }
        let wait = self.backoff.next_wait();
        tracing::warn!(error = %error_chain(&e), retry_in = ?wait, attempt = self.attempts, "{what}");
        Ok(wait)
    }
}

/// Starts (catalog checks, publication, streams, slot and identity, or the copy) and streams.
async fn run_once(
    cfg: ReplicatorConfig,
    mut shutdown: watch::Receiver<bool>,
    health: crate::http::Health,
) -> Result<(), ReplicatorError> {
    let slot = config::slot_name(&cfg.group);
    let publication = config::publication_name(&cfg.group);
    let catalog_client = connection::connect(&cfg.source, "pg_flo_replicator").await?;
    if cfg.cleanup {
        return cleanup::cleanup(&cfg, &catalog_client, &slot, &publication).await;
    }
    catalog::check_wal_level(&catalog_client).await?;
    catalog::check_server_version(&catalog_client, cfg.track_ddl).await?;
    let tables = catalog::resolve_tables(&catalog_client, &cfg.schema, &cfg.tables).await?;
    let keys = catalog::table_keys(&catalog_client, &tables).await?;
    publication::ensure_publication(&catalog_client, &cfg.group, &publication, &tables).await?;
    let partition_roots = catalog::partition_roots(&catalog_client, &tables).await?;
    let ddl_capture = if cfg.track_ddl {
        let capture = ddl::Capture::setup(&catalog_client, &cfg.group, &tables).await?;
        tracing::info!(group = cfg.group, tables = tables.len(), "DDL tracking on");
        Some(capture)
    } else {
        None
    };
    let nats = nats_setup::connect(&cfg.nats, "pg_flo_replicator").await?;
    let server_max_payload = nats.server_info().max_payload;
    let js = nats_setup::jetstream(nats, cfg.max_in_flight);
    let subject = config::subject(&cfg.group);
    let stream = nats_setup::ensure_stream(
        &js,
        &config::stream_name(&cfg.group),
        &subject,
        cfg.stream_max_bytes,
        cfg.nats.stream_replicas,
    )
    .await?;
    // The state stream with the wanted replicas (later lookups leave it as it is).
    nats_setup::ensure_state_stream(&js, &cfg.group, cfg.nats.stream_replicas).await?;
    let stream_config = &stream.cached_info().config;
    let stream_max_bytes = u64::try_from(stream_config.max_bytes)
        .ok()
        .filter(|&n| n > 0);
    let message_max = match usize::try_from(stream_config.max_message_size) {
        Ok(n) if n > 0 => n.min(server_max_payload),
        _ => server_max_payload,
    };
    let limits = Limits::new(cfg.max_batch_changes, cfg.max_batch_bytes, message_max);
    tracing::info!(
        max_payload = limits.max_payload,
        max_batch_bytes = limits.max_bytes,
        "message size limits"
    );
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
                    let recorded = identity::recorded(&js, &cfg.group).await?;
                    if let identity::MissingSlot::Refuse { recorded } =
                        identity::on_missing_slot(recorded, cfg.accept_lost_slot)
                    {
                        return Err(ReplicatorError::SlotLost {
                            slot: slot.clone(),
                            recorded,
                        });
                    }
                    if recorded.is_some() {
                        tracing::warn!(slot, "the group's slot is gone; --accept-lost-slot: creating a new one (the changes made while it was missing are not replicated)");
                    }
                    let created = conn.create_slot(&slot, SlotSnapshot::Nothing).await?;
                    let cp = created.consistent_point;
                    tracing::info!(slot, consistent_point = %cp, "created replication slot");
                    let slot = match recorded {
                        Some(_) => identity::Slot::Recreated {
                            consistent_point: cp,
                        },
                        None => identity::Slot::Created {
                            consistent_point: cp,
                        },
                    };
                    (cp, slot)
                }
            };
            drop(conn);
            let source = identity::settle(&js, &cfg.group, system_identifier, found).await?;
            (confirmed, source)
        }
        ReplicationMode::Copy | ReplicationMode::CopyAndStream => {
            copy::initial_load(
                copy::InitialLoad {
                    cfg: &cfg,
                    limits,
                    stream_max_bytes,
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

    drop(catalog_client);
    let (confirmed_tx, confirmed_rx) = watch::channel(confirmed);
    let lag = tokio::spawn(read_lag(
        cfg.source.clone(),
        slot.clone(),
        confirmed_rx,
        cfg.max_slot_retained_bytes,
    ));
    let _lag = AbortOnDrop(lag);
    let mut shared = Shared {
        cfg,
        slot,
        publication,
        subject,
        js,
        keys,
        partition_roots,
        confirmed,
        confirmed_tx,
        source,
        limits,
        stream_max_bytes,
        ddl: ddl_capture,
    };
    let mut retries = Retries::new(&shared.cfg.retry);
    loop {
        let before = shared.confirmed;
        match stream_session(&mut shared, &mut shutdown, &health).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                health.set_ready(false);
                if shared.confirmed > before {
                    retries.progressed();
                }
                let wait = retries.failed(e, "replication interrupted; resuming from the slot")?;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the slot's lag behind the server's WAL every 5 s on a connection of its own, so that
/// a slow catalog never delays a standby status update; checks the retained WAL against
/// `limit` (`--max-slot-retained-bytes`).
async fn read_lag(
    source: config::PgConnConfig,
    slot: String,
    mut confirmed: watch::Receiver<Lsn>,
    limit: Option<u64>,
) {
    let mut client: Option<Client> = None;
    let mut over = false;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if client.as_ref().is_none_or(Client::is_closed) {
            client = connection::connect(&source, "pg_flo_replicator_lag")
                .await
                .ok();
        }
        let Some(c) = &client else { continue };
        let lsn = *confirmed.borrow_and_update();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            catalog::slot_reading(c, &slot, lsn),
        );
        if let Ok(Ok(reading)) = read.await {
            publish_slot_reading(&reading);
            if let (Some(limit), Some(retained)) = (limit, reading.retained_bytes) {
                let now_over = retained_over_limit(retained, limit);
                report_retained(&slot, retained, limit, over, now_over);
                over = now_over;
            }
        }
    }
}

/// Whether `retained` bytes of WAL exceed `limit`.
fn retained_over_limit(retained: i64, limit: u64) -> bool {
    u64::try_from(retained).is_ok_and(|r| r > limit)
}

/// Sets `pg_flo_replicator_slot_retained_bytes_over_limit` and logs a crossing of the limit,
/// once each way (`was` -> `now`). Replication goes on either way: stopping would only make
/// the slot retain more.
fn report_retained(slot: &str, retained: i64, limit: u64, was: bool, now: bool) {
    metrics::get()
        .replicator_slot_retained_bytes_over_limit
        .set(i64::from(now));
    match (was, now) {
        (false, true) => tracing::warn!(
            slot,
            retained_bytes = retained,
            limit_bytes = limit,
            "the replication slot retains more source WAL than --max-slot-retained-bytes; \
             replication goes on: find what holds the slot back (docs/operations.md, \
             PgFloSlotRetainedWalHigh)"
        ),
        (true, false) => tracing::info!(
            slot,
            retained_bytes = retained,
            limit_bytes = limit,
            "the replication slot retains less source WAL than --max-slot-retained-bytes again"
        ),
        _ => {}
    }
}

/// Sets the slot gauges from a reading.
fn publish_slot_reading(reading: &catalog::SlotReading) {
    let m = metrics::get();
    m.replicator_lag_bytes.set(reading.lag_bytes);
    if let Some(retained) = reading.retained_bytes {
        m.replicator_slot_retained_bytes.set(retained);
    }
    m.replicator_slot_safe_wal_size_bytes
        .set(reading.safe_wal_size.unwrap_or(-1));
    for status in metrics::WAL_STATUSES {
        let current = reading.wal_status.as_deref() == Some(status);
        m.replicator_slot_wal_status
            .with_label_values(&[status])
            .set(i64::from(current));
    }
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

    let mut session = Session {
        window: ConfirmWindow::new(shared.confirmed),
        relations: HashMap::new(),
        in_flight: FuturesOrdered::new(),
        batcher: Batcher::new(shared.limits),
        publisher: Publisher::new(
            shared.js.clone(),
            &shared.subject,
            &shared.slot,
            shared.stream_max_bytes,
        ),
        tx: None,
    };
    let mut status = tokio::time::interval(shared.cfg.status_interval);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_in_flight = shared.cfg.max_in_flight.max(1);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                return drain_and_close(shared, session, tx).await;
            }
            Some(result) = session.in_flight.next(), if !session.in_flight.is_empty() => {
                if let Some(stats) = result? {
                    stats.count();
                }
                metrics::get().replicator_in_flight.set(session.in_flight.len() as i64);
                if let Some(lsn) = session.window.acked() {
                    shared.confirm(lsn);
                }
            }
            _ = status.tick() => {
                tx.send_status(shared.confirmed, false).await?;
            }
            msg = rx.recv(), if session.in_flight.len() < max_in_flight => {
                match msg? {
                    StreamMessage::Keepalive { wal_end, reply_requested } => {
                        if let Some(lsn) = session.window.keepalive(wal_end) {
                            shared.confirm(lsn);
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
            self.confirmed_tx.send_replace(lsn);
            metrics::get().replicator_confirmed_lsn.set(lsn.0 as i64);
        }
    }
}

/// The transaction being read.
struct OpenTx {
    xid: u32,
    /// Source queries of the DDL already captured in this transaction.
    ddl_queries: Vec<String>,
}

/// State of one replication session (one connection); a reconnect starts a new one.
struct Session {
    /// Which LSN may be confirmed (see [`ConfirmWindow`]).
    window: ConfirmWindow,
    relations: HashMap<u32, Arc<Relation>>,
    /// Publishes awaiting their PubAck, in publish order, with the LSN each lets us confirm.
    in_flight: FuturesOrdered<AckFuture>,
    batcher: Batcher,
    publisher: Publisher,
    tx: Option<OpenTx>,
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
                self.batcher.begin(Envelope {
                    commit_lsn: final_lsn.0,
                    commit_time_us: pg_to_unix_us(commit_time),
                    xid,
                    source: Some(shared.source),
                    copy: false,
                });
                self.tx = Some(OpenTx {
                    xid,
                    ddl_queries: Vec::new(),
                });
                self.window.begin();
            }
            PgOutput::Commit { end_lsn, .. } => {
                if self.tx.take().is_none() {
                    return Ok(());
                }
                metrics::get().replicator_transactions.inc();
                let last = self.batcher.commit();
                let published_nothing = last.is_none();
                if let Some(closed) = last {
                    self.send(closed, Some(end_lsn)).await?;
                }
                self.window.committed(end_lsn, published_nothing);
                if published_nothing {
                    // The window counts it as one in flight: it is confirmed in its turn.
                    self.in_flight.push_back(Box::pin(async { Ok(None) }));
                }
            }
            PgOutput::Relation(mut info) => {
                let mut name = TableName {
                    schema: info.schema.clone(),
                    table: info.table.clone(),
                };
                // A partition under its own name (WAL from before the publication published
                // via the root): renamed to its root, the name of the copy, rules and routes.
                if let Some(root) = shared.partition_roots.get(&name) {
                    name = root.clone();
                    info.schema = root.schema.clone();
                    info.table = root.table.clone();
                }
                let rel = relations::relation(info, shared.keys.get(&name));
                // Changes after it in this transaction carry the new shape.
                self.batcher.relation_changed(rel.oid);
                self.relations.insert(rel.oid, Arc::new(rel));
            }
            PgOutput::Insert { relation, new } => {
                self.push_row(relation, Op::Insert, wal_start, Some(new), None)
                    .await?;
            }
            PgOutput::Update { relation, old, new } => {
                self.push_row(relation, Op::Update, wal_start, Some(new), old)
                    .await?;
            }
            PgOutput::Delete { relation, old } => {
                self.push_row(relation, Op::Delete, wal_start, None, Some(old))
                    .await?;
            }
            PgOutput::Truncate {
                relations: rel_ids,
                cascade,
                restart_identity,
            } => {
                if self.tx.is_none() || rel_ids.is_empty() {
                    return Ok(());
                }
                let mut rels = Vec::new();
                for id in &rel_ids {
                    let rel = self
                        .relations
                        .get(id)
                        .ok_or(ReplicatorError::UnknownRelation(*id))?;
                    rels.push(rel.clone());
                }
                let change = Change {
                    op: Op::Truncate,
                    lsn: wal_start.0,
                    relation: 0,
                    new: None,
                    old: None,
                    truncate: Some(message::Truncate {
                        relations: Vec::new(),
                        cascade,
                        restart_identity,
                    }),
                };
                let refs: Vec<&Relation> = rels.iter().map(|r| r.as_ref()).collect();
                self.push(change, &refs).await?;
            }
            PgOutput::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if shared.ddl.as_ref().is_some_and(|d| prefix == d.prefix()) => {
                let (Some(open), Some(capture)) = (self.tx.as_mut(), shared.ddl.as_ref()) else {
                    return Ok(());
                };
                let accepted = match capture.accept(&content, open.xid, wal_start.0) {
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
                    tracing::warn!(table = %accepted.table.quoted(), lsn = %wal_start, reason = %why, "DDL that cannot be replayed: the postgres sink will stop at it");
                }
                // Several commands of one statement (ALTER TABLE ... ADD UNIQUE may report the
                // index too): replay it once per transaction.
                if open.ddl_queries.contains(&accepted.key) {
                    return Ok(());
                }
                open.ddl_queries.push(accepted.key);
                self.push(accepted.change, &[&accepted.relation]).await?;
            }
            PgOutput::Origin | PgOutput::Type | PgOutput::Message { .. } => {}
        }
        Ok(())
    }

    async fn push_row(
        &mut self,
        relation: u32,
        op: Op,
        wal_start: Lsn,
        new: Option<Vec<message::Value>>,
        old: Option<(message::OldKind, Vec<message::Value>)>,
    ) -> Result<(), ReplicatorError> {
        let rel = self
            .relations
            .get(&relation)
            .ok_or(ReplicatorError::UnknownRelation(relation))?
            .clone();
        let change = Change {
            op,
            lsn: wal_start.0,
            relation: 0,
            new,
            old,
            truncate: None,
        };
        self.push(change, &[&rel]).await
    }

    /// Adds a change of the open transaction (its seq is its WAL position) and publishes the
    /// messages that closes.
    async fn push(&mut self, change: Change, rels: &[&Relation]) -> Result<(), ReplicatorError> {
        if self.tx.is_none() {
            return Ok(());
        }
        metrics::get().replicator_changes_read.inc();
        let seq = change.lsn;
        for closed in self.batcher.push(change, rels, seq)? {
            self.send(closed, None).await?;
        }
        Ok(())
    }

    /// Publishes a message; `end` is its transaction's end LSN on the final one.
    async fn send(&mut self, closed: Closed, end: Option<Lsn>) -> Result<(), ReplicatorError> {
        let ack = self.publisher.send(closed).await?;
        self.in_flight.push_back(ack);
        metrics::get()
            .replicator_in_flight
            .set(self.in_flight.len() as i64);
        self.window.published(end);
        Ok(())
    }
}

/// How long a replicator asked to stop waits for the acknowledgements of what it published
/// before it confirms its position to the slot and closes (the operator's pods get a longer
/// `terminationGracePeriodSeconds`).
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

async fn drain_and_close(
    shared: &mut Shared,
    mut session: Session,
    mut tx: Writer,
) -> Result<(), ReplicatorError> {
    tracing::info!(
        in_flight = session.in_flight.len(),
        "shutting down: waiting for publish acks"
    );
    let drain = async {
        while let Some(result) = session.in_flight.next().await {
            if result.is_err() {
                break;
            }
            if let Some(lsn) = session.window.acked() {
                shared.confirm(lsn);
            }
        }
    };
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, drain).await;
    tx.send_status(shared.confirmed, false).await?;
    let _ = tx.close().await;
    tracing::info!(confirmed = %shared.confirmed, "replicator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn retained_wal_is_over_the_limit_only_above_it() {
        use super::retained_over_limit;
        for (retained, limit, want) in [
            (0, 1, false),
            (1024, 1024, false),
            (1025, 1024, true),
            (-1, 0, false),
            (i64::MAX, u64::MAX, false),
            (i64::MAX, 0, true),
        ] {
            assert_eq!(
                retained_over_limit(retained, limit),
                want,
                "{retained} {limit}"
            );
        }
    }

    use super::*;
    use crate::source::replication::ReplicationError;

    fn closed() -> ReplicatorError {
        ReplicatorError::Replication(ReplicationError::Closed)
    }

    /// Transient failures in a row are bounded, progress starts the count over, and a full
    /// stream is waited out without counting.
    #[test]
    fn retries_give_up_after_max_failures_in_a_row() {
        let cfg = config::RetryConfig {
            max_attempts: 3,
            initial_wait: Duration::from_millis(100),
            max_wait: Duration::from_millis(300),
        };
        let mut r = Retries::new(&cfg);
        let waits: Vec<Duration> = (0..2).map(|_| r.failed(closed(), "t").unwrap()).collect();
        assert_eq!(
            waits,
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        for _ in 0..5 {
            assert!(r.failed(ReplicatorError::StreamFull, "t").is_ok());
        }
        match r.failed(closed(), "t") {
            Err(ReplicatorError::GaveUp { attempts: 3, .. }) => {}
            other => panic!("{other:?}"),
        }

        let mut r = Retries::new(&cfg);
        r.failed(closed(), "t").unwrap();
        r.failed(closed(), "t").unwrap();
        r.progressed();
        assert_eq!(r.failed(closed(), "t").unwrap(), Duration::from_millis(100));
        assert!(r.failed(closed(), "t").is_ok());
        assert!(r.failed(closed(), "t").is_err());
    }
}
