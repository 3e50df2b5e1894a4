//! WATCH: a chunked stream of newline-delimited JSON events.
//!
//! - `resourceVersion` unset or `0`: ADDED for every matching object now,
//!   then the changes (`sendInitialEvents=true` adds the BOOKMARK with the
//!   `k8s.io/initial-events-end` annotation after them; `=false` skips them).
//! - `resourceVersion=N`: the changes after N, from the history; N older
//!   than the history answers 200 with one ERROR event carrying a 410
//!   `Expired` Status, and ends, as the apiserver does.
//! - Selectors apply to both states of a change: an object that starts to
//!   match arrives as ADDED, one that stops matching as DELETED (with its
//!   previous content at the change's version).
//! - `allowWatchBookmarks`: a BOOKMARK with only `metadata.resourceVersion`
//!   every bookmark interval. `timeoutSeconds` (default 1800) ends the
//!   stream cleanly. A watcher that falls too far behind is closed.
//!
//! It reads the store's history and broadcast; it never writes an object.

use bytes::Bytes;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::http::Shared;
use super::list::parse_rv;
use super::object::Kind;
use super::respond::{self, ApiError, Resp, RespBody};
use super::routes::Query;
use super::selector::Filter;
use super::store::{event_line, Change, ChangeType, WatchStart};

/// Without `timeoutSeconds` (the apiserver picks 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 86_400);

/// A parsed watch request.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub filter: Filter,
    /// `None`: from now (snapshot); `Some(rv)`: the changes after `rv`.
    pub from: Option<u64>,
    pub initial_events: bool,
    pub initial_end_bookmark: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    /// `sendInitialEvents` with a version: the server must have reached it.
    pub not_older_than: Option<u64>,
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(name: &str, s: &str) -> Result<bool, ApiError> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid boolean for {name}: {s:?}"
        ))),
    }
}

impl WatchRequest {
    pub fn parse(kind: Kind, ns: Option<&str>, q: &Query) -> Result<WatchRequest, ApiError> {
        let filter = q.filter(kind, ns)?;
        let bookmarks = parse_bool(
            "allowWatchBookmarks",
            q.get("allowWatchBookmarks").unwrap_or(""),
        )?;
        let send_initial = match q.get("sendInitialEvents") {
            None => None,
            Some(s) => Some(parse_bool("sendInitialEvents", s)?),
        };
        let rv_match = q.get("resourceVersionMatch").filter(|s| !s.is_empty());
        if send_initial.is_some() {
            if rv_match != Some("NotOlderThan") {
                return Err(ApiError::invalid_options(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if send_initial == Some(true) && !bookmarks {
                return Err(ApiError::invalid_options(
                    "sendInitialEvents: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
                ));
            }
        } else if rv_match.is_some() {
            return Err(ApiError::invalid_options(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        let rv = match q.get("resourceVersion").filter(|s| !s.is_empty()) {
            None | Some("0") => None,
            Some(s) => Some(parse_rv(s)?),
        };
        let timeout = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
            None => DEFAULT_TIMEOUT,
            Some(s) => Duration::from_secs(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
            ),
        }
        // Bounded, so that now + timeout cannot overflow.
        .min(MAX_TIMEOUT);
        // With sendInitialEvents=true a version N means "state not older
        // than N": the current state, once the server has reached N.
        let (from, initial_events) = match (send_initial, rv) {
            (Some(true), _) => (None, true),
            (Some(false), None) => (None, false),
            (None, None) => (None, true),
            (_, Some(n)) => (Some(n), false),
        };
        Ok(WatchRequest {
            filter,
            from,
            initial_events,
            initial_end_bookmark: send_initial == Some(true),
            bookmarks,
            timeout,
            not_older_than: rv.filter(|_| send_initial == Some(true)),
        })
    }
}

/// Answers a watch: 200 and a stream fed by a task of its own.
pub fn start(shared: &Arc<Shared>, req: WatchRequest) -> Resp {
    let (tx, rx) = mpsc::channel(64);
    let kind = req.filter.kind;
    let started = match req.not_older_than {
        Some(n) if n > shared.store.resource_version() => {
            Err(ApiError::too_large_rv(n, shared.store.resource_version()))
        }
        _ => shared.store.watch(kind, req.from, req.initial_events),
    };
    match started {
        Err(e) => {
            // The channel is empty: this cannot be full.
            let _ = tx.try_send(Ok(event_line("ERROR", &e.to_json())));
        }
        Ok(ws) => {
            tokio::spawn(run(shared.clone(), req, ws, tx));
        }
    }
    let mut resp = respond::json_bytes(200, Bytes::new());
    *resp.body_mut() = RespBody::Stream(rx);
    resp
}

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Counts the open watches while alive.
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn run(shared: Arc<Shared>, req: WatchRequest, ws: WatchStart, tx: Tx) {
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let _open = OpenWatch(shared.clone());
    let kind = req.filter.kind;
    let mut dropped = shared.faults.drop_watches.subscribe();
    let deadline = Instant::now() + req.timeout;
    let mut last_rv = ws.rv;
    let send = |b: Bytes| tx.send(Ok(b));
    for o in &ws.initial {
        if req.filter.matches(o) && send(event_line("ADDED", o)).await.is_err() {
            return;
        }
    }
    if req.initial_end_bookmark && send(bookmark_line(kind, ws.rv, true)).await.is_err() {
        return;
    }
    for c in &ws.replay {
        last_rv = c.rv;
        if let Some(line) = render(&req.filter, c) {
            if send(line).await.is_err() {
                return;
            }
        }
    }
    let every = shared.bookmark_every;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    let mut rx = ws.rx;
    loop {
        let line = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            r = dropped.changed() => {
                if r.is_ok() {
                    let e = std::io::Error::other("watch dropped by fault injection");
                    let _ = tx.send(Err(e)).await;
                }
                return;
            }
            _ = tick.tick(), if req.bookmarks => Some(bookmark_line(kind, last_rv, false)),
            r = rx.recv() => match r {
                Ok(c) => {
                    last_rv = c.rv;
                    render(&req.filter, &c)
                }
                // Too slow to keep up: closed, as the apiserver closes
                // watchers whose buffer overflows; the client resumes.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Some(line) = line {
            if send(line).await.is_err() {
                return;
            }
        }
    }
}

/// The event `filter` turns `c` into, if any.
fn render(filter: &Filter, c: &Change) -> Option<Bytes> {
    if c.kind != filter.kind {
        return None;
    }
    if filter.is_everything() {
        return Some(c.line());
    }
    let now = filter.matches(&c.obj);
    let before = c.prev.as_deref().is_some_and(|p| filter.matches(p));
    let ty = match (c.ty, before, now) {
        (ChangeType::Added, _, true) => "ADDED",
        (ChangeType::Modified, true, true) => "MODIFIED",
        (ChangeType::Modified, false, true) => "ADDED",
        (ChangeType::Modified, true, false) => "DELETED",
        (ChangeType::Deleted, true, _) => "DELETED",
        _ => return None,
    };
    Some(match (ty, &c.prev) {
        _ if ty == c.ty.word() => c.line(),
        // Stopped matching: the object as it was, at this change's version
        // (as the apiserver's watch cache sends it).
        ("DELETED", Some(prev)) => {
            let mut then = (**prev).clone();
            super::object::set_resource_version(&mut then, c.rv);
            event_line(ty, &then)
        }
        _ => event_line(ty, &c.obj),
    })
}

/// A bookmark line: only `metadata.resourceVersion` (and the
/// initial-events-end annotation when it closes a streaming list).
pub fn bookmark_line(kind: Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": kind.kind(), "apiVersion": "v1", "metadata": meta}),
    )
}
