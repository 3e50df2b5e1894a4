//! `/healthz` (always 200 while the process runs), `/readyz` (503 until
//! subnet.env is written and the datapath is in place, and while the lease
//! store is unreachable) and `/metrics`, on `--healthz-ip:--healthz-port`,
//! served by hyper (HTTP/1.1).
//!
//! A slow or hostile client cannot stall it: at most [`MAX_CONNECTIONS`]
//! connections are served at once, and when all are taken the oldest is
//! closed to make room for the newcomer (so probes get through a flood of
//! idle connections); headers must arrive within [`HEADER_TIMEOUT`] and fit
//! in [`MAX_HEAD_BYTES`]; a connection lives at most [`CONNECTION_LIFETIME`]
//! and serves one request; request bodies are never read (anything but a
//! bodiless GET/HEAD is refused).
//!
//! Owns the listener and [`Readiness`]' flags, which the daemon sets; it
//! only reports: nothing a request does changes the node.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::metrics::{self, Metrics};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time for a client to send its request line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Request line and headers, at most (hyper's smallest buffer): more is 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Shared readiness, flipped by the daemon: ready once subnet.env and the
/// datapath are in place, and while the lease store answers.
#[derive(Clone)]
pub struct Readiness {
    datapath: Arc<AtomicBool>,
    store: Arc<AtomicBool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            datapath: Arc::new(AtomicBool::new(false)),
            store: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.datapath.store(ready, Ordering::SeqCst);
    }

    /// Whether the lease store answered its last request.
    pub fn set_store(&self, reachable: bool) {
        self.store.store(reachable, Ordering::SeqCst);
    }

    /// `None` when ready, else why not.
    pub fn why_not(&self) -> Option<&'static str> {
        if !self.datapath.load(Ordering::SeqCst) {
            Some("subnet.env not written yet\n")
        } else if !self.store.load(Ordering::SeqCst) {
            Some("lease store unreachable\n")
        } else {
            None
        }
    }
}

/// The live connections, oldest first, each with the means to close it.
#[derive(Default)]
struct Live {
    next_id: u64,
    conns: VecDeque<(u64, Arc<Notify>)>,
}

impl Live {
    fn add(&mut self) -> (u64, Arc<Notify>) {
        self.next_id += 1;
        let close = Arc::new(Notify::new());
        self.conns.push_back((self.next_id, Arc::clone(&close)));
        (self.next_id, close)
    }

    fn remove(&mut self, id: u64) {
        self.conns.retain(|(i, _)| *i != id);
    }

    /// Asks the oldest connection to close.
    fn evict_oldest(&mut self) {
        if let Some((_, close)) = self.conns.pop_front() {
            close.notify_one();
        }
    }
}

fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The health and metrics endpoint could not listen on `addr`.
#[derive(Debug, thiserror::Error)]
#[error("listen for health checks and metrics on {addr}")]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds now (so a bad address fails at start-up) and serves in the background.
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
    metrics: Arc<Metrics>,
) -> Result<(), ListenError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let live = Arc::new(Mutex::new(Live::default()));
    tokio::spawn(async move {
        loop {
            let sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // EMFILE and the like: do not spin.
                    tracing::debug!("accept an HTTP connection on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Full: the oldest connection makes room.
                    lock(&live).evict_oldest();
                    match Arc::clone(&slots).acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    }
                }
            };
            let (id, close) = lock(&live).add();
            let (ready, metrics, live) = (ready.clone(), Arc::clone(&metrics), Arc::clone(&live));
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| {
                    let reply = answer(&req, &ready, &metrics);
                    async move { Ok::<_, Infallible>(reply) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(sock), service);
                tokio::select! {
                    r = conn => {
                        if let Err(e) = r {
                            tracing::debug!("HTTP connection on {addr}: {e}");
                        }
                    }
                    _ = close.notified() => tracing::debug!("HTTP connection on {addr}: closed to make room"),
                    _ = tokio::time::sleep(CONNECTION_LIFETIME) => tracing::debug!("HTTP connection on {addr}: closed after {CONNECTION_LIFETIME:?}"),
                }
                lock(&live).remove(id);
            });
        }
    });
    Ok(())
}

/// The reply to one request (its body is never read).
fn answer(req: &Request<Incoming>, ready: &Readiness, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()));
    let has_body = match declared {
        Some(Some(0)) | None => req.headers().contains_key(TRANSFER_ENCODING),
        Some(_) => true,
    };
    if has_body {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "no request body accepted\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match ready.why_not() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        "/metrics" => {
            metrics.ready.set(i64::from(ready.why_not().is_none()));
            match metrics.encode() {
                Ok(body) => {
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(metrics::CONTENT_TYPE),
                    );
                    close(r)
                }
                Err(e) => {
                    tracing::warn!("encode metrics: {e}");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "encode metrics failed\n")
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    close(r)
}

fn close(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}
