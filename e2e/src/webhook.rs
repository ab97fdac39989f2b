//! A webhook receiver for tests: a minimal HTTP/1.1 server on a loopback port that records
//! every request and answers from a script, a default, or (for chaos runs) at random with the
//! failures a real receiver has: 500, 503, 429, a dropped connection, an answer that comes too
//! late.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{RngExt as _, SeedableRng as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{wait_for, ARRIVAL_TIMEOUT};

/// What the receiver does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Close the connection without answering.
    Close,
    /// Answer 503 only after this long (past the client's timeout, when it is shorter): the
    /// request is never accepted, whether the client waited or gave up.
    Late(Duration),
}

/// The failures [`Receiver::set_flaky`] picks from, with equal odds.
const FLAKY_REPLIES: [Reply; 5] = [
    Reply::Status(500),
    Reply::Status(503),
    Reply::Status(429),
    Reply::Close,
    Reply::Late(Duration::from_secs(3)),
];

/// One request as received, with what the receiver did.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub reply: Reply,
}

impl Request {
    pub fn accepted(&self) -> bool {
        matches!(self.reply, Reply::Status(200..=299))
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    requests: Vec<Request>,
    /// Answer 400 to any request whose body contains this.
    reject_containing: Option<Vec<u8>>,
    /// Fail this share (0..=1) of the requests, with a reply from [`FLAKY_REPLIES`].
    flaky: Option<(rand_pcg::Pcg64, f64)>,
}

/// The webhook receiver: answers from `script`, then with `default` (200 unless set).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub async fn start(script: &[Reply], default: Reply) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let state = Arc::new(Mutex::new(State {
            script: script.iter().copied().collect(),
            default: Some(default),
            ..State::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        Ok(Receiver { url, port, state })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on fails `share` (0..=1) of the requests (after the script), each with a reply
    /// picked at random from 500, 503, 429, a dropped connection and a late 503, by a generator
    /// seeded with `seed`.
    pub fn set_flaky(&self, seed: u64, share: f64) {
        self.lock().flaky = Some((rand_pcg::Pcg64::seed_from_u64(seed), share));
    }

    /// Answers every request as the default says again.
    pub fn set_reliable(&self) {
        self.lock().flaky = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn reject_containing(&self, needle: &str) {
        self.lock().reject_containing = Some(needle.as_bytes().to_vec());
    }

    pub fn set_default(&self, reply: Reply) {
        self.lock().default = Some(reply);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// The requests after the first `n`, in arrival order.
    pub fn requests_since(&self, n: usize) -> Vec<Request> {
        self.lock().requests.get(n..).unwrap_or_default().to_vec()
    }

    pub fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::accepted)
            .collect()
    }

    /// The changes in the accepted requests, in arrival order (arrays flattened).
    pub fn accepted_changes(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for r in self.accepted() {
            match r.json()? {
                serde_json::Value::Array(items) => out.extend(items),
                one => out.push(one),
            }
        }
        Ok(out)
    }

    /// Waits until the accepted requests carry at least `n` changes; returns them.
    pub async fn wait_changes(&self, n: usize) -> anyhow::Result<Vec<serde_json::Value>> {
        wait_for(
            &format!("{n} changes accepted by the webhook receiver"),
            ARRIVAL_TIMEOUT,
            || {
                let changes = self.accepted_changes().ok();
                async move { changes.filter(|c| c.len() >= n) }
            },
        )
        .await
    }
}

/// Serves one connection: HTTP/1.1 requests with a Content-Length body, keep-alive unless the
/// client sends `Connection: close`.
async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut start = lines.next().unwrap_or_default().split(' ');
        let method = start.next().unwrap_or_default().to_owned();
        let path = start.next().unwrap_or_default().to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let close = headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = {
            let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
            let poisoned = st
                .reject_containing
                .as_ref()
                .is_some_and(|needle| body.windows(needle.len()).any(|w| w == needle.as_slice()));
            let scripted = st.script.pop_front();
            let flaky = st.flaky.as_mut().and_then(|(rng, share)| {
                rng.random_bool(*share)
                    .then(|| FLAKY_REPLIES[rng.random_range(0..FLAKY_REPLIES.len())])
            });
            let reply = if poisoned {
                Reply::Status(400)
            } else {
                scripted
                    .or(flaky)
                    .or(st.default)
                    .unwrap_or(Reply::Status(200))
            };
            st.requests.push(Request {
                method,
                path,
                headers,
                body,
                reply,
            });
            reply
        };
        let reply = match reply {
            Reply::Late(after) => {
                tokio::time::sleep(after).await;
                Reply::Status(503)
            }
            other => other,
        };
        match reply {
            Reply::Close | Reply::Late(_) => return,
            Reply::Status(code) => {
                let answer = format!(
                    "HTTP/1.1 {code} Scripted\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n{}\r\nanswered",
                    if close { "Connection: close\r\n" } else { "" }
                );
                if sock.write_all(answer.as_bytes()).await.is_err() || close {
                    return;
                }
            }
        }
    }
}
