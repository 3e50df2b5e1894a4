//! What one peer needs in the kernel, and programming or removing it:
//! one peer, or many changes at once.
//!
//! Owns the peers' entries; it does not decide which peers exist (the
//! leases do) and does not dump the kernel (that is `reconcile`).

use std::collections::HashSet;
use std::fmt::Display;

use super::route::RouteSpec;
use super::write::Write;
use super::{Device, KernelCounts, Peer, Vxlan, VxlanError, VxlanFamily};

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
        let change = Change {
            old: old.cloned(),
            new: Some(peer.clone()),
        };
        let keep = self.fdb_keys(std::iter::once(peer));
        first_error(self.apply_changes(dev, &[change], &keep).await)
    }

    /// Removes `peer`'s entries: the route first (no traffic is sent
    /// towards a half-removed peer), then neighbour and FDB entry. Entries
    /// already gone are fine.
    pub async fn remove_peer(&self, dev: &Device, peer: &Peer<F>) -> Result<(), VxlanError> {
        let change = Change {
            old: Some(peer.clone()),
            new: None,
        };
        first_error(self.apply_changes(dev, &[change], &HashSet::new()).await)
    }

    /// The FDB entries (MAC, VTEP) `peers` need (direct peers need none).
    pub fn fdb_keys<'a>(
        &self,
        peers: impl IntoIterator<Item = &'a Peer<F>>,
    ) -> HashSet<([u8; 6], F::Addr)> {
        peers
            .into_iter()
            .filter(|p| !self.is_direct(p))
            .map(|p| (p.vtep_mac, p.public_ip))
            .collect()
    }

    /// What the device holds once `peers` are programmed: one neighbour
    /// and route per overlay peer, one FDB entry per distinct (MAC, VTEP),
    /// one route per direct peer.
    pub fn expected_counts<'a>(
        &self,
        peers: impl IntoIterator<Item = &'a Peer<F>>,
    ) -> KernelCounts {
        let peers: Vec<&Peer<F>> = peers.into_iter().collect();
        KernelCounts {
            neigh: peers.iter().filter(|p| !self.is_direct(p)).count(),
            fdb: self.fdb_keys(peers.iter().copied()).len(),
            route: peers.len(),
        }
    }

    /// Makes many peers' changes as one list of writes (many to a netlink
    /// datagram, see [`Vxlan::write_all`]): first every removed peer's
    /// entries (route, neighbour, FDB entry), then every new or changed
    /// peer's (neighbour, FDB entry, route; a direct peer's route, and its
    /// VXLAN entries removed), then the FDB entries changed peers no longer
    /// use. An FDB entry in `keep` (what the peers after the change need,
    /// see [`Vxlan::fdb_keys`]) is never deleted: another subnet of the
    /// same node may use it. Returns the writes that failed, as errors.
    pub async fn apply_changes(
        &self,
        dev: &Device,
        changes: &[Change<F>],
        keep: &HashSet<([u8; 6], F::Addr)>,
    ) -> Vec<VxlanError> {
        let mut removals = Vec::new();
        let mut sets = Vec::new();
        let mut cleanup = Vec::new();
        let del_fdb = |mac: [u8; 6], dst: F::Addr, into: &mut Vec<Write<F>>| {
            if !keep.contains(&(mac, dst)) {
                into.push(Write::DelFdb {
                    mac: mac.to_vec(),
                    dst: Some(dst),
                });
            }
        };
        for c in changes {
            match (&c.old, &c.new) {
                (None, None) => {}
                (Some(old), None) => match self.entries(dev, old) {
                    PeerEntries::Overlay {
                        neigh_ip,
                        mac,
                        vtep,
                        route,
                    } => {
                        removals.push(Write::DelRoute(route));
                        removals.push(Write::DelNeigh {
                            ip: neigh_ip,
                            mac: Some(mac.to_vec()),
                        });
                        del_fdb(mac, vtep, &mut removals);
                    }
                    PeerEntries::Direct { route } => removals.push(Write::DelRoute(route)),
                },
                (old, Some(peer)) => {
                    let moved = old
                        .as_ref()
                        .filter(|o| o.vtep_mac != peer.vtep_mac || o.public_ip != peer.public_ip);
                    match self.entries(dev, peer) {
                        PeerEntries::Overlay {
                            neigh_ip,
                            mac,
                            vtep,
                            route,
                        } => {
                            sets.push(Write::Neigh { ip: neigh_ip, mac });
                            sets.push(Write::Fdb { mac, dst: vtep });
                            sets.push(Write::Route(route));
                        }
                        PeerEntries::Direct { route } => {
                            // Replaces an overlay route to the same subnet
                            // in place.
                            sets.push(Write::Route(route));
                            sets.push(Write::DelNeigh {
                                ip: peer.gateway(),
                                mac: None,
                            });
                            del_fdb(peer.vtep_mac, peer.public_ip, &mut sets);
                        }
                    }
                    if let Some(old) = moved {
                        del_fdb(old.vtep_mac, old.public_ip, &mut cleanup);
                    }
                }
            }
        }
        let mut writes = removals;
        writes.append(&mut sets);
        writes.append(&mut cleanup);
        self.write_all(dev, &writes)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }
}

/// One subnet's peer before (`old`) and after (`new`) a change; `None`:
/// no peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<F: VxlanFamily> {
    pub old: Option<Peer<F>>,
    pub new: Option<Peer<F>>,
}

fn first_error(errors: Vec<VxlanError>) -> Result<(), VxlanError> {
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
