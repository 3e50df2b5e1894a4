//! Timestamping asynchronous events for measurements: IPv4 and IPv6 route changes in
//! a namespace (an rtnetlink subscription, `nl_subscribe`) and file
//! events in a directory (inotify). Both record `Instant`s as the events are
//! read, on their own threads; both stop on drop.
//!
//! It only listens (netlink groups, inotify); it changes nothing in the
//! namespace or directory it watches.

use super::nl_subscribe::Subscription;
use crate::netns::NetNs;
use rtnetlink::constants::{RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use std::ffi::CStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// One route event: `(when, added?, "a.b.c.d/len")` (or an IPv6 prefix).
pub type RouteEvent = (Instant, bool, String);

/// Records every IPv4 and IPv6 route added or deleted in a namespace.
pub struct RouteMonitor {
    sub: Subscription<RouteEvent>,
}

impl RouteMonitor {
    /// Subscribed before this returns: no event after it is missed.
    pub fn start(ns: &NetNs) -> RouteMonitor {
        let sub = Subscription::start(
            ns,
            RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
            "route monitor",
            |now, msg| route_event(msg).map(|(add, dst)| (now, add, dst)),
        );
        RouteMonitor { sub }
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<RouteEvent> {
        self.sub.events().clone()
    }

    /// When `dst` was first added at or after `since`.
    pub fn added_since(&self, dst: &str, since: Instant) -> Option<Instant> {
        self.sub
            .events()
            .iter()
            .find(|(t, add, d)| *add && d == dst && *t >= since)
            .map(|e| e.0)
    }
}

/// (added?, "dst/len") of an IPv4 or IPv6 route added or deleted.
fn route_event(msg: &RouteNetlinkMessage) -> Option<(bool, String)> {
    let (added, route) = match msg {
        RouteNetlinkMessage::NewRoute(r) => (true, r),
        RouteNetlinkMessage::DelRoute(r) => (false, r),
        _ => return None,
    };
    Some((added, route_prefix(route)?))
}

/// "dst/len" of an IPv4 or IPv6 route ("0.0.0.0/0", "::/0" for a default
/// route); None for other families.
pub(super) fn route_prefix(route: &RouteMessage) -> Option<String> {
    let mut dst = match route.header.address_family {
        AddressFamily::Inet => Ipv4Addr::UNSPECIFIED.to_string(),
        AddressFamily::Inet6 => Ipv6Addr::UNSPECIFIED.to_string(),
        _ => return None,
    };
    for a in &route.attributes {
        if let RouteAttribute::Destination(d) = a {
            match d {
                RouteAddress::Inet(v4) => dst = v4.to_string(),
                RouteAddress::Inet6(v6) => dst = v6.to_string(),
                _ => {}
            }
        }
    }
    Some(format!("{dst}/{}", route.header.destination_prefix_length))
}

/// One file event: `(when, file name)` (create, moved in, or closed after write).
pub type FileEvent = (Instant, String);

/// Records file creations and renames into a directory.
pub struct DirWatch {
    events: Arc<Mutex<Vec<FileEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DirWatch {
    /// Watching before this returns.
    pub fn start(dir: &Path) -> DirWatch {
        // SAFETY: inotify_init1 with valid flags.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cpath =
            std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path with NUL");
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;
        // SAFETY: valid fd and C string.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ev, st) = (events.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !st.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                    continue;
                }
                // SAFETY: buf valid for its length.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                    )
                };
                let now = Instant::now();
                if n <= 0 {
                    continue;
                }
                let mut i = 0usize;
                let n = n as usize;
                let hdr = std::mem::size_of::<libc::inotify_event>();
                let mut got = Vec::new();
                while i + hdr <= n {
                    let len =
                        u32::from_ne_bytes([buf[i + 12], buf[i + 13], buf[i + 14], buf[i + 15]])
                            as usize;
                    let name_bytes = &buf[i + hdr..(i + hdr + len).min(n)];
                    let name = CStr::from_bytes_until_nul(name_bytes)
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| String::from_utf8_lossy(name_bytes).into_owned());
                    got.push((now, name));
                    i += hdr + len;
                }
                ev.lock().unwrap().extend(got);
            }
        });
        DirWatch {
            events,
            stop,
            thread: Some(thread),
        }
    }

    pub fn events(&self) -> Vec<FileEvent> {
        self.events.lock().unwrap().clone()
    }

    /// When a file named `name` first appeared at or after `since`.
    pub fn first_since(&self, name: &str, since: Instant) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(t, n)| n == name && *t >= since)
            .map(|e| e.0)
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
