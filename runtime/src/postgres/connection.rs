//! Ordinary (non-replication) PostgreSQL connections with TLS per `sslmode`: catalog queries,
//! the initial copy, and the postgres sink's writes. Every session starts with the same
//! settings ([`startup_options`]) so values are rendered the same way everywhere.
//!
//! The replication connection is written by hand on top of [`tls_connector`],
//! [`startup_options`] and [`configure_socket`]. Nothing here logs passwords or connection
//! strings.
//!
//! Every PostgreSQL connection, ordinary or replication, gets the same TCP settings:
//!
//! | setting | value | why |
//! |---|---|---|
//! | connect timeout | [`CONNECT_TIMEOUT`] (10 s) per address | an unreachable host fails fast |
//! | startup timeout | [`STARTUP_TIMEOUT`] (30 s) for TCP, TLS and authentication | a server that accepts but never answers |
//! | TCP keepalive | after [`KEEPALIVE_IDLE`] (60 s) idle, every [`KEEPALIVE_INTERVAL`] (10 s), [`KEEPALIVE_RETRIES`] (6) probes | an idle connection (the one that exported the copy's snapshot sits idle for the whole copy) stays open through NAT and load balancer idle timeouts, and a dead peer is noticed within about 2 minutes |
//! | `TCP_USER_TIMEOUT` (Linux) | [`TCP_USER_TIMEOUT`] (120 s) | data sent but not acknowledged for that long (a status update to a vanished server) ends the connection |
//!
//! There is no per-read timeout: a read on a dead connection ends through the keepalives,
//! and legitimate waits (a long COPY range, a lock) have no upper bound. The replicator and
//! the worker reconnect after such an error.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls, Socket};

use crate::config::{PgConnConfig, SslMode};
use crate::postgres::tls::{self, TlsError};
use crate::retry::Retry;

/// How long one TCP connection attempt may take (each address separately).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection's whole start may take: TCP connect, TLS and authentication.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle time before the first TCP keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Time between TCP keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered TCP keepalive probes before the connection is dropped.
pub const KEEPALIVE_RETRIES: u32 = 6;

/// How long sent data may stay unacknowledged before the connection is dropped (Linux
/// `TCP_USER_TIMEOUT`; also bounds the keepalive probing).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(120);

/// The keepalive settings of every PostgreSQL connection.
pub fn tcp_keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES)
}

/// Applies the TCP settings of every PostgreSQL connection to a socket opened by hand (the
/// replication connection): keepalives and, on Linux, `TCP_USER_TIMEOUT`.
pub fn configure_socket(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(tcp);
    sock.set_tcp_keepalive(&tcp_keepalive())?;
    #[cfg(target_os = "linux")]
    sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
    Ok(())
}

/// Session settings every connection starts with, as libpq `options` (`-c name=value`):
/// UTC time zone, ISO dates, `postgres` intervals and round-trip-exact floats.
pub fn startup_options() -> &'static str {
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3"
}

/// Why a connection could not be made. The message names the endpoint (never the password)
/// and, where it helps, the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot set up TLS for {endpoint} (sslmode {sslmode})")]
    TlsConfig {
        endpoint: String,
        sslmode: SslMode,
        #[source]
        source: TlsError,
    },
    #[error(
        "password authentication failed for user {user} on {endpoint}: check --password / \
         PG_FLO_PASSWORD (--target-password / --source-password for the postgres sink)"
    )]
    Authentication {
        user: String,
        endpoint: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the server at {endpoint} rejected user {user} (unknown role, no LOGIN, or no matching \
         pg_hba.conf entry)"
    )]
    Rejected {
        user: String,
        endpoint: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database {dbname} does not exist on {host}:{port}")]
    UnknownDatabase {
        dbname: String,
        host: String,
        port: u16,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the server at {endpoint} is not accepting connections right now")]
    Unavailable {
        endpoint: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the connection to {endpoint} did not start within {timeout:?} (TCP, TLS and authentication)")]
    StartupTimeout { endpoint: String, timeout: Duration },
    #[error("cannot reach PostgreSQL at {host}:{port}")]
    Unreachable {
        host: String,
        port: u16,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("TLS handshake with {endpoint} failed (sslmode {sslmode}, sslrootcert {rootcert})")]
    Handshake {
        endpoint: String,
        sslmode: SslMode,
        rootcert: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to PostgreSQL at {endpoint}")]
    Other {
        endpoint: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl ConnectError {
    /// Metric label / log category.
    pub fn category(&self) -> &'static str {
        match self {
            ConnectError::TlsConfig { .. } => "tls_config",
            ConnectError::Authentication { .. } => "authentication",
            ConnectError::Rejected { .. } => "rejected",
            ConnectError::UnknownDatabase { .. } => "unknown_database",
            ConnectError::Unavailable { .. } => "unavailable",
            ConnectError::Unreachable { .. } => "unreachable",
            ConnectError::StartupTimeout { .. } => "startup_timeout",
            ConnectError::Handshake { .. } => "tls_handshake",
            ConnectError::Other { .. } => "other",
        }
    }

    /// Unreachable or busy servers may come back; wrong settings do not.
    pub fn retry(&self) -> Retry {
        match self {
            ConnectError::Unavailable { .. }
            | ConnectError::Unreachable { .. }
            | ConnectError::StartupTimeout { .. } => Retry::Transient,
            // The connection broke during the handshake (a server crashing or restarting, a
            // reset on the way): an I/O error underneath, or the stream just closed.
            ConnectError::Other { source, .. }
                if source.is_closed()
                    || std::error::Error::source(source)
                        .is_some_and(|e| e.downcast_ref::<std::io::Error>().is_some()) =>
            {
                Retry::Transient
            }
            _ => Retry::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }
}

/// `host:port/dbname`.
fn endpoint(cfg: &PgConnConfig) -> String {
    format!("{}:{}/{}", cfg.host, cfg.port, cfg.dbname)
}

/// Whether `host` is a Unix-domain socket directory (where libpq never uses TLS).
fn is_unix_socket(host: &str) -> bool {
    host.starts_with('/')
}

/// The `tokio_postgres::Config` for `cfg`: endpoint, credentials, `application_name`,
/// [`CONNECT_TIMEOUT`], the keepalives and `TCP_USER_TIMEOUT` (module docs),
/// [`startup_options`], and the sslmode (`verify-*` -> `Require`; the certificate checks
/// themselves are in the TLS connector).
pub fn pg_config(cfg: &PgConnConfig, application_name: &str) -> tokio_postgres::Config {
    use secrecy::ExposeSecret;
    let mut config = tokio_postgres::Config::new();
    config
        .host(&cfg.host)
        .port(cfg.port)
        .dbname(&cfg.dbname)
        .user(&cfg.user)
        .password(cfg.password.expose_secret())
        .application_name(application_name)
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(TCP_USER_TIMEOUT)
        .options(startup_options())
        .ssl_mode(match cfg.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
    if is_unix_socket(&cfg.host) {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    config
}

/// A TLS connector and server name for a hand-written (replication) connection, or `None`
/// when `sslmode` is `disable` (or the host is a Unix socket). Under `prefer` the caller still
/// has to accept a server that answers `N` to the SSLRequest.
pub fn tls_connector(
    cfg: &PgConnConfig,
) -> Result<
    Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    TlsError,
> {
    if is_unix_socket(&cfg.host) {
        return Ok(None);
    }
    let Some(config) = tls::client_config(cfg.sslmode, cfg.sslrootcert.as_deref())? else {
        return Ok(None);
    };
    let name = tls::server_name(&cfg.host)?;
    Ok(Some((tokio_rustls::TlsConnector::from(config), name)))
}

/// Connects and spawns the connection task (its end is logged at debug level).
pub async fn connect(
    cfg: &PgConnConfig,
    application_name: &str,
) -> Result<tokio_postgres::Client, ConnectError> {
    connect_within(cfg, application_name, STARTUP_TIMEOUT).await
}

/// [`connect`] with the given startup timeout.
pub(crate) async fn connect_within(
    cfg: &PgConnConfig,
    application_name: &str,
    startup_timeout: Duration,
) -> Result<tokio_postgres::Client, ConnectError> {
    let config = pg_config(cfg, application_name);
    let tls_config = if is_unix_socket(&cfg.host) {
        None
    } else {
        tls::client_config(cfg.sslmode, cfg.sslrootcert.as_deref()).map_err(|source| {
            ConnectError::TlsConfig {
                endpoint: endpoint(cfg),
                sslmode: cfg.sslmode,
                source,
            }
        })?
    };
    let attempt = async {
        match tls_config {
            None => connect_with(&config, NoTls, cfg).await,
            Some(tls_config) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls_config).clone());
                connect_with(&config, tls, cfg).await
            }
        }
    };
    match tokio::time::timeout(startup_timeout, attempt).await {
        Ok(result) => result.map_err(|e| classify(cfg, e)),
        Err(_) => Err(ConnectError::StartupTimeout {
            endpoint: endpoint(cfg),
            timeout: startup_timeout,
        }),
    }
}

async fn connect_with<T>(
    config: &tokio_postgres::Config,
    tls: T,
    cfg: &PgConnConfig,
) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    let target = cfg.describe();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%target, %error, "postgres connection ended with an error");
        }
    });
    Ok(client)
}

/// Sorts a connection failure into an actionable [`ConnectError`].
fn classify(cfg: &PgConnConfig, source: tokio_postgres::Error) -> ConnectError {
    if let Some(code) = source.code() {
        return if *code == SqlState::INVALID_PASSWORD {
            ConnectError::Authentication {
                user: cfg.user.clone(),
                endpoint: endpoint(cfg),
                source,
            }
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            ConnectError::UnknownDatabase {
                dbname: cfg.dbname.clone(),
                host: cfg.host.clone(),
                port: cfg.port,
                source,
            }
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            ConnectError::Rejected {
                user: cfg.user.clone(),
                endpoint: endpoint(cfg),
                source,
            }
        } else if [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
        ]
        .contains(code)
        {
            ConnectError::Unavailable {
                endpoint: endpoint(cfg),
                source,
            }
        } else {
            ConnectError::Other {
                endpoint: endpoint(cfg),
                source,
            }
        };
    }
    // tokio-postgres exposes its error kind only through the message.
    match source.to_string().as_str() {
        "error performing TLS handshake" => ConnectError::Handshake {
            endpoint: endpoint(cfg),
            sslmode: cfg.sslmode,
            rootcert: cfg
                .sslrootcert
                .as_ref()
                .map_or_else(|| "not set".to_owned(), |p| p.display().to_string()),
            source,
        },
        "error connecting to server" | "timeout waiting for server" => ConnectError::Unreachable {
            host: cfg.host.clone(),
            port: cfg.port,
            source,
        },
        _ => ConnectError::Other {
            endpoint: endpoint(cfg),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::fixtures::{pg_conn as conn, silent_server};

    use super::*;

    #[test]
    fn config_mapping() {
        let c = pg_config(
            &conn("db.example", 6543, SslMode::VerifyFull),
            "pg_flo_test",
        );
        assert_eq!(c.get_ports(), [6543]);
        assert_eq!(c.get_dbname(), Some("app"));
        assert_eq!(c.get_user(), Some("flo"));
        assert_eq!(c.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(c.get_application_name(), Some("pg_flo_test"));
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(10)));
        assert_eq!(c.get_keepalives_retries(), Some(6));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(120)));
        assert_eq!(c.get_options(), Some(startup_options()));
        assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        for (mode, expected) in [
            (SslMode::Disable, tokio_postgres::config::SslMode::Disable),
            (SslMode::Prefer, tokio_postgres::config::SslMode::Prefer),
            (SslMode::Require, tokio_postgres::config::SslMode::Require),
            (SslMode::VerifyCa, tokio_postgres::config::SslMode::Require),
        ] {
            assert_eq!(pg_config(&conn("h", 1, mode), "a").get_ssl_mode(), expected);
        }
        let unix = pg_config(&conn("/var/run/postgresql", 5432, SslMode::Require), "a");
        assert_eq!(
            unix.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn tls_connector_per_mode() {
        assert!(tls_connector(&conn("h", 5432, SslMode::Disable))
            .unwrap()
            .is_none());
        let (_, name) = tls_connector(&conn("127.0.0.1", 5432, SslMode::Require))
            .unwrap()
            .unwrap();
        assert_eq!(name.to_str(), "127.0.0.1");
        let err = tls_connector(&conn("h", 5432, SslMode::VerifyFull))
            .err()
            .unwrap();
        assert!(err.to_string().contains("--sslrootcert"), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_is_transient_and_names_the_endpoint() {
        // Bind and drop a listener to find a port nobody listens on.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = connect(&conn("127.0.0.1", port, SslMode::Disable), "test")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn bad_root_cert_is_a_permanent_tls_config_error() {
        let mut cfg = conn("127.0.0.1", 5432, SslMode::VerifyCa);
        cfg.sslrootcert = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = connect(&cfg, "test").await.err().unwrap();
        assert!(matches!(err, ConnectError::TlsConfig { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(err.category(), "tls_config");
    }

    /// The replication connection's socket gets the same settings as [`pg_config`]'s.
    #[tokio::test]
    async fn hand_opened_sockets_get_keepalives_and_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(!sock.keepalive().unwrap());
        configure_socket(&tcp).unwrap();
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
        #[cfg(target_os = "linux")]
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(TCP_USER_TIMEOUT));
    }

    /// A server that accepts the TCP connection but never answers the startup fails within
    /// the startup timeout instead of hanging.
    #[tokio::test]
    async fn a_silent_server_fails_within_the_startup_timeout() {
        let port = silent_server().await.unwrap();
        let short = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let err = connect_within(&conn("127.0.0.1", port, SslMode::Disable), "test", short)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ConnectError::StartupTimeout { .. }),
            "{err:?}"
        );
        assert!(err.is_transient());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A server that resets or closes the connection in the middle of the startup (it crashed
    /// or is restarting) is a transient failure: the worker connects again instead of
    /// stopping (found by the chaos run: a crash of the target stopped the postgres worker).
    #[tokio::test]
    async fn a_connection_broken_during_the_startup_is_transient() {
        for reset in [true, false] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt as _;
                let (mut s, _) = listener.accept().await.unwrap();
                let mut startup = [0u8; 8];
                let _ = s.read(&mut startup).await;
                if reset {
                    // SO_LINGER 0: the close sends RST, as a killed server's kernel does.
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                }
                drop(s);
            });
            let err = connect_within(
                &conn("127.0.0.1", port, SslMode::Disable),
                "test",
                Duration::from_secs(5),
            )
            .await
            .err()
            .unwrap();
            assert!(err.is_transient(), "reset={reset}: {err:?}");
        }
    }

    #[test]
    fn startup_options_are_libpq_options() {
        assert!(startup_options()
            .split(' ')
            .collect::<Vec<_>>()
            .chunks(2)
            .all(|pair| pair[0] == "-c" && pair[1].contains('=')));
    }
}
