//! The node's datapath: per enabled address family, the `flannel.<VNI>`
//! / `flannel-v6.<VNI>` device and, for every peer lease, its neighbour,
//! FDB and route entries (`family.rs`: one family's half, written once for
//! both). One method per event the daemon's loop receives: our own lease
//! (`adopt`), the pages of the watch's first listing and its events, a
//! device check, a resync.
//!
//! Owns the device and the set of peers; decides which leases are peers
//! (nothing from outside reaches the kernel unchecked) and writes through
//! `vxlan`. It does not talk to the lease store, nor decide when to act:
//! that is the daemon's loop. It does not touch nftables or `subnet.env`.

#[cfg(test)]
mod batch_tests;
mod error;
mod family;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod listing_tests;
#[cfg(test)]
mod ns_tests;
#[cfg(test)]
mod wants_tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use ipnetwork::{Ipv4Network, Ipv6Network};
use rtnetlink::Handle;

use crate::lease::{Lease, LeaseError, LeaseEvent, ListingPart, ListingRx};
use crate::metrics::Metrics;
use crate::netconf::NetConfig;
use crate::vxlan::{DeviceSpec, KernelCounts, Repairs};
use crate::watch_kernel::Deleted;
pub use error::DatapathError;
use family::FamilyPath;
pub use family::{lease_id, LeaseFamily, LeaseId};

/// What a lease event asks of the daemon beyond the datapath.
#[derive(Debug, PartialEq, Eq)]
pub enum Follow {
    Nothing,
    /// Our own lease vanished from the store: renew it now.
    RenewNow,
}

/// The devices to make: one per enabled family.
#[derive(Debug, Clone, Default)]
pub struct Specs {
    pub v4: Option<DeviceSpec<Ipv4Network>>,
    pub v6: Option<DeviceSpec<Ipv6Network>>,
}

pub struct Datapath {
    /// `flannel.<VNI>` and the IPv4 peers, when IPv4 is enabled.
    v4: Option<FamilyPath<Ipv4Network>>,
    /// `flannel-v6.<VNI>` and the IPv6 peers, when IPv6 is enabled.
    v6: Option<FamilyPath<Ipv6Network>>,
    vni: u32,
    /// Whether the store chose the subnets (file, etcd) or was handed them
    /// (kube): which peer subnets are trusted.
    store_chooses: bool,
    /// Our lease and public IP, once acquired.
    own: Option<(LeaseId, IpAddr)>,
    /// The first listing, while it is programmed.
    listing: Option<Listing>,
    metrics: Arc<Metrics>,
}

/// One family's part of a batch of lease events: each lease (None:
/// removed) as that family's peer, in order. Returns how many subnets
/// changed.
async fn events<F: LeaseFamily>(
    path: Option<&mut FamilyPath<F>>,
    leases: &[(LeaseId, Option<&Lease>)],
    vni: u32,
    store_chooses: bool,
) -> usize {
    let Some(path) = path else {
        return 0;
    };
    let updates = leases
        .iter()
        .map(|(id, l)| (*id, l.and_then(|l| path.peer_of(l, vni, store_chooses))))
        .collect();
    path.update_many(updates).await
}

/// Every lease of a first listing's `page` but ours as that family's
/// peers, programmed (see [`FamilyPath::program_page`]).
async fn page<F: LeaseFamily>(
    path: Option<&mut FamilyPath<F>>,
    page: &[Lease],
    own: Option<LeaseId>,
    vni: u32,
    store_chooses: bool,
) -> Option<Result<Repairs, DatapathError>> {
    let path = path?;
    let peers = page
        .iter()
        .filter(|l| Some(lease_id(l)) != own)
        .filter_map(|l| Some((lease_id(l), path.peer_of(l, vni, store_chooses)?)))
        .collect();
    Some(path.program_page(peers).await)
}

/// What the first listing's programming has done so far.
struct Listing {
    started: Instant,
    repairs: Repairs,
}

impl Datapath {
    /// Creates or adopts the device of every enabled family (before any
    /// lease: their MACs go into the lease).
    pub async fn create(
        handle: Handle,
        config: NetConfig,
        specs: Specs,
        store_chooses: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Datapath, DatapathError> {
        let direct = config.backend.direct_routing;
        let v4 = match (config.ipv4, specs.v4) {
            (Some(net), Some(spec)) => {
                Some(FamilyPath::create(handle.clone(), net, spec, direct).await?)
            }
            (None, _) => None,
            (Some(_), None) => return Err(DatapathError::NoDevice { family: "IPv4" }),
        };
        let v6 = match (config.ipv6, specs.v6) {
            (Some(net), Some(spec)) => Some(FamilyPath::create(handle, net, spec, direct).await?),
            (None, _) => None,
            (Some(_), None) => return Err(DatapathError::NoDevice { family: "IPv6" }),
        };
        Ok(Datapath {
            v4,
            v6,
            vni: config.backend.vni,
            store_chooses,
            own: None,
            listing: None,
            metrics,
        })
    }

    /// Takes our lease: its addresses go on the devices.
    pub async fn adopt(&mut self, lease: &Lease) -> Result<(), DatapathError> {
        self.own = Some((lease_id(lease), lease.attrs.node_ip()));
        if let Some(v4) = self.v4.as_mut() {
            v4.adopt(lease).await?;
        }
        if let Some(v6) = self.v6.as_mut() {
            v6.adopt(lease).await?;
        }
        Ok(())
    }

    /// Programs every peer of `snapshot` (the watch's first listing, read
    /// whole), and removes what no lease explains.
    pub async fn program(&mut self, snapshot: &[Lease]) {
        self.program_page(snapshot).await;
        self.finish_listing().await;
    }

    /// Programs the watch's first listing page by page as it arrives (the
    /// kube store's next page is read meanwhile), then removes what no
    /// lease explains. Returns how many leases it listed; `ListingCut`
    /// when the watch ended before the listing was complete (nothing is
    /// then removed).
    pub async fn program_listing(&mut self, listing: &mut ListingRx) -> Result<usize, LeaseError> {
        let mut leases = 0;
        loop {
            match listing.recv().await {
                Some(ListingPart::Page(page)) => {
                    leases += page.len();
                    let at = Instant::now();
                    self.program_page(&page).await;
                    tracing::debug!(
                        "start-up: a page of {} lease(s) programmed in {} ms",
                        page.len(),
                        at.elapsed().as_millis()
                    );
                }
                Some(ListingPart::Restart) => {
                    leases = 0;
                    self.restart_listing();
                }
                Some(ListingPart::Complete) => break,
                None => return Err(LeaseError::ListingCut),
            }
        }
        tracing::info!(leases, "leases listed");
        self.finish_listing().await;
        Ok(leases)
    }

    /// Programs the peers of one page of the watch's first listing, as it
    /// arrives; nothing is removed before the listing is complete.
    async fn program_page(&mut self, leases: &[Lease]) {
        let own = self.own.map(|(id, _)| id);
        let (vni, sc) = (self.vni, self.store_chooses);
        let listing = self.listing.get_or_insert_with(|| Listing {
            started: Instant::now(),
            repairs: Repairs::default(),
        });
        let results = [
            page(self.v4.as_mut(), leases, own, vni, sc).await,
            page(self.v6.as_mut(), leases, own, vni, sc).await,
        ];
        for result in results.into_iter().flatten() {
            match result {
                Ok(r) => merge(&mut listing.repairs, r),
                Err(e) => tracing::warn!("start-up {}", crate::error::chain(&e)),
            }
        }
    }

    /// The first listing broke off and is read again from the start.
    fn restart_listing(&mut self) {
        tracing::info!("the lease listing broke off; programming it again as it is read");
        if let Some(v4) = self.v4.as_mut() {
            v4.restart_listing();
        }
        if let Some(v6) = self.v6.as_mut() {
            v6.restart_listing();
        }
        // What was written is in the kernel's next dump.
        if let Some(listing) = self.listing.as_mut() {
            listing.repairs = Repairs::default();
        }
    }

    /// The first listing is complete: removes what no lease explains, and
    /// sums the programming up in one line. Returns how many entries it
    /// wrote and removed.
    async fn finish_listing(&mut self) -> usize {
        let Listing {
            started,
            mut repairs,
        } = self.listing.take().unwrap_or_else(|| Listing {
            started: Instant::now(),
            repairs: Repairs::default(),
        });
        let mut results = Vec::new();
        if let Some(v4) = self.v4.as_mut() {
            results.push(v4.finish_listing().await);
        }
        if let Some(v6) = self.v6.as_mut() {
            results.push(v6.finish_listing().await);
        }
        for result in results {
            match result {
                Ok(r) => merge(&mut repairs, r),
                Err(e) => tracing::warn!("start-up {}", crate::error::chain(&e)),
            }
        }
        self.metrics.resyncs.inc();
        self.metrics
            .resync_duration
            .observe(started.elapsed().as_secs_f64());
        self.report("start-up", &repairs, started)
    }

    /// The ifindex of every device, for the kernel-event filter.
    pub fn indexes(&self) -> Vec<u32> {
        let v4 = self.v4.as_ref().map(|p| p.dev.index);
        let v6 = self.v6.as_ref().map(|p| p.dev.index);
        v4.into_iter().chain(v6).collect()
    }

    /// One change seen by the lease watch.
    pub async fn on_lease_event(&mut self, ev: LeaseEvent) -> Result<Follow, DatapathError> {
        self.on_lease_events(vec![ev]).await
    }

    /// Changes seen by the lease watch, in the order seen, applied as one
    /// batch: the kernel gets each touched subnet's final peer in one list
    /// of writes (a lease removed and added again costs nothing when it did
    /// not change). Our own lease's events are checked first, as for one.
    pub async fn on_lease_events(&mut self, evs: Vec<LeaseEvent>) -> Result<Follow, DatapathError> {
        let Some((own, own_ip)) = self.own else {
            return Ok(Follow::Nothing);
        };
        let mut follow = Follow::Nothing;
        let mut leases: Vec<(LeaseId, Option<&Lease>)> = Vec::with_capacity(evs.len());
        for ev in &evs {
            let (id, lease) = match ev {
                LeaseEvent::Added(l) => (lease_id(l), Some(l)),
                LeaseEvent::Removed(l) => (lease_id(l), None),
            };
            if id != own {
                leases.push((id, lease));
                continue;
            }
            let own = crate::lease::subnet_key(own.0, own.1);
            match lease {
                Some(l) if l.attrs.node_ip() != own_ip => {
                    return Err(DatapathError::TakenOver {
                        own,
                        by: l.attrs.node_ip(),
                    })
                }
                Some(_) => {}
                None => {
                    tracing::warn!("our lease for {own} disappeared; renewing it at once");
                    follow = Follow::RenewNow;
                }
            }
        }
        let started = Instant::now();
        let (vni, sc) = (self.vni, self.store_chooses);
        let mut changed = events(self.v4.as_mut(), &leases, vni, sc).await;
        changed += events(self.v6.as_mut(), &leases, vni, sc).await;
        if changed > 0 {
            self.metrics.observe_latency("lease", started.elapsed());
            self.count_expected();
        }
        self.metrics.peers.set(gauge(self.peer_count()));
        Ok(follow)
    }

    /// Sets the `kernel_entries` gauges to what the peers need, after a
    /// batch of lease events was written (a resync sets them from the
    /// kernel's own count; a write that failed is corrected there).
    fn count_expected(&self) {
        let mut all = KernelCounts::default();
        let counts = [
            self.v4.as_ref().map(FamilyPath::expected_counts),
            self.v6.as_ref().map(FamilyPath::expected_counts),
        ];
        for c in counts.into_iter().flatten() {
            all.neigh += c.neigh;
            all.fdb += c.fdb;
            all.route += c.route;
        }
        for (kind, n) in [("neigh", all.neigh), ("fdb", all.fdb), ("route", all.route)] {
            self.metrics
                .kernel_entries
                .get_or_create(&Metrics::kind(kind))
                .set(gauge(n));
        }
    }

    /// Peers (nodes) programmed: the larger family's count.
    fn peer_count(&self) -> usize {
        let v4 = self.v4.as_ref().map_or(0, |p| p.peers.len());
        let v6 = self.v6.as_ref().map_or(0, |p| p.peers.len());
        v4.max(v6)
    }

    /// Whether a peer needs what the kernel said was deleted on one of our
    /// devices: if not (our own removal of a peer, told back to us), no
    /// check is needed.
    pub fn wants(&self, gone: &Deleted) -> bool {
        let v4 = self.v4.as_ref().is_some_and(|p| p.wants(gone));
        v4 || self.v6.as_ref().is_some_and(|p| p.wants(gone))
    }

    /// Recreates a device (and replays every peer at the next resync) if
    /// someone deleted or replaced it.
    pub async fn check_device(&mut self) {
        if let Some(v4) = self.v4.as_mut() {
            v4.check_device().await;
        }
        if let Some(v6) = self.v6.as_mut() {
            v6.check_device().await;
        }
    }

    /// Diffs the kernel against the peers and fixes it, every family: a
    /// repair, each entry named. Returns how many entries it restored or
    /// removed.
    pub async fn resync(&self, why: &str) -> usize {
        let started = Instant::now();
        let mut results = Vec::new();
        if let Some(v4) = self.v4.as_ref() {
            results.push(v4.reconcile().await);
        }
        if let Some(v6) = self.v6.as_ref() {
            results.push(v6.reconcile().await);
        }
        self.metrics.resyncs.inc();
        self.metrics
            .resync_duration
            .observe(started.elapsed().as_secs_f64());
        let mut r = Repairs::default();
        for result in results {
            match result {
                Ok(one) => merge(&mut r, one),
                Err(e) => tracing::warn!("{why} {}", crate::error::chain(&e)),
            }
        }
        self.report(why, &r, started)
    }

    /// Metrics and log lines of a reconcile (or of the first listing's
    /// programming, `why` "start-up"); how many entries it restored or
    /// removed.
    fn report(&self, why: &str, r: &Repairs, started: Instant) -> usize {
        let start_up = why == "start-up";
        self.metrics.peers.set(gauge(self.peer_count()));
        self.count(r, start_up);
        for entry in &r.added {
            if start_up {
                tracing::debug!("programmed {entry}");
            } else {
                tracing::warn!("{why} resync: restored {entry}");
            }
        }
        if start_up {
            tracing::info!(
                "start-up: {} peers; programmed {} in {} ms",
                self.peer_count(),
                by_kind(&r.added),
                started.elapsed().as_millis()
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

    /// Metrics of one reconcile: repairs (not at start-up, where additions
    /// are the normal programming), stale removals, and what the devices
    /// hold now.
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
}

/// Adds one family's (or page's) repairs to the others'.
pub(super) fn merge(into: &mut Repairs, one: Repairs) {
    into.added.extend(one.added);
    into.removed.extend(one.removed);
    into.failed.extend(one.failed);
    let KernelCounts { neigh, fdb, route } = one.found;
    into.found.neigh += neigh;
    into.found.fdb += fdb;
    into.found.route += route;
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
