//! The VXLAN backend: the `flannel.<VNI>` (or `flannel-v6.<VNI>`) device
//! and, per peer, the
//! neighbour, FDB and route entries that carry traffic to it (or, with
//! DirectRouting and a peer on our L2 network, one direct route), kept true
//! to the leases by [`Vxlan::reconcile`].
//!
//! Netlink only: every method is one or a few rtnetlink requests on the
//! handle given to [`Vxlan::new`], i.e. in the network namespace that
//! handle's socket was opened in.
//!
//! One backend for both address families: every type and method is
//! generic over [`VxlanFamily`] (`Ipv4Network`, the default, or
//! `Ipv6Network`), which says only how the family looks in netlink.
//!
//! - `family.rs`: the per-family constants and address conversions.
//! - `device.rs`: create / adopt / replace the device, its address.
//! - `peer.rs`: what one peer needs, programming and removing it.
//! - `reconcile.rs`: dump, diff against the wanted set, repair.
//! - `write.rs`: lists of writes, many to a netlink datagram.
//! - `link.rs`, `neigh.rs`, `route.rs`: one typed method per kernel operation.
//!
//! Owns the backend's kernel state; it does not decide when to act
//! (the datapath and the daemon call it) and reads no lease store.

mod device;
mod error;
mod family;
mod link;
mod neigh;
mod peer;
mod reconcile;
mod route;
mod write;

#[cfg(test)]
pub(crate) mod tests;

use std::marker::PhantomData;

use ipnetwork::Ipv4Network;
use rtnetlink::Handle;

pub use error::VxlanError;
pub use family::VxlanFamily;
pub(crate) use link::{AddrRow, LinkState, Links};
pub use peer::Change;
pub(crate) use reconcile::Observed;

/// What `flannel.<VNI>` (`flannel-v6.<VNI>`) must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec<F: VxlanFamily = Ipv4Network> {
    pub vni: u32,
    /// UDP destination port (flannel: 8472; 0 = the kernel's default, 8472).
    pub port: u16,
    /// Our public IP: the source of the encapsulated packets.
    pub local: F::Addr,
    /// ifindex of the external interface.
    pub ext_index: u32,
    /// Interface MTU − [`VxlanFamily::OVERHEAD`] (50 for IPv4, 70 for
    /// IPv6); 0 leaves the kernel's choice.
    pub mtu: u32,
    /// The VtepMAC: the same across restarts (a changed one leaves stale
    /// entries on every peer).
    pub mac: [u8; 6],
    pub gbp: bool,
    pub learning: bool,
}

/// The device as it exists in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
}

/// One peer's lease, as the backend needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer<F: VxlanFamily = Ipv4Network> {
    pub subnet: F,
    pub public_ip: F::Addr,
    pub vtep_mac: [u8; 6],
}

impl<F: VxlanFamily> Peer<F> {
    /// The subnet's first address (`<subnet>.0`, `<subnet>::`): the peer's
    /// address on its VXLAN device, our gateway to its subnet and the IP
    /// of its neighbour entry.
    pub fn gateway(&self) -> F::Addr {
        self.subnet.base()
    }
}

/// What a reconcile changed, one human-readable entry per kernel object
/// ("fdb 0e:00:00:00:00:44 dst 192.168.64.3 on flannel.1"), for logs.
///
/// Two are equal when they made the same changes (`found` is left out).
#[derive(Debug, Clone, Default)]
pub struct Repairs {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Repairs that the kernel refused ("replace route ...: Network is
    /// unreachable"). The other repairs were still made; the next
    /// reconcile tries these again.
    pub failed: Vec<String>,
    /// The device's entries as found, before any change (for metrics).
    pub found: KernelCounts,
}

/// Entries on the device, by kind: permanent neighbours and FDB entries,
/// and the routes reconcile manages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounts {
    pub neigh: usize,
    pub fdb: usize,
    pub route: usize,
}

impl PartialEq for Repairs {
    fn eq(&self, other: &Self) -> bool {
        self.added == other.added && self.removed == other.removed && self.failed == other.failed
    }
}

impl Eq for Repairs {}

impl Repairs {
    /// Nothing differed and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }
}

/// Where the backend may route beyond `flannel.<VNI>`, and whether it
/// routes peers on our L2 network directly (Backend.DirectRouting).
///
/// [`Vxlan::with_routing`] reads it from the external interface (its name
/// and subnets of the family); [`Vxlan::routing`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing<F: VxlanFamily = Ipv4Network> {
    /// The flannel Network and SubnetLen: a route on the external
    /// interface is only ever ours when its destination is a
    /// SubnetLen-sized subnet of Network and it has a gateway.
    pub network: F,
    pub subnet_len: u8,
    pub ext_index: u32,
    /// For messages ("route 10.244.2.0/24 via 192.168.64.3 dev eth0").
    pub ext_name: String,
    /// Backend.DirectRouting.
    pub direct_routing: bool,
    /// The external interface's subnets of this family: a peer whose
    /// public IP is inside one of them is on our L2 network.
    pub ext_subnets: Vec<F>,
}

/// The VXLAN backend of family `F` on one rtnetlink connection.
pub struct Vxlan<F: VxlanFamily = Ipv4Network> {
    handle: Handle,
    /// The socket lists of writes go through (None if it could not be
    /// opened: then one request at a time on `handle`).
    writer: Option<write::Writer>,
    routing: Option<Routing<F>>,
    family: PhantomData<F>,
}

impl<F: VxlanFamily> Vxlan<F> {
    /// The backend with overlay routing only: every peer gets the three
    /// VXLAN entries and the external interface's routes are never touched.
    ///
    /// Also opens a second netlink socket for writing many entries at once,
    /// in the calling thread's network namespace, which must be the
    /// handle's; inside a tokio runtime.
    pub fn new(handle: Handle) -> Self {
        let writer = match write::Writer::open() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "open a netlink socket for batched writes: {e}; writing one entry at a time"
                );
                None
            }
        };
        Self {
            handle,
            writer,
            routing: None,
            family: PhantomData,
        }
    }

    /// Enables direct routing per `direct_routing`, and lets reconcile
    /// remove direct routes (on the external interface `ext_index`, to a
    /// `subnet_len`-sized subnet of `network`) that no peer explains, e.g.
    /// left over from running with DirectRouting before. Reads the external
    /// interface's name and subnets of this family.
    pub async fn with_routing(
        mut self,
        network: F,
        subnet_len: u8,
        ext_index: u32,
        direct_routing: bool,
    ) -> Result<Self, VxlanError> {
        let links = self.links();
        let ext = links
            .by_index(ext_index)
            .await?
            .ok_or_else(|| VxlanError::Unexpected {
                op: format!("look up external interface #{ext_index}"),
                reason: "no such interface".to_string(),
            })?;
        let ext_subnets = links
            .addresses::<F>(ext_index, &ext.name)
            .await?
            .into_iter()
            .filter_map(|(net, _)| F::new(net.base(), net.prefix()))
            .collect();
        self.routing = Some(Routing {
            network,
            subnet_len,
            ext_index,
            ext_name: ext.name,
            direct_routing,
            ext_subnets,
        });
        Ok(self)
    }

    /// What [`Vxlan::with_routing`] read, if it was called.
    pub fn routing(&self) -> Option<&Routing<F>> {
        self.routing.as_ref()
    }

    /// `flannel.<VNI>` / `flannel-v6.<VNI>`.
    pub fn device_name(vni: u32) -> String {
        F::device_name(vni)
    }

    /// True when `peer` is routed directly (DirectRouting on, its PublicIP
    /// inside one of the external interface's subnets) instead of through
    /// the VXLAN device.
    pub fn is_direct(&self, peer: &Peer<F>) -> bool {
        self.routing.as_ref().is_some_and(|r| {
            r.direct_routing
                && r.ext_subnets
                    .iter()
                    .any(|s| s.contains_addr(peer.public_ip))
        })
    }

    fn links(&self) -> link::Links<'_> {
        link::Links {
            handle: &self.handle,
        }
    }

    fn neighbours<'a>(&'a self, dev: &'a Device) -> neigh::Neighbours<'a, F> {
        neigh::Neighbours {
            handle: &self.handle,
            index: dev.index,
            name: &dev.name,
            family: PhantomData,
        }
    }

    fn routes(&self) -> route::Routes<'_, F> {
        route::Routes {
            handle: &self.handle,
            family: PhantomData,
        }
    }
}
