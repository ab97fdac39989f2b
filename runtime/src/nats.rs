//! NATS JetStream: connection, the group's stream and the worker's durable consumer.
//!
//! Stream contract (fixes pg_flo's `MaxAge 24h`, which deleted unconsumed changes):
//! - one stream per group, `pgflo_<group>_stream` on subject `pgflo.<group>`, file storage;
//! - `WorkQueue` retention: a message is removed only when the worker acks it, never by age;
//! - `Discard::New` with an optional byte limit: when full, publishing fails and the replicator
//!   waits (back-pressure) instead of anything being dropped;
//! - a duplicate window, so a replayed message with the same `Nats-Msg-Id` is stored once;
//! - `--nats-stream-replicas` copies in a NATS cluster (all the group's streams); the size
//!   limit and the replicas are also set on an existing stream ([`stream_update`]), so a
//!   stream the worker created first gets the replicator's limit.
//!
//! Connection: `--nats-url` is a comma-separated list of servers, as nats.go takes it. User
//! info in the URLs (`nats://user:password@host`, `nats://token@host`) is taken out and given to
//! the client as its credentials ([`servers`]): async-nats would otherwise ignore it and log the
//! URLs, password included, at debug level. `--nats-user`/`--nats-password`, `--nats-token`,
//! `--nats-creds-file` are the other ways (one only); `--nats-tls-cert-file` adds a client
//! certificate. Messages show the URLs through
//! [`crate::redact::url_list`].

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use secrecy::ExposeSecret;

use crate::config::NatsConfig;
use crate::retry::Backoff;

/// How long JetStream remembers message ids for de-duplication after a replay.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// A NATS or JetStream failure.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("could not connect to NATS at {url} within {timeout:?}; check --nats-url / PG_FLO_NATS_URL and that nats-server runs with JetStream (-js)")]
    Connect {
        /// The server list without credentials ([`crate::redact::url_list`]).
        url: String,
        timeout: Duration,
        #[source]
        source: Option<async_nats::ConnectError>,
    },
    #[error("could not read the NATS credentials file {path}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --nats-url: {0}")]
    Url(String),
    #[error("jetstream request failed while {step}: {message}")]
    JetStream { step: &'static str, message: String },
    #[error("stream {stream} exists with settings that can lose changes ({problem}); delete it (nats stream rm {stream}) once its messages are consumed, and pg_flo recreates it safely")]
    UnsafeStream { stream: String, problem: String },
}

fn js_err(step: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> NatsError {
    move |e| NatsError::JetStream {
        step,
        message: e.to_string(),
    }
}

/// Connects, retrying until `cfg.connect_timeout`; reconnects forever afterwards.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, NatsError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            tracing::info!(event = %crate::redact::scrub_urls(&event.to_string()), "nats connection event");
        });
    if let Some(ca) = &cfg.ca_file {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some(creds) = &cfg.creds_file {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|source| NatsError::Credentials {
                path: creds.display().to_string(),
                source,
            })?;
    }
    if let Some((cert, key)) = &cfg.client_cert {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let (servers, auth) = servers(&cfg.url).map_err(NatsError::Url)?;
    match auth {
        Some(UrlAuth::UserPassword(user, password)) => {
            opts = opts.user_and_password(user, password);
        }
        Some(UrlAuth::Token(token)) => opts = opts.token(token),
        None => {}
    }
    if let Some((user, password)) = &cfg.user {
        opts = opts.user_and_password(user.clone(), password.expose_secret().to_owned());
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.expose_secret().to_owned());
    }
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match opts.clone().connect(servers.as_slice()).await {
            Ok(client) => return Ok(client),
            Err(e) => {
                let wait = backoff.next_wait();
                if tokio::time::Instant::now() + wait >= deadline {
                    return Err(NatsError::Connect {
                        url: crate::redact::url_list(&cfg.url),
                        timeout: cfg.connect_timeout,
                        source: Some(e),
                    });
                }
                tracing::warn!(error = %crate::redact::error_chain(&e), retry_in = ?wait, "nats not reachable yet");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Credentials carried in the user info of `--nats-url`.
#[derive(Debug, PartialEq, Eq)]
pub enum UrlAuth {
    /// `nats://user:password@host`.
    UserPassword(String, String),
    /// `nats://token@host`.
    Token(String),
}

/// Splits a comma-separated `--nats-url` into server URLs without user info and the
/// credentials the user info carried (percent-decoded). Servers that carry credentials must all
/// carry the same. A URL without a scheme is read as `nats://`. The error never repeats a URL.
pub fn servers(list: &str) -> Result<(Vec<String>, Option<UrlAuth>), String> {
    let mut servers = Vec::new();
    let mut auth: Option<UrlAuth> = None;
    for (i, raw) in list.split(',').map(str::trim).enumerate() {
        if raw.is_empty() {
            continue;
        }
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("nats://{raw}")
        };
        let mut url = reqwest::Url::parse(&with_scheme)
            .map_err(|e| format!("server {} of the list cannot be parsed ({e})", i + 1))?;
        let this = match (url.username(), url.password()) {
            ("", None) => None,
            (user, Some(password)) => Some(UrlAuth::UserPassword(
                percent_decode(user),
                percent_decode(password),
            )),
            (token, None) => Some(UrlAuth::Token(percent_decode(token))),
        };
        if let Some(this) = this {
            if auth.as_ref().is_some_and(|a| *a != this) {
                return Err(
                    "its servers carry different credentials; give them all the same \
                            user and password (or token)"
                        .to_owned(),
                );
            }
            auth = Some(this);
            // Cannot fail for a URL with a host; a URL without one is left to the client.
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        servers.push(url.to_string());
    }
    if servers.is_empty() {
        return Err("no server given".to_owned());
    }
    Ok((servers, auth))
}

/// Decodes `%XX` escapes (user info is percent-encoded in a URL).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub use pg_flo_source::names::{dead_letter_stream, group_streams, state_stream};

/// The subject dead-lettered messages are published on.
pub fn dead_letter_subject(group: &str) -> String {
    format!("pgflo.{group}.dlq")
}

/// The JetStream context used for publishing, with at most `max_in_flight` unacked publishes.
pub fn jetstream(client: async_nats::Client, max_in_flight: usize) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(max_in_flight.max(1))
        .backpressure_on_inflight(true)
        .build(client)
}

/// What an existing stream's settings must change to: the wanted `max_bytes` and `replicas`
/// where they are given and differ (`None`: nothing to change). A new size limit comes with
/// `discard: new`, so that a full stream refuses publishes instead of dropping changes.
pub fn stream_update(
    current: &stream::Config,
    max_bytes: Option<i64>,
    replicas: Option<usize>,
) -> Option<stream::Config> {
    let mut want = current.clone();
    if let Some(b) = max_bytes {
        want.max_bytes = b;
        if b > 0 {
            want.discard = stream::DiscardPolicy::New;
        }
    }
    if let Some(r) = replicas {
        // The server reports 1 for a stream created with 0 (its default).
        if current.num_replicas.max(1) != r {
            want.num_replicas = r;
        }
    }
    let changed = want.max_bytes != current.max_bytes
        || want.num_replicas != current.num_replicas
        || want.discard != current.discard;
    changed.then_some(want)
}

/// Applies [`stream_update`] to an existing stream, logging what changed.
async fn update_if_needed(
    js: &jetstream::Context,
    current: &stream::Config,
    max_bytes: Option<i64>,
    replicas: Option<usize>,
) -> Result<(), NatsError> {
    let Some(want) = stream_update(current, max_bytes, replicas) else {
        return Ok(());
    };
    tracing::info!(
        stream = current.name,
        max_bytes = want.max_bytes,
        replicas = want.num_replicas,
        "updating jetstream stream settings"
    );
    js.update_stream(want)
        .await
        .map_err(|e| js_err("updating the stream settings")(&e))?;
    Ok(())
}

/// Creates the group's stream, or checks an existing one cannot lose changes and brings its
/// size limit and replicas to `max_bytes` / `replicas` where they are given.
pub async fn ensure_stream(
    js: &jetstream::Context,
    stream_name: &str,
    subject: &str,
    max_bytes: Option<i64>,
    replicas: Option<usize>,
) -> Result<stream::Stream, NatsError> {
    match js.get_stream(stream_name).await {
        Ok(mut s) => {
            let info = s
                .info()
                .await
                .map_err(|e| js_err("reading stream info")(&e))?;
            let c = &info.config;
            let mut problems = Vec::new();
            if c.max_age != Duration::ZERO {
                problems.push(format!("max_age {:?} deletes old messages", c.max_age));
            }
            if c.retention == stream::RetentionPolicy::Interest {
                problems.push("interest retention drops messages nobody listens to yet".into());
            }
            if (c.max_bytes > 0 || c.max_messages > 0) && c.discard == stream::DiscardPolicy::Old {
                problems.push("discard=old with a size limit deletes unconsumed messages".into());
            }
            if !problems.is_empty() {
                return Err(NatsError::UnsafeStream {
                    stream: stream_name.to_owned(),
                    problem: problems.join("; "),
                });
            }
            if stream_update(c, max_bytes, replicas).is_none() {
                return Ok(s);
            }
            update_if_needed(js, c, max_bytes, replicas).await?;
            js.get_stream(stream_name)
                .await
                .map_err(|e| js_err("looking up the stream")(&e))
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref err)
                if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            let config = stream::Config {
                name: stream_name.to_owned(),
                subjects: vec![subject.to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::New,
                max_bytes: max_bytes.unwrap_or(-1),
                max_messages: -1,
                duplicate_window: DUPLICATE_WINDOW,
                num_replicas: replicas.unwrap_or(0),
                ..Default::default()
            };
            let s = js
                .create_stream(config)
                .await
                .map_err(|e| js_err("creating the stream")(&e))?;
            tracing::info!(stream = stream_name, "created jetstream stream");
            Ok(s)
        }
        Err(e) => Err(js_err("looking up the stream")(&e)),
    }
}

/// A plain stream created from `config` if missing; an existing one gets `replicas` (when
/// given).
async fn ensure_plain_stream(
    js: &jetstream::Context,
    config: stream::Config,
    replicas: Option<usize>,
    step: &'static str,
) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    let mut s = js
        .get_or_create_stream(stream::Config {
            num_replicas: replicas.unwrap_or(0),
            ..config
        })
        .await
        .map_err(|e| js_err(step)(&e))?;
    let current = s
        .info()
        .await
        .map_err(|e| js_err("reading stream info")(&e))?
        .config
        .clone();
    if stream_update(&current, None, replicas).is_none() {
        return Ok(s);
    }
    update_if_needed(js, &current, None, replicas).await?;
    js.get_stream(&name).await.map_err(|e| js_err(step)(&e))
}

/// The stream that keeps dead-lettered messages (limits retention: they stay until removed).
pub async fn ensure_dead_letter_stream(
    js: &jetstream::Context,
    group: &str,
    replicas: Option<usize>,
) -> Result<stream::Stream, NatsError> {
    ensure_plain_stream(
        js,
        stream::Config {
            name: dead_letter_stream(group),
            subjects: vec![dead_letter_subject(group)],
            storage: stream::StorageType::File,
            ..Default::default()
        },
        replicas,
        "creating the dead-letter stream",
    )
    .await
}

/// The group's state stream `pgflo_<group>_state`, created if missing: a plain stream keeping
/// the last message of each subject `pgflo.<group>.state.*` (copy progress, source identity,
/// the worker's lease and position); used instead of a KV bucket so that NATS servers before
/// 2.10 work too.
pub async fn ensure_state_stream(
    js: &jetstream::Context,
    group: &str,
    replicas: Option<usize>,
) -> Result<stream::Stream, NatsError> {
    ensure_plain_stream(
        js,
        stream::Config {
            name: state_stream(group),
            subjects: vec![format!("pgflo.{group}.state.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        replicas,
        "creating the state stream",
    )
    .await
}

/// (Re)creates the worker's durable pull consumer so delivery restarts at the first unacked
/// message, in stream order. (A work-queue stream holds exactly the unacked messages; a fresh
/// consumer therefore never delivers newer messages before older unacked ones, which the
/// redelivery timer of an old consumer would.) One worker process per group.
pub async fn recreate_consumer(
    stream: &stream::Stream,
    consumer_name: &str,
    subject: &str,
    max_ack_pending: i64,
) -> Result<consumer::Consumer<consumer::pull::Config>, NatsError> {
    match stream.delete_consumer(consumer_name).await {
        Ok(_) => {}
        Err(e)
            if matches!(e.kind(), stream::ConsumerErrorKind::JetStream(ref err)
                if err.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) => {}
        Err(e) => return Err(js_err("deleting the old consumer")(&e)),
    }
    let config = consumer::pull::Config {
        durable_name: Some(consumer_name.to_owned()),
        filter_subject: subject.to_owned(),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(300),
        max_deliver: -1,
        max_ack_pending,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| js_err("creating the durable consumer")(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_update_changes_only_what_is_asked_and_differs() {
        let base = stream::Config {
            name: "pgflo_g_stream".into(),
            max_bytes: -1,
            num_replicas: 1,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let mib = 1 << 20;
        // (current max_bytes, current replicas, wanted max_bytes, wanted replicas) ->
        // Some((max_bytes, replicas, discard new)) or None.
        type Want = Option<(i64, usize, bool)>;
        type Case = (i64, usize, Option<i64>, Option<usize>, Want);
        let cases: [Case; 8] = [
            (-1, 1, None, None, None),
            (-1, 1, Some(-1), Some(1), None),
            (-1, 0, None, Some(1), None),
            (-1, 1, Some(64 * mib), None, Some((64 * mib, 1, true))),
            (-1, 1, None, Some(3), Some((-1, 3, false))),
            (
                64 * mib,
                3,
                Some(64 * mib),
                Some(3),
                Some((64 * mib, 3, true)),
            ),
            (
                64 * mib,
                3,
                Some(32 * mib),
                Some(1),
                Some((32 * mib, 1, true)),
            ),
            (-1, 3, None, Some(3), None),
        ];
        for (bytes, replicas, want_bytes, want_replicas, want) in cases {
            let current = stream::Config {
                max_bytes: bytes,
                num_replicas: replicas,
                ..base.clone()
            };
            let got = stream_update(&current, want_bytes, want_replicas).map(|c| {
                (
                    c.max_bytes,
                    c.num_replicas,
                    c.discard == stream::DiscardPolicy::New,
                )
            });
            assert_eq!(
                got, want,
                "{bytes} {replicas} {want_bytes:?} {want_replicas:?}"
            );
        }
        // A limited stream that already discards new messages is left alone.
        let limited = stream::Config {
            max_bytes: mib,
            discard: stream::DiscardPolicy::New,
            ..base
        };
        assert!(stream_update(&limited, Some(mib), Some(1)).is_none());
    }

    fn up(u: &str, p: &str) -> Option<UrlAuth> {
        Some(UrlAuth::UserPassword(u.into(), p.into()))
    }

    /// Servers and credentials, or a part of the error.
    type Want = Result<(Vec<&'static str>, Option<UrlAuth>), &'static str>;

    #[test]
    fn servers_lose_their_user_info_to_the_credentials() {
        let cases: Vec<(&str, Want)> = vec![
            ("nats://h:4222", Ok((vec!["nats://h:4222"], None))),
            (
                "nats://user:secretpw@h:4222",
                Ok((vec!["nats://h:4222"], up("user", "secretpw"))),
            ),
            (
                "nats://t0ken@h1:4222, tls://t0ken@h2:4222",
                Ok((
                    vec!["nats://h1:4222", "tls://h2:4222"],
                    Some(UrlAuth::Token("t0ken".into())),
                )),
            ),
            (
                "nats://u:p@h1,nats://h2",
                Ok((vec!["nats://h1", "nats://h2"], up("u", "p"))),
            ),
            (
                "u:p%40ss%2C@h1:4222",
                Ok((vec!["nats://h1:4222"], up("u", "p@ss,"))),
            ),
            ("nats://u:100%@h", Ok((vec!["nats://h"], up("u", "100%")))),
            ("h1:4222,,", Ok((vec!["nats://h1:4222"], None))),
            ("nats://a:x@h1,nats://b:x@h2", Err("different credentials")),
            ("nats://a:x@h1,nats://a@h2", Err("different credentials")),
            (
                "nats://u:pw@h:notaport",
                Err("server 1 of the list cannot be parsed"),
            ),
            ("", Err("no server given")),
        ];
        for (input, want) in cases {
            let got = servers(input);
            match (got, want) {
                (Ok((s, a)), Ok((ws, wa))) => {
                    assert_eq!(s, ws, "{input}");
                    assert_eq!(a, wa, "{input}");
                }
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{input}: {e}");
                    assert!(!e.contains("pw") && !e.contains(":x@"), "{input}: {e}");
                }
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
