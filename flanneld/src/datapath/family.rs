//! One address family's half of the datapath: its VXLAN device and the
//! peers of that family, written once for both families. Which part of a
//! lease is a peer of a family is [`LeaseFamily`]'s only per-family code
//! (the lease keeps IPv4 and IPv6 in different fields); everything else,
//! from programming a peer to recreating the device, is the same lines
//! for `flannel.<VNI>` and `flannel-v6.<VNI>`.
//!
//! Owns one family's device handle and its peer table. A lease that fails
//! the checks (subnet, underlay address, VtepMAC) is skipped and logged
//! here (`lease::skip`), never fatal. Kernel writes go through `vxlan`;
//! the other family's half is never touched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use rtnetlink::Handle;

use super::{underlay_unicast, DatapathError};
use crate::lease::{skip, Lease};
use crate::mac;
use crate::netconf::{FamilyConfig, NetConfig};
use crate::vxlan::{
    Change, Device, DeviceSpec, KernelCounts, Observed, Peer, Repairs, Vxlan, VxlanFamily,
};
use crate::watch_kernel::Deleted;

/// What identifies a lease across its events, whatever its families (its
/// store key: the IPv4 subnet, [`crate::lease::NO_IPV4`] when IPv6-only,
/// and the IPv6 subnet): a lease's peers of both families are replaced
/// together when it changes.
pub type LeaseId = crate::lease::LeaseKey;

/// The lease's identity.
pub fn lease_id(l: &Lease) -> LeaseId {
    l.id()
}

/// Where a family lives in a lease and in the configuration.
pub trait LeaseFamily: VxlanFamily {
    /// This family's part of the configuration, if enabled.
    fn config(config: &NetConfig) -> Option<FamilyConfig<Self>>;
    /// This family's subnet and public IP in `l`, if it has them.
    fn own(l: &Lease) -> Option<(Self, Self::Addr)>;
    /// `l`'s peer of this family: `Ok(None)` when it has no part of this
    /// family or is another backend's or VNI's, `Err` (the reason, for
    /// [`skip::skipped`]) when a part is malformed or untrusted.
    fn peer_of(
        l: &Lease,
        net: &FamilyConfig<Self>,
        vni: u32,
        store_chooses: bool,
        own_ip: Self::Addr,
    ) -> Result<Option<Peer<Self>>, String>;
}

impl LeaseFamily for Ipv4Network {
    fn config(config: &NetConfig) -> Option<FamilyConfig<Self>> {
        config.ipv4
    }

    fn own(l: &Lease) -> Option<(Self, Ipv4Addr)> {
        Some((l.subnet, l.attrs.public_ip))
    }

    /// Only subnets the store could have handed out are trusted (a stray
    /// `0.0.0.0-0` or the node LAN's subnet would otherwise become a route
    /// that replaces the default or the connected route), and only a
    /// public IP that can be a node's unicast underlay address gets a
    /// route, a neighbour and an FDB entry.
    fn peer_of(
        l: &Lease,
        net: &FamilyConfig<Self>,
        vni: u32,
        store_chooses: bool,
        own_ip: Ipv4Addr,
    ) -> Result<Option<Peer<Self>>, String> {
        // An IPv6-only lease has no IPv4 part.
        if l.ipv4().is_none() && l.ipv6_subnet.is_some() {
            return Ok(None);
        }
        let trusted = if store_chooses {
            net.is_leasable(l.subnet)
        } else {
            net.contains(l.subnet)
        };
        if !trusted {
            return Err(format!(
                "outside {} (SubnetLen {}, SubnetMin..SubnetMax)",
                net.network, net.subnet_len
            ));
        }
        underlay_unicast(l.attrs.public_ip, own_ip)
            .map_err(|reason| format!("PublicIP {} {reason}", l.attrs.public_ip))?;
        let Some(data) = l.attrs.vxlan_data() else {
            return Ok(None);
        };
        if data.vni != vni {
            tracing::debug!(subnet = %l.subnet, "ignoring lease with VNI {}", data.vni);
            return Ok(None);
        }
        let vtep_mac = mac::parse(&data.vtep_mac)
            .ok_or_else(|| format!("malformed VtepMAC {:?}", data.vtep_mac))?;
        Ok(Some(Peer {
            subnet: l.subnet,
            public_ip: l.attrs.public_ip,
            vtep_mac,
        }))
    }
}

impl LeaseFamily for Ipv6Network {
    fn config(config: &NetConfig) -> Option<FamilyConfig<Self>> {
        config.ipv6
    }

    fn own(l: &Lease) -> Option<(Self, Ipv6Addr)> {
        Some((l.ipv6_subnet?, l.attrs.public_ipv6?))
    }

    fn peer_of(
        l: &Lease,
        net: &FamilyConfig<Self>,
        vni: u32,
        store_chooses: bool,
        own_ip: Ipv6Addr,
    ) -> Result<Option<Peer<Self>>, String> {
        let p = crate::lease::v6::v6_peer(l, net, vni, store_chooses).map_err(|e| e.to_string());
        let Some(p) = p? else {
            return Ok(None);
        };
        if p.public_ip == own_ip {
            return Err(format!(
                "PublicIPv6 {} is this node's own address",
                p.public_ip
            ));
        }
        Ok(Some(Peer {
            subnet: p.subnet,
            public_ip: p.public_ip,
            vtep_mac: p.vtep_mac,
        }))
    }
}

/// One family's device and peers.
pub(super) struct FamilyPath<F: LeaseFamily> {
    vx: Vxlan<F>,
    spec: DeviceSpec<F>,
    pub dev: Device,
    net: FamilyConfig<F>,
    /// Our subnet and public IP of this family, once acquired.
    own: Option<(F, F::Addr)>,
    pub peers: BTreeMap<F, Peer<F>>,
    /// Which lease each peer came from: a lease whose subnet of this
    /// family changed (or went) takes its old peer with it.
    by_lease: HashMap<LeaseId, F>,
    /// How many leases hold each subnet of `by_lease`.
    holders: HashMap<F, usize>,
    /// How many overlay peers need each FDB entry (VtepMAC, public IP):
    /// a deletion notice is checked against it in constant time.
    fdb_refs: HashMap<([u8; 6], F::Addr), usize>,
    /// The kernel as dumped when the first listing's programming began
    /// (until it is complete).
    observed: Option<Observed<F>>,
}

impl<F: LeaseFamily> FamilyPath<F> {
    /// Creates or adopts the device for `spec`.
    pub async fn create(
        handle: Handle,
        net: FamilyConfig<F>,
        spec: DeviceSpec<F>,
        direct_routing: bool,
    ) -> Result<Self, DatapathError> {
        // Which peers share our L2 segment (DirectRouting), and which
        // routes on the external interface are ours to keep true.
        let vx = Vxlan::<F>::new(handle)
            .with_routing(net.network, net.subnet_len, spec.ext_index, direct_routing)
            .await?;
        let dev = vx.ensure_device(&spec).await?;
        tracing::info!(
            device = %dev.name, mac = %mac::format(&dev.mac), local = %spec.local, mtu = spec.mtu,
            "VXLAN device ready"
        );
        Ok(FamilyPath {
            vx,
            spec,
            dev,
            net,
            own: None,
            peers: BTreeMap::new(),
            by_lease: HashMap::new(),
            holders: HashMap::new(),
            fdb_refs: HashMap::new(),
            observed: None,
        })
    }

    /// Takes our lease: its address of this family goes on the device.
    pub async fn adopt(&mut self, lease: &Lease) -> Result<(), DatapathError> {
        let (subnet, ip) = F::own(lease).ok_or_else(|| DatapathError::OwnLeaseIncomplete {
            lease: lease.key(),
            family: F::NAME,
        })?;
        self.own = Some((subnet, ip));
        self.vx
            .ensure_address(&self.dev, subnet.base(), self.net.network)
            .await?;
        Ok(())
    }

    /// `l` as a peer of this family (None: not one; a malformed part is
    /// logged as skipped).
    pub fn peer_of(&self, l: &Lease, vni: u32, store_chooses: bool) -> Option<Peer<F>> {
        let (_, own_ip) = self.own?;
        match F::peer_of(l, &self.net, vni, store_chooses, own_ip) {
            Ok(p) => p,
            Err(reason) => {
                skip::skipped(&format!("lease {} ({})", l.key(), F::NAME), &reason);
                None
            }
        }
    }

    /// A page of the watch's first listing: its peers join the set, and
    /// what they need and the kernel lacks is written. Nothing is removed
    /// before the listing is complete ([`Self::finish_listing`]): a later
    /// page may explain it. The kernel is dumped once, at the first page.
    pub async fn program_page(
        &mut self,
        peers: Vec<(LeaseId, Peer<F>)>,
    ) -> Result<Repairs, DatapathError> {
        // The peers first: should the kernel not answer (the device gone),
        // the next device check and resync still program them.
        let mut page = Vec::with_capacity(peers.len());
        for (id, p) in peers {
            self.hold(id, p.subnet);
            self.insert_peer(p.clone());
            page.push(p);
        }
        let mut repairs = Repairs::default();
        if self.observed.is_none() {
            let observed = self.vx.observe(&self.dev, &mut repairs).await;
            self.observed = Some(observed.map_err(|e| self.resync_error(e))?);
        }
        if let Some(observed) = self.observed.as_ref() {
            let added = self.vx.add_missing(&self.dev, observed, &page).await;
            super::merge(&mut repairs, added);
        }
        Ok(repairs)
    }

    /// The first listing broke off and starts again: its peers so far are
    /// forgotten, and the kernel is dumped again at the next page, so what
    /// was written for them goes at the end unless a lease explains it.
    pub fn restart_listing(&mut self) {
        self.peers.clear();
        self.fdb_refs.clear();
        self.by_lease.clear();
        self.holders.clear();
        self.observed = None;
    }

    /// The first listing is complete: what the kernel held of ours before
    /// it and no peer explains is removed.
    pub async fn finish_listing(&mut self) -> Result<Repairs, DatapathError> {
        let mut repairs = Repairs::default();
        let observed = match self.observed.take() {
            Some(o) => o,
            None => {
                let observed = self.vx.observe(&self.dev, &mut repairs).await;
                observed.map_err(|e| self.resync_error(e))?
            }
        };
        let wanted: Vec<Peer<F>> = self.peers.values().cloned().collect();
        let removed = self
            .vx
            .remove_unexplained(&self.dev, &observed, &wanted)
            .await;
        super::merge(&mut repairs, removed);
        Ok(repairs)
    }

    fn resync_error(&self, source: crate::vxlan::VxlanError) -> DatapathError {
        DatapathError::Resync {
            device: self.dev.name.clone(),
            source,
        }
    }

    /// What the device holds once every peer is programmed: one neighbour
    /// and route per overlay peer, one FDB entry per distinct (MAC, VTEP),
    /// one route per direct peer. Keeps the `kernel_entries` gauges true
    /// between resyncs, which count what the kernel really holds.
    pub fn expected_counts(&self) -> KernelCounts {
        self.vx.expected_counts(self.peers.values())
    }

    /// Many leases' new peers of this family, in the order the events came:
    /// the peer set follows each in turn, then the kernel is brought from
    /// the peers before to the peers after in one list of writes (see
    /// [`crate::vxlan::Vxlan::apply_changes`]). A subnet removed and added
    /// again by the batch is written once, as its final peer, or not at all
    /// when that is what was programmed. Returns how many subnets changed.
    pub async fn update_many(&mut self, updates: Vec<(LeaseId, Option<Peer<F>>)>) -> usize {
        // Each touched subnet's peer before the batch.
        let mut before: BTreeMap<F, Option<Peer<F>>> = BTreeMap::new();
        for (id, peer) in updates {
            let old = self.by_lease.get(&id).copied();
            if let Some(old) = old.filter(|s| peer.as_ref().map(|p| p.subnet) != Some(*s)) {
                self.unhold(id);
                // Another lease may hold this subnet now (the same node under
                // a new key: its other family's subnet changed).
                if !self.holders.contains_key(&old) {
                    let was = self.remove_peer(old);
                    before.entry(old).or_insert(was);
                }
            }
            if let Some(p) = peer {
                self.hold(id, p.subnet);
                let was = self.insert_peer(p.clone());
                before.entry(p.subnet).or_insert(was);
            }
        }
        let changes: Vec<Change<F>> = before
            .into_iter()
            .filter_map(|(subnet, old)| {
                let new = self.peers.get(&subnet).cloned();
                (old != new).then_some(Change { old, new })
            })
            .collect();
        if changes.is_empty() {
            return 0;
        }
        // What the peers still need is only asked when something may be
        // deleted: a peer gone, or one whose MAC or VTEP moved.
        let deletes = changes.iter().any(|c| match (&c.old, &c.new) {
            (Some(o), Some(n)) => o.vtep_mac != n.vtep_mac || o.public_ip != n.public_ip,
            (Some(_), None) => true,
            (None, _) => false,
        });
        let keep = if deletes {
            self.vx.fdb_keys(self.peers.values())
        } else {
            HashSet::new()
        };
        let failed = self.vx.apply_changes(&self.dev, &changes, &keep).await;
        for c in &changes {
            match (&c.old, &c.new) {
                (_, Some(p)) => {
                    tracing::info!(subnet = %p.subnet, public_ip = %p.public_ip, vtep = %mac::format(&p.vtep_mac), "peer programmed")
                }
                (Some(old), None) => tracing::info!(subnet = %old.subnet, "peer removed"),
                (None, None) => {}
            }
        }
        for e in &failed {
            tracing::warn!("update peers: {e} (resync will retry)");
        }
        changes.len()
    }

    /// `p` as the peer of its subnet; the peer it replaces.
    fn insert_peer(&mut self, p: Peer<F>) -> Option<Peer<F>> {
        if !self.vx.is_direct(&p) {
            *self.fdb_refs.entry((p.vtep_mac, p.public_ip)).or_default() += 1;
        }
        let was = self.peers.insert(p.subnet, p);
        if let Some(old) = &was {
            self.unref_fdb(old);
        }
        was
    }

    /// The peer of `subnet` is gone; what it was.
    fn remove_peer(&mut self, subnet: F) -> Option<Peer<F>> {
        let was = self.peers.remove(&subnet);
        if let Some(old) = &was {
            self.unref_fdb(old);
        }
        was
    }

    fn unref_fdb(&mut self, p: &Peer<F>) {
        if self.vx.is_direct(p) {
            return;
        }
        let key = (p.vtep_mac, p.public_ip);
        if let Some(n) = self.fdb_refs.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.fdb_refs.remove(&key);
            }
        }
    }

    /// Lease `id` holds `subnet` (and no other of this family).
    fn hold(&mut self, id: LeaseId, subnet: F) {
        if let Some(old) = self.by_lease.insert(id, subnet) {
            self.release(old);
        }
        *self.holders.entry(subnet).or_default() += 1;
    }

    /// Lease `id` holds no subnet of this family.
    fn unhold(&mut self, id: LeaseId) {
        if let Some(old) = self.by_lease.remove(&id) {
            self.release(old);
        }
    }

    fn release(&mut self, subnet: F) {
        if let Some(n) = self.holders.get_mut(&subnet) {
            *n -= 1;
            if *n == 0 {
                self.holders.remove(&subnet);
            }
        }
    }

    /// Recreates the device if someone deleted or replaced it (the next
    /// resync replays every peer).
    pub async fn check_device(&mut self) {
        match self.vx.find_device(self.spec.vni).await {
            Ok(Some(found)) if found.index == self.dev.index => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("look for {}: {e}", self.dev.name);
                return;
            }
        }
        tracing::warn!(
            "{} was deleted or replaced: recreating it with {} peers",
            self.dev.name,
            self.peers.len()
        );
        match self.vx.ensure_device(&self.spec).await {
            Ok(new) => {
                if let Some((own, _)) = self.own {
                    let network = self.net.network;
                    if let Err(e) = self.vx.ensure_address(&new, own.base(), network).await {
                        tracing::warn!("{e}");
                    }
                }
                self.dev = new;
            }
            Err(e) => tracing::error!("recreate {}: {e}", self.dev.name),
        }
    }

    /// Whether a peer of this family needs what the kernel said it
    /// deleted (a link or an entry that did not parse: always).
    pub fn wants(&self, gone: &Deleted) -> bool {
        let overlay = |p: &&Peer<F>| !self.vx.is_direct(p);
        match gone {
            Deleted::Link | Deleted::Unknown => true,
            Deleted::Route { dst, prefix } => F::from_ip(*dst)
                .and_then(|a| F::new(a, *prefix))
                .is_some_and(|s| self.peers.contains_key(&s)),
            Deleted::Neigh { ip } => F::from_ip(*ip).is_some_and(|a| {
                F::new(a, self.net.subnet_len)
                    .and_then(|s| self.peers.get(&s))
                    .filter(overlay)
                    .is_some_and(|p| p.gateway() == a)
            }),
            Deleted::Fdb { mac, dst } => {
                let Ok(mac) = <[u8; 6]>::try_from(mac.as_slice()) else {
                    return false;
                };
                match dst.map(F::from_ip) {
                    Some(Some(dst)) => self.fdb_refs.contains_key(&(mac, dst)),
                    Some(None) => false,
                    // No destination (never one of ours): any entry of the MAC.
                    None => self.fdb_refs.keys().any(|(m, _)| *m == mac),
                }
            }
        }
    }

    /// Diffs the kernel against the peers and fixes it.
    pub async fn reconcile(&self) -> Result<Repairs, DatapathError> {
        let wanted: Vec<Peer<F>> = self.peers.values().cloned().collect();
        self.vx
            .reconcile(&self.dev, &wanted)
            .await
            .map_err(|e| self.resync_error(e))
    }
}
