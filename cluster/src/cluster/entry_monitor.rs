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
use super::monitor::route_prefix;
use super::nl_subscribe::Subscription;
use crate::netns::NetNs;
use rtnetlink::constants::{RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE, RTMGRP_NEIGH};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

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
    sub: Subscription<EntryEvent>,
}

impl EntryMonitor {
    /// Starts recording the changes on `dev` (which must exist) in `ns`.
    pub fn start(ns: &NetNs, dev: &str) -> EntryMonitor {
        let link = ns.ip_json(&["link", "show", "dev", dev]);
        let ifindex = link[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no {dev} in {}: {link}", ns.name()));
        let sub = Subscription::start(
            ns,
            RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
            "entry monitor",
            move |at, msg| {
                entry_change(msg, ifindex).map(|(added, entry)| EntryEvent { at, added, entry })
            },
        );
        EntryMonitor { sub }
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<EntryEvent> {
        self.sub.events().clone()
    }

    /// The changes about none of `leases`' entries.
    pub fn events_not_about(&self, leases: &[&LeaseFile]) -> Vec<EntryEvent> {
        let mut v = self.events();
        v.retain(|e| !leases.iter().any(|l| e.entry.concerns(l)));
        v
    }
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// (added?, entry) of a route, neighbour or FDB message about `ifindex`.
fn entry_change(msg: &RouteNetlinkMessage, ifindex: u32) -> Option<(bool, Entry)> {
    match msg {
        RouteNetlinkMessage::NewRoute(r) => Some((true, route_entry(r, ifindex)?)),
        RouteNetlinkMessage::DelRoute(r) => Some((false, route_entry(r, ifindex)?)),
        RouteNetlinkMessage::NewNeighbour(n) => Some((true, neigh_entry(n, ifindex)?)),
        RouteNetlinkMessage::DelNeighbour(n) => Some((false, neigh_entry(n, ifindex)?)),
        _ => None,
    }
}

/// An IPv4 or IPv6 route through `ifindex`, unless it is one the kernel
/// made itself for an IPv6 address of the device (see the module doc).
fn route_entry(route: &RouteMessage, ifindex: u32) -> Option<Entry> {
    let dst = route_prefix(route)?;
    let mut oif = None;
    let mut table = u32::from(route.header.table);
    for a in &route.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let kernels_own = route.header.address_family == AddressFamily::Inet6
        && route.header.protocol == RouteProtocol::Kernel;
    (oif == Some(ifindex) && !kernels_own).then_some(Entry::Route { dst, table })
}

/// A neighbour (IPv4 or IPv6) or FDB (bridge family) entry on `ifindex`.
fn neigh_entry(neigh: &NeighbourMessage, ifindex: u32) -> Option<Entry> {
    if neigh.header.ifindex != ifindex {
        return None;
    }
    let (mut dst, mut lladdr) = (String::new(), String::new());
    for a in &neigh.attributes {
        match a {
            NeighbourAttribute::Destination(d) => dst = neigh_ip(d),
            NeighbourAttribute::LinkLayerAddress(l) => lladdr = mac(l),
            _ => {}
        }
    }
    match neigh.header.family {
        AddressFamily::Inet | AddressFamily::Inet6 => Some(Entry::Neigh { dst, lladdr }),
        AddressFamily::Bridge => Some(Entry::Fdb { mac: lladdr, dst }),
        _ => None,
    }
}

/// A neighbour's address as text; an FDB entry's (bridge family) comes
/// undecoded and is read by its length; "" if it is neither IPv4 nor IPv6.
fn neigh_ip(d: &NeighbourAddress) -> String {
    match d {
        NeighbourAddress::Inet(a) => a.to_string(),
        NeighbourAddress::Inet6(a) => a.to_string(),
        NeighbourAddress::Other(b) => {
            if let Ok(a) = <[u8; 4]>::try_from(b.as_slice()) {
                Ipv4Addr::from(a).to_string()
            } else if let Ok(a) = <[u8; 16]>::try_from(b.as_slice()) {
                Ipv6Addr::from(a).to_string()
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}
