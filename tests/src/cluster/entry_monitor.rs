//! Recording every change netlink reports on one device of a namespace:
//! IPv4 and IPv6 routes through it, its neighbour entries and its FDB entries,
//! added or deleted, each with the entry it is about. A test runs one
//! across a disturbance (a relist, an outage) to tell which entries the
//! daemon wrote, or that it wrote none. IPv6 routes the kernel makes by
//! itself for a device's own addresses (`proto kernel`: link-local and
//! local-table routes, announced whenever duplicate address detection
//! ends) are nobody's writes and are left out. Subscribed before `start`
//! returns; stops on drop.

use super::lease::LeaseFile;
use super::monitor::{netlink_socket, u16_at};
use crate::netns::NetNs;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTA_DST: u16 = 1;
const RTPROT_KERNEL: u8 = 2;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

/// What a change was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Route { dst: String, table: u32 },
    Neigh { dst: String, lladdr: String },
    Fdb { mac: String, dst: String },
}

impl Entry {
    /// Is it one of the entries `lease` calls for on a peer (of either family)?
    pub fn concerns(&self, lease: &LeaseFile) -> bool {
        let is = |a: &str, b: Option<&str>| b.is_some_and(|b| !b.is_empty() && a == b);
        match self {
            Entry::Route { dst, .. } => {
                is(dst, Some(&lease.subnet)) || is(dst, lease.subnet6.as_deref())
            }
            Entry::Neigh { dst, lladdr } => {
                is(dst, Some(lease.vtep_ip()))
                    || is(dst, lease.vtep_ip6())
                    || is(lladdr, Some(&lease.vtep_mac))
                    || is(lladdr, lease.vtep_mac6.as_deref())
            }
            Entry::Fdb { mac, dst } => {
                is(mac, Some(&lease.vtep_mac))
                    || is(mac, lease.vtep_mac6.as_deref())
                    || is(dst, Some(&lease.public_ip))
                    || is(dst, lease.public_ipv6.as_deref())
            }
        }
    }
}

/// One change: when it was read, added (or replaced) or deleted, and what.
#[derive(Debug, Clone)]
pub struct EntryEvent {
    pub at: Instant,
    pub added: bool,
    pub entry: Entry,
}

impl fmt::Display for EntryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.added { '+' } else { '-' };
        match &self.entry {
            Entry::Route { dst, table } => write!(f, "{sign}route {dst} (table {table})"),
            Entry::Neigh { dst, lladdr } => write!(f, "{sign}neigh {dst} lladdr {lladdr}"),
            Entry::Fdb { mac, dst } => write!(f, "{sign}fdb {mac} dst {dst}"),
        }
    }
}

/// See the module doc.
pub struct EntryMonitor {
    events: Arc<Mutex<Vec<EntryEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EntryMonitor {
    /// Starts recording the changes on `dev` (which must exist) in `ns`.
    pub fn start(ns: &NetNs, dev: &str) -> EntryMonitor {
        let link = ns.ip_json(&["link", "show", "dev", dev]);
        let ifindex = link[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no {dev} in {}: {link}", ns.name()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ev, st) = (events.clone(), stop.clone());
        let thread = ns.spawn(move || {
            let fd = match netlink_socket(RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE) {
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
                let parsed = parse(&buf[..n as usize], ifindex);
                ev.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(parsed.into_iter().map(|(added, entry)| EntryEvent {
                        at: now,
                        added,
                        entry,
                    }));
            }
        });
        rx.recv()
            .expect("entry monitor thread died")
            .unwrap_or_else(|e| panic!("entry monitor in {}: {e}", ns.name()));
        EntryMonitor {
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<EntryEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The changes about none of `leases`' entries.
    pub fn events_not_about(&self, leases: &[&LeaseFile]) -> Vec<EntryEvent> {
        let mut v = self.events();
        v.retain(|e| !leases.iter().any(|l| e.entry.concerns(l)));
        v
    }
}

impl Drop for EntryMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IPv4 or IPv6 address attribute, by its length.
fn ip(b: &[u8]) -> String {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        return Ipv4Addr::from(a).to_string();
    }
    if let Ok(a) = <[u8; 16]>::try_from(b) {
        return Ipv6Addr::from(a).to_string();
    }
    String::new()
}

/// The (type, payload) of each attribute in `a`.
fn attrs(mut a: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while a.len() >= 4 {
        let len = u16_at(a, 0) as usize;
        if len < 4 || len > a.len() {
            break;
        }
        out.push((u16_at(a, 2) & 0x3fff, &a[4..len]));
        a = &a[((len + 3) & !3).min(a.len())..];
    }
    out
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// (added?, entry) for each route, neighbour or FDB message about `ifindex`.
fn parse(mut b: &[u8], ifindex: u32) -> Vec<(bool, Entry)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        let ty = u16_at(b, 4);
        let msg = &b[16..len];
        if msg.len() >= 12 {
            match ty {
                RTM_NEWROUTE | RTM_DELROUTE
                    if msg[0] == libc::AF_INET as u8 || msg[0] == libc::AF_INET6 as u8 =>
                {
                    let unspecified = if msg[0] == libc::AF_INET as u8 {
                        Ipv4Addr::UNSPECIFIED.to_string()
                    } else {
                        Ipv6Addr::UNSPECIFIED.to_string()
                    };
                    let (mut dst, mut oif) = (unspecified, None);
                    let mut table = u32::from(msg[4]);
                    for (t, v) in attrs(&msg[12..]) {
                        match t {
                            RTA_DST => dst = ip(v),
                            RTA_OIF => oif = u32_of(v),
                            RTA_TABLE => table = u32_of(v).unwrap_or(table),
                            _ => {}
                        }
                    }
                    let kernels_own = msg[0] == libc::AF_INET6 as u8 && msg[5] == RTPROT_KERNEL;
                    if oif == Some(ifindex) && !kernels_own {
                        let dst = format!("{dst}/{}", msg[1]);
                        out.push((ty == RTM_NEWROUTE, Entry::Route { dst, table }));
                    }
                }
                RTM_NEWNEIGH | RTM_DELNEIGH if u32_of(&msg[4..8]) == Some(ifindex) => {
                    let (mut dst, mut lladdr) = (String::new(), String::new());
                    for (t, v) in attrs(&msg[12..]) {
                        match t {
                            NDA_DST => dst = ip(v),
                            NDA_LLADDR => lladdr = mac(v),
                            _ => {}
                        }
                    }
                    let added = ty == RTM_NEWNEIGH;
                    match i32::from(msg[0]) {
                        libc::AF_INET | libc::AF_INET6 => {
                            out.push((added, Entry::Neigh { dst, lladdr }))
                        }
                        libc::AF_BRIDGE => out.push((added, Entry::Fdb { mac: lladdr, dst })),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}
