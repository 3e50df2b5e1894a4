//! One typed method per kernel operation, over rtnetlink. Every error names
//! the operation and the object ("create veth vethab12cd34: File exists").

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

use futures::{StreamExt, TryStreamExt};
use ipnetwork::Ipv4Network;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{CniError, Code};

/// A failed kernel operation.
#[derive(Debug)]
pub struct NlError {
    pub op: String,
    pub errno: Option<i32>,
    pub reason: String,
}

impl NlError {
    fn new(op: String, e: rtnetlink::Error) -> Self {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
            _ => None,
        };
        let reason = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        Self { op, errno, reason }
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.reason)
    }
}

impl From<NlError> for CniError {
    fn from(e: NlError) -> Self {
        CniError::new(Code::Kernel, e.to_string())
    }
}

pub type NlResult<T> = Result<T, NlError>;

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
}

impl Link {
    fn from_message(msg: LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: String::new(),
            mtu: 0,
            kind: None,
            controller: None,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = format_mac(&a),
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::Controller(c) => link.controller = Some(c),
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

pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A route as the plugin sees it: destination and gateway, IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Network,
    pub gw: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// An rtnetlink connection bound to one network namespace.
pub struct Netlink {
    handle: Handle,
    /// Where this socket lives, for error messages.
    place: String,
}

impl Netlink {
    /// A connection in the calling thread's namespace (the node's).
    pub fn open() -> NlResult<Self> {
        Self::connect("host".to_string())
    }

    /// A connection inside the namespace `ns`: the socket is created with
    /// the thread inside `ns`, then the thread returns.
    pub fn open_in(ns: &File, place: &str) -> NlResult<Self> {
        let _guard = common::netns::NetnsGuard::enter(ns.as_fd()).map_err(|e| NlError {
            op: format!("enter network namespace {place}"),
            errno: e.raw_os_error(),
            reason: e.to_string(),
        })?;
        Self::connect(place.to_string())
    }

    fn connect(place: String) -> NlResult<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NlError {
            op: format!("open netlink socket in {place}"),
            errno: e.raw_os_error(),
            reason: e.to_string(),
        })?;
        tokio::spawn(conn);
        Ok(Self { handle, place })
    }

    fn err(&self, op: String) -> impl FnOnce(rtnetlink::Error) -> NlError + '_ {
        move |e| NlError::new(format!("{op} in {}", self.place), e)
    }

    /// The link called `name`, or None when there is none.
    pub async fn link_by_name(&self, name: &str) -> NlResult<Option<Link>> {
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(Link::from_message)),
            Err(e) => {
                let e = NlError::new(format!("look up link {name} in {}", self.place), e);
                if e.is(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `ip link add NAME type bridge` with a fixed MAC, up. EEXIST is
    /// returned to the caller, which decides whether a racer created it.
    pub async fn create_bridge(&self, name: &str, mac: [u8; 6], mtu: u32) -> NlResult<()> {
        let msg = LinkBridge::new(name).address(mac.to_vec()).mtu(mtu).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(self.err(format!("create bridge {name}")))
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
    pub async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        peer_mac: [u8; 6],
        peer_ns: &File,
        mtu: u32,
        controller: u32,
    ) -> NlResult<Option<(Link, u32)>> {
        let op = || format!("create veth {host} (peer {peer}) in {}", self.place);
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
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
        let mut handle = self.handle.clone();
        let mut replies = handle.request(req).map_err(|e| NlError::new(op(), e))?;
        let mut echoed = None;
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(NlError::new(op(), rtnetlink::Error::NetlinkError(e)))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    let peer_index = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Link(i) => Some(*i),
                        _ => None,
                    });
                    let link = Link::from_message(link);
                    if link.name == host {
                        echoed = peer_index.map(|p| (link, p));
                    }
                }
                _ => {}
            }
        }
        Ok(echoed)
    }

    pub async fn set_hairpin(&self, index: u32, on: bool) -> NlResult<()> {
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(self.err(format!("set hairpin {on} on link #{index}")))
    }

    pub async fn set_promisc(&self, index: u32) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index).promiscuous(true).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(self.err(format!("set promisc on link #{index}")))
    }

    pub async fn set_up(&self, index: u32, name: &str) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(self.err(format!("set link {name} up")))
    }

    /// Renames a link and takes it down in one request (DEL's detach step).
    pub async fn rename_down(&self, index: u32, old: &str, new: &str) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index)
            .name(new.to_string())
            .down()
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(self.err(format!("rename link {old} to {new}")))
    }

    pub async fn delete_link(&self, index: u32, name: &str) -> NlResult<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(self.err(format!("delete link {name}")))
    }

    /// Adds `addr/prefix`; an address that is already there is fine.
    pub async fn ensure_address(&self, index: u32, net: Ipv4Network, name: &str) -> NlResult<()> {
        let r = self
            .handle
            .address()
            .add(index, IpAddr::V4(net.ip()), net.prefix())
            .execute()
            .await
            .map_err(self.err(format!("add address {net} to {name}")));
        match r {
            Err(e) if e.is(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// IPv4 addresses on the link.
    pub async fn addresses(&self, index: u32) -> NlResult<Vec<Ipv4Network>> {
        Ok(self
            .all_addresses()
            .await?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, net)| net)
            .collect())
    }

    /// Every IPv4 address in the namespace, with its link's index.
    pub async fn all_addresses(&self) -> NlResult<Vec<(u32, Ipv4Network)>> {
        let mut stream = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(self.err("list addresses".to_string()))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    if let Ok(net) = Ipv4Network::new(*ip, msg.header.prefix_len) {
                        out.push((msg.header.index, net));
                    }
                }
            }
        }
        Ok(out)
    }

    /// `ip route add DST via GW dev INDEX`; an identical route is fine.
    pub async fn ensure_route(&self, dst: Ipv4Network, gw: Ipv4Addr, index: u32) -> NlResult<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix())
            .gateway(gw)
            .output_interface(index)
            // What iproute2 and the reference plugins leave: "proto boot".
            .protocol(RouteProtocol::Boot)
            .build();
        let r = self
            .handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(self.err(format!("add route {dst} via {gw}")));
        match r {
            Err(e) if e.is(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// The IPv4 routes of the main table.
    pub async fn routes(&self) -> NlResult<Vec<Route>> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut stream = self.handle.route().get(msg).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(self.err("list routes".to_string()))?
        {
            if let Some(route) = route_of(&msg) {
                out.push(route);
            }
        }
        Ok(out)
    }
}

fn route_of(msg: &RouteMessage) -> Option<Route> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gw = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = Ipv4Network::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(Route { dst, gw, oif })
}

/// True when the link is a Linux bridge.
pub fn is_bridge(link: &Link) -> bool {
    matches!(link.kind, Some(InfoKind::Bridge))
}
