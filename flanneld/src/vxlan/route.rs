//! Routes of the main table, in one address family: the routes we want,
//! and dumping what is there (writing them is `write.rs`'s).
//!
//! Owns the route types and their dump only: it does not decide which
//! routes should exist (that is `peer` and `reconcile`).

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::error::VxlanError;
use super::VxlanFamily;

/// A route we want: `DST via GW dev OIF [onlink]`, main table, the
/// family's default metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteSpec<F: VxlanFamily> {
    pub dst: F,
    pub gw: F::Addr,
    pub oif: u32,
    /// The device's name, for messages.
    pub dev: String,
    pub onlink: bool,
}

/// Destination, gateway, device, onlink: hashable, for the resync's diff.
pub(crate) type RouteKey<F> = (
    F,
    Option<<F as crate::netconf::Family>::Addr>,
    Option<u32>,
    bool,
);

impl<F: VxlanFamily> RouteSpec<F> {
    pub fn key(&self) -> RouteKey<F> {
        (self.dst, Some(self.gw), Some(self.oif), self.onlink)
    }
}

impl<F: VxlanFamily> fmt::Display for RouteSpec<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {} via {} dev {}", self.dst, self.gw, self.dev)?;
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// A main-table unicast route of family `F` as dumped, with the message
/// that deletes exactly it.
#[derive(Debug, Clone)]
pub(crate) struct RouteEntry<F: VxlanFamily> {
    pub dst: F,
    pub gw: Option<F::Addr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    pub priority: u32,
    pub protocol: RouteProtocol,
    pub msg: RouteMessage,
}

impl<F: VxlanFamily> RouteEntry<F> {
    /// What identifies the route for the diff: destination, gateway,
    /// device, onlink.
    pub fn key(&self) -> RouteKey<F> {
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
        if self.priority != F::ROUTE_METRIC {
            s.push_str(&format!(" metric {}", self.priority));
        }
        s
    }
}

pub(crate) struct Routes<'a, F> {
    pub handle: &'a Handle,
    pub family: PhantomData<F>,
}

impl<F: VxlanFamily> Routes<'_, F> {
    /// The unicast routes of family `F` in the main table.
    pub async fn dump(&self) -> Result<Vec<RouteEntry<F>>, VxlanError> {
        let mut msg = RouteMessageBuilder::<IpAddr>::new().build();
        msg.header.address_family = F::AF;
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

fn entry_of<F: VxlanFamily>(msg: RouteMessage) -> Option<RouteEntry<F>> {
    if msg.header.address_family != F::AF || msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst = F::from_bits(0);
    let mut gw = None;
    let mut oif = None;
    let mut priority = 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = F::of_route_address(a)?,
            RouteAttribute::Gateway(a) => gw = Some(F::of_route_address(a)?),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = F::new(dst, msg.header.destination_prefix_length)?;
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
