//! Kernel change notifications (what `ip monitor` sees): when a link,
//! route or neighbour/FDB entry of our device is deleted, the daemon checks
//! the device at once instead of waiting for the next periodic resync.
//!
//! Only listens, on a multicast rtnetlink socket of its own: it changes
//! nothing in the kernel and repairs nothing; what to do is the daemon's.

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::neighbour::NeighbourAttribute;
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::packet_route::RouteNetlinkMessage;
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

impl KernelEvents {
    /// Resolves at the next deletion that touches one of the links
    /// `indexes` (the link
    /// itself, a route through it, a neighbour or FDB entry on it). Safe
    /// to cancel: no message is lost between calls.
    pub async fn changed(&mut self, indexes: &[u32]) {
        while let Some((msg, _)) = self.messages.next().await {
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                if indexes.iter().any(|i| touches(&inner, *i)) {
                    return;
                }
            }
        }
        // The socket closed: never resolve again; the periodic resync goes on.
        std::future::pending::<()>().await
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
