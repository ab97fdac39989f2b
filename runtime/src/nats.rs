//! NATS JetStream: connection, the group's stream and the worker's durable consumer.
//!
//! Stream contract (fixes pg_flo's `MaxAge 24h`, which deleted unconsumed changes):
//! - one stream per group, `pgflo_<group>_stream` on subject `pgflo.<group>`, file storage;
//! - `WorkQueue` retention: a message is removed only when the worker acks it, never by age;
//! - `Discard::New` with an optional byte limit: when full, publishing fails and the replicator
//!   waits (back-pressure) instead of anything being dropped;
//! - a duplicate window, so a replayed message with the same `Nats-Msg-Id` is stored once.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::config::NatsConfig;

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
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let mut wait = Duration::from_millis(200);
    loop {
        match opts.clone().connect(cfg.url.as_str()).await {
            Ok(client) => return Ok(client),
            Err(e) => {
                if tokio::time::Instant::now() + wait >= deadline {
                    return Err(NatsError::Connect {
                        url: crate::redact::url_list(&cfg.url),
                        timeout: cfg.connect_timeout,
                        source: Some(e),
                    });
                }
                tracing::warn!(error = %crate::redact::error_chain(&e), retry_in = ?wait, "nats not reachable yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
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

/// Creates the group's stream, or checks an existing one cannot lose changes.
pub async fn ensure_stream(
    js: &jetstream::Context,
    stream_name: &str,
    subject: &str,
    max_bytes: Option<i64>,
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
            Ok(s)
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

/// The stream that keeps dead-lettered messages (limits retention: they stay until removed).
pub async fn ensure_dead_letter_stream(
    js: &jetstream::Context,
    group: &str,
) -> Result<stream::Stream, NatsError> {
    js.get_or_create_stream(stream::Config {
        name: dead_letter_stream(group),
        subjects: vec![dead_letter_subject(group)],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| js_err("creating the dead-letter stream")(&e))
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
        Err(e) if e.to_string().contains("not found") => {}
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
