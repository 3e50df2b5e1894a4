//! Retrying a lease store that does not answer: exponential back-off
//! with jitter, logging a failure when its kind changes (and the recovery),
//! never at every attempt. Shared by every store that talks to a server
//! (etcd, the Kubernetes API). Owns no connection; only decides how long
//! to wait and what to log.

use std::time::Duration;

/// The first retry's delay, and the cap.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Exponential back-off that logs a failure only when the state changes
/// (a new kind of failure, or recovery), not on every attempt.
pub struct Backoff {
    what: String,
    /// Who answers again on recovery ("etcd", "the Kubernetes API").
    server: &'static str,
    delay: Duration,
    state: Option<String>,
    /// Quick retries spent on connections the server dropped at once.
    quick: u32,
}

/// A TLS server that rejects our client certificate often just closes the
/// connection, and only sometimes lets its alert reach us first. Such
/// drops are retried quickly a few times, so that the real reason (and its
/// clear, fatal error) surfaces in seconds rather than after the back-off
/// has grown.
const QUICK_RETRIES: u32 = 20;

fn dropped_at_once(msg: &str) -> bool {
    msg.contains("connection closed") || msg.contains("broken pipe")
}

impl Backoff {
    /// Retries of `what` (an operation and its object), made against
    /// `server`, named in the recovery line.
    pub fn new(server: &'static str, what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            server,
            delay: BACKOFF_MIN,
            state: None,
            quick: 0,
        }
    }

    /// Logs `msg` if `state` differs from the last failure's, then sleeps.
    pub async fn failed(&mut self, state: &str, msg: &str) {
        self.note(state, msg);
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        if dropped_at_once(msg) && self.quick < QUICK_RETRIES {
            self.quick += 1;
            tokio::time::sleep(BACKOFF_MIN + jitter).await;
            return;
        }
        tokio::time::sleep(self.delay + jitter).await;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    /// Logs `msg` if `state` differs from the last failure's, without
    /// waiting: for a retry worth making at once (the next failure waits).
    pub fn note(&mut self, state: &str, msg: &str) {
        if self.state.as_deref() != Some(state) {
            tracing::warn!(
                "{}: {msg}; retrying with back-off (logged again only when this changes)",
                self.what
            );
            self.state = Some(state.to_string());
        }
    }

    /// Logs the recovery if something had failed.
    pub fn succeeded(&mut self) {
        if self.state.take().is_some() {
            tracing::info!("{}: {} answers again", self.what, self.server);
        }
        self.delay = BACKOFF_MIN;
        self.quick = 0;
    }
}
