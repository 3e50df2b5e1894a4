//! TCP reachability without external tools: a listener on a thread inside a
//! namespace, and a connect from a thread inside another.
//!
//! Both ends run in namespaces the test owns; nothing here listens or
//! connects in the host's own namespace.

use crate::netns::NetNs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A listener inside a namespace that greets every client with `banner` (in
/// which `{peer}` is replaced by the client's IP address, as the server saw
/// it) and closes. Stops (and joins its thread) on drop.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `bind` (port 0 picks one) inside `ns`; returns once listening.
    pub fn start(ns: &NetNs, bind: SocketAddr, banner: &str) -> TcpServer {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop2, acc2, banner) = (stop.clone(), accepted.clone(), banner.to_owned());
        let thread = ns.spawn(move || {
            let l = match TcpListener::bind(bind) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            l.set_nonblocking(true).expect("nonblocking listener");
            let _ = tx.send(Ok(l.local_addr().expect("local addr")));
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        acc2.fetch_add(1, Ordering::Relaxed);
                        let _ = s.set_nonblocking(false);
                        let msg = banner.replace("{peer}", &peer.ip().to_string());
                        let _ = s.write_all(msg.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        let addr = rx
            .recv()
            .expect("server thread died")
            .unwrap_or_else(|e| panic!("bind {bind} in {}: {e}", ns.name()));
        TcpServer {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` to `to` and returns what the server sent before
/// closing. Errors carry the reason (refused, timed out, ...).
pub fn tcp_fetch(ns: &NetNs, to: SocketAddr, timeout: Duration) -> Result<String, String> {
    ns.run(move || {
        let mut s =
            TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)
            .map_err(|e| format!("read from {to}: {e}"))?;
        Ok(buf)
    })
}

/// `GET path` over HTTP/1.0 to `127.0.0.1:port` inside `ns` (flanneld's
/// /healthz and /readyz); the status code.
pub fn http_status(ns: &NetNs, port: u16, path: &str) -> Result<u16, String> {
    let path = path.to_owned();
    ns.run(move || {
        let addr = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status line in {text:?}"))
    })
}
