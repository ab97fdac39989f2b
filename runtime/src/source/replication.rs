//! A replication-protocol connection (`replication=database`), written on `postgres-protocol`.
//!
//! Why our own: tokio-postgres cannot enter CopyBoth mode, and `pgwire-replication` hides the
//! connection behind its own worker task, which rules out `CREATE_REPLICATION_SLOT ...
//! EXPORT_SNAPSHOT` kept open while other sessions copy under that snapshot (needed for a
//! gap-free copy-and-stream). This module speaks just what we need: startup with SCRAM-SHA-256 /
//! MD5 / cleartext auth and optional TLS (rustls), simple queries (`CREATE_REPLICATION_SLOT`,
//! `IDENTIFY_SYSTEM`), `START_REPLICATION`, XLogData / keepalive parsing and standby status.
//! See `docs/replication-client.md`.
//!
//! The socket gets the TCP keepalives and `TCP_USER_TIMEOUT` of every PostgreSQL connection
//! (`connection::configure_socket`), and the whole start (TCP, TLS, authentication) is bounded
//! by `connection::STARTUP_TIMEOUT`. On PostgreSQL 14+ the session turns
//! `idle_session_timeout` off: the connection that exported the copy's snapshot sits idle for
//! the whole copy, and a server default would end it (and the snapshot with it).
//! `CREATE_REPLICATION_SLOT` is sent in the form the server's version understands
//! ([`create_slot_sql`]), read from the `server_version` the server reports at startup.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use pg_flo_source::sql::{quote_ident, quote_literal};
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::config::{PgConnConfig, SslMode};
use crate::lsn::Lsn;
use crate::postgres::connection;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A replication-protocol failure.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("could not reach {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {endpoint} timed out")]
    ConnectTimeout { endpoint: String },
    #[error(
        "connection to {endpoint} did not start within {timeout:?} (TCP, TLS and authentication)"
    )]
    StartupTimeout { endpoint: String, timeout: Duration },
    #[error("i/o error on the replication connection")]
    Io(#[from] std::io::Error),
    #[error("tls setup for the replication connection failed: {0}")]
    Tls(String),
    #[error("the server at {0} does not support TLS, but sslmode requires it")]
    TlsUnsupported(String),
    #[error("{severity} {code}: {message}{hint}", hint = .hint.as_deref().map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    Server {
        severity: String,
        code: String,
        message: String,
        hint: Option<String>,
    },
    #[error("authentication method {0} is not supported; use scram-sha-256, md5 or password")]
    UnsupportedAuth(&'static str),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the server closed the replication connection")]
    Closed,
}

impl ReplicationError {
    /// The SQLSTATE, for server errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether reconnecting later may help (network trouble, server restart), as opposed to a
    /// configuration problem (auth, missing slot, bad publication).
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Connect { .. }
            | ReplicationError::ConnectTimeout { .. }
            | ReplicationError::StartupTimeout { .. }
            | ReplicationError::Io(_)
            | ReplicationError::Closed => true,
            ReplicationError::Server { code, .. } => {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code.starts_with("53")
                    || code == "55006" // object in use: slot still active after a crash
            }
            _ => false,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type BoxStream = Box<dyn Stream>;

/// A connected replication session, before `START_REPLICATION`.
pub struct ReplicationConnection {
    reader: Reader,
    writer: Writer,
    /// `server_version` as the server reported it at startup (`15.4 (Debian ...)`).
    server_version: Option<String>,
}

/// The snapshot action of `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotSnapshot {
    /// No snapshot (`SNAPSHOT 'nothing'`, `NOEXPORT_SNAPSHOT`).
    Nothing,
    /// Export a snapshot that stays valid until the next command on this connection
    /// (`SNAPSHOT 'export'`, `EXPORT_SNAPSHOT`).
    Export,
    /// Use the snapshot in the current transaction (`SNAPSHOT 'use'`, `USE_SNAPSHOT`).
    Use,
}

/// The major version of a `server_version` string (`15.4 (Debian 15.4-1)` -> 15, `16beta1`
/// -> 16, `9.6.24` -> 9).
pub fn server_major(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `CREATE_REPLICATION_SLOT` for a pgoutput slot in the syntax of a server of `major` version:
/// the option list `(SNAPSHOT '...')` from PostgreSQL 15, the older keywords
/// (`EXPORT_SNAPSHOT`, `NOEXPORT_SNAPSHOT`, `USE_SNAPSHOT`) before it or when the version is
/// unknown (PostgreSQL 15 and later still accept them).
pub fn create_slot_sql(slot: &str, snapshot: SlotSnapshot, major: Option<u32>) -> String {
    let slot = quote_ident(slot);
    if major.is_some_and(|m| m >= 15) {
        let option = match snapshot {
            SlotSnapshot::Nothing => "nothing",
            SlotSnapshot::Export => "export",
            SlotSnapshot::Use => "use",
        };
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT '{option}')")
    } else {
        let keyword = match snapshot {
            SlotSnapshot::Nothing => "NOEXPORT_SNAPSHOT",
            SlotSnapshot::Export => "EXPORT_SNAPSHOT",
            SlotSnapshot::Use => "USE_SNAPSHOT",
        };
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput {keyword}")
    }
}

/// Reads backend messages.
pub struct Reader {
    io: ReadHalf<BoxStream>,
    buf: BytesMut,
}

/// Writes frontend messages.
pub struct Writer {
    io: WriteHalf<BoxStream>,
    buf: BytesMut,
}

/// A row of a simple-query result, as text.
pub type Row = Vec<Option<String>>;

impl ReplicationConnection {
    /// Connects with `replication=database` and authenticates.
    pub async fn connect(
        cfg: &PgConnConfig,
        application_name: &str,
    ) -> Result<Self, ReplicationError> {
        Self::connect_within(cfg, application_name, connection::STARTUP_TIMEOUT).await
    }

    /// [`Self::connect`] with the given startup timeout.
    pub(crate) async fn connect_within(
        cfg: &PgConnConfig,
        application_name: &str,
        timeout: Duration,
    ) -> Result<Self, ReplicationError> {
        let endpoint = format!("{}:{}", cfg.host, cfg.port);
        let mut conn = tokio::time::timeout(timeout, Self::start(cfg, application_name, &endpoint))
            .await
            .map_err(|_| ReplicationError::StartupTimeout {
                endpoint: endpoint.clone(),
                timeout,
            })??;
        if conn.server_major().is_some_and(|m| m >= 14) {
            conn.simple_query("SET idle_session_timeout = 0").await?;
        }
        Ok(conn)
    }

    async fn start(
        cfg: &PgConnConfig,
        application_name: &str,
        endpoint: &str,
    ) -> Result<Self, ReplicationError> {
        let tcp = tokio::time::timeout(
            connection::CONNECT_TIMEOUT,
            TcpStream::connect((cfg.host.as_str(), cfg.port)),
        )
        .await
        .map_err(|_| ReplicationError::ConnectTimeout {
            endpoint: endpoint.to_owned(),
        })?
        .map_err(|source| ReplicationError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        tcp.set_nodelay(true)?;
        connection::configure_socket(&tcp)?;
        let stream = negotiate_tls(tcp, cfg, endpoint).await?;
        let (r, w) = tokio::io::split(stream);
        let mut conn = ReplicationConnection {
            reader: Reader {
                io: r,
                buf: BytesMut::with_capacity(64 * 1024),
            },
            writer: Writer {
                io: w,
                buf: BytesMut::with_capacity(1024),
            },
            server_version: None,
        };
        conn.startup(cfg, application_name).await?;
        Ok(conn)
    }

    /// The server's major version, from the `server_version` it reported at startup.
    pub fn server_major(&self) -> Option<u32> {
        self.server_version.as_deref().and_then(server_major)
    }

    async fn startup(
        &mut self,
        cfg: &PgConnConfig,
        application_name: &str,
    ) -> Result<(), ReplicationError> {
        let params = [
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("replication", "database"),
            ("application_name", application_name),
            ("client_encoding", "UTF8"),
            // Value text forms must not depend on server defaults: the worker and the copy
            // path rely on the same rendering.
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.writer.buf)?;
        self.writer.flush().await?;
        let password = cfg.password.expose_secret().as_bytes().to_vec();
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.reader.next().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password, &mut self.writer.buf)?;
                    self.writer.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        cfg.user.as_bytes(),
                        &password,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.writer.buf)?;
                    self.writer.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next()? {
                        has_scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(ReplicationError::UnsupportedAuth(
                            "SASL without SCRAM-SHA-256",
                        ));
                    }
                    let s = ScramSha256::new(&password, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.writer.buf,
                    )?;
                    self.writer.flush().await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("unexpected SASL continue".into())
                    })?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.writer.buf)?;
                    self.writer.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("unexpected SASL final".into())
                    })?;
                    s.finish(body.data())?;
                }
                Message::AuthenticationGss
                | Message::AuthenticationGssContinue(_)
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential => {
                    return Err(ReplicationError::UnsupportedAuth("GSS/SSPI/Kerberos"))
                }
                Message::ParameterStatus(body) if body.name()? == "server_version" => {
                    self.server_version = Some(body.value()?.to_owned());
                }
                Message::ErrorResponse(body) => return Err(server_error(&body)),
                Message::ReadyForQuery(_) => return Ok(()),
                _ => {}
            }
        }
    }

    /// Runs a replication command with the simple-query protocol and returns its rows.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, ReplicationError> {
        frontend::query(sql, &mut self.writer.buf)?;
        self.writer.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.reader.next().await? {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(range) = ranges.next()? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(server_error(&body)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`: the cluster's system identifier (set by `initdb`; kept by physical
    /// replicas and restores of a base backup).
    pub async fn identify_system(&mut self) -> Result<u64, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        rows.into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| {
                ReplicationError::Protocol("IDENTIFY_SYSTEM returned no system identifier".into())
            })
    }

    /// Creates a logical slot using pgoutput and returns its consistent point (and the name of
    /// the exported snapshot with [`SlotSnapshot::Export`]), in the syntax of the server's
    /// version ([`create_slot_sql`]).
    pub async fn create_slot(
        &mut self,
        slot: &str,
        snapshot: SlotSnapshot,
    ) -> Result<CreatedSlot, ReplicationError> {
        let sql = create_slot_sql(slot, snapshot, self.server_major());
        let rows = self.simple_query(&sql).await?;
        let row = rows.into_iter().next().ok_or_else(|| {
            ReplicationError::Protocol("CREATE_REPLICATION_SLOT returned no row".into())
        })?;
        let consistent_point = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|s| s.parse::<Lsn>().ok())
            .ok_or_else(|| {
                ReplicationError::Protocol(
                    "CREATE_REPLICATION_SLOT returned no consistent point".into(),
                )
            })?;
        Ok(CreatedSlot {
            consistent_point,
            snapshot_name: row.get(2).cloned().flatten(),
        })
    }

    /// Starts streaming pgoutput (protocol version 1) from the slot.
    pub async fn start_replication(
        mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
        messages: bool,
    ) -> Result<(Reader, Writer), ReplicationError> {
        let mut sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {}",
            quote_ident(slot),
            quote_literal(&quote_ident(publication)),
        );
        if messages {
            sql.push_str(", messages 'true'");
        }
        sql.push(')');
        frontend::query(&sql, &mut self.writer.buf)?;
        self.writer.flush().await?;
        loop {
            let msg = match self.reader.next_or_copy_both().await? {
                None => return Ok((self.reader, self.writer)),
                Some(msg) => msg,
            };
            match msg {
                Message::ErrorResponse(body) => {
                    let err = server_error(&body);
                    // Drain to ReadyForQuery is pointless: the caller drops the connection.
                    return Err(err);
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {} after START_REPLICATION",
                        message_name(&other)
                    )))
                }
            }
        }
    }
}

/// What `CREATE_REPLICATION_SLOT` returned.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
}

/// A message of the replication stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// WAL data: one pgoutput message starting at `wal_start`.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    /// Server heartbeat; `reply_requested` asks for a standby status update now.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

impl Reader {
    async fn next(&mut self) -> Result<Message, ReplicationError> {
        match self.next_or_copy_both().await? {
            Some(msg) => Ok(msg),
            None => Err(ReplicationError::Protocol(
                "unexpected CopyBothResponse".into(),
            )),
        }
    }

    /// The next backend message, or `None` for CopyBothResponse ('W'), which
    /// `postgres-protocol` does not know.
    async fn next_or_copy_both(&mut self) -> Result<Option<Message>, ReplicationError> {
        loop {
            if self.buf.len() >= 5 && self.buf[0] == b'W' {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    self.buf.advance(total);
                    return Ok(None);
                }
            } else if let Some(msg) = Message::parse(&mut self.buf)? {
                self.shrink_after_large_message();
                return Ok(Some(msg));
            }
            // A message larger than the buffer: make room for exactly all of it at once (growing
            // by doubling would hold up to twice a large value).
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if total > self.buf.capacity() {
                    self.buf.reserve(total - self.buf.len());
                }
            }
            // `read_buf` is cancel-safe: nothing read is lost if this future is dropped.
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(ReplicationError::Closed);
            }
        }
    }

    /// After a large message was split off, the buffer still shares its allocation: move what
    /// is left to a small buffer, so the large one is freed as soon as the message is dropped
    /// (not kept as the buffer's capacity for good).
    fn shrink_after_large_message(&mut self) {
        const LARGE: usize = 8 * 1024 * 1024;
        if self.buf.capacity() > LARGE && self.buf.len() < LARGE / 8 {
            let mut small = BytesMut::with_capacity(self.buf.len().max(64 * 1024));
            small.extend_from_slice(&self.buf);
            self.buf = small;
        }
    }

    /// The next replication message. Cancel-safe.
    pub async fn recv(&mut self) -> Result<StreamMessage, ReplicationError> {
        loop {
            match self.next().await? {
                Message::CopyData(body) => {
                    let mut data = body.into_bytes();
                    if data.is_empty() {
                        return Err(ReplicationError::Protocol("empty CopyData".into()));
                    }
                    match data.get_u8() {
                        b'w' => {
                            if data.len() < 24 {
                                return Err(ReplicationError::Protocol("short XLogData".into()));
                            }
                            let wal_start = Lsn(data.get_u64());
                            let wal_end = Lsn(data.get_u64());
                            let _send_time = data.get_i64();
                            return Ok(StreamMessage::XLogData {
                                wal_start,
                                wal_end,
                                data,
                            });
                        }
                        b'k' => {
                            if data.len() < 17 {
                                return Err(ReplicationError::Protocol("short keepalive".into()));
                            }
                            let wal_end = Lsn(data.get_u64());
                            let _time = data.get_i64();
                            let reply_requested = data.get_u8() == 1;
                            return Ok(StreamMessage::Keepalive {
                                wal_end,
                                reply_requested,
                            });
                        }
                        other => {
                            return Err(ReplicationError::Protocol(format!(
                                "unknown replication message type {:?}",
                                char::from(other)
                            )))
                        }
                    }
                }
                Message::ErrorResponse(body) => return Err(server_error(&body)),
                // The server ends streaming: CopyDone, or (a walsender at server shutdown,
                // once the client has everything) straight away the CommandComplete of the
                // COPY, without a CopyDone. Either way the connection is done, not broken:
                // the replicator connects again (found by the chaos run: a fast restart of the
                // source used to stop every replicator with a protocol violation).
                Message::CopyDone | Message::CommandComplete(_) => {
                    return Err(ReplicationError::Closed)
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {} while streaming",
                        message_name(&other)
                    )))
                }
            }
        }
    }
}

impl Writer {
    async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.io.write_all(&self.buf).await?;
        self.io.flush().await?;
        self.buf.clear();
        Ok(())
    }

    /// Sends a standby status update: everything up to `flushed` is durably handled.
    pub async fn send_status(&mut self, flushed: Lsn, reply: bool) -> Result<(), ReplicationError> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(flushed.0); // written
        payload.put_u64(flushed.0); // flushed
        payload.put_u64(flushed.0); // applied
        payload.put_i64(pg_now_us());
        payload.put_u8(u8::from(reply));
        frontend::CopyData::new(payload.freeze())?.write(&mut self.buf);
        self.flush().await
    }

    /// Ends streaming politely; the connection should be dropped afterwards.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        frontend::copy_done(&mut self.buf);
        frontend::terminate(&mut self.buf);
        self.flush().await
    }
}

fn pg_now_us() -> i64 {
    crate::message::unix_now_us() - PG_EPOCH_OFFSET_US
}

/// Converts PostgreSQL-epoch microseconds to Unix-epoch microseconds.
pub fn pg_to_unix_us(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_OFFSET_US)
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    cfg: &PgConnConfig,
    endpoint: &str,
) -> Result<BoxStream, ReplicationError> {
    if cfg.sslmode == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let (connector, server_name) = match crate::postgres::connection::tls_connector(cfg)
        .map_err(|e| ReplicationError::Tls(e.to_string()))?
    {
        Some(c) => c,
        None => return Ok(Box::new(tcp)),
    };
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let tls = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| ReplicationError::Tls(e.to_string()))?;
            Ok(Box::new(tls))
        }
        b'N' if cfg.sslmode == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(ReplicationError::TlsUnsupported(endpoint.to_owned())),
        other => Err(ReplicationError::Protocol(format!(
            "unexpected answer {other} to the TLS request"
        ))),
    }
}

fn server_error(body: &postgres_protocol::message::backend::ErrorResponseBody) -> ReplicationError {
    let mut fields: HashMap<u8, String> = HashMap::new();
    let mut iter = body.fields();
    while let Ok(Some(f)) = iter.next() {
        fields.insert(
            f.type_(),
            String::from_utf8_lossy(f.value_bytes()).into_owned(),
        );
    }
    // Values are removed here, once: DETAIL is never kept, and the message and hint of the
    // classes that quote values go through the redaction rules (see `crate::redact`).
    let code = fields.remove(&b'C').unwrap_or_default();
    let message = fields.remove(&b'M').unwrap_or_default();
    let message = crate::redact::pg_message(&code, &message).into_owned();
    let hint = fields
        .remove(&b'H')
        .filter(|_| !crate::redact::carries_values(&code));
    ReplicationError::Server {
        severity: fields.remove(&b'S').unwrap_or_else(|| "ERROR".into()),
        code,
        message,
        hint,
    }
}

fn message_name(m: &Message) -> &'static str {
    match m {
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::DataRow(_) => "DataRow",
        Message::RowDescription(_) => "RowDescription",
        Message::CommandComplete(_) => "CommandComplete",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{pg_conn, silent_server};

    /// A server that accepts the TCP connection but never answers the startup fails within
    /// the startup timeout instead of hanging.
    #[tokio::test]
    async fn a_silent_server_fails_within_the_startup_timeout() {
        let port = silent_server().await.unwrap();
        let short = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let cfg = pg_conn("127.0.0.1", port, SslMode::Disable);
        let err = ReplicationConnection::connect_within(&cfg, "test", short)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ReplicationError::StartupTimeout { .. }),
            "{err:?}"
        );
        assert!(err.is_transient());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn epoch_conversion() {
        assert_eq!(pg_to_unix_us(0), 946_684_800_000_000);
    }

    #[test]
    fn major_versions() {
        for (text, major) in [
            ("15.4 (Debian 15.4-1.pgdg120+1)", Some(15)),
            ("13.16", Some(13)),
            ("16beta1", Some(16)),
            ("17devel", Some(17)),
            ("9.6.24", Some(9)),
            ("", None),
            ("devel", None),
        ] {
            assert_eq!(server_major(text), major, "{text}");
        }
    }

    #[test]
    fn create_slot_syntax_per_version() {
        use SlotSnapshot::*;
        let slot = "pg_flo_g_publication";
        for (snapshot, major, sql) in [
            (Export, Some(17), "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput (SNAPSHOT 'export')"),
            (Export, Some(15), "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput (SNAPSHOT 'export')"),
            (Nothing, Some(15), "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput (SNAPSHOT 'nothing')"),
            (Use, Some(16), "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput (SNAPSHOT 'use')"),
            (Export, Some(14), "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput EXPORT_SNAPSHOT"),
            (Nothing, Some(13), "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"),
            (Use, Some(10), "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput USE_SNAPSHOT"),
            (Export, None, "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput EXPORT_SNAPSHOT"),
            (Nothing, None, "CREATE_REPLICATION_SLOT \"pg_flo_g_publication\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"),
        ] {
            assert_eq!(create_slot_sql(slot, snapshot, major), sql, "{snapshot:?} {major:?}");
        }
    }
}
