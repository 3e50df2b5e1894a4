//! The node's datapath: the `flannel.<VNI>` device and, for every peer
//! lease, its neighbour, FDB and route entries. One method per event the
//! daemon's loop receives: a lease event, a device check, a resync.
//!
//! Owns the device and the set of peers; decides which leases are peers
//! (nothing from outside reaches the kernel unchecked) and writes through
//! `vxlan`. It does not talk to the lease store, nor decide when to act:
//! that is the daemon's loop.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use ipnetwork::Ipv4Network;
use rtnetlink::Handle;

use crate::lease::{skip, Lease, LeaseEvent};
use crate::mac;
use crate::metrics::Metrics;
use crate::netconf::{FamilyConfig, NetConfig};
use crate::vxlan::{Device, DeviceSpec, Peer, Repairs, Vxlan};

/// What a lease event asks of the daemon beyond the datapath.
#[derive(Debug, PartialEq, Eq)]
pub enum Follow {
    Nothing,
    /// Our own lease vanished from the store: renew it now.
    RenewNow,
}

pub struct Datapath {
    vx: Vxlan,
    spec: DeviceSpec,
    dev: Device,
    config: NetConfig,
    /// The IPv4 part of `config` (this datapath is IPv4's; the daemon
    /// refuses IPv6 until flannel-v6.<VNI> exists).
    v4: FamilyConfig<Ipv4Network>,
    /// Whether the store chose the subnets (file, etcd) or was handed them
    /// (kube): which peer subnets are trusted.
    store_chooses: bool,
    /// Our lease's subnet and public IP, once acquired.
    own: Option<(Ipv4Network, Ipv4Addr)>,
    peers: BTreeMap<Ipv4Network, Peer>,
    metrics: Arc<Metrics>,
}

impl Datapath {
    /// Creates or adopts the device for `spec` (before any lease: its MAC
    /// goes into the lease).
    pub async fn create(
        handle: Handle,
        config: NetConfig,
        spec: DeviceSpec,
        store_chooses: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Datapath, String> {
        let v4 = *config.v4()?;
        let vx = Vxlan::new(handle);
        // Which peers share our L2 segment (DirectRouting), and which
        // routes on the external interface are ours to keep true.
        let routing = vx
            .routing(
                v4.network,
                v4.subnet_len,
                spec.ext_index,
                config.backend.direct_routing,
            )
            .await
            .map_err(|e| e.to_string())?;
        let vx = vx.with_routing(routing);
        let dev = vx.ensure_device(&spec).await.map_err(|e| e.to_string())?;
        tracing::info!(
            device = %dev.name, mac = %mac::format(&dev.mac), local = %spec.local, mtu = spec.mtu,
            "VXLAN device ready"
        );
        Ok(Datapath {
            vx,
            spec,
            dev,
            config,
            v4,
            store_chooses,
            own: None,
            peers: BTreeMap::new(),
            metrics,
        })
    }

    /// Takes our lease: its address goes on the device.
    pub async fn adopt(&mut self, lease: &Lease) -> Result<(), String> {
        self.own = Some((lease.subnet, lease.attrs.public_ip));
        self.vx
            .ensure_address(&self.dev, lease.subnet.network(), self.v4.network)
            .await
            .map_err(|e| e.to_string())
    }

    /// Programs every peer of `snapshot` (the watch's first listing), and
    /// removes what no lease explains.
    pub async fn program(&mut self, snapshot: &[Lease]) {
        self.peers = snapshot
            .iter()
            .filter_map(|l| self.peer_of(l))
            .map(|p| (p.subnet, p))
            .collect();
        self.resync("start-up").await;
    }

    pub fn index(&self) -> u32 {
        self.dev.index
    }

    /// One change seen by the lease watch.
    pub async fn on_lease_event(&mut self, ev: LeaseEvent) -> Result<Follow, String> {
        let Some((own, own_ip)) = self.own else {
            return Ok(Follow::Nothing);
        };
        match ev {
            LeaseEvent::Added(l) if l.subnet == own => {
                if l.attrs.public_ip != own_ip {
                    return Err(format!(
                        "lease for {own} was taken over by {}: exiting so this node stops serving a subnet it no longer owns",
                        l.attrs.public_ip
                    ));
                }
            }
            LeaseEvent::Removed(l) if l.subnet == own => {
                tracing::warn!("our lease for {own} disappeared; renewing it at once");
                return Ok(Follow::RenewNow);
            }
            LeaseEvent::Added(l) => match self.peer_of(&l) {
                Some(p) => self.set_peer(p).await,
                // Not (or no longer) a usable vxlan peer.
                None => self.remove_peer(l.subnet).await,
            },
            LeaseEvent::Removed(l) => self.remove_peer(l.subnet).await,
        }
        Ok(Follow::Nothing)
    }

    async fn set_peer(&mut self, p: Peer) {
        let started = Instant::now();
        let old = self.peers.get(&p.subnet).cloned();
        if old.as_ref() == Some(&p) {
            return;
        }
        match self.vx.set_peer(&self.dev, &p, old.as_ref()).await {
            Ok(()) => {
                self.metrics.observe_latency("lease", started.elapsed());
                tracing::info!(subnet = %p.subnet, public_ip = %p.public_ip, vtep = %mac::format(&p.vtep_mac), "peer programmed")
            }
            Err(e) => tracing::warn!("program peer {}: {e} (resync will retry)", p.subnet),
        }
        self.peers.insert(p.subnet, p);
        self.metrics.peers.set(gauge(self.peers.len()));
    }

    async fn remove_peer(&mut self, subnet: Ipv4Network) {
        let started = Instant::now();
        let Some(old) = self.peers.remove(&subnet) else {
            return;
        };
        self.metrics.peers.set(gauge(self.peers.len()));
        match self.vx.remove_peer(&self.dev, &old).await {
            Ok(()) => {
                self.metrics.observe_latency("lease", started.elapsed());
                tracing::info!(subnet = %old.subnet, "peer removed")
            }
            Err(e) => tracing::warn!("remove peer {}: {e} (resync will retry)", old.subnet),
        }
    }

    /// Recreates the device (and replays every peer at the next resync) if
    /// someone deleted or replaced it.
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
                    let network = self.v4.network;
                    if let Err(e) = self.vx.ensure_address(&new, own.network(), network).await {
                        tracing::warn!("{e}");
                    }
                }
                self.dev = new;
            }
            Err(e) => tracing::error!("recreate {}: {e}", self.dev.name),
        }
    }

    /// Diffs the kernel against the peers and fixes it. At start-up what
    /// it adds is the normal programming of peers, summed up in one line;
    /// later it is a repair, and each entry is named. Returns how many
    /// entries it restored or removed.
    pub async fn resync(&self, why: &str) -> usize {
        let started = Instant::now();
        let wanted: Vec<Peer> = self.peers.values().cloned().collect();
        let start_up = why == "start-up";
        let result = self.vx.reconcile(&self.dev, &wanted).await;
        self.metrics.resyncs.inc();
        self.metrics
            .resync_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.peers.set(gauge(self.peers.len()));
        match result {
            Ok(r) => {
                self.count(&r, start_up);
                for entry in &r.added {
                    if start_up {
                        tracing::debug!("programmed {entry}");
                    } else {
                        tracing::warn!("{why} resync: restored {entry}");
                    }
                }
                if start_up {
                    tracing::info!(
                        "start-up: {} peers; programmed {}",
                        wanted.len(),
                        by_kind(&r.added)
                    );
                }
                for entry in &r.removed {
                    tracing::warn!("{why} resync: removed {entry} (no lease explains it)");
                }
                for entry in &r.failed {
                    tracing::error!("{why} resync: could not repair {entry}");
                }
                r.added.len() + r.removed.len()
            }
            Err(e) => {
                tracing::warn!("{why} resync of {}: {e}", self.dev.name);
                0
            }
        }
    }

    /// Metrics of one reconcile: repairs (not at start-up, where additions
    /// are the normal programming), stale removals, and what the device
    /// holds now.
    fn count(&self, r: &Repairs, start_up: bool) {
        let m = &self.metrics;
        let mut now = HashMap::from([
            ("neigh", r.found.neigh as i64),
            ("fdb", r.found.fdb as i64),
            ("route", r.found.route as i64),
        ]);
        for entry in &r.added {
            let kind = kind_of(entry);
            if !start_up {
                m.repaired.get_or_create(&Metrics::kind(kind)).inc();
            }
            if let Some(n) = now.get_mut(kind) {
                *n += 1;
            }
        }
        for entry in &r.removed {
            let kind = kind_of(entry);
            m.stale_removed.get_or_create(&Metrics::kind(kind)).inc();
            if let Some(n) = now.get_mut(kind) {
                *n -= 1;
            }
        }
        for (kind, n) in now {
            m.kernel_entries
                .get_or_create(&Metrics::kind(kind))
                .set(n.max(0));
        }
    }

    /// A lease as a VXLAN peer, unless it is ours, another backend's, or
    /// malformed. Only subnets the store could have handed out are trusted
    /// (a stray `0.0.0.0-0` or the node LAN's subnet would otherwise become
    /// a route that replaces the default or the connected route), and only
    /// a public IP that can be a node's unicast underlay address gets a
    /// route, a neighbour and an FDB entry.
    fn peer_of(&self, l: &Lease) -> Option<Peer> {
        let (own, own_ip) = self.own?;
        if l.subnet == own {
            return None;
        }
        let what = format!("lease {}", l.subnet);
        let net = &self.v4;
        let trusted = if self.store_chooses {
            net.is_leasable(l.subnet)
        } else {
            net.contains(l.subnet)
        };
        if !trusted {
            let reason = format!(
                "outside {} (SubnetLen {}, SubnetMin..SubnetMax)",
                net.network, net.subnet_len
            );
            skip::skipped(&what, &reason);
            return None;
        }
        if let Err(reason) = underlay_unicast(l.attrs.public_ip, own_ip) {
            let reason = format!("PublicIP {} {reason}", l.attrs.public_ip);
            skip::skipped(&what, &reason);
            return None;
        }
        let data = l.attrs.vxlan_data()?;
        if data.vni != self.config.backend.vni {
            tracing::debug!(subnet = %l.subnet, "ignoring lease with VNI {}", data.vni);
            return None;
        }
        let Some(vtep_mac) = mac::parse(&data.vtep_mac) else {
            skip::skipped(&what, &format!("malformed VtepMAC {:?}", data.vtep_mac));
            return None;
        };
        Some(Peer {
            subnet: l.subnet,
            public_ip: l.attrs.public_ip,
            vtep_mac,
        })
    }
}

/// A repair entry's kind for metrics: `neigh`, `fdb`, `route`, `link`.
fn kind_of(entry: &str) -> &str {
    match entry.split_whitespace().next().unwrap_or("other") {
        "neighbour" => "neigh",
        other => other,
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// "3 neighbour, 3 fdb, 3 route": entries counted by their first word.
fn by_kind(entries: &[String]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        *counts
            .entry(e.split_whitespace().next().unwrap_or("?"))
            .or_default() += 1;
    }
    let mut kinds: Vec<(&str, usize)> = counts.into_iter().collect();
    kinds.sort();
    if kinds.is_empty() {
        return "nothing new".into();
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `ip` can be another node's unicast underlay address, seen from
/// a node whose own is `own`: not ours, and not unspecified ("this
/// network", 0.0.0.0/8), loopback, multicast, broadcast or reserved
/// (240.0.0.0/4). Link-local (169.254.0.0/16) only when our own underlay
/// address is link-local too, i.e. the operator configured the underlay
/// that way.
pub(crate) fn underlay_unicast(ip: Ipv4Addr, own: Ipv4Addr) -> Result<(), &'static str> {
    let first = ip.octets()[0];
    if ip == own {
        Err("is this node's own address")
    } else if first == 0 {
        Err("is unspecified (0.0.0.0/8)")
    } else if ip.is_loopback() {
        Err("is a loopback address")
    } else if ip.is_broadcast() {
        Err("is the broadcast address")
    } else if ip.is_multicast() {
        Err("is a multicast address")
    } else if first >= 240 {
        Err("is a reserved address (240.0.0.0/4)")
    } else if ip.is_link_local() && !own.is_link_local() {
        Err("is link-local, and this node's underlay is not")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unicast_underlay_addresses_are_peers() {
        let own: Ipv4Addr = "192.168.64.2".parse().expect("ip");
        for bad in [
            "192.168.64.2",
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "169.254.1.1",
        ] {
            let ip: Ipv4Addr = bad.parse().expect("ip");
            assert!(underlay_unicast(ip, own).is_err(), "{bad}");
        }
        for good in ["192.168.64.3", "10.0.0.1", "8.8.8.8", "100.64.0.1"] {
            let ip: Ipv4Addr = good.parse().expect("ip");
            assert!(underlay_unicast(ip, own).is_ok(), "{good}");
        }
        // A link-local underlay, configured so: its peers are link-local.
        let ll: Ipv4Addr = "169.254.0.2".parse().expect("ip");
        assert!(underlay_unicast("169.254.0.3".parse().expect("ip"), ll).is_ok());
    }

    #[test]
    fn entries_are_summed_up_by_kind() {
        let entries = ["route a", "neighbour b", "fdb c", "route d"].map(String::from);
        assert_eq!(by_kind(&entries), "1 fdb, 1 neighbour, 2 route");
        assert_eq!(by_kind(&[]), "nothing new");
    }
}
