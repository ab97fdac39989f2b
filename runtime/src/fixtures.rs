//! Test data shared by the unit tests (`cfg(test)`) and, with the `testing` feature, the
//! integration tests in `runtime/tests`: builders of messages and configurations, and small
//! stand-in servers. Nothing here runs in the binaries.

// Test data: a malformed fixture argument is a bug in the test, so these builders panic.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use secrecy::SecretString;

use crate::config::{PgConnConfig, SslMode};
use crate::source::catalog::TableName;

/// A PostgreSQL endpoint of database `app` as user `flo` (password `hunter2`).
pub fn pg_conn(host: &str, port: u16, sslmode: SslMode) -> PgConnConfig {
    PgConnConfig {
        host: host.to_owned(),
        port,
        dbname: "app".to_owned(),
        user: "flo".to_owned(),
        password: SecretString::from("hunter2"),
        sslmode,
        sslrootcert: None,
    }
}

/// A server on a loopback port that accepts TCP connections and never answers (a hung
/// PostgreSQL); returns its port. It runs until the test's runtime ends.
pub async fn silent_server() -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    Ok(port)
}

/// The table `schema.table` (panics without a `.`).
pub fn table(name: &str) -> TableName {
    let (schema, table) = name
        .split_once('.')
        .unwrap_or_else(|| panic!("{name}: no schema"));
    TableName {
        schema: schema.into(),
        table: table.into(),
    }
}
