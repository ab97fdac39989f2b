//! Waiting for conditions with a deadline instead of sleeping a fixed time.
//!
//! Every wait in the tests polls an observable condition (a row count, a log line, a port)
//! every [`POLL_INTERVAL`] until it holds or the timeout passes; the error names what was
//! awaited and what was last seen, so a timeout explains itself.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often the conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `f` until it returns `Some`, returning that value, or fails after `timeout`
/// with an error naming `what`.
pub async fn wait_for<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, timeout, || {
        let fut = f();
        async move {
            fut.await
                .ok_or_else(|| Observation("condition not met yet".to_owned()))
        }
    })
    .await
}

/// Polls `f` until it returns `Ok`, or fails after `timeout` with an error naming `what`
/// and carrying the last error `f` returned.
pub async fn wait_for_ok<F, Fut, T, E>(what: &str, timeout: Duration, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Debug,
{
    poll(what, timeout, f).await
}

/// Polls `f` until it returns a value equal to `expected`, or fails after `timeout` with an
/// error showing the expected and the last observed value (errors of `f` count as
/// observations too, e.g. a table that does not exist yet).
pub async fn wait_for_eq<F, Fut, V, E>(
    what: &str,
    timeout: Duration,
    expected: V,
    mut f: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    V: PartialEq + Debug,
    E: Debug,
{
    let expected = &expected;
    poll(what, timeout, || {
        let fut = f();
        async move {
            match fut.await {
                Ok(v) if v == *expected => Ok(()),
                Ok(v) => Err(Observation(format!(
                    "\n  expected {expected:?}\n  observed {v:?}"
                ))),
                Err(e) => Err(Observation(format!(
                    "\n  expected {expected:?}\n  error {e:?}"
                ))),
            }
        }
    })
    .await
}

/// A message shown verbatim (no quotes or escapes) in a timeout error.
struct Observation(String);

impl Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

async fn poll<F, Fut, T, E>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Debug,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match f().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!(
                "timed out after {:?} ({attempts} attempts) waiting for {what}; last observation: {last:?}",
                now - start
            );
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}
