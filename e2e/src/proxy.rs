//! A fault-injecting TCP proxy for the network links of a pipeline (source -> replicator,
//! replicator -> NATS, NATS -> worker, worker -> target).
//!
//! Every connection accepted on [`FaultProxy::port`] is forwarded to the upstream address.
//! Faults, at any moment:
//! - [`FaultProxy::freeze`] / [`FaultProxy::thaw`]: bytes stop flowing both ways (held, not
//!   lost) while the sockets stay open, as in a network partition that heals before TCP gives
//!   up; new connections wait too;
//! - [`FaultProxy::cut`]: every open connection is dropped at once, wherever it is in a
//!   message (the peers see a reset or EOF);
//! - [`FaultProxy::cut_after`]: the next connection to forward `n` more bytes towards the
//!   upstream is dropped right after them, that is in the middle of a message;
//! - [`FaultProxy::delay`]: every chunk read, both ways, waits that long before it is
//!   forwarded (a slow or congested link; zero turns it off).
//!
//! Dropping the proxy drops every connection and stops listening.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Upstream-bound bytes still to forward before the connection forwarding the last of them is
/// dropped (shared by every connection).
type CutAfter = Arc<Mutex<Option<u64>>>;

/// See the module docs.
pub struct FaultProxy {
    port: u16,
    /// Whether traffic is frozen.
    frozen: watch::Sender<bool>,
    /// Bumped by [`FaultProxy::cut`]: every connection of an older generation drops.
    generation: watch::Sender<u64>,
    cut_after: CutAfter,
    /// Added latency per forwarded chunk, in microseconds.
    delay_us: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (frozen, frozen_rx) = watch::channel(false);
        let (generation, generation_rx) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let cut_after: CutAfter = Arc::default();
        let cut_rx = cut_after.clone();
        let delay_us = Arc::new(AtomicU64::new(0));
        let delay_rx = delay_us.clone();
        let accept = tokio::spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let link = Link {
                    frozen: frozen_rx.clone(),
                    cut_after: cut_rx.clone(),
                    delay_us: delay_rx.clone(),
                };
                pumps.spawn(connection(client, upstream, link, generation_rx.clone()));
                while pumps.try_join_next().is_some() {}
            }
        });
        Ok(FaultProxy {
            port,
            frozen,
            generation,
            cut_after,
            delay_us,
            connections,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Holds every byte (both ways, every connection) until [`FaultProxy::thaw`].
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Holds every chunk read (both ways) for `by` before forwarding it; `Duration::ZERO`
    /// ends the delay.
    pub fn delay(&self, by: std::time::Duration) {
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::Relaxed);
    }

    /// Ends every lasting fault: thawed, no delay, no cut pending (open connections stay).
    pub fn heal(&self) {
        self.thaw();
        self.delay(std::time::Duration::ZERO);
        *self
            .cut_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Drops every open connection now.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Drops the next connection that forwards `bytes` more bytes towards the upstream, right
    /// after them.
    pub fn cut_after(&self, bytes: u64) {
        *self
            .cut_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(bytes);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The fault settings a connection's pumps follow.
#[derive(Clone)]
struct Link {
    frozen: watch::Receiver<bool>,
    cut_after: CutAfter,
    delay_us: Arc<AtomicU64>,
}

/// Forwards one connection until either side closes, a cut, or the proxy is dropped.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    link: Link,
    mut generation: watch::Receiver<u64>,
) {
    let born = *generation.borrow_and_update();
    let mut f = link.frozen.clone();
    if wait_thawed(&mut f).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, link.clone(), true) => {}
        _ = pump(sr, cw, link, false) => {}
        _ = generation.wait_for(|g| *g != born) => {}
    }
}

/// Copies `from` to `to`, holding bytes while frozen or delayed; the upstream-bound direction
/// counts towards a [`FaultProxy::cut_after`].
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    upstream_bound: bool,
) {
    let Link {
        mut frozen,
        cut_after,
        delay_us,
    } = link;
    let cut_after = upstream_bound.then_some(cut_after);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
        }
        if wait_thawed(&mut frozen).await.is_err() {
            return;
        }
        let (send, cut) = match &cut_after {
            Some(shared) => {
                let mut left = shared.lock().unwrap_or_else(PoisonError::into_inner);
                match *left {
                    Some(l) if (n as u64) >= l => {
                        *left = None;
                        (usize::try_from(l).unwrap_or(n), true)
                    }
                    Some(l) => {
                        *left = Some(l - n as u64);
                        (n, false)
                    }
                    None => (n, false),
                }
            }
            None => (n, false),
        };
        if to.write_all(&buf[..send]).await.is_err() || cut {
            return;
        }
    }
}

/// Waits while frozen; `Err` once the proxy is gone.
async fn wait_thawed(frozen: &mut watch::Receiver<bool>) -> Result<(), ()> {
    frozen.wait_for(|f| !f).await.map(|_| ()).map_err(|_| ())
}
