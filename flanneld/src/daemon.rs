//! The daemon's life: acquire a lease, bring up flannel.<VNI>, publish
//! subnet.env, then keep the kernel true to the leases until told to stop.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::SubnetEnv;
use ipnetwork::Ipv4Network;
use rtnetlink::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::http::Readiness;
use crate::iface::ExtIface;
use crate::lease::{skip, Lease, LeaseAttrs, LeaseError, LeaseEvent, LeaseStore, LeaseTiming};
use crate::masq::{self, MasqKeeper, MasqRules};
use crate::netconf::NetConfig;
use crate::vxlan::{Device, DeviceSpec, Peer, Vxlan};
use crate::{mac, watch_kernel};

/// Everything the daemon needs besides the store.
pub struct Settings {
    pub ext: ExtIface,
    pub public_ip: Ipv4Addr,
    pub subnet_file: PathBuf,
    pub ip_masq: bool,
    /// `--iptables-forward-rules`.
    pub forward_rules: bool,
    /// Not `--ip-masq-fully-random-disable`.
    pub fully_random: bool,
    /// `--iptables-resync`.
    pub rules_resync: Duration,
    pub timing: LeaseTiming,
    pub resync_interval: Duration,
    pub healthz: Option<SocketAddr>,
}

/// How the daemon ended.
#[derive(Debug)]
pub enum Exit {
    /// SIGTERM/SIGINT: the datapath stays for the next start.
    Stopped,
}

pub async fn run(
    store: Box<dyn LeaseStore>,
    config: NetConfig,
    settings: Settings,
    handle: Handle,
) -> Result<Exit, String> {
    let store: Arc<dyn LeaseStore> = Arc::from(store);
    let ready = Readiness::default();
    if let Some(addr) = settings.healthz {
        crate::http::serve(addr, ready.clone()).await?;
    }
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("install SIGTERM handler: {e}"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| format!("install SIGINT handler: {e}"))?;

    let vni = config.backend.vni;
    let vtep_mac = mac::vtep_mac(settings.public_ip, vni);
    // VXLAN over IPv4 costs 50 bytes of headers.
    let base_mtu = config.backend.mtu.unwrap_or(settings.ext.mtu);
    let mtu = base_mtu
        .checked_sub(50)
        .filter(|m| *m >= 576)
        .ok_or_else(|| {
            format!(
                "MTU {base_mtu} of {} leaves no room for VXLAN (needs at least 626)",
                settings.ext.name
            )
        })?;
    let spec = DeviceSpec {
        vni,
        port: config.backend.port,
        local: settings.public_ip,
        ext_index: settings.ext.index,
        mtu,
        mac: vtep_mac,
        gbp: config.backend.gbp,
        learning: config.backend.learning,
    };
    let vx = Vxlan::new(handle.clone());
    // Which peers share our L2 segment (DirectRouting), and which routes on
    // the external interface are ours to keep true.
    let routing = vx
        .routing(
            config.network,
            config.subnet_len,
            settings.ext.index,
            config.backend.direct_routing,
        )
        .await
        .map_err(|e| e.to_string())?;
    let vx = vx.with_routing(routing);
    let mut dev = vx.ensure_device(&spec).await.map_err(|e| e.to_string())?;
    tracing::info!(
        device = %dev.name, mac = %mac::format(&dev.mac), local = %settings.public_ip,
        dev = %settings.ext.name, mtu, "VXLAN device ready"
    );

    let previous = SubnetEnv::read(&settings.subnet_file)
        .ok()
        .map(|e| e.pod_subnet());
    let attrs = LeaseAttrs::vxlan(settings.public_ip, vni, &mac::format(&vtep_mac));
    let mut lease = store
        .acquire(&config, &attrs, previous)
        .await
        .map_err(|e| format!("acquire a subnet lease: {e}"))?;
    let own = lease.subnet;
    let me = Me {
        subnet: own,
        public_ip: settings.public_ip,
        config: &config,
    };
    tracing::info!(subnet = %own, "lease acquired");

    vx.ensure_address(&dev, own.network(), config.network)
        .await
        .map_err(|e| e.to_string())?;
    let mut rules = start_rules(&settings, &config, own).await?;
    write_subnet_env(&settings, &config, own, mtu)?;
    ready.set(true);

    let mut watch = store
        .watch()
        .await
        .map_err(|e| format!("watch leases: {e}"))?;
    let mut peers: BTreeMap<Ipv4Network, Peer> = BTreeMap::new();
    for l in &watch.snapshot {
        if let Some(p) = peer_of(l, &me) {
            peers.insert(p.subnet, p);
        }
    }
    resync(&vx, &dev, &peers, "start-up").await;

    let mut kernel_events =
        watch_kernel::subscribe().map_err(|e| format!("subscribe to kernel events: {e}"))?;
    let mut next_resync = Instant::now() + settings.resync_interval;
    let mut renew_at = deadline(settings.timing.renew_at(&lease));
    let mut renewal = Renewal::default();
    let mut renewing: Option<tokio::task::JoinHandle<Result<Lease, LeaseError>>> = None;
    let mut rules_tick = tokio::time::interval(settings.rules_resync);

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping, datapath left in place"); return Ok(Exit::Stopped) }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping, datapath left in place"); return Ok(Exit::Stopped) }
            ev = watch.events.recv() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => { tracing::warn!("lease watch: {e}"); continue }
                    None => return Err("the lease watch ended".into()),
                };
                match ev {
                    LeaseEvent::Added(l) if l.subnet == own => {
                        if l.attrs.public_ip != settings.public_ip {
                            return Err(format!(
                                "lease for {own} was taken over by {}: exiting so this node stops serving a subnet it no longer owns",
                                l.attrs.public_ip
                            ));
                        }
                    }
                    LeaseEvent::Removed(l) if l.subnet == own => {
                        tracing::warn!("our lease for {own} disappeared; renewing it at once");
                        renew_at = Instant::now();
                    }
                    LeaseEvent::Added(l) => match peer_of(&l, &me) {
                        Some(p) => {
                            let old = peers.get(&p.subnet).cloned();
                            if old.as_ref() != Some(&p) {
                                if let Err(e) = vx.set_peer(&dev, &p, old.as_ref()).await {
                                    tracing::warn!("program peer {}: {e} (resync will retry)", p.subnet);
                                } else {
                                    tracing::info!(subnet = %p.subnet, public_ip = %p.public_ip, vtep = %mac::format(&p.vtep_mac), "peer programmed");
                                }
                                peers.insert(p.subnet, p);
                            }
                        }
                        None => {
                            // Not (or no longer) a usable vxlan peer.
                            if let Some(old) = peers.remove(&l.subnet) {
                                let _ = vx.remove_peer(&dev, &old).await;
                            }
                        }
                    },
                    LeaseEvent::Removed(l) => {
                        if let Some(old) = peers.remove(&l.subnet) {
                            match vx.remove_peer(&dev, &old).await {
                                Ok(()) => tracing::info!(subnet = %old.subnet, "peer removed"),
                                Err(e) => tracing::warn!("remove peer {}: {e} (resync will retry)", old.subnet),
                            }
                        }
                    }
                }
            }
            _ = kernel_events.changed(dev.index) => {
                // Something on our device changed: check at once rather
                // than at the next tick.
                next_resync = Instant::now() + Duration::from_millis(20);
            }
            _ = tokio::time::sleep_until(next_resync) => {
                dev = check_device(&vx, &spec, dev, own, &config, &peers).await;
                resync(&vx, &dev, &peers, "periodic").await;
                ready.set_store(store.is_reachable());
                next_resync = Instant::now() + settings.resync_interval;
            }
            _ = rules_tick.tick() => {
                if let Some(keeper) = rules.as_mut() {
                    match keeper.check().await {
                        Ok(true) => tracing::warn!("masquerade/forward rules were changed; rewrote table ip {}", masq::TABLE),
                        Ok(false) => {}
                        Err(e) => tracing::warn!("check masquerade/forward rules: {e}"),
                    }
                }
            }
            _ = tokio::time::sleep_until(renew_at), if renewing.is_none() => {
                // In a task of its own: a slow store (etcd timing out, a
                // held lock) must not stall signals, events and repairs.
                let (store, lease) = (Arc::clone(&store), lease.clone());
                renewing = Some(tokio::spawn(async move { store.renew(&lease).await }));
            }
            result = async {
                match renewing.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                renewing = None;
                let result = result.map_err(|e| format!("lease renewal task: {e}"))?;
                renew_at = renewal.settle(result, &mut lease, &settings.timing)?;
                ready.set_store(store.is_reachable());
            }
        }
    }
}

/// Installs the masquerade and forward rules. Masquerading was asked for,
/// so failing it is fatal; the forward rules are only a convenience.
async fn start_rules(
    settings: &Settings,
    config: &NetConfig,
    own: Ipv4Network,
) -> Result<Option<MasqKeeper>, String> {
    let rules = MasqRules {
        network: config.network,
        subnet: own,
        masquerade: settings.ip_masq,
        forward: settings.forward_rules,
        fully_random: settings.fully_random,
    };
    match MasqKeeper::start(rules).await {
        Ok(keeper) => Ok(Some(keeper)),
        Err(e) if settings.ip_masq => Err(format!("install masquerade rules: {e}")),
        Err(e) => {
            tracing::warn!("install forward rules: {e}; continuing without them");
            Ok(None)
        }
    }
}

/// Recreates the device (and replays every peer) if someone deleted it.
async fn check_device(
    vx: &Vxlan,
    spec: &DeviceSpec,
    dev: Device,
    own: Ipv4Network,
    config: &NetConfig,
    peers: &BTreeMap<Ipv4Network, Peer>,
) -> Device {
    match vx.find_device(spec.vni).await {
        Ok(Some(found)) if found.index == dev.index => return dev,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("look for {}: {e}", dev.name);
            return dev;
        }
    }
    tracing::warn!(
        "{} was deleted or replaced: recreating it with {} peers",
        dev.name,
        peers.len()
    );
    match vx.ensure_device(spec).await {
        Ok(new) => {
            if let Err(e) = vx.ensure_address(&new, own.network(), config.network).await {
                tracing::warn!("{e}");
            }
            new
        }
        Err(e) => {
            tracing::error!("recreate {}: {e}", dev.name);
            dev
        }
    }
}

/// Diffs the kernel against the peers and fixes it. At start-up what it
/// adds is the normal programming of peers; later, it is a repair.
async fn resync(vx: &Vxlan, dev: &Device, peers: &BTreeMap<Ipv4Network, Peer>, why: &str) {
    let wanted: Vec<Peer> = peers.values().cloned().collect();
    let start_up = why == "start-up";
    match vx.reconcile(dev, &wanted).await {
        Ok(r) => {
            for entry in &r.added {
                if start_up {
                    tracing::info!("programmed {entry}");
                } else {
                    tracing::warn!("{why} resync: restored {entry}");
                }
            }
            for entry in &r.removed {
                tracing::warn!("{why} resync: removed {entry} (no lease explains it)");
            }
            for entry in &r.failed {
                tracing::error!("{why} resync: could not repair {entry}");
            }
        }
        Err(e) => tracing::warn!("{why} resync of {}: {e}", dev.name),
    }
}

/// Lease renewal, run in a task off the loop: a failed attempt schedules
/// the next one with back-off (the datapath stays as it is meanwhile), and
/// the log says when renewal starts failing and when it recovers, not at
/// every attempt.
#[derive(Default)]
struct Renewal {
    failing: bool,
    backoff: Duration,
}

impl Renewal {
    const FIRST_RETRY: Duration = Duration::from_millis(500);
    const MAX_RETRY: Duration = Duration::from_secs(30);

    /// Takes in a renewal's result: updates `lease` and says when to renew
    /// next (or retry, after a failure). Only a lease another node now
    /// holds is fatal.
    fn settle(
        &mut self,
        result: Result<Lease, LeaseError>,
        lease: &mut Lease,
        timing: &LeaseTiming,
    ) -> Result<Instant, String> {
        match result {
            Ok(renewed) => {
                if self.failing {
                    tracing::info!(subnet = %renewed.subnet, "lease renewed again");
                } else {
                    tracing::debug!(subnet = %renewed.subnet, "lease renewed");
                }
                *self = Self::default();
                *lease = renewed;
                Ok(deadline(timing.renew_at(lease)))
            }
            Err(e @ LeaseError::Lost { .. }) => Err(format!(
                "{e}: exiting so this node stops serving a subnet it no longer owns"
            )),
            Err(e) => {
                self.backoff = if self.failing {
                    (self.backoff * 2).min(Self::MAX_RETRY)
                } else {
                    Self::FIRST_RETRY
                };
                if !self.failing {
                    tracing::warn!(
                        "renew lease for {}: {e}; retrying with back-off, the datapath stays as it is",
                        lease.subnet
                    );
                }
                self.failing = true;
                Ok(Instant::now() + self.backoff)
            }
        }
    }
}

/// Who we are, to tell peers from ourselves.
struct Me<'a> {
    subnet: Ipv4Network,
    public_ip: Ipv4Addr,
    config: &'a NetConfig,
}

/// A lease as a VXLAN peer, unless it is ours, another backend's, or malformed.
/// Only leases our configuration could have handed out are trusted: a
/// stray key such as `0.0.0.0-0` or the node LAN's subnet would otherwise
/// become a route that replaces the default or the connected route. The
/// same goes for the public IP: only an address that can be a node's
/// unicast underlay address gets a route, a neighbour and an FDB entry.
fn peer_of(l: &Lease, me: &Me) -> Option<Peer> {
    if l.subnet == me.subnet {
        return None;
    }
    let what = format!("lease {}", l.subnet);
    if !me.config.is_leasable(l.subnet) {
        let reason = format!(
            "outside {} (SubnetLen {}, SubnetMin..SubnetMax)",
            me.config.network, me.config.subnet_len
        );
        skip::skipped(&what, &reason);
        return None;
    }
    if let Err(reason) = underlay_unicast(l.attrs.public_ip, me.public_ip) {
        let reason = format!("PublicIP {} {reason}", l.attrs.public_ip);
        skip::skipped(&what, &reason);
        return None;
    }
    let vni = me.config.backend.vni;
    let data = l.attrs.vxlan_data()?;
    if data.vni != vni {
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

fn deadline(at: SystemTime) -> Instant {
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + wait
}

fn write_subnet_env(
    settings: &Settings,
    config: &NetConfig,
    own: Ipv4Network,
    mtu: u32,
) -> Result<(), String> {
    let gateway = Ipv4Addr::from(u32::from(own.network()) + 1);
    let env = SubnetEnv {
        network: config.network,
        subnet: Ipv4Network::new(gateway, own.prefix()).map_err(|e| e.to_string())?,
        mtu,
        ipmasq: settings.ip_masq,
        ipv6_network: None,
        ipv6_subnet: None,
    };
    env.write_atomic(&settings.subnet_file)
        .map_err(|e| e.to_string())?;
    tracing::info!(path = %settings.subnet_file.display(), "subnet file written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::underlay_unicast;
    use std::net::Ipv4Addr;

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
}
