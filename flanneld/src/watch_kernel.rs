//! Kernel change notifications (what `ip monitor` sees): when a link,
//! route or neighbour/FDB entry of our device is deleted, the daemon checks
//! the device at once instead of waiting for the next periodic resync, if
//! a peer still needs what went ([`Deleted`], asked of the datapath): the
//! daemon's own removals (a peer gone) are told of too, and a full check
//! (a dump of 15,000 entries at 5,000 peers) after them stalled the lease
//! events queued meanwhile by tens of milliseconds.
//!
//! Only listens, on a multicast rtnetlink socket of its own: it changes
//! nothing in the kernel and repairs nothing; what to do is the daemon's.

use std::net::IpAddr;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::SocketAddr;
use rtnetlink::MulticastGroup;

pub struct KernelEvents {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

/// Listens to link, IPv4 and IPv6 route and neighbour changes in this
/// namespace.
pub fn subscribe() -> std::io::Result<KernelEvents> {
    let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Neigh,
    ])?;
    tokio::spawn(conn);
    Ok(KernelEvents { messages })
}

/// What the kernel said was deleted on one of our links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The link itself.
    Link,
    /// A route through it, to `dst`/`prefix`.
    Route { dst: IpAddr, prefix: u8 },
    /// A neighbour entry for `ip`.
    Neigh { ip: IpAddr },
    /// An FDB entry for `mac` (towards `dst`, when it had one).
    Fdb { mac: Vec<u8>, dst: Option<IpAddr> },
    /// Something else of the link's (an entry whose address did not parse):
    /// worth a check.
    Unknown,
}

impl KernelEvents {
    /// Resolves at the next deletion that touches one of the links
    /// `indexes` (the link itself, a route through it, a neighbour or FDB
    /// entry on it), saying what went. Safe to cancel: no message is lost
    /// between calls.
    pub async fn changed(&mut self, indexes: &[u32]) -> Deleted {
        while let Some((msg, _)) = self.messages.next().await {
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                if indexes.iter().any(|i| touches(&inner, *i)) {
                    return deleted(&inner);
                }
            }
        }
        // The socket closed: never resolve again; the periodic resync goes on.
        std::future::pending::<Deleted>().await
    }
}

fn touches(msg: &RouteNetlinkMessage, index: u32) -> bool {
    match msg {
        RouteNetlinkMessage::DelLink(l) => l.header.index == index,
        RouteNetlinkMessage::DelRoute(r) => r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index)),
        RouteNetlinkMessage::DelNeighbour(n) => {
            n.header.ifindex == index
                || n.attributes
                    .iter()
                    .any(|a| matches!(a, NeighbourAttribute::IfIndex(i) if *i == index))
        }
        _ => false,
    }
}

/// What a deletion `touches` accepted removed.
fn deleted(msg: &RouteNetlinkMessage) -> Deleted {
    match msg {
        RouteNetlinkMessage::DelLink(_) => Deleted::Link,
        RouteNetlinkMessage::DelRoute(r) => {
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => route_ip(d),
                _ => None,
            });
            match dst {
                Some(dst) => Deleted::Route {
                    dst,
                    prefix: r.header.destination_prefix_length,
                },
                None => Deleted::Unknown,
            }
        }
        RouteNetlinkMessage::DelNeighbour(n) => {
            let dst = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(d) => neigh_ip(d),
                _ => None,
            });
            if n.header.family == AddressFamily::Bridge {
                let mac = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(m) => Some(m.clone()),
                    _ => None,
                });
                match mac {
                    Some(mac) => Deleted::Fdb { mac, dst },
                    None => Deleted::Unknown,
                }
            } else {
                match dst {
                    Some(ip) => Deleted::Neigh { ip },
                    None => Deleted::Unknown,
                }
            }
        }
        _ => Deleted::Unknown,
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
