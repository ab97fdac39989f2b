//! Retrying: whether an error is worth retrying ([`Retry`]) and how long to wait between
//! attempts ([`Backoff`]). Shared by both sides (connections, publishing, sinks, the worker's
//! sessions), so every loop backs off the same way.

use std::time::Duration;

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Transient,
    Permanent,
}

/// Exponential backoff: `initial`, doubling, never above `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; the one after it is twice as long (up to `max`).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// After progress: start over from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_wait(), ms(100));
        // A maximum below the start is the start.
        let mut b = Backoff::new(ms(300), ms(100));
        assert_eq!((b.next_wait(), b.next_wait()), (ms(300), ms(300)));
    }
}
