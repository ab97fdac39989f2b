//! The webhook sink: POSTs each change as pg_flo's JSON object (see [`super::json`]) to a URL.
//!
//! Place in the pipeline: NATS message -> decode -> rules -> routing -> **webhook**.
//!
//! Requests:
//! - `POST <--webhook-url>` with `Content-Type: application/json`, `User-Agent: pg_flo/<version>`
//!   and the `--webhook-header`s. By default the body is one JSON object, one request per change
//!   (pg_flo's behaviour); with `--webhook-batch-size N` (N > 1) it is a JSON array of up to N
//!   objects. Requests go out one at a time, in stream order.
//! - A 2xx answer is success. Redirects are not followed (a POST turned into a GET would lose
//!   the change): a 3xx is an error like any other non-2xx.
//! - Network errors, timeouts (`--webhook-timeout`, per request, answer included), 408, 429
//!   and 5xx are retried after `--webhook-retry-initial-wait`, doubling up to
//!   `--webhook-retry-max-wait`; a `Retry-After: <seconds>` header on 429 / 503 lengthens the
//!   wait (up to the max wait). After `--webhook-max-attempts` attempts the commit fails with a
//!   transient error: the worker rolls back, waits and redelivers from the first unacked NATS
//!   message. Any other status (4xx, 3xx) is permanent: the worker stops with the status, the
//!   URL (without user info or query) and the change (operation, table, LSN), acking nothing.
//! - A shutdown request stops the retries (the request in flight finishes or times out); what
//!   was not delivered stays unacked in NATS for the next worker.
//! - Answer bodies are read (up to [`MAX_DRAIN_BYTES`]) and dropped so connections are reused.
//! - Header values and row values are never logged; neither is the URL's user info or query.
//!
//! Delivery: at-least-once. [`Sink::apply`] renders into a buffer; [`Sink::commit`] sends it,
//! so the worker acks a NATS message only after every change in it got a 2xx. A transaction
//! bigger than [`SPILL_BYTES`] is sent before its commit to bound memory. The sink remembers the
//! last change it delivered, so when the worker redelivers after a failure, the changes this
//! process already delivered are not sent again; after a crash or a restart they may be (the
//! receiver should tolerate duplicates, e.g. by `LSN`, `Table` and key).
//!
//! HTTP client: `reqwest` 0.12 without default features, with `rustls-tls`: rustls with the
//! *ring* provider (the one the NATS and PostgreSQL connections already use; no aws-lc-rs,
//! which needs cmake) and the Mozilla root store of `webpki-roots`, so TLS works the same in a
//! minimal container without a system CA bundle. reqwest gives connection pooling, timeouts
//! covering the whole exchange, proxy variables (`HTTPS_PROXY`, `NO_PROXY`) and redirect
//! control for little code; hyper with hyper-util and hyper-rustls would need all of that
//! written here.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::config::WebhookSinkConfig;
use crate::lsn::Lsn;
use crate::message::{Change, ChangeBatch, Position};
use crate::retry::Backoff;
use crate::sink::json;
use crate::sink::{Retry, Sink, SinkError};

/// Buffered request bodies are sent before the commit once they reach this size.
pub const SPILL_BYTES: usize = 8 << 20;

/// Most answer bytes read (and dropped) per request; a longer answer closes the connection.
pub const MAX_DRAIN_BYTES: usize = 64 << 10;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A non-2xx answer.
    #[error("answered HTTP {status}")]
    Status {
        status: StatusCode,
        /// `Retry-After` in seconds, if the answer carried one.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, timeout, TLS failure. Carries no URL.
    #[error("request failed")]
    Request(#[source] reqwest::Error),
}

impl WebhookError {
    /// Whether another attempt can help.
    pub fn retry(&self) -> Retry {
        match self {
            WebhookError::Status { status, .. } => status_retry(*status),
            WebhookError::Request(e) if e.is_builder() => Retry::Permanent,
            WebhookError::Request(_) => Retry::Transient,
        }
    }

    /// How long the receiver asked to wait (429 and 503 only).
    fn retry_after(&self) -> Option<Duration> {
        match self {
            WebhookError::Status {
                status,
                retry_after,
            } if matches!(
                *status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) =>
            {
                *retry_after
            }
            _ => None,
        }
    }
}

/// Retry classification of a non-2xx status: 408, 429 and 5xx are transient, the rest (other
/// 4xx, 3xx, 1xx) permanent.
/// Counts one request in `pg_flo_webhook_requests_total{status}` (a 3-digit code or `error`:
/// a bounded label).
fn count_request(status: &str) {
    crate::metrics::get()
        .webhook_requests
        .with_label_values(&[status])
        .inc();
}

pub fn status_retry(status: StatusCode) -> Retry {
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Retry::Transient
    } else {
        Retry::Permanent
    }
}

/// `Retry-After` as whole seconds; an HTTP date is ignored (the backoff applies).
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The wait before attempt `n + 1`: the doubling backoff, or longer when the receiver asked so
/// (never beyond `max`).
fn retry_wait(backoff: Duration, asked: Option<Duration>, max: Duration) -> Duration {
    backoff.max(asked.map_or(Duration::ZERO, |a| a.min(max)))
}

/// Where a change stands in the stream: its message's position and its index in the message.
type Mark = (Position, usize);

/// One rendered change waiting for delivery.
struct Pending {
    body: Bytes,
    at: Mark,
    /// `INSERT public.users at LSN 0/16B3748`: for errors, without row values.
    what: String,
}

/// POSTs changes as JSON to one URL.
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL without user info or query (safe to log).
    target: String,
    batch_size: usize,
    max_attempts: u32,
    initial_wait: Duration,
    max_wait: Duration,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// The last change that got a 2xx in this process.
    delivered: Option<Mark>,
    /// Turns true when the process shuts down: retries stop.
    shutdown: Option<watch::Receiver<bool>>,
}

impl WebhookSink {
    /// Builds the client; sends nothing yet. `shutdown` (true when the process stops) cuts
    /// retry waits short.
    pub fn new(
        cfg: &WebhookSinkConfig,
        shutdown: Option<watch::Receiver<bool>>,
    ) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(cfg.url.trim())
            .map_err(|e| SinkError::Invalid(format!("invalid webhook URL: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for h in &cfg.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                SinkError::Invalid(format!("{:?} is not an HTTP header name", h.name))
            })?;
            let mut value = HeaderValue::from_str(h.value.expose_secret()).map_err(|_| {
                SinkError::Invalid(format!("invalid value for webhook header {:?}", h.name))
            })?;
            value.set_sensitive(true);
            if name == CONTENT_TYPE {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("pg_flo/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| SinkError::WebhookClient { source })?;
        Ok(WebhookSink {
            client,
            url,
            target: cfg.describe_url(),
            batch_size: cfg.batch_size.max(1),
            max_attempts: cfg.max_attempts.max(1),
            initial_wait: cfg.retry_initial_wait,
            max_wait: cfg.retry_max_wait,
            pending: VecDeque::new(),
            pending_bytes: 0,
            delivered: None,
            shutdown,
        })
    }

    /// Sends every buffered change, in order, `batch_size` per request. On failure the
    /// undelivered changes stay buffered (the worker's rollback drops them).
    async fn deliver(&mut self) -> Result<(), SinkError> {
        while !self.pending.is_empty() {
            let n = self.batch_size.min(self.pending.len());
            let (body, what) = self.request(n);
            self.post(body, &what).await?;
            for p in self.pending.drain(..n) {
                self.pending_bytes -= p.body.len();
                self.delivered = Some(p.at);
            }
        }
        Ok(())
    }

    /// Body and description of a request carrying the first `n` buffered changes.
    fn request(&self, n: usize) -> (Bytes, String) {
        let items = self.pending.iter().take(n);
        if self.batch_size == 1 {
            if let Some(p) = self.pending.front() {
                return (p.body.clone(), p.what.clone());
            }
        }
        let mut body =
            Vec::with_capacity(items.clone().map(|p| p.body.len() + 1).sum::<usize>() + 1);
        body.push(b'[');
        for (i, p) in items.enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&p.body);
        }
        body.push(b']');
        let first = self
            .pending
            .front()
            .map(|p| p.what.as_str())
            .unwrap_or_default();
        let what = match self.pending.get(n.saturating_sub(1)) {
            Some(last) if n > 1 => format!("{n} changes ({first} .. {})", last.what),
            _ => format!("1 change ({first})"),
        };
        (Bytes::from(body), what)
    }

    /// One request with retries.
    async fn post(&mut self, body: Bytes, what: &str) -> Result<(), SinkError> {
        let mut backoff = Backoff::new(self.initial_wait, self.max_wait);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.attempt(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let retry = error.retry();
            let fail = |error| SinkError::Webhook {
                target: self.target.clone(),
                what: what.to_owned(),
                attempts: attempt,
                retry,
                source: error,
            };
            if retry == Retry::Permanent || attempt >= self.max_attempts {
                return Err(fail(error));
            }
            if self.stopping() {
                tracing::info!(target_url = %self.target, "shutdown requested; not retrying the webhook request");
                return Err(fail(error));
            }
            let wait = retry_wait(backoff.next_wait(), error.retry_after(), self.max_wait);
            tracing::warn!(
                target_url = %self.target,
                what,
                attempt,
                max_attempts = self.max_attempts,
                retry_in = ?wait,
                error = %crate::redact::error_chain(&error),
                "webhook request failed; retrying"
            );
            let shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop_requested(shutdown) => {
                    tracing::info!(target_url = %self.target, "shutdown requested; not retrying the webhook request");
                    return Err(fail(error));
                }
            }
        }
    }

    /// One POST; the answer body is read and dropped.
    async fn attempt(&self, body: Bytes) -> Result<(), WebhookError> {
        let mut response = self
            .client
            .post(self.url.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                count_request("error");
                WebhookError::Request(e.without_url())
            })?;
        let status = response.status();
        count_request(status.as_str());
        let retry_after = parse_retry_after(response.headers());
        let mut read = 0;
        while read < MAX_DRAIN_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                // A broken answer body does not undo a 2xx status.
                Ok(None) | Err(_) => break,
            }
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status {
                status,
                retry_after,
            })
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|rx| *rx.borrow())
    }
}

/// Resolves once `shutdown` is true; never without a shutdown channel.
async fn stop_requested(shutdown: Option<watch::Receiver<bool>>) {
    if let Some(mut rx) = shutdown {
        if rx.wait_for(|stop| *stop).await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// `INSERT public.users at LSN 0/16B3748` (copied rows: `at LSN none (copy)`).
fn describe(batch: &ChangeBatch, change: &Change) -> String {
    let table = batch
        .relations
        .get(usize::from(change.relation))
        .map(|r| format!("{}.{}", r.schema, r.table))
        .unwrap_or_else(|| "(unknown table)".to_owned());
    let lsn = if change.lsn == 0 {
        "none (copy)".to_owned()
    } else {
        Lsn(change.lsn).to_string()
    };
    format!("{} {table} at LSN {lsn}", change.op.as_pg_flo())
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn applied_position(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(None)
    }

    async fn apply(&mut self, batch: &ChangeBatch) -> Result<(), SinkError> {
        let position = batch.position();
        for (i, change) in batch.changes.iter().enumerate() {
            let at = (position, i);
            // Redelivered after a failed commit, but this process already delivered it.
            if self.delivered.is_some_and(|d| at <= d) {
                continue;
            }
            let body = Bytes::from(json::render(batch, change).to_string());
            self.pending_bytes += body.len();
            self.pending.push_back(Pending {
                body,
                at,
                what: describe(batch, change),
            });
        }
        if self.pending_bytes >= SPILL_BYTES {
            self.deliver().await?;
        }
        Ok(())
    }

    async fn commit(&mut self, _through: Position) -> Result<(), SinkError> {
        self.deliver().await
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.deliver().await
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::config::{parse_webhook_header, WebhookHeader};
    use crate::fixtures::int_inserts as batch;

    #[test]
    fn statuses_are_classified() {
        for code in [500, 502, 503, 504, 599, 429, 408] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_retry(status), Retry::Transient, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 413, 422, 301, 302, 307, 100] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_retry(status), Retry::Permanent, "{code}");
        }
    }

    #[test]
    fn retry_after_applies_to_429_and_503_only() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), None);
        let status = |code, secs| WebhookError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(status(429, 3).retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(status(503, 3).retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(status(500, 3).retry_after(), None);
        let max = Duration::from_secs(30);
        let ms = Duration::from_millis;
        assert_eq!(retry_wait(ms(500), None, max), ms(500));
        assert_eq!(retry_wait(ms(500), Some(ms(3000)), max), ms(3000));
        assert_eq!(retry_wait(ms(4000), Some(ms(3000)), max), ms(4000));
        assert_eq!(
            retry_wait(ms(500), Some(Duration::from_secs(3600)), max),
            max
        );
    }

    #[test]
    fn headers_are_parsed_and_values_never_shown() {
        let h = parse_webhook_header("Authorization:  Bearer s3cr3t ").unwrap();
        assert_eq!(h.name, "Authorization");
        assert_eq!(h.value.expose_secret(), "Bearer s3cr3t");
        assert!(!format!("{h:?}").contains("s3cr3t"));
        let h = parse_webhook_header("X-Url: http://a:b@c").unwrap();
        assert_eq!(
            h.value.expose_secret(),
            "http://a:b@c",
            "split at the first colon"
        );
        assert_eq!(
            parse_webhook_header("X-Empty:")
                .unwrap()
                .value
                .expose_secret(),
            ""
        );
        for bad in [
            "no colon s3cr3t",
            ": s3cr3t",
            "Bad Name: s3cr3t",
            "X-A: s3cr3t\r\nX-B: 1",
            // The text before the colon is not a name: it may hold the token.
            "Authorization Bearer s3cr3t:x",
            "Authorization=s3cr3t:x",
        ] {
            let err = parse_webhook_header(bad).unwrap_err();
            assert!(!err.contains("s3cr3t"), "{bad:?}: {err}");
        }
    }

    /// What the test receiver does with one request.
    #[derive(Clone, Copy)]
    enum Reply {
        Status(u16),
        Close,
    }

    /// A minimal HTTP/1.1 receiver: answers requests with `script`, then 200; records bodies.
    async fn receiver(script: Vec<Reply>) -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?token=q", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let seen = seen2.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            let n = sock.read(&mut chunk).await.unwrap();
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let body = buf[head_end..head_end + len].to_vec();
                        buf.drain(..head_end + len);
                        seen.lock().unwrap().push((head, body));
                        let reply = script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or(Reply::Status(200));
                        match reply {
                            Reply::Close => return,
                            Reply::Status(code) => {
                                let answer = format!(
                                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nRetry-After: 0\r\n\r\nok"
                                );
                                sock.write_all(answer.as_bytes()).await.unwrap();
                            }
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    fn config(url: &str, batch_size: usize) -> WebhookSinkConfig {
        WebhookSinkConfig {
            url: url.to_owned(),
            headers: vec![WebhookHeader {
                name: "Authorization".into(),
                value: "Bearer s3cr3t".into(),
            }],
            batch_size,
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            retry_initial_wait: Duration::from_millis(10),
            retry_max_wait: Duration::from_millis(40),
        }
    }

    fn ids(seen: &[(String, Vec<u8>)]) -> Vec<serde_json::Value> {
        seen.iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn one_request_per_change_on_commit_only() {
        let (url, seen) = receiver(vec![]).await;
        let mut sink = WebhookSink::new(&config(&url, 1), None).unwrap();
        let b = batch(&["1", "2"]);
        sink.apply(&b).await.unwrap();
        assert!(seen.lock().unwrap().is_empty(), "nothing before the commit");
        sink.commit(b.position()).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        let bodies = ids(&seen);
        assert_eq!(bodies[0]["NewTuple"]["id"], 1);
        assert_eq!(bodies[1]["NewTuple"]["id"], 2);
        let head = &seen[0].0;
        assert!(head.starts_with("post /hook?token=q http/1.1"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("authorization: bearer s3cr3t"), "{head}");
        assert!(head.contains("user-agent: pg_flo/"), "{head}");
    }

    #[tokio::test]
    async fn batches_are_arrays() {
        let (url, seen) = receiver(vec![]).await;
        let mut sink = WebhookSink::new(&config(&url, 2), None).unwrap();
        let b = batch(&["1", "2", "3"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        let bodies = ids(&seen.lock().unwrap());
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0].as_array().unwrap().len(), 2);
        assert_eq!(bodies[1].as_array().unwrap().len(), 1);
        assert_eq!(bodies[1][0]["NewTuple"]["id"], 3);
    }

    #[tokio::test]
    async fn retries_transient_failures_in_order() {
        let (url, seen) =
            receiver(vec![Reply::Status(500), Reply::Close, Reply::Status(429)]).await;
        let mut cfg = config(&url, 1);
        cfg.max_attempts = 4;
        let mut sink = WebhookSink::new(&cfg, None).unwrap();
        let b = batch(&["1", "2"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        let bodies = ids(&seen.lock().unwrap());
        let got: Vec<_> = bodies.iter().map(|b| b["NewTuple"]["id"].clone()).collect();
        assert_eq!(got, [1, 1, 1, 1, 2]);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_skips_what_was_delivered_on_redelivery() {
        let (url, seen) = receiver(vec![
            Reply::Status(200),
            Reply::Status(503),
            Reply::Status(503),
            Reply::Status(503),
        ])
        .await;
        let mut sink = WebhookSink::new(&config(&url, 1), None).unwrap();
        let b = batch(&["1", "2"]);
        sink.apply(&b).await.unwrap();
        let err = sink.commit(b.position()).await.unwrap_err();
        assert_eq!(err.retry(), Retry::Transient);
        let text = crate::redact::error_chain(&err);
        assert!(text.contains("after 3 attempt(s)"), "{text}");
        assert!(text.contains("503"), "{text}");
        assert!(text.contains("INSERT public.t at LSN 0/10"), "{text}");
        assert!(!text.contains("token=q"), "no query in errors: {text}");
        sink.rollback().await.unwrap();
        // The worker redelivers the same message; change 1 already got its 2xx.
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        let bodies = ids(&seen.lock().unwrap());
        let got: Vec<_> = bodies.iter().map(|b| b["NewTuple"]["id"].clone()).collect();
        assert_eq!(got, [1, 2, 2, 2, 2]);
    }

    #[tokio::test]
    async fn a_4xx_is_permanent_and_not_retried() {
        let (url, seen) = receiver(vec![Reply::Status(400)]).await;
        let mut sink = WebhookSink::new(&config(&url, 1), None).unwrap();
        let b = batch(&["1"]);
        sink.apply(&b).await.unwrap();
        let err = sink.commit(b.position()).await.unwrap_err();
        assert_eq!(err.retry(), Retry::Permanent);
        assert_eq!(err.category(), "webhook");
        let text = crate::redact::error_chain(&err);
        assert!(text.contains("400 Bad Request"), "{text}");
        assert!(text.contains("after 1 attempt(s)"), "{text}");
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(sink.applied_position().await.unwrap(), None);
        assert_eq!(sink.name(), "webhook");
    }

    #[tokio::test]
    async fn shutdown_stops_retrying() {
        let (url, seen) = receiver(vec![Reply::Status(500); 100]).await;
        let mut cfg = config(&url, 1);
        cfg.max_attempts = 100;
        cfg.retry_initial_wait = Duration::from_secs(60);
        cfg.retry_max_wait = Duration::from_secs(60);
        let (tx, rx) = watch::channel(false);
        let mut sink = WebhookSink::new(&cfg, Some(rx)).unwrap();
        let b = batch(&["1"]);
        sink.apply(&b).await.unwrap();
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(true).unwrap();
            tx
        });
        let started = std::time::Instant::now();
        let err = sink.commit(b.position()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(err.retry(), Retry::Transient);
        assert_eq!(seen.lock().unwrap().len(), 1);
        let _tx = stop.await.unwrap();
        // Already stopping: one attempt, no wait.
        sink.rollback().await.unwrap();
        sink.apply(&b).await.unwrap();
        assert!(sink.commit(b.position()).await.is_err());
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn unreachable_receiver_is_transient_and_names_no_credentials() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut cfg = config(&format!("http://user:pw@{addr}/hook?k=v"), 1);
        cfg.max_attempts = 2;
        let mut sink = WebhookSink::new(&cfg, None).unwrap();
        let b = batch(&["1"]);
        sink.apply(&b).await.unwrap();
        let err = sink.commit(b.position()).await.unwrap_err();
        assert_eq!(err.retry(), Retry::Transient);
        let text = crate::redact::error_chain(&err);
        assert!(text.contains(&format!("http://{addr}/hook")), "{text}");
        assert!(!text.contains("pw") && !text.contains("k=v"), "{text}");
    }
}
