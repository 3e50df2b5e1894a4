//! A subscription to rtnetlink multicast groups inside a namespace, for the
//! monitors that timestamp what the kernel announces (`monitor`'s
//! RouteMonitor, `entry_monitor`'s EntryMonitor): a NETLINK_ROUTE socket
//! opened in the namespace and bound to the groups, a thread that reads
//! it, decodes each message and records `Instant`s as messages are read.
//! What a message means is the caller's: a mapping from the decoded
//! message to the caller's event (or none). Subscribed before `start`
//! returns; the thread stops on drop.
//!
//! It receives only; it sends no request on the socket and does not interpret
//! what a message means.

use crate::netns::NetNs;
use nix::sys::socket::{
    setsockopt,
    sockopt::{RcvBufForce, ReceiveTimeout},
};
use nix::sys::time::TimeVal;
use rtnetlink::packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// How long a read waits before the thread looks at its stop flag again.
const READ_TIMEOUT_MS: i64 = 100;

/// The socket's receive buffer: room for the announcements of tens of
/// thousands of entries written in a burst (a daemon programming 10,000
/// peers), so the kernel drops none (ENOBUFS) before the thread reads.
const RECV_BUFFER: usize = 64 << 20;

/// The events a mapping made of the messages read so far, in order.
pub(super) struct Subscription<E> {
    events: Arc<Mutex<Vec<E>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<E: Send + 'static> Subscription<E> {
    /// Subscribes to `groups` (RTMGRP_* bits) in `ns`; `map` turns each
    /// message, with the instant it was read, into an event or none.
    /// `what` names the subscriber in errors. Panics (a harness failure)
    /// if the socket cannot be opened, bound or given its timeout.
    pub(super) fn start(
        ns: &NetNs,
        groups: u32,
        what: &'static str,
        mut map: impl FnMut(Instant, &RouteNetlinkMessage) -> Option<E> + Send + 'static,
    ) -> Subscription<E> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ev, st) = (events.clone(), stop.clone());
        let thread = ns.spawn(move || {
            let socket = match subscribed_socket(groups) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            let mut buf = Vec::with_capacity(1 << 16);
            while !st.load(Ordering::Relaxed) {
                buf.clear();
                let read = socket.recv(&mut buf, 0);
                let now = Instant::now();
                match read {
                    Ok(_) => {}
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                    {
                        continue
                    }
                    Err(e) => {
                        eprintln!("{what}: read the netlink subscription: {e}");
                        continue;
                    }
                }
                let got: Vec<E> = decode(&buf, what)
                    .iter()
                    .filter_map(|m| map(now, m))
                    .collect();
                if !got.is_empty() {
                    lock(&ev).extend(got);
                }
            }
        });
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{what} in {}: {e}", ns.name()),
            Err(_) => panic!(
                "{what} in {}: its thread died before subscribing",
                ns.name()
            ),
        }
        Subscription {
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// The events so far, for reading under the lock.
    pub(super) fn events(&self) -> MutexGuard<'_, Vec<E>> {
        lock(&self.events)
    }
}

impl<E> Drop for Subscription<E> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A poisoned lock only means a reader panicked; the events are whole.
fn lock<E>(m: &Mutex<Vec<E>>) -> MutexGuard<'_, Vec<E>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A NETLINK_ROUTE socket of this thread's namespace, bound to the
/// multicast `groups`, whose reads time out after READ_TIMEOUT_MS, with a
/// RECV_BUFFER receive buffer (SO_RCVBUFFORCE: the harness runs as root).
fn subscribed_socket(groups: u32) -> Result<Socket, String> {
    let mut socket =
        Socket::new(NETLINK_ROUTE).map_err(|e| format!("open a NETLINK_ROUTE socket: {e}"))?;
    socket
        .bind(&SocketAddr::new(0, groups))
        .map_err(|e| format!("bind the netlink socket to groups {groups:#x}: {e}"))?;
    setsockopt(
        &socket,
        ReceiveTimeout,
        &TimeVal::new(0, READ_TIMEOUT_MS * 1000),
    )
    .map_err(|e| format!("set the netlink socket's receive timeout: {e}"))?;
    setsockopt(&socket, RcvBufForce, &RECV_BUFFER)
        .map_err(|e| format!("set the netlink socket's receive buffer to {RECV_BUFFER}: {e}"))?;
    Ok(socket)
}

/// The route-family messages in one datagram. A message that does not
/// decode is reported and skipped; the ones after it are still read.
fn decode(mut buf: &[u8], what: &str) -> Vec<RouteNetlinkMessage> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = match NetlinkBuffer::new_checked(buf) {
            Ok(b) => b.length() as usize,
            Err(e) => {
                eprintln!("{what}: a truncated netlink message: {e}");
                break;
            }
        };
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf) {
            Ok(m) => {
                if let NetlinkPayload::InnerMessage(inner) = m.payload {
                    out.push(inner);
                }
            }
            Err(e) => eprintln!("{what}: skip a netlink message that does not decode: {e}"),
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}
