//! The HTTP(S) server: accepting connections (TLS when configured),
//! serving HTTP/1.1 and HTTP/2 on them with hyper, and, per request, the
//! order the apiserver's filters run in as far as the stand-in has them:
//! faults (down, delay), authentication, injected failures, then routing;
//! every request is logged with its answer's status. The admin listener
//! (see `admin`) skips the faults and the log, and also routes
//! `/_standin/`.
//!
//! It does not know the resources (routing is `routes.rs`) and does not own
//! the listener's namespace: it serves where it was bound.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::admin;
use super::faults::{DownMode, Faults, RequestLog, RequestRecord};
use super::respond::{self, ApiError, Resp};
use super::routes::{self, Query};
use super::store::Store;
use super::tls;

/// The apiserver's limit on a request body (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything a request handler reaches.
pub struct Shared {
    pub store: Store,
    pub faults: Faults,
    pub log: RequestLog,
    /// The bearer token every request must carry (`None`: no auth).
    pub token: Option<String>,
    pub bookmark_every: Duration,
    pub open_watches: AtomicUsize,
    /// Whether the node IPAM controller runs (at most one may).
    pub ipam_running: AtomicBool,
    /// While true, the node IPAM controller hands out no range.
    pub ipam_paused: watch::Sender<bool>,
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The API the nodes use: faults apply, requests are logged.
    Api,
    /// The admin listener: no faults, no log, `/_standin/` routed too.
    Admin,
}

/// Accepts connections on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    kind: Listener,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                eprintln!("kube-api stand-in: accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if kind == Listener::Api && shared.faults.down_mode() == Some(DownMode::CloseConnections) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, tls.clone(), shared.clone(), kind));
    }
}

/// Serves one connection until it ends or the API goes down.
async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    kind: Listener,
) {
    let mut down = shared.faults.down.subscribe();
    let work = async {
        match tls {
            None => serve_io(stream, shared.clone(), kind).await,
            Some(acceptor) => {
                // A failed handshake (a client that does not trust the CA,
                // a probe) just ends the connection, as it would anywhere.
                let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                if let Ok(Ok(s)) = hs.await {
                    serve_io(s, shared.clone(), kind).await;
                }
            }
        }
    };
    let closed = async {
        match kind {
            Listener::Api => {
                let _ = down
                    .wait_for(|m| *m == Some(DownMode::CloseConnections))
                    .await;
            }
            Listener::Admin => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = work => {}
        _ = closed => {}
    }
}

async fn serve_io<I>(io: I, shared: Arc<Shared>, kind: Listener)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req, kind).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    // Connection errors (a client gone, a dropped watch) end this
    // connection only.
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>, kind: Listener) -> Resp {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let user_agent = parts
        .headers
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (resp, body) = match Limited::new(body, MAX_BODY).collect().await {
        Err(e) => (
            respond::error(&ApiError::from_body_error(&*e)),
            Bytes::new(),
        ),
        Ok(b) => {
            let b = b.to_bytes();
            (
                answer(shared, &parts, content_type.as_deref(), &b, kind).await,
                b,
            )
        }
    };
    if kind == Listener::Admin {
        return resp;
    }
    shared.log.record(RequestRecord {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        content_type,
        user_agent,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: resp.status().as_u16(),
    });
    resp
}

/// Public without credentials, as for the apiserver's anonymous user.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

async fn answer(
    shared: &Arc<Shared>,
    parts: &hyper::http::request::Parts,
    content_type: Option<&str>,
    body: &[u8],
    kind: Listener,
) -> Resp {
    let faults = kind == Listener::Api;
    if faults && shared.faults.down_mode() == Some(DownMode::Unavailable) {
        return respond::error(&ApiError::unavailable());
    }
    let delay = shared.faults.delay();
    if faults && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(token) = &shared.token {
        let anonymous_ok = tls::is_anonymous(&parts.headers) && is_public(parts.uri.path());
        if !anonymous_ok && !tls::bearer_matches(&parts.headers, token) {
            return respond::error(&ApiError::unauthorized());
        }
    }
    if faults && shared.faults.take_failure() {
        return respond::error(&ApiError::internal("injected fault"));
    }
    let q = Query::parse(parts.uri.query());
    if kind == Listener::Admin && parts.uri.path().starts_with(admin::PREFIX) {
        return admin::route(shared, &parts.method, parts.uri.path(), &q);
    }
    routes::route(
        shared,
        &parts.method,
        parts.uri.path(),
        &q,
        content_type,
        body,
    )
}
