//! `/healthz` (always 200 while the process runs) and `/readyz` (503 until
//! subnet.env is written and the datapath is in place), on
//! `--healthz-ip:--healthz-port`. Two fixed answers need no HTTP framework:
//! read the request line, answer, close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Health checks served at once.
const MAX_CONNECTIONS: usize = 64;

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

/// Binds now (so a bad address fails at start-up) and serves in the background.
pub async fn serve(addr: SocketAddr, ready: Readiness) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen for health checks on {addr}: {e}"))?;
    // Probes need a handful of connections; a flood must not use up the
    // daemon's descriptors.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // EMFILE and the like: do not spin.
                    tracing::debug!("accept a health check: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ready = ready.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // The request line may arrive in several segments: read up
                // to the end of the headers (or 1 KiB, or 5 s) before
                // answering, or closing early would reset the client.
                let mut buf = [0u8; 1024];
                let mut n = 0;
                let read_head = async {
                    while n < buf.len() {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                };
                if tokio::time::timeout(std::time::Duration::from_secs(5), read_head)
                    .await
                    .is_err()
                {
                    return;
                }
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/healthz" => ("200 OK", "ok\n"),
                    "/readyz" => match ready.why_not() {
                        None => ("200 OK", "ready\n"),
                        Some(why) => ("503 Service Unavailable", why),
                    },
                    _ => ("404 Not Found", "not found\n"),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}
