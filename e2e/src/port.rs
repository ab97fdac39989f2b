//! Free loopback TCP ports for the throw-away servers.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

use anyhow::Context as _;

/// Every port handed out by this process, so two servers of one test binary never get the
/// same one (the OS may hand a just-released ephemeral port out again).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a loopback TCP port that was free a moment ago.
///
/// Binds `127.0.0.1:0`, reads the port and releases it: another process may grab it before
/// the server binds it (a tiny race the server start-up retries cover). Within this process
/// a port is never returned twice.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("bind 127.0.0.1:0")?;
        let port = listener.local_addr().context("read bound address")?.port();
        drop(listener);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no unused free loopback port found after 100 attempts")
}
