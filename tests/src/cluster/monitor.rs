//! Timestamping asynchronous events for measurements: IPv4 and IPv6 route changes in
//! a namespace (an rtnetlink multicast socket opened inside it) and file
//! events in a directory (inotify). Both record `Instant`s as the events are
//! read, on their own threads; both stop on drop.

use crate::netns::NetNs;
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
    events: Arc<Mutex<Vec<RouteEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTA_DST: u16 = 1;

fn timeout_100ms(fd: i32) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: valid fd and a properly sized timeval.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
}

/// A NETLINK_ROUTE socket of this thread's namespace, subscribed to the
/// multicast `groups` (RTMGRP_* bits), with a 100 ms receive timeout.
pub(super) fn netlink_socket(groups: u32) -> Result<OwnedFd, String> {
    // SAFETY: plain socket/bind calls; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd is a fresh valid descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_nl is valid; fields set below.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = groups;
    // SAFETY: sa is a valid sockaddr_nl of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    timeout_100ms(fd.as_raw_fd());
    Ok(fd)
}

impl RouteMonitor {
    /// Subscribed before this returns: no event after it is missed.
    pub fn start(ns: &NetNs) -> RouteMonitor {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ev, st) = (events.clone(), stop.clone());
        let thread = ns.spawn(move || {
            let fd = match netlink_socket(RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            let mut buf = vec![0u8; 1 << 16];
            while !st.load(Ordering::Relaxed) {
                // SAFETY: buf is valid for its length.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                let now = Instant::now();
                if n <= 0 {
                    continue;
                }
                let parsed = parse_route_msgs(&buf[..n as usize]);
                ev.lock()
                    .unwrap()
                    .extend(parsed.into_iter().map(|(add, dst)| (now, add, dst)));
            }
        });
        rx.recv()
            .expect("route monitor thread died")
            .unwrap_or_else(|e| panic!("route monitor in {}: {e}", ns.name()));
        RouteMonitor {
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<RouteEvent> {
        self.events.lock().unwrap().clone()
    }

    /// When `dst` was first added at or after `since`.
    pub fn added_since(&self, dst: &str, since: Instant) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(t, add, d)| *add && d == dst && *t >= since)
            .map(|e| e.0)
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

/// (added?, "dst/len") for each RTM_NEWROUTE/RTM_DELROUTE of family
/// AF_INET or AF_INET6.
fn parse_route_msgs(mut b: &[u8]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        let ty = u16_at(b, 4);
        let msg = &b[16..len];
        if (ty == RTM_NEWROUTE || ty == RTM_DELROUTE)
            && msg.len() >= 12
            && (msg[0] == libc::AF_INET as u8 || msg[0] == libc::AF_INET6 as u8)
        {
            let dst_len = msg[1];
            let mut dst = if msg[0] == libc::AF_INET as u8 {
                Ipv4Addr::UNSPECIFIED.to_string()
            } else {
                Ipv6Addr::UNSPECIFIED.to_string()
            };
            let mut a = &msg[12..];
            while a.len() >= 4 {
                let alen = u16_at(a, 0) as usize;
                if alen < 4 || alen > a.len() {
                    break;
                }
                if u16_at(a, 2) == RTA_DST {
                    if let Ok(b) = <[u8; 16]>::try_from(&a[4..alen]) {
                        dst = Ipv6Addr::from(b).to_string();
                    } else if let Ok(b) = <[u8; 4]>::try_from(&a[4..alen]) {
                        dst = Ipv4Addr::from(b).to_string();
                    }
                }
                let step = (alen + 3) & !3;
                a = &a[step.min(a.len())..];
            }
            out.push((ty == RTM_NEWROUTE, format!("{dst}/{dst_len}")));
        }
        let step = (len + 3) & !3;
        b = &b[step.min(b.len())..];
    }
    out
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
