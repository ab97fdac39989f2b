//! The sink's connection to the target: opening it, the session settings (text output like the
//! source's pgoutput text, `session_replication_role = replica`), the internal tables and
//! stored position read at start, pipelined requests, and what an error means (a lost
//! connection, transient or permanent).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::config::PostgresSinkConfig;
use crate::sink::{Retry, SinkError};

use super::position::{split, SETUP_SQL};
use super::{sql, PostgresSink};

/// Session settings that make text output match the source's pgoutput text (used when rows
/// are matched by their text form).
const SESSION_SQL: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// Applies as PostgreSQL's own apply worker does: ordinary triggers, rules and the
/// foreign-key triggers do not fire for replicated changes (see [`replica_mode`]).
const REPLICA_ROLE_SQL: &str = "SET session_replication_role = replica";

impl PostgresSink {
    /// Session settings, the applied-position table, and the stored position.
    pub(super) async fn setup(&mut self) -> Result<(), SinkError> {
        self.client
            .batch_execute(SESSION_SQL)
            .await
            .map_err(|e| self.error("setting up the target session", e))?;
        if replica_mode(&self.cfg) {
            if let Err(e) = self.client.batch_execute(REPLICA_ROLE_SQL).await {
                let step = match e.code() {
                    Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
                        replica_role_denied(&self.cfg.target.user)
                    }
                    _ => "setting session_replication_role = replica".to_owned(),
                };
                return Err(self.error(step, e));
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.client.batch_execute(SETUP_SQL).await {
                Ok(()) => break,
                // Several workers creating the table at once race on the catalogs.
                Err(e)
                    if attempt < 3
                        && matches!(
                            e.code(),
                            Some(c) if *c == SqlState::UNIQUE_VIOLATION
                                || *c == SqlState::DUPLICATE_SCHEMA
                                || *c == SqlState::DUPLICATE_TABLE
                                || *c == SqlState::DUPLICATE_COLUMN
                        ) => {}
                Err(e) => {
                    return Err(
                        self.error("creating internal_pg_flo.applied_position in the target", e)
                    )
                }
            }
        }
        (self.durable, self.durable_source) = split(self.read_position().await?);
        Ok(())
    }
}

pub(super) async fn open(cfg: &PostgresSinkConfig) -> Result<Client, SinkError> {
    let app = format!("pg_flo_worker_{}", cfg.group);
    crate::postgres::connection::connect(&cfg.target, &app)
        .await
        .map_err(|source| SinkError::Connect {
            target: cfg.target.describe(),
            source: Box::new(source),
        })
}

/// Sends every request in order (polling each future once sends it: tokio-postgres queues
/// the request on the connection at the first poll), then awaits the results in order. On
/// the first error returns its index; later requests are abandoned (in a transaction they
/// fail anyway).
pub(super) async fn pipeline<F, T>(
    futures: impl IntoIterator<Item = F>,
) -> Result<Vec<T>, (usize, tokio_postgres::Error)>
where
    F: Future<Output = Result<T, tokio_postgres::Error>>,
{
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut early: Vec<Option<Result<T, tokio_postgres::Error>>> =
        futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, slot) in futures.iter_mut().zip(early.iter_mut()) {
            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                *slot = Some(r);
            }
        }
        Poll::Ready(())
    })
    .await;
    let mut out = Vec::with_capacity(futures.len());
    for (i, (f, slot)) in futures.into_iter().zip(early).enumerate() {
        let r = match slot {
            Some(r) => r,
            None => f.await,
        };
        out.push(r.map_err(|e| (i, e))?);
    }
    Ok(out)
}

/// Whether the sink's session runs with `session_replication_role = replica`: by default, as
/// PostgreSQL's apply worker does; `--target-fire-triggers` turns it off, unless pg_flo's
/// `--target-disable-foreign-keys` (which always meant replica mode) is set too.
pub(super) fn replica_mode(cfg: &PostgresSinkConfig) -> bool {
    !cfg.fire_triggers || cfg.disable_foreign_keys
}

/// The step of the error when the target user may not set `session_replication_role`, with
/// the ways out.
fn replica_role_denied(user: &str) -> String {
    let mut role = String::new();
    sql::push_ident(&mut role, user);
    format!(
        "setting session_replication_role = replica, which the sink needs so that the target's \
         triggers and foreign-key checks do not fire for replicated changes (as in PostgreSQL's \
         own logical replication): user {role} may not set it; as a superuser run \
         `GRANT SET ON PARAMETER session_replication_role TO {role}` (PostgreSQL 15+), or \
         connect as a superuser, or set --target-fire-triggers to apply with the target's \
         triggers and foreign keys firing"
    )
}

/// The connection is gone or going: a new one is needed.
pub(super) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

fn retry_of(e: &tokio_postgres::Error) -> Retry {
    if is_connection_error(e) {
        return Retry::Transient;
    }
    match e.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || code.code().starts_with("53") =>
        {
            Retry::Transient
        }
        _ => Retry::Permanent,
    }
}

pub(super) fn pg_error(mut step: String, source: tokio_postgres::Error) -> SinkError {
    if let Some(code) = source.code() {
        let schema_mismatch = [
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::INVALID_SCHEMA_NAME,
            SqlState::UNDEFINED_OBJECT,
            SqlState::INVALID_COLUMN_REFERENCE,
            SqlState::DATATYPE_MISMATCH,
        ];
        if schema_mismatch.contains(code) {
            step.push_str(
                " (the target schema must match the source: create the tables and keys first, \
                 or use --target-sync-schema)",
            );
        }
    }
    SinkError::Postgres {
        step,
        retry: retry_of(&source),
        source,
    }
}
