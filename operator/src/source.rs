//! The source database as the operator sees it: the state of a group's replication slot (for
//! `ReplicationGroup.status.slot`) and the removal of what the group created there (when a group
//! with `reclaimPolicy: delete` is deleted).
//!
//! The runtime (`pg_flo replicator`) creates the slot, the publication and, with `trackDDL`, the
//! DDL capture objects; their names and the cleanup SQL come from `pg_flo_source`, which the
//! runtime uses too, so both sides mean the same objects. Each call opens one short ordinary
//! connection (tokio-postgres; TLS per `sslMode` from `pg_flo_source::tls`), bounded by
//! [`CONNECT_TIMEOUT`] and, per statement, [`QUERY_TIMEOUT`], so a reconcile never hangs on an
//! unreachable or stuck database. Nothing here logs; errors name the endpoint and the user, never
//! the password.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use pg_flo_source::sql::quote_ident;
use pg_flo_source::tls as pgtls;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls, Row, Socket};

use crate::crd::{SlotStatus, SslMode};

/// How long establishing a connection (TCP, TLS, authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one statement may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// `application_name` of the operator's sessions (visible in `pg_stat_activity`).
const APPLICATION_NAME: &str = "pg_flo_operator";

/// The slot's state, if the slot exists in the connected database. The current WAL position is
/// the replay position on a standby, where `pg_current_wal_lsn()` is not available.
/// `wal_status` and `safe_wal_size` exist from PostgreSQL 13 on; read through `to_jsonb` they
/// are NULL on older servers instead of an error.
const SLOT_STATE: &str = "\
SELECT s.active,
       s.restart_lsn::text AS restart_lsn,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn,
       pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::bigint AS lag_bytes,
       pg_wal_lsn_diff(w.lsn, s.restart_lsn)::bigint AS retained_bytes,
       to_jsonb(s) ->> 'wal_status' AS wal_status,
       (to_jsonb(s) ->> 'safe_wal_size')::bigint AS safe_wal_size
  FROM pg_replication_slots s,
       LATERAL (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END AS lsn) w
 WHERE s.slot_name = $1 AND s.database = current_database()";

/// Whether the slot exists in the connected database, and whether it is in use.
const SLOT_ACTIVE: &str = "\
SELECT s.active FROM pg_replication_slots s
 WHERE s.slot_name = $1 AND s.database = current_database()";

/// Connection settings of the source database, resolved from the CR and its Secrets.
///
/// `Debug` prints neither the password nor the CA certificate.
pub struct SourceConnection {
    /// Host name or address (`spec.source.host`).
    pub host: String,
    /// Port (`spec.source.port`).
    pub port: u16,
    /// Database (`spec.source.database`).
    pub database: String,
    /// User name (from the Secret of `spec.source.user`).
    pub user: String,
    /// Password (from the Secret of `spec.source.password`); never logged.
    pub password: SecretString,
    /// TLS mode (`spec.source.sslMode`).
    pub ssl_mode: SslMode,
    /// CA certificate PEM (from the Secret of `spec.source.caSecret`), required for
    /// `verify-ca` and `verify-full`.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SourceConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .field("ssl_mode", &self.ssl_mode)
            .field(
                "ca_pem",
                &self
                    .ca_pem
                    .as_ref()
                    .map(|pem| format!("{} bytes", pem.len())),
            )
            .finish()
    }
}

/// The group's replication slot, as the runtime names it (pg_flo's
/// `pg_flo_<group, '-' replaced by '_'>_publication`).
pub fn slot_name(group: &str) -> String {
    pg_flo_source::names::slot_name(group)
}

/// The group's publication, as the runtime names it (the same string as [`slot_name`]).
pub fn publication_name(group: &str) -> String {
    pg_flo_source::names::publication_name(group)
}

/// What [`drop_group_objects`] dropped: `true` when this call dropped the object, `false` when
/// it was already gone (or is another group's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropOutcome {
    /// The replication slot was dropped.
    pub slot_dropped: bool,
    /// The publication was dropped.
    pub publication_dropped: bool,
    /// The slot, publication and DDL capture objects of this group's names belong to this
    /// other group (its mark on the publication): nothing was dropped.
    pub owned_by: Option<String>,
}

/// Why the source database could not be read or cleaned up. Messages name the endpoint, the
/// user and the setting to fix, never the password.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The TLS client configuration could not be built (no or an unusable CA certificate).
    #[error("cannot set up TLS to {host}:{port} (sslMode {ssl_mode}): {fix}")]
    Tls {
        host: String,
        port: u16,
        ssl_mode: pgtls::SslMode,
        fix: &'static str,
        #[source]
        source: pgtls::TlsError,
    },
    /// The server refused TLS or its certificate was not accepted.
    #[error(
        "the TLS handshake with {host}:{port} failed (sslMode {ssl_mode}): check that the server \
         has TLS enabled, that spec.source.caSecret holds the CA certificate that signed the \
         server's certificate and, for verify-full, that the certificate is valid for \
         spec.source.host"
    )]
    Handshake {
        host: String,
        port: u16,
        ssl_mode: pgtls::SslMode,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Wrong password.
    #[error(
        "password authentication failed for user {user} at {host}:{port}: check the password \
         in the Secret key of spec.source.password"
    )]
    Authentication {
        user: String,
        host: String,
        port: u16,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Unknown role, no LOGIN, or no matching `pg_hba.conf` entry.
    #[error(
        "the server at {host}:{port} rejected user {user} for database {database} (unknown role, \
         no LOGIN, or no matching pg_hba.conf entry): check spec.source.user and the server's \
         pg_hba.conf"
    )]
    Rejected {
        user: String,
        host: String,
        port: u16,
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database does not exist.
    #[error("database {database} does not exist on {host}:{port}: check spec.source.database")]
    UnknownDatabase {
        database: String,
        host: String,
        port: u16,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Unreachable, refused, or not accepting connections right now.
    #[error(
        "cannot connect to PostgreSQL at {host}:{port} as user {user}: check spec.source.host \
         and spec.source.port and that the server accepts connections from the operator"
    )]
    Connect {
        host: String,
        port: u16,
        user: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// No answer in time ([`CONNECT_TIMEOUT`], [`QUERY_TIMEOUT`]).
    #[error(
        "no answer from PostgreSQL at {host}:{port} within {}s while trying to {step}: check \
         spec.source.host and spec.source.port, network policies, and the server's load",
        timeout.as_secs()
    )]
    Timeout {
        host: String,
        port: u16,
        step: &'static str,
        timeout: Duration,
    },
    /// A statement failed (the cause carries the server's message, e.g. a missing privilege).
    #[error("cannot {step} in database {database} on {host}:{port} as user {user}")]
    Query {
        step: &'static str,
        host: String,
        port: u16,
        database: String,
        user: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A replication connection uses the slot, so it cannot be dropped.
    #[error(
        "replication slot {slot} is in use by a replication connection: stop the group's \
         replicator before dropping the slot"
    )]
    SlotActive { slot: String },
}

impl SourceError {
    /// Metric label / Event reason: `tls`, `authentication`, `connect`, `timeout`, `query` or
    /// `slot-active`.
    pub fn category(&self) -> &'static str {
        match self {
            SourceError::Tls { .. } | SourceError::Handshake { .. } => "tls",
            SourceError::Authentication { .. } | SourceError::Rejected { .. } => "authentication",
            SourceError::UnknownDatabase { .. } | SourceError::Connect { .. } => "connect",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Query { .. } => "query",
            SourceError::SlotActive { .. } => "slot-active",
        }
    }

    /// Whether trying again without a change to the spec or its Secrets can succeed: an
    /// unreachable or slow server, a lost connection, a slot still in use.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Connect { .. }
            | SourceError::Timeout { .. }
            | SourceError::SlotActive { .. } => true,
            SourceError::Query { source, .. } => source.is_closed(),
            SourceError::Tls { .. }
            | SourceError::Handshake { .. }
            | SourceError::Authentication { .. }
            | SourceError::Rejected { .. }
            | SourceError::UnknownDatabase { .. } => false,
        }
    }
}

/// Reads the state of the group's replication slot from `pg_replication_slots`.
///
/// `name`, `publication` and `read_at` (the operator's clock once the row is read) are always
/// set. When the slot does not exist (yet) in the connected database, everything else is
/// `None`. `lag_bytes` is the WAL between the server's current position and
/// `confirmed_flush_lsn` (apply lag), `retained_bytes` between it and `restart_lsn` (what the
/// slot keeps on disk), both from one reading of the current position; `wal_status` and
/// `safe_wal_size` are `None` on servers before PostgreSQL 13 (and `safe_wal_size` also without
/// `max_slot_wal_keep_size`).
pub async fn read_slot_status(
    conn: &SourceConnection,
    group: &str,
) -> Result<SlotStatus, SourceError> {
    let slot = slot_name(group);
    let client = connect(conn).await?;
    let step = "read the replication slot";
    let row = run(conn, step, client.query_opt(SLOT_STATE, &[&slot])).await?;
    let mut status = match row {
        Some(row) => slot_state(&row).map_err(|source| conn.query_error(step, source))?,
        None => SlotStatus::default(),
    };
    status.name = Some(slot);
    status.publication = Some(publication_name(group));
    status.read_at = Some(crate::crd::time_now());
    Ok(status)
}

/// The state columns of a [`SLOT_STATE`] row.
fn slot_state(row: &Row) -> Result<SlotStatus, tokio_postgres::Error> {
    Ok(SlotStatus {
        name: None,
        publication: None,
        active: Some(row.try_get("active")?),
        restart_lsn: row.try_get("restart_lsn")?,
        confirmed_flush_lsn: row.try_get("confirmed_flush_lsn")?,
        lag_bytes: row.try_get("lag_bytes")?,
        retained_bytes: row.try_get("retained_bytes")?,
        wal_status: row.try_get("wal_status")?,
        safe_wal_size: row.try_get("safe_wal_size")?,
        read_at: None,
    })
}

/// Drops what the group created in the source database: the DDL capture objects (the runtime's
/// cleanup SQL), the replication slot and the publication. Objects already gone count as
/// dropped, so the call is idempotent.
///
/// A slot in use by a replication connection is refused with [`SourceError::SlotActive`]
/// before anything is dropped: stop the replicator first. Only a slot of the connected
/// database is dropped (a slot of the same name in another database is not the group's).
/// Objects whose publication is marked as another group's (`a-b` for group `a_b`, the same
/// names; see `pg_flo_source::names`) are left alone: [`DropOutcome::owned_by`].
pub async fn drop_group_objects(
    conn: &SourceConnection,
    group: &str,
) -> Result<DropOutcome, SourceError> {
    let slot = slot_name(group);
    let publication = publication_name(group);
    let client = connect(conn).await?;

    let step = "read the publication's owner";
    let comment = run(
        conn,
        step,
        client.query_opt(
            pg_flo_source::names::PUBLICATION_COMMENT_SQL,
            &[&publication],
        ),
    )
    .await?;
    if let Some(row) = comment {
        let comment: Option<String> = row
            .try_get(0)
            .map_err(|source| conn.query_error(step, source))?;
        if let pg_flo_source::names::Ownership::Other(owner) =
            pg_flo_source::names::ownership(group, comment.as_deref())
        {
            return Ok(DropOutcome {
                owned_by: Some(owner),
                ..DropOutcome::default()
            });
        }
    }

    let step = "read the replication slot";
    let active = match run(conn, step, client.query_opt(SLOT_ACTIVE, &[&slot])).await? {
        Some(row) => Some(
            row.try_get::<_, bool>(0)
                .map_err(|source| conn.query_error(step, source))?,
        ),
        None => None,
    };
    if active == Some(true) {
        return Err(SourceError::SlotActive { slot });
    }

    run(
        conn,
        "drop the DDL capture objects",
        client.batch_execute(&pg_flo_source::ddl::cleanup_sql(group)),
    )
    .await?;

    let step = "drop the replication slot";
    let slot_dropped = match active {
        None => false,
        Some(_) => match within(
            conn,
            step,
            client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]),
        )
        .await?
        {
            Ok(_) => true,
            // Dropped by someone else since the check.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => false,
            // A replicator connected since the check.
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                return Err(SourceError::SlotActive { slot });
            }
            Err(source) => return Err(conn.query_error(step, source)),
        },
    };

    let step = "drop the publication";
    let publication_exists = run(
        conn,
        step,
        client.query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        ),
    )
    .await?
    .is_some();
    if publication_exists {
        run(
            conn,
            step,
            client.batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                quote_ident(&publication)
            )),
        )
        .await?;
    }

    Ok(DropOutcome {
        slot_dropped,
        publication_dropped: publication_exists,
        owned_by: None,
    })
}

impl SourceConnection {
    fn query_error(&self, step: &'static str, source: tokio_postgres::Error) -> SourceError {
        SourceError::Query {
            step,
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
            user: self.user.clone(),
            source,
        }
    }

    fn timeout(&self, step: &'static str, timeout: Duration) -> SourceError {
        SourceError::Timeout {
            host: self.host.clone(),
            port: self.port,
            step,
            timeout,
        }
    }

    fn tls_error(&self, source: pgtls::TlsError) -> SourceError {
        let fix = match &source {
            pgtls::TlsError::MissingCa { .. } => {
                "set spec.source.caSecret to the Secret key holding the CA certificate (PEM) that \
                 signed the server's certificate"
            }
            pgtls::TlsError::ServerName { .. } => {
                "spec.source.host must be a DNS name or an IP address"
            }
            _ => {
                "the Secret key of spec.source.caSecret must hold the CA certificate (PEM) that \
                 signed the server's certificate"
            }
        };
        SourceError::Tls {
            host: self.host.clone(),
            port: self.port,
            ssl_mode: self.ssl_mode,
            fix,
            source,
        }
    }

    /// Sorts a connection failure into an actionable [`SourceError`].
    fn connect_error(&self, source: tokio_postgres::Error) -> SourceError {
        let (host, port) = (self.host.clone(), self.port);
        match source.code() {
            Some(code) if *code == SqlState::INVALID_PASSWORD => SourceError::Authentication {
                user: self.user.clone(),
                host,
                port,
                source,
            },
            Some(code) if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                SourceError::Rejected {
                    user: self.user.clone(),
                    host,
                    port,
                    database: self.database.clone(),
                    source,
                }
            }
            Some(code) if *code == SqlState::INVALID_CATALOG_NAME => SourceError::UnknownDatabase {
                database: self.database.clone(),
                host,
                port,
                source,
            },
            // tokio-postgres exposes its error kind only through the message.
            None if source.to_string() == "error performing TLS handshake" => {
                SourceError::Handshake {
                    host,
                    port,
                    ssl_mode: self.ssl_mode,
                    source,
                }
            }
            _ => SourceError::Connect {
                host,
                port,
                user: self.user.clone(),
                source,
            },
        }
    }
}

/// Connects (TLS per `sslMode`) within [`CONNECT_TIMEOUT`] and spawns the connection task.
async fn connect(conn: &SourceConnection) -> Result<Client, SourceError> {
    let mode = conn.ssl_mode;
    let tls = pgtls::client_config(mode, conn.ca_pem.as_deref())
        .map_err(|source| conn.tls_error(source))?;
    if tls.is_some() {
        // A clear error here rather than an I/O error from inside the handshake.
        pgtls::server_name(&conn.host).map_err(|source| conn.tls_error(source))?;
    }
    let mut config = tokio_postgres::Config::new();
    config
        .host(&conn.host)
        .port(conn.port)
        .dbname(&conn.database)
        .user(&conn.user)
        .password(conn.password.expose_secret())
        .application_name(APPLICATION_NAME)
        .connect_timeout(CONNECT_TIMEOUT)
        .ssl_mode(match mode {
            pgtls::SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            pgtls::SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            // The certificate checks of verify-* are in the rustls configuration.
            pgtls::SslMode::Require | pgtls::SslMode::VerifyCa | pgtls::SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
    let attempt = async {
        match tls {
            None => connect_with(&config, NoTls).await,
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
                connect_with(&config, tls).await
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(conn.timeout("connect", CONNECT_TIMEOUT)),
        Ok(result) => result.map_err(|source| conn.connect_error(source)),
    }
}

async fn connect_with<T>(
    config: &tokio_postgres::Config,
    tls: T,
) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error surfaces on the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

/// `statement` within [`QUERY_TIMEOUT`]; the statement's own error is left to the caller.
async fn within<T>(
    conn: &SourceConnection,
    step: &'static str,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<Result<T, tokio_postgres::Error>, SourceError> {
    tokio::time::timeout(QUERY_TIMEOUT, statement)
        .await
        .map_err(|_| conn.timeout(step, QUERY_TIMEOUT))
}

/// `statement` within [`QUERY_TIMEOUT`], its error as [`SourceError::Query`].
async fn run<T>(
    conn: &SourceConnection,
    step: &'static str,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, SourceError> {
    within(conn, step, statement)
        .await?
        .map_err(|source| conn.query_error(step, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(ssl_mode: SslMode, ca_pem: Option<Vec<u8>>) -> SourceConnection {
        SourceConnection {
            host: "db.example".into(),
            port: 6543,
            database: "shop".into(),
            user: "flo".into(),
            password: SecretString::from("hunter2-secret"),
            ssl_mode,
            ca_pem,
        }
    }

    #[test]
    fn names_are_the_runtimes() {
        // The runtime's `config::slot_name` / `publication_name` are the same functions of
        // pg_flo_source; the e2e test `source_status` checks against a slot the real replicator
        // created.
        assert_eq!(slot_name("my-group"), "pg_flo_my_group_publication");
        assert_eq!(publication_name("my-group"), "pg_flo_my_group_publication");
    }

    #[test]
    fn debug_hides_the_password_and_the_ca() {
        let c = conn(
            SslMode::VerifyFull,
            Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("BEGIN"), "{debug}");
        assert!(
            debug.contains("[REDACTED]") && debug.contains("27 bytes"),
            "{debug}"
        );
    }

    #[test]
    fn ssl_modes_map_to_libpq_spelling() {
        for (mode, libpq) in [
            (SslMode::Disable, "disable"),
            (SslMode::Prefer, "prefer"),
            (SslMode::Require, "require"),
            (SslMode::VerifyCa, "verify-ca"),
            (SslMode::VerifyFull, "verify-full"),
        ] {
            assert_eq!(mode.as_str(), libpq);
            // The CRD spells them the same way.
            assert_eq!(serde_json::to_value(mode).unwrap(), libpq);
        }
    }

    #[tokio::test]
    async fn verify_full_without_a_ca_names_the_ca_secret() {
        let err = read_slot_status(&conn(SslMode::VerifyFull, None), "g")
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::Tls { .. }), "{err:?}");
        assert_eq!(err.category(), "tls");
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "cannot set up TLS to db.example:6543 (sslMode verify-full): set \
             spec.source.caSecret to the Secret key holding the CA certificate (PEM) that signed \
             the server's certificate"
        );
    }

    #[tokio::test]
    async fn a_ca_secret_without_a_certificate_is_reported() {
        let err = read_slot_status(&conn(SslMode::VerifyCa, Some(b"junk".to_vec())), "g")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the Secret key of spec.source.caSecret must hold the CA certificate (PEM) that signed the server's certificate"),
            "{err}"
        );
    }
}
