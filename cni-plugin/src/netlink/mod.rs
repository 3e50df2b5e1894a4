//! One typed method per kernel operation, over a blocking rtnetlink
//! socket (see `socket.rs`), and request builders for the operations the
//! verbs send several at a time. Messages are built with rtnetlink's
//! builders and netlink-packet-route's types. Every error names the
//! operation and the object ("create veth vethab12cd34 (peer eth0) in
//! host: File exists").
//!
//! Owns the links, addresses and routes as messages, and entering a pod's
//! namespace to open a socket there (`Netlink::open_in`). Decides nothing:
//! names, what to create and when to undo are the verbs'. Knows nothing of
//! the CNI: its error is `NlError`, and the CNI code for it is chosen in
//! `error.rs`. Does not touch nftables or /proc/sys.

mod socket;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};

use common::netns::Netns;
use ipnetwork::IpNetwork;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use socket::Conn;
pub use socket::{NlError, NlResult, Pending, Request};

/// What the plugin needs to know about a link.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub kind: Option<InfoKind>,
    pub controller: Option<u32>,
    pub up: bool,
    /// IFLA_LINK: for a veth, the other end's index (in the namespace
    /// `peer_netnsid` names, or in this one when that is `None`).
    pub peer: Option<u32>,
    /// IFLA_LINK_NETNSID: the other end lives in another namespace.
    pub peer_netnsid: Option<i32>,
}

impl Link {
    pub fn from_message(msg: LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: String::new(),
            mtu: 0,
            kind: None,
            controller: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            peer: None,
            peer_netnsid: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = common::mac::format(&a),
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::Controller(c) => link.controller = Some(c),
                LinkAttribute::Link(i) => link.peer = Some(i),
                LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k);
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A route as the plugin sees it: destination and gateway, either family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// An rtnetlink socket bound to one network namespace.
pub struct Netlink {
    conn: Conn,
}

impl Netlink {
    /// A socket in the calling thread's namespace (the node's).
    pub fn open() -> NlResult<Self> {
        Ok(Self {
            conn: Conn::open("host".to_string())?,
        })
    }

    /// A socket inside the namespace `ns`: created with the thread inside
    /// `ns`, then the thread returns.
    pub fn open_in(ns: &Netns) -> NlResult<Self> {
        let _guard = common::netns::NetnsGuard::enter(ns.file().as_fd())
            .map_err(|e| NlError::io(format!("enter network namespace {ns}"), e))?;
        Ok(Self {
            conn: Conn::open(ns.to_string())?,
        })
    }

    /// Sends a request without waiting (see `finish`).
    pub fn start(&self, req: Request) -> NlResult<Pending> {
        self.conn.send(req)
    }

    pub fn finish(&self, pending: Pending) -> NlResult<()> {
        self.conn.finish(pending).map(|_| ())
    }

    /// Sends all, then reads all: later requests may rely on earlier ones.
    pub fn run_all(&self, reqs: Vec<Request>) -> NlResult<()> {
        self.conn.run_all(reqs)
    }

    /// The link called `name`, or None when there is none.
    pub fn link_by_name(&self, name: &str) -> NlResult<Option<Link>> {
        let msg = LinkUnspec::new_with_name(name).build();
        self.get_link(msg, format!("look up link {name}"))
    }

    /// The link with index `index`, or None when there is none.
    pub fn link_by_index(&self, index: u32) -> NlResult<Option<Link>> {
        let msg = LinkUnspec::new_with_index(index).build();
        self.get_link(msg, format!("look up link #{index}"))
    }

    /// One RTM_GETLINK; ENODEV is `None`.
    fn get_link(&self, msg: LinkMessage, op: String) -> NlResult<Option<Link>> {
        let req = Request::change(RouteNetlinkMessage::GetLink(msg), 0, op);
        match self.conn.run(req) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&self) -> NlResult<Vec<Link>> {
        let msg = LinkMessage::default();
        let replies = self.conn.run(Request::dump(
            RouteNetlinkMessage::GetLink(msg),
            "list links".to_string(),
        ))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// `ip link add NAME type bridge` with a fixed MAC, up. EEXIST is
    /// returned to the caller, which decides whether a racer created it.
    pub fn create_bridge(&self, name: &str, mac: [u8; 6], mtu: u32) -> NlResult<()> {
        let msg = LinkBridge::new(name).address(mac.to_vec()).mtu(mtu).build();
        self.conn
            .run(Request::change(
                RouteNetlinkMessage::NewLink(msg),
                NLM_F_CREATE | NLM_F_EXCL,
                format!("create bridge {name}"),
            ))
            .map(|_| ())
    }

    /// Creates a veth pair: `host` in this namespace, attached to
    /// `controller` and up; `peer` directly inside `peer_ns` with the MAC
    /// `peer_mac`, down (the kernel configures the peer before the host end
    /// exists, so it cannot come up yet: ENOTCONN), both with `mtu`. One
    /// round trip, and the container's name never exists in the node's
    /// namespace.
    ///
    /// The request asks the kernel to echo the new link (NLM_F_ECHO,
    /// honoured since Linux 6.3): that answer carries the host end's index
    /// and MAC and, as its IFLA_LINK, the peer's index, which spares two
    /// lookups. `None` from an older kernel: look them up.
    pub fn create_veth(
        &self,
        host: &str,
        peer: &str,
        peer_mac: [u8; 6],
        peer_ns: &File,
        mtu: u32,
        controller: u32,
    ) -> NlResult<Option<(Link, u32)>> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .address(peer_mac.to_vec())
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(host, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .mtu(mtu)
            .controller(controller)
            .up()
            .build();
        let replies = self.conn.run(Request::change(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            format!("create veth {host} (peer {peer})"),
        ))?;
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => {
                let peer_index = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Link(i) => Some(*i),
                    _ => None,
                });
                let link = Link::from_message(link);
                (link.name == host)
                    .then_some(())
                    .and(peer_index.map(|p| (link, p)))
            }
            _ => None,
        }))
    }

    /// Hairpin on a bridge port.
    pub fn hairpin_request(index: u32, on: bool) -> Request {
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        Request::change(
            RouteNetlinkMessage::NewLink(msg),
            0,
            format!("set hairpin {on} on link #{index}"),
        )
    }

    pub fn set_promisc(&self, index: u32) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index).promiscuous(true).build();
        self.set_link(msg, format!("set promisc on link #{index}"))
    }

    pub fn up_request(index: u32, name: &str) -> Request {
        let msg = LinkUnspec::new_with_index(index).up().build();
        Request::change(
            RouteNetlinkMessage::SetLink(msg),
            0,
            format!("set link {name} up"),
        )
    }

    /// `net.ipv4.conf.<name>.arp_notify = 1` through rtnetlink
    /// (IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF) rather than /proc/sys: no
    /// namespace switch, no file, and no /proc/sys lookup, whose cost grows
    /// with the number of namespaces that have an interface of that name.
    pub fn arp_notify_request(index: u32, name: &str) -> Request {
        let mut conf = InetDevConf::default();
        conf.arp_notify = 1;
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        Request::change(
            RouteNetlinkMessage::SetLink(msg),
            0,
            format!("set arp_notify on {name}"),
        )
    }

    pub fn set_up(&self, index: u32, name: &str) -> NlResult<()> {
        self.conn.run(Self::up_request(index, name)).map(|_| ())
    }

    /// Renames a link and takes it down in one request (DEL's detach step).
    pub fn rename_down(&self, index: u32, old: &str, new: &str) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index)
            .name(new.to_string())
            .down()
            .build();
        self.set_link(msg, format!("rename link {old} to {new}"))
    }

    pub fn delete_link(&self, index: u32, name: &str) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index).build();
        self.conn
            .run(Request::change(
                RouteNetlinkMessage::DelLink(msg),
                0,
                format!("delete link {name}"),
            ))
            .map(|_| ())
    }

    fn set_link(&self, msg: LinkMessage, op: String) -> NlResult<()> {
        self.conn
            .run(Request::change(RouteNetlinkMessage::SetLink(msg), 0, op))
            .map(|_| ())
    }

    /// Adds `addr/prefix`; an address that is already there is fine. An
    /// IPv6 address is added with IFA_F_NODAD: usable at once, without the
    /// second or more of duplicate address detection (the IPAM store
    /// already guarantees it is unique on the bridge).
    pub fn address_request(index: u32, net: IpNetwork, name: &str) -> Request {
        let msg = match net {
            IpNetwork::V4(n) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(n.ip(), n.prefix())
                .build(),
            IpNetwork::V6(n) => {
                let mut msg = AddressMessageBuilder::<Ipv6Addr>::new()
                    .index(index)
                    .address(n.ip(), n.prefix())
                    .build();
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg
            }
        };
        Request::change(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add address {net} to {name}"),
        )
        .tolerating(libc::EEXIST)
    }

    pub fn ensure_address(&self, index: u32, net: IpNetwork, name: &str) -> NlResult<()> {
        self.conn
            .run(Self::address_request(index, net, name))
            .map(|_| ())
    }

    /// The addresses on the link, both families (IPv6 link-local ones too).
    pub fn addresses(&self, index: u32) -> NlResult<Vec<IpNetwork>> {
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, net)| net)
            .collect())
    }

    /// Every address in the namespace, both families, with its link's index.
    pub fn all_addresses(&self) -> NlResult<Vec<(u32, IpNetwork)>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Unspec;
        let replies = self.conn.run(Request::dump(
            RouteNetlinkMessage::GetAddress(msg),
            "list addresses".to_string(),
        ))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    if let Ok(net) = IpNetwork::new(*ip, msg.header.prefix_len) {
                        out.push((msg.header.index, net));
                    }
                }
            }
        }
        Ok(out)
    }

    /// `ip route add DST via GW dev INDEX`; an identical route is fine.
    /// `dst` and `gw` are of one family (the caller pairs them per family;
    /// a mixed pair is refused by the kernel, naming the route).
    pub fn route_request(dst: IpNetwork, gw: IpAddr, index: u32) -> Request {
        let mut msg = match (dst, gw) {
            (IpNetwork::V6(d), IpAddr::V6(g)) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d.network(), d.prefix())
                .gateway(g)
                .build(),
            (IpNetwork::V4(d), IpAddr::V4(g)) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d.network(), d.prefix())
                .gateway(g)
                .build(),
            // A mixed pair: an IPv4 route with no gateway set, which the
            // kernel refuses with the op naming both.
            (d, _) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::UNSPECIFIED, d.prefix())
                .build(),
        };
        msg.attributes.push(RouteAttribute::Oif(index));
        // What iproute2 and the reference plugins leave: "proto boot".
        msg.header.protocol = RouteProtocol::Boot;
        Request::change(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add route {dst} via {gw}"),
        )
        .tolerating(libc::EEXIST)
    }

    /// The routes of the main table, both families.
    pub fn routes(&self) -> NlResult<Vec<Route>> {
        let msg = RouteMessageBuilder::<IpAddr>::new().build();
        let replies = self.conn.run(Request::dump(
            RouteNetlinkMessage::GetRoute(msg),
            "list routes".to_string(),
        ))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_of(r),
                _ => None,
            })
            .collect())
    }
}

fn route_of(msg: &RouteMessage) -> Option<Route> {
    let mut dst = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut gw = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = IpAddr::V4(*a),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = IpAddr::V6(*a),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gw = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = IpNetwork::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(Route { dst, gw, oif })
}

/// True when the link is a Linux bridge.
pub fn is_bridge(link: &Link) -> bool {
    matches!(link.kind, Some(InfoKind::Bridge))
}

/// True when the link is one end of a veth pair.
pub fn is_veth(link: &Link) -> bool {
    matches!(link.kind, Some(InfoKind::Veth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkMessage;

    /// The bytes the kernel's inet_set_link_af reads: IFLA_AF_SPEC (26) /
    /// AF_INET (2) / IFLA_INET_CONF (1, nested) / IPV4_DEVCONF_ARP_NOTIFY
    /// (22) = 1 — and nothing else, so no other setting is reset.
    #[test]
    fn arp_notify_request_is_one_devconf_attribute() {
        let req = Netlink::arp_notify_request(7, "eth0");
        let RouteNetlinkMessage::SetLink(ref link) = req.msg else {
            panic!("not a SETLINK: {:?}", req.msg);
        };
        assert_eq!(link.header.index, 7);
        assert!(link.header.flags.is_empty() && link.header.change_mask.is_empty());
        let mut msg = NetlinkMessage::from(req.msg.clone());
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        // nlmsghdr (16) + ifinfomsg (16), then the one attribute.
        #[rustfmt::skip]
        let want: [u8; 20] = [
            20, 0, 26, 0,         // IFLA_AF_SPEC, 20 bytes
            16, 0, 2, 0,          //   AF_INET, 16 bytes
            12, 0, 1, 0x80,       //     IFLA_INET_CONF | NLA_F_NESTED, 12 bytes
            8, 0, 22, 0,          //       ARP_NOTIFY, 8 bytes
            1, 0, 0, 0,           //       = 1
        ];
        assert_eq!(&buf[32..], &want, "whole message: {buf:?}");
    }
}
