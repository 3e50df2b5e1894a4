//! IPv4 routes of the main table: one typed method per kernel operation.

use std::fmt;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::error::{ok_if_missing, VxlanError};

/// A route we want: `DST via GW dev OIF [onlink]`, main table, metric 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteSpec {
    pub dst: Ipv4Network,
    pub gw: Ipv4Addr,
    pub oif: u32,
    /// The device's name, for messages.
    pub dev: String,
    pub onlink: bool,
}

/// Destination, gateway, device, onlink: hashable, for the resync's diff.
pub(crate) type RouteKey = (Ipv4Network, Option<Ipv4Addr>, Option<u32>, bool);

impl RouteSpec {
    pub fn key(&self) -> RouteKey {
        (self.dst, Some(self.gw), Some(self.oif), self.onlink)
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {} via {} dev {}", self.dst, self.gw, self.dev)?;
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// A main-table IPv4 unicast route as dumped, with the message that
/// deletes exactly it.
#[derive(Debug, Clone)]
pub(crate) struct RouteEntry {
    pub dst: Ipv4Network,
    pub gw: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    pub priority: u32,
    pub protocol: RouteProtocol,
    pub msg: RouteMessage,
}

impl RouteEntry {
    /// What identifies the route for the diff: destination, gateway,
    /// device, onlink.
    pub fn key(&self) -> RouteKey {
        (self.dst, self.gw, self.oif, self.onlink)
    }

    /// For messages: "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1".
    pub fn describe(&self, dev: &str) -> String {
        let mut s = format!("route {}", self.dst);
        if let Some(gw) = self.gw {
            s.push_str(&format!(" via {gw}"));
        }
        s.push_str(&format!(" dev {dev}"));
        if self.onlink {
            s.push_str(" onlink");
        }
        if self.priority != 0 {
            s.push_str(&format!(" metric {}", self.priority));
        }
        s
    }
}

pub(crate) struct Routes<'a> {
    pub handle: &'a Handle,
}

impl Routes<'_> {
    /// `ip route replace DST via GW dev OIF [onlink]` ("proto boot", as
    /// iproute2 and flannel leave it).
    pub async fn replace(&self, spec: &RouteSpec) -> Result<(), VxlanError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(spec.dst.network(), spec.dst.prefix())
            .gateway(spec.gw)
            .output_interface(spec.oif)
            .protocol(RouteProtocol::Boot);
        if spec.onlink {
            b = b.onlink();
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(|e| VxlanError::netlink(format!("replace {spec}"), e))
    }

    /// `ip route del DST via GW dev OIF`; a route already gone is fine.
    /// Protocol unspecified and scope "nowhere" as iproute2 sends them: the
    /// kernel only matches the fields that are set.
    pub async fn delete(&self, spec: &RouteSpec) -> Result<(), VxlanError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(spec.dst.network(), spec.dst.prefix())
            .gateway(spec.gw)
            .output_interface(spec.oif)
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere)
            .build();
        ok_if_missing(
            self.handle
                .route()
                .del(msg)
                .execute()
                .await
                .map_err(|e| VxlanError::netlink(format!("delete {spec}"), e)),
        )
    }

    /// Deletes a route exactly as dumped; one already gone is fine.
    pub async fn delete_entry(&self, entry: &RouteEntry, dev: &str) -> Result<(), VxlanError> {
        ok_if_missing(
            self.handle
                .route()
                .del(entry.msg.clone())
                .execute()
                .await
                .map_err(|e| VxlanError::netlink(format!("delete {}", entry.describe(dev)), e)),
        )
    }

    /// The IPv4 unicast routes of the main table.
    pub async fn dump(&self) -> Result<Vec<RouteEntry>, VxlanError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut stream = self.handle.route().get(msg).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| VxlanError::netlink("list routes".to_string(), e))?
        {
            if let Some(entry) = entry_of(msg) {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

fn entry_of(msg: RouteMessage) -> Option<RouteEntry> {
    if msg.header.address_family != AddressFamily::Inet || msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gw = None;
    let mut oif = None;
    let mut priority = 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = Ipv4Network::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(RouteEntry {
        dst,
        gw,
        oif,
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
        priority,
        protocol: msg.header.protocol,
        msg,
    })
}
