//! Pacing of reconnect attempts, so a caller that retries in a loop does not hammer a
//! database that is down.

use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Doubling delay between connection attempts, reset by a success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next_attempt: Option<Instant>,
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next_attempt: None, delay: FIRST_DELAY }
    }
}

impl Backoff {
    /// Waits until the next attempt is allowed (at once after a success).
    pub(crate) async fn wait(&self) {
        if let Some(at) = self.next_attempt {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    /// Records a failed attempt: the next one waits twice as long, up to `MAX_DELAY`.
    pub(crate) fn failed(&mut self) {
        self.next_attempt = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(MAX_DELAY);
    }

    /// Records a success.
    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doubles_and_resets() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.wait().await;
        assert!(t0.elapsed() < FIRST_DELAY);
        b.failed();
        b.wait().await;
        assert!(t0.elapsed() >= FIRST_DELAY);
        b.failed();
        assert_eq!(b.delay, Duration::from_millis(400));
        for _ in 0..10 {
            b.failed();
        }
        assert_eq!(b.delay, MAX_DELAY);
        b.succeeded();
        assert!(b.next_attempt.is_none());
    }
}
