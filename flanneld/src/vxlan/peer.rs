//! What one peer needs in the kernel, and programming or removing it.
//!
//! Owns one peer's entries; it does not decide which peers exist (the
//! leases do) and does not dump the kernel (that is `reconcile`).

use std::fmt::Display;

use super::route::RouteSpec;
use super::{Device, Peer, Vxlan, VxlanError, VxlanFamily};

/// The kernel entries one peer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerEntries<F: VxlanFamily> {
    /// Through the VXLAN device: neighbour `<subnet>.0 lladdr MAC`, FDB
    /// `MAC dst PublicIP`, route `<subnet> via <subnet>.0 dev flannel onlink`.
    Overlay {
        neigh_ip: F::Addr,
        mac: [u8; 6],
        vtep: F::Addr,
        route: RouteSpec<F>,
    },
    /// DirectRouting on the same L2: `<subnet> via PublicIP dev <ext>`.
    Direct { route: RouteSpec<F> },
}

impl<F: VxlanFamily> PeerEntries<F> {
    pub fn route(&self) -> &RouteSpec<F> {
        match self {
            PeerEntries::Overlay { route, .. } | PeerEntries::Direct { route } => route,
        }
    }
}

/// "neighbour 10.244.2.0 lladdr 0e:..:44 on flannel.1"
pub(crate) fn describe_neigh(ip: impl Display, mac: Option<&[u8]>, dev: &str) -> String {
    match mac {
        Some(mac) => format!(
            "neighbour {ip} lladdr {} on {dev}",
            common::mac::format(mac)
        ),
        None => format!("neighbour {ip} on {dev}"),
    }
}

/// "fdb 0e:..:44 dst 192.168.64.3 on flannel.1"
pub(crate) fn describe_fdb<A: Display>(mac: &[u8], dst: Option<A>, dev: &str) -> String {
    match dst {
        Some(dst) => format!("fdb {} dst {dst} on {dev}", common::mac::format(mac)),
        None => format!("fdb {} on {dev}", common::mac::format(mac)),
    }
}

impl<F: VxlanFamily> Vxlan<F> {
    /// The entries `peer` needs, given our routing configuration.
    pub(crate) fn entries(&self, dev: &Device, peer: &Peer<F>) -> PeerEntries<F> {
        match self.routing.as_ref() {
            Some(r) if self.is_direct(peer) => PeerEntries::Direct {
                route: RouteSpec {
                    dst: peer.subnet,
                    gw: peer.public_ip,
                    oif: r.ext_index,
                    dev: r.ext_name.clone(),
                    onlink: false,
                },
            },
            _ => PeerEntries::Overlay {
                neigh_ip: peer.gateway(),
                mac: peer.vtep_mac,
                vtep: peer.public_ip,
                route: RouteSpec {
                    dst: peer.subnet,
                    gw: peer.gateway(),
                    oif: dev.index,
                    dev: dev.name.clone(),
                    onlink: true,
                },
            },
        }
    }

    /// Programs `peer` with replace semantics: neighbour, FDB entry, then
    /// the route (so the route never points at a missing neighbour); or,
    /// for a direct peer, only its direct route (and any VXLAN entries it
    /// had before are removed). `old` is what was programmed for this
    /// subnet before: its FDB entry goes when the MAC or IP changed.
    pub async fn set_peer(
        &self,
        dev: &Device,
        peer: &Peer<F>,
        old: Option<&Peer<F>>,
    ) -> Result<(), VxlanError> {
        let nb = self.neighbours(dev);
        match self.entries(dev, peer) {
            PeerEntries::Overlay {
                neigh_ip,
                mac,
                vtep,
                route,
            } => {
                nb.replace(neigh_ip, mac).await?;
                nb.fdb_replace(mac, vtep).await?;
                self.routes().replace(&route).await?;
                if let Some(old) = old {
                    if old.vtep_mac != peer.vtep_mac || old.public_ip != peer.public_ip {
                        nb.fdb_delete(&old.vtep_mac, Some(old.public_ip)).await?;
                    }
                }
            }
            PeerEntries::Direct { route } => {
                // Replaces an overlay route to the same subnet in place.
                self.routes().replace(&route).await?;
                nb.delete(peer.gateway()).await?;
                nb.fdb_delete(&peer.vtep_mac, Some(peer.public_ip)).await?;
                if let Some(old) = old.filter(|old| *old != peer) {
                    nb.fdb_delete(&old.vtep_mac, Some(old.public_ip)).await?;
                }
            }
        }
        Ok(())
    }

    /// Removes `peer`'s entries: the route first (no traffic is sent
    /// towards a half-removed peer), then neighbour and FDB entry. Entries
    /// already gone are fine.
    pub async fn remove_peer(&self, dev: &Device, peer: &Peer<F>) -> Result<(), VxlanError> {
        let nb = self.neighbours(dev);
        match self.entries(dev, peer) {
            PeerEntries::Overlay {
                neigh_ip,
                mac,
                vtep,
                route,
            } => {
                self.routes().delete(&route).await?;
                nb.delete(neigh_ip).await?;
                nb.fdb_delete(&mac, Some(vtep)).await?;
            }
            PeerEntries::Direct { route } => {
                self.routes().delete(&route).await?;
            }
        }
        Ok(())
    }
}
