//! Keeping the kernel true to the leases: one dump each of neighbours, FDB
//! and routes, diffed against what the peers need; only the differences
//! are written.
//!
//! What counts as ours, and so may be removed when no peer explains it:
//! - neighbours on the device in state PERMANENT (entries the kernel made
//!   by itself, e.g. INCOMPLETE or STALE, are left to its own GC);
//! - FDB entries on the device that are PERMANENT (learned ones, with
//!   `learning` on, are the kernel's);
//! - main-table routes of the device's family out of the device, except the kernel's own
//!   (proto kernel);
//! - with a [`Routing`](super::Routing): main-table routes out of the
//!   external interface that have a gateway and whose destination is a
//!   SubnetLen-sized subnet of Network. The node's other routes never are.
//!
//! Owns the diff and the repair; it does not decide when to run (the
//! datapath's timer and events do) and never creates the device.

use foldhash::HashSet;

use rtnetlink::packet_route::route::RouteProtocol;

use super::neigh::{FdbEntry, NeighEntry};
use super::peer::PeerEntries;
use super::route::{RouteEntry, RouteKey, RouteSpec};
use super::write::Write;
use super::{Device, Peer, Repairs, Routing, Vxlan, VxlanError, VxlanFamily};

/// The kernel's state, as dumped.
#[derive(Debug)]
pub(crate) struct Observed<F: VxlanFamily> {
    pub neighbours: Vec<NeighEntry<F>>,
    pub fdb: Vec<FdbEntry<F>>,
    pub routes: Vec<RouteEntry<F>>,
}

impl<F: VxlanFamily> Default for Observed<F> {
    fn default() -> Self {
        Observed {
            neighbours: Vec::new(),
            fdb: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// The writes that make the kernel match: removals first, then additions.
#[derive(Debug)]
pub(crate) struct Plan<F: VxlanFamily> {
    pub del_neigh: Vec<NeighEntry<F>>,
    pub del_fdb: Vec<FdbEntry<F>>,
    pub del_routes: Vec<RouteEntry<F>>,
    pub add_neigh: Vec<(F::Addr, [u8; 6])>,
    pub add_fdb: Vec<([u8; 6], F::Addr)>,
    pub add_routes: Vec<RouteSpec<F>>,
}

impl<F: VxlanFamily> Plan<F> {
    /// Only the additions of this plan.
    pub fn additions(self) -> Self {
        Plan {
            del_neigh: Vec::new(),
            del_fdb: Vec::new(),
            del_routes: Vec::new(),
            ..self
        }
    }

    /// Only the removals of this plan.
    pub fn removals(self) -> Self {
        Plan {
            add_neigh: Vec::new(),
            add_fdb: Vec::new(),
            add_routes: Vec::new(),
            ..self
        }
    }

    pub fn is_empty(&self) -> bool {
        self.del_neigh.is_empty()
            && self.del_fdb.is_empty()
            && self.del_routes.is_empty()
            && self.add_neigh.is_empty()
            && self.add_fdb.is_empty()
            && self.add_routes.is_empty()
    }
}

/// True when `route` is one reconcile manages (see the module docs).
pub(crate) fn is_managed<F: VxlanFamily>(
    route: &RouteEntry<F>,
    dev: &Device,
    routing: Option<&Routing<F>>,
) -> bool {
    if route.protocol == RouteProtocol::Kernel {
        return false;
    }
    match route.oif {
        Some(oif) if oif == dev.index => true,
        Some(oif) => routing.is_some_and(|r| {
            oif == r.ext_index
                && route.gw.is_some()
                && route.dst.prefix() == r.subnet_len
                && route.dst.prefix() > r.network.prefix()
                && r.network.contains_addr(route.dst.base())
        }),
        None => false,
    }
}

/// The diff between `observed` and what `wanted` needs.
pub(crate) fn plan<F: VxlanFamily>(
    observed: &Observed<F>,
    wanted: &[PeerEntries<F>],
    dev: &Device,
    routing: Option<&Routing<F>>,
) -> Plan<F> {
    let mut want_neigh = Vec::with_capacity(wanted.len());
    let mut want_fdb = Vec::with_capacity(wanted.len());
    let mut want_routes = Vec::with_capacity(wanted.len());
    for w in wanted {
        if let PeerEntries::Overlay {
            neigh_ip,
            mac,
            vtep,
            ..
        } = w
        {
            want_neigh.push((*neigh_ip, *mac));
            want_fdb.push((*mac, *vtep));
        }
        want_routes.push(w.route().clone());
    }
    // Every side of the diff is a set, so a resync stays linear in the
    // number of peers. The keys are addresses and MACs, hashed with
    // foldhash (with SipHash, hashing was about 12% of a resync pass at
    // 5,000 peers).
    let neigh_ips: HashSet<F::Addr> = want_neigh.iter().map(|(ip, _)| *ip).collect();
    let fdb_keys: HashSet<([u8; 6], F::Addr)> = want_fdb.iter().copied().collect();
    let want_route_keys: HashSet<RouteKey<F>> = want_routes.iter().map(RouteSpec::key).collect();
    let have_neigh: HashSet<(F::Addr, &[u8])> = observed
        .neighbours
        .iter()
        .filter(|n| n.permanent)
        .filter_map(|n| Some((n.ip, n.mac.as_deref()?)))
        .collect();
    let have_fdb: HashSet<(&[u8], F::Addr)> = observed
        .fdb
        .iter()
        .filter(|f| f.permanent)
        .filter_map(|f| Some((f.mac.as_slice(), f.dst?)))
        .collect();
    let have_routes: HashSet<RouteKey<F>> = observed
        .routes
        .iter()
        .filter(|r| r.priority == F::ROUTE_METRIC)
        .map(RouteEntry::key)
        .collect();

    Plan {
        del_neigh: observed
            .neighbours
            .iter()
            .filter(|n| n.permanent && !neigh_ips.contains(&n.ip))
            .cloned()
            .collect(),
        add_neigh: want_neigh
            .iter()
            .filter(|(ip, mac)| !have_neigh.contains(&(*ip, &mac[..])))
            .copied()
            .collect(),
        del_fdb: observed
            .fdb
            .iter()
            .filter(|f| {
                f.permanent
                    && !matches!((<[u8; 6]>::try_from(f.mac.as_slice()), f.dst),
                    (Ok(mac), Some(dst)) if fdb_keys.contains(&(mac, dst)))
            })
            .cloned()
            .collect(),
        add_fdb: want_fdb
            .iter()
            .filter(|(mac, dst)| !have_fdb.contains(&(&mac[..], *dst)))
            .copied()
            .collect(),
        del_routes: observed
            .routes
            .iter()
            .filter(|r| {
                is_managed(r, dev, routing)
                    && !(r.priority == F::ROUTE_METRIC && want_route_keys.contains(&r.key()))
            })
            .cloned()
            .collect(),
        add_routes: want_routes
            .iter()
            .filter(|w| !have_routes.contains(&w.key()))
            .cloned()
            .collect(),
    }
}

impl<F: VxlanFamily> Vxlan<F> {
    /// Makes the kernel match `peers` exactly: one dump each of neighbours,
    /// FDB and routes, diffed against what the peers need; adds what is
    /// missing or wrong, deletes what no peer explains (see the module docs
    /// for what is considered ours). No writes when nothing differs.
    ///
    /// Also sets the device up if someone set it down (which flushes its
    /// routes). `Err(DeviceGone)` when the device no longer exists: call
    /// `ensure_device` and `reconcile` again. A refused repair does not stop
    /// the others; it is listed in `Repairs::failed`.
    pub async fn reconcile(&self, dev: &Device, peers: &[Peer<F>]) -> Result<Repairs, VxlanError> {
        let mut repairs = Repairs::default();
        let observed = self.observe(dev, &mut repairs).await?;
        let plan = self.plan_for(dev, &observed, peers);
        if !plan.is_empty() {
            self.apply(dev, plan, &mut repairs).await;
        }
        Ok(repairs)
    }

    /// The kernel's entries on `dev`, one dump each; what it holds of ours
    /// is counted in `repairs.found`. Sets the device up if someone set it
    /// down; `Err(DeviceGone)` when it no longer exists.
    pub(crate) async fn observe(
        &self,
        dev: &Device,
        repairs: &mut Repairs,
    ) -> Result<Observed<F>, VxlanError> {
        let links = self.links();
        let link = links.by_index(dev.index).await?;
        match link {
            Some(link) if link.name == dev.name && link.is_vxlan() => {
                if !link.up {
                    links.set_up(dev.index, &dev.name).await?;
                    repairs.added.push(format!("link {} up", dev.name));
                }
            }
            _ => {
                return Err(VxlanError::DeviceGone {
                    name: dev.name.clone(),
                })
            }
        }

        let nb = self.neighbours(dev);
        let observed = Observed {
            neighbours: nb.dump().await?,
            fdb: nb.fdb_dump().await?,
            routes: self.routes().dump().await?,
        };
        repairs.found = super::KernelCounts {
            neigh: observed.neighbours.iter().filter(|n| n.permanent).count(),
            fdb: observed.fdb.iter().filter(|f| f.permanent).count(),
            route: observed
                .routes
                .iter()
                .filter(|r| is_managed(r, dev, self.routing.as_ref()))
                .count(),
        };
        Ok(observed)
    }

    /// Writes what `peers` need and `observed` lacks, removing nothing:
    /// one page of a first listing, whose later pages may explain the rest.
    pub(crate) async fn add_missing(
        &self,
        dev: &Device,
        observed: &Observed<F>,
        peers: &[Peer<F>],
    ) -> Repairs {
        let plan = self.plan_for(dev, observed, peers).additions();
        self.write_plan(dev, plan).await
    }

    /// Removes what `observed` holds of ours and no peer of `peers` (every
    /// peer: the listing is complete) explains; adds nothing.
    pub(crate) async fn remove_unexplained(
        &self,
        dev: &Device,
        observed: &Observed<F>,
        peers: &[Peer<F>],
    ) -> Repairs {
        let plan = self.plan_for(dev, observed, peers).removals();
        self.write_plan(dev, plan).await
    }

    async fn write_plan(&self, dev: &Device, plan: Plan<F>) -> Repairs {
        let mut repairs = Repairs::default();
        self.apply(dev, plan, &mut repairs).await;
        repairs
    }

    fn plan_for(&self, dev: &Device, observed: &Observed<F>, peers: &[Peer<F>]) -> Plan<F> {
        let wanted: Vec<PeerEntries<F>> = peers.iter().map(|p| self.entries(dev, p)).collect();
        plan(observed, &wanted, dev, self.routing.as_ref())
    }

    /// Writes the plan: removals, then additions, as one list of writes
    /// ([`Vxlan::write_all`]: many to a netlink datagram, in order).
    async fn apply(&self, dev: &Device, plan: Plan<F>, repairs: &mut Repairs) {
        if plan.is_empty() {
            return;
        }
        let mut writes: Vec<Write<F>> = Vec::new();
        writes.extend(plan.del_routes.into_iter().map(|entry| {
            let dev = self.oif_name(dev, entry.oif);
            Write::DelRouteEntry { entry, dev }
        }));
        writes.extend(plan.del_neigh.into_iter().map(|n| Write::DelNeigh {
            ip: n.ip,
            mac: n.mac,
        }));
        writes.extend(plan.del_fdb.into_iter().map(|f| Write::DelFdb {
            mac: f.mac,
            dst: f.dst,
        }));
        let removals = writes.len();
        writes.extend(
            plan.add_neigh
                .into_iter()
                .map(|(ip, mac)| Write::Neigh { ip, mac }),
        );
        writes.extend(
            plan.add_fdb
                .into_iter()
                .map(|(mac, dst)| Write::Fdb { mac, dst }),
        );
        writes.extend(plan.add_routes.into_iter().map(Write::Route));
        let done = self.write_all(dev, &writes).await;
        for (i, (w, r)) in writes.iter().zip(done).enumerate() {
            let into = if i < removals {
                &mut repairs.removed
            } else {
                &mut repairs.added
            };
            match r {
                Ok(()) => into.push(w.describe(dev)),
                Err(e) => repairs.failed.push(e.to_string()),
            }
        }
    }

    /// The name of a route's output device, for messages.
    fn oif_name(&self, dev: &Device, oif: Option<u32>) -> String {
        match (oif, &self.routing) {
            (Some(i), _) if i == dev.index => dev.name.clone(),
            (Some(i), Some(r)) if i == r.ext_index => r.ext_name.clone(),
            (Some(i), _) => format!("#{i}"),
            (None, _) => "?".to_string(),
        }
    }
}
