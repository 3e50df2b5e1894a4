//! Faults a test injects at run time (dropped watches, failed requests, an
//! API that is down, a delay on every answer) and the log of requests the
//! stand-in has seen.
//!
//! It records and injects; the requests themselves are answered elsewhere
//! (`routes.rs`), and the admin listener is never subject to these faults.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// How the API is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownMode {
    /// Every connection is closed: open ones (watches included) at once,
    /// new ones right after accept, without an HTTP answer.
    CloseConnections,
    /// Every request is answered 503 ServiceUnavailable with
    /// `Retry-After: 1` (kube's client retries those by itself).
    Unavailable,
}

/// The faults in force, shared by every connection.
pub struct Faults {
    fail_next: AtomicU32,
    fail_all: AtomicBool,
    delay_ms: AtomicU64,
    /// The current down mode; connections watch it to close themselves.
    pub down: watch::Sender<Option<DownMode>>,
    /// Bumped to drop every open watch.
    pub drop_watches: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            fail_next: AtomicU32::new(0),
            fail_all: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            down: watch::channel(None).0,
            drop_watches: watch::channel(0).0,
        }
    }
}

impl Faults {
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    /// Should this request fail (and count against `fail_next`)?
    pub fn take_failure(&self) -> bool {
        self.fail_all.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(
            d.as_millis().min(u128::from(u64::MAX)) as u64,
            Ordering::SeqCst,
        );
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))
    }

    pub fn set_down(&self, mode: Option<DownMode>) {
        self.down.send_replace(mode);
    }

    pub fn down_mode(&self) -> Option<DownMode> {
        *self.down.borrow()
    }

    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|n| *n += 1);
    }

    /// Back to a healthy API (open watches are not restored).
    pub fn clear(&self) {
        self.fail_next(0);
        self.fail_all(false);
        self.set_delay(Duration::ZERO);
        self.set_down(None);
    }
}

/// One request as the stand-in saw it (as JSON: the admin endpoint's
/// `/_standin/requests`, field names in camelCase).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// Path and query as sent (`/api/v1/nodes?&limit=500`).
    pub path: String,
    pub content_type: Option<String>,
    /// The client's `User-Agent` (the harness's own client says
    /// [`HARNESS_USER_AGENT`](crate::cluster::kube_client::HARNESS_USER_AGENT)).
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The body, as UTF-8 (lossy).
    pub body: String,
    /// The HTTP status answered (a watch: 200, its start).
    pub status: u16,
}

impl RequestRecord {
    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.path.split_once('?')?.1;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The most recent requests (at most `limit`) and a total count.
pub struct RequestLog {
    entries: Mutex<VecDeque<RequestRecord>>,
    total: AtomicU64,
    limit: usize,
}

impl RequestLog {
    pub fn new(limit: usize) -> RequestLog {
        RequestLog {
            entries: Mutex::new(VecDeque::new()),
            total: AtomicU64::new(0),
            limit: limit.max(1),
        }
    }

    pub fn record(&self, r: RequestRecord) {
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= self.limit {
            e.pop_front();
        }
        e.push_back(r);
    }

    pub fn all(&self) -> Vec<RequestRecord> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.iter().cloned().collect()
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.total.store(0, Ordering::SeqCst);
    }
}
