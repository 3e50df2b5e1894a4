//! The daemon's life: acquire a lease, bring up `flannel.<VNI>` (and
//! `flannel-v6.<VNI>`), install the masquerade rules, publish subnet.env
//! (the rules are read back for the periodic check only after it), then
//! keep the kernel true to the leases until SIGTERM or SIGINT (which leave
//! the datapath in place).
//!
//! Owns the order of start-up and the loop: when to renew, resync, recheck
//! the rules and the device, and what readiness says; it is the one writer
//! of `subnet.env`. It writes no kernel object itself (that is `datapath`'s
//! and `masq`'s) and knows no store's protocol (it calls `LeaseStore`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::SubnetEnv;

use rtnetlink::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::datapath::{Datapath, Follow, Specs};
use crate::error::{chain, DaemonError};
use crate::http::Readiness;
use crate::iface::{ExtIface, IfaceError};
use crate::lease::{Lease, LeaseAttrs, LeaseError, LeaseEvent, LeaseStore, LeaseTiming, Previous};
use crate::masq::{MasqKeeper, MasqRules};
use crate::metrics::Metrics;
use crate::netconf::{Family, NetConfig};
use crate::vxlan::{DeviceSpec, VxlanFamily};
use crate::{mac, watch_kernel};

/// Everything the daemon needs besides the store.
pub struct Settings {
    pub ext: ExtIface,
    pub public_ip: Ipv4Addr,
    /// With EnableIPv6: `--public-ipv6` or the interface's global IPv6
    /// (see [`crate::iface::public_ipv6`]).
    pub public_ipv6: Option<Ipv6Addr>,
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
    pub metrics: Arc<Metrics>,
    /// The lease store's kind ("file", "etcd", "kube"), for metrics.
    pub store_kind: &'static str,
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
) -> Result<Exit, DaemonError> {
    let store: Arc<dyn LeaseStore> = Arc::from(store);
    let ready = Readiness::default();
    let metrics = Arc::clone(&settings.metrics);
    crate::lease::observe::set_observer(Arc::clone(&metrics) as _);
    metrics.for_store(settings.store_kind);
    if let Some(addr) = settings.healthz {
        crate::http::serve(addr, ready.clone(), Arc::clone(&metrics)).await?;
    }
    let handler = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| DaemonError::Signal {
            signal: name,
            source,
        })
    };
    let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;

    // What the store already records for this node (kube: node-public-ip,
    // the VtepMAC peers know us by) comes before the device is made.
    let hints = store.node_hints().await;
    metrics.store_request("node_hints", &hints);
    let hints = hints.map_err(DaemonError::NodeHints)?;
    let public_ip = hints.public_ip.unwrap_or(settings.public_ip);
    if public_ip != settings.public_ip {
        tracing::info!(%public_ip, "public IP from the lease store");
    }
    let vni = config.backend.vni;
    let vtep_mac = hints
        .vtep_mac
        .unwrap_or_else(|| mac::vtep_mac(public_ip, vni));
    let spec = match &config.ipv4 {
        None => None,
        Some(_) => Some(DeviceSpec {
            vni,
            port: config.backend.port,
            local: public_ip,
            ext_index: settings.ext.index,
            mtu: vxlan_mtu::<ipnetwork::Ipv4Network>(&config, &settings)?,
            mac: vtep_mac,
            gbp: config.backend.gbp,
            learning: config.backend.learning,
        }),
    };
    let spec6 = match (&config.ipv6, settings.public_ipv6) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(IfaceError::NoGlobalIpv6 {
                iface: settings.ext.name.clone(),
            }
            .into())
        }
        (Some(_), Some(local)) => Some(DeviceSpec {
            vni,
            port: config.backend.port,
            local,
            ext_index: settings.ext.index,
            mtu: vxlan_mtu::<ipnetwork::Ipv6Network>(&config, &settings)?,
            mac: hints
                .vtep_mac_v6
                .unwrap_or_else(|| mac::vtep_mac_v6(local, vni)),
            gbp: config.backend.gbp,
            learning: config.backend.learning,
        }),
    };
    // Pods get an MTU that fits every family's device; the lease carries
    // each family's half (IPv6-only: `PublicIP` 0.0.0.0, as flannel).
    let (attrs, mtu) = match (&spec, &spec6) {
        (Some(s), None) => (LeaseAttrs::vxlan(s.local, vni, &mac::format(&s.mac)), s.mtu),
        (Some(s), Some(s6)) => (
            LeaseAttrs::vxlan(s.local, vni, &mac::format(&s.mac)).with_ipv6(
                s6.local,
                vni,
                &mac::format(&s6.mac),
            ),
            s.mtu.min(s6.mtu),
        ),
        (None, Some(s6)) => (
            LeaseAttrs::vxlan_v6_only(s6.local, vni, &mac::format(&s6.mac)),
            s6.mtu,
        ),
        (None, None) => return Err(DaemonError::NoFamily),
    };
    let specs = Specs {
        v4: spec,
        v6: spec6,
    };
    let mut dp = Datapath::create(
        handle,
        config.clone(),
        specs,
        store.chooses_subnets(),
        Arc::clone(&metrics),
    )
    .await
    .map_err(DaemonError::Datapath)?;

    let old_env = SubnetEnv::read(&settings.subnet_file).ok();
    let previous = Previous {
        ipv4: old_env.as_ref().and_then(SubnetEnv::pod_subnet),
        ipv6: old_env.as_ref().and_then(|e| e.ipv6_subnet),
    };
    let acquired = store.acquire_with(&config, &attrs, previous).await;
    metrics.store_request("acquire", &acquired);
    let mut lease = acquired.map_err(DaemonError::Acquire)?;
    tracing::info!(subnet = ?lease.ipv4(), ipv6_subnet = ?lease.ipv6_subnet, "lease acquired");
    let store_kind = settings.store_kind;
    metrics.set_lease(
        lease.main_subnet(),
        lease.attrs.node_ip(),
        store_kind,
        lease.expiration,
    );
    metrics.store_reachable.set(1);

    dp.adopt(&lease).await.map_err(DaemonError::Datapath)?;
    // The store's listing (thousands of leases: a wait on etcd or the API
    // server) starts now, beside the rules and subnet.env, and the kernel
    // is programmed as its pages arrive. The rules come before subnet.env
    // (pods take FLANNEL_IPMASQ from it); after it, the store is told the
    // datapath is ready, and the rules are read back (two `nft list` runs,
    // only for the periodic check).
    let listed = async {
        let watch = store.watch().await;
        metrics.store_request("watch", &watch);
        let mut watch = watch.map_err(DaemonError::Watch)?;
        dp.program_listing(&mut watch.listing)
            .await
            .map_err(DaemonError::Watch)?;
        Ok::<_, DaemonError>(watch)
    };
    let published = async {
        let mut rules = start_rules(&settings, &config, &lease).await?;
        write_subnet_env(&settings, &config, &lease, mtu)?;
        let report = async {
            let reported = store.datapath_ready(&lease).await;
            metrics.store_request("datapath_ready", &reported);
            reported.map_err(DaemonError::Ready)?;
            ready.set(true);
            Ok::<_, DaemonError>(())
        };
        let (reported, recorded) = tokio::join!(report, record_rules(&settings, &mut rules));
        reported?;
        recorded?;
        Ok::<_, DaemonError>(rules)
    };
    // A failure of either (the masquerade, the store) stops the other.
    let (mut rules, mut watch) = tokio::try_join!(published, listed)?;
    // What the listing and the first programming allocated goes back to
    // the system (the leases live on as the peers and the store's mirror).
    crate::heap::trim("the first programming");

    let mut kernel_events = watch_kernel::subscribe().map_err(DaemonError::KernelEvents)?;
    let mut next_resync = Instant::now() + settings.resync_interval;
    let mut renew_at = deadline(settings.timing.renew_at(&lease));
    let mut renewal = Renewal::default();
    let mut renewing: Option<tokio::task::JoinHandle<Result<Lease, LeaseError>>> = None;
    let mut rules_tick = tokio::time::interval(settings.rules_resync);
    // When the kernel last told of a change on our device not yet repaired.
    let mut changed_at: Option<Instant> = None;

    loop {
        // The devices' ifindexes change when one is recreated.
        let indexes = dp.indexes();
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping, datapath left in place"); return Ok(Exit::Stopped) }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping, datapath left in place"); return Ok(Exit::Stopped) }
            ev = watch.events.recv() => {
                // Everything already queued goes as one batch: one list of
                // kernel writes rather than three round trips per event.
                let (batch, ended) = drain(ev, &mut watch.events, &metrics);
                if !batch.is_empty() {
                    let follow = dp.on_lease_events(batch).await.map_err(DaemonError::Datapath)?;
                    if follow == Follow::RenewNow {
                        renew_at = Instant::now();
                    }
                }
                if ended {
                    return Err(DaemonError::WatchEnded);
                }
            }
            gone = kernel_events.changed(&indexes) => {
                // Something a peer needs went from our device: check at
                // once rather than at the next tick. Our own removals are
                // told back too; those need no check.
                if dp.wants(&gone) {
                    next_resync = Instant::now() + Duration::from_millis(20);
                    changed_at.get_or_insert_with(Instant::now);
                }
            }
            _ = tokio::time::sleep_until(next_resync) => {
                let started = Instant::now();
                dp.check_device().await;
                if dp.resync("periodic").await > 0 {
                    // From the kernel's notice of the change (else from this
                    // pass: a change no notice told of) to the repair.
                    let since = changed_at.unwrap_or(started);
                    metrics.observe_latency("repair", since.elapsed());
                }
                changed_at = None;
                ready.set_store(store.is_reachable());
                metrics.store_reachable.set(i64::from(store.is_reachable()));
                next_resync = Instant::now() + settings.resync_interval;
            }
            _ = rules_tick.tick() => {
                if let Some(keeper) = rules.as_mut() {
                    match keeper.check().await {
                        Ok(true) => {
                            metrics.masq_rewrites.inc();
                            tracing::warn!("masquerade/forward rules were changed; rewrote table {}", keeper.tables())
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!("check masquerade/forward rules: {}", chain(&e)),
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
                let result = result.map_err(DaemonError::RenewTask)?;
                metrics.store_request("renew", &result);
                match &result {
                    Ok(l) => {
                        metrics.lease_renewals.inc();
                        metrics.set_lease(l.main_subnet(), l.attrs.node_ip(), store_kind, l.expiration);
                    }
                    Err(_) => {
                        metrics.lease_renewal_failures.inc();
                    }
                }
                renew_at = renewal.settle(result, &mut lease, &settings.timing)?;
                ready.set_store(store.is_reachable());
                metrics.store_reachable.set(i64::from(store.is_reachable()));
            }
        }
    }
}

/// Events a batch takes at most (the watches queue at most a few hundred).
const BATCH_MAX: usize = 4096;

/// `first` and every lease event already queued behind it, in order (watch
/// errors are counted and logged on the way); and whether the watch ended.
fn drain(
    first: Option<Result<LeaseEvent, LeaseError>>,
    rx: &mut tokio::sync::mpsc::Receiver<Result<LeaseEvent, LeaseError>>,
    metrics: &Metrics,
) -> (Vec<LeaseEvent>, bool) {
    let mut batch = Vec::new();
    let mut next = first;
    loop {
        match next {
            Some(Ok(ev)) => batch.push(ev),
            Some(Err(e)) => {
                metrics.store_outcome("watch_event", Some(&e));
                tracing::warn!("lease watch: {e}")
            }
            None => return (batch, true),
        }
        if batch.len() >= BATCH_MAX {
            return (batch, false);
        }
        next = match rx.try_recv() {
            Ok(item) => Some(item),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return (batch, false),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
        };
    }
}

/// A device's MTU: the external interface's (or `Backend.MTU`) less the
/// family's encapsulation: 50 bytes of VXLAN over IPv4, 70 over IPv6.
/// IPv6 needs 1280 inside.
fn vxlan_mtu<F: VxlanFamily>(config: &NetConfig, settings: &Settings) -> Result<u32, DaemonError> {
    let base = config.backend.mtu.unwrap_or(settings.ext.mtu);
    let least = if F::BITS == 128 { 1280 } else { 576 };
    base.checked_sub(F::OVERHEAD)
        .filter(|m| *m >= least)
        .ok_or_else(|| DaemonError::Mtu {
            mtu: base,
            iface: settings.ext.name.clone(),
            family: F::NAME,
            needed: least + F::OVERHEAD,
        })
}

/// Installs the masquerade and forward rules. Masquerading was asked for,
/// so failing it is fatal; the forward rules are only a convenience.
async fn start_rules(
    settings: &Settings,
    config: &NetConfig,
    lease: &Lease,
) -> Result<Option<MasqKeeper>, DaemonError> {
    let ipv6 = match (&config.ipv6, lease.ipv6_subnet) {
        (Some(net), Some(own6)) => Some((net.network, own6)),
        (Some(_), None) => return Err(DaemonError::LeaseWithoutIpv6 { lease: lease.key() }),
        (None, _) => None,
    };
    let ipv4 = match (&config.ipv4, lease.ipv4()) {
        (Some(net), Some(own)) => Some((net.network, own)),
        (Some(_), None) => return Err(DaemonError::LeaseWithoutIpv4 { lease: lease.key() }),
        (None, _) => None,
    };
    let rules = MasqRules {
        ipv4,
        ipv6,
        masquerade: settings.ip_masq,
        forward: settings.forward_rules,
        fully_random: settings.fully_random,
    };
    match MasqKeeper::write(rules).await {
        Ok(keeper) => Ok(Some(keeper)),
        Err(e) => rules_failed(settings, "install", e),
    }
}

/// Reads back the rules `start_rules` wrote (see `MasqKeeper::record`).
/// A failure is handled as one of writing them: fatal with `--ip-masq`,
/// else the forward rules are no longer kept.
async fn record_rules(
    settings: &Settings,
    rules: &mut Option<MasqKeeper>,
) -> Result<(), DaemonError> {
    let Some(keeper) = rules.as_mut() else {
        return Ok(());
    };
    if let Err(e) = keeper.record().await {
        *rules = rules_failed(settings, "read back", e)?;
    }
    Ok(())
}

/// Masquerading was asked for, so failing it is fatal; the forward rules
/// are only a convenience: a warning, and they are not kept.
fn rules_failed(
    settings: &Settings,
    what: &str,
    e: crate::masq::MasqError,
) -> Result<Option<MasqKeeper>, DaemonError> {
    if settings.ip_masq {
        return Err(DaemonError::Masquerade(e));
    }
    tracing::warn!(
        "{what} forward rules: {}; continuing without them",
        chain(&e)
    );
    Ok(None)
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
    ) -> Result<Instant, DaemonError> {
        match result {
            Ok(renewed) => {
                if self.failing {
                    tracing::info!(lease = %renewed.key(), "lease renewed again");
                } else {
                    tracing::debug!(lease = %renewed.key(), "lease renewed");
                }
                *self = Self::default();
                *lease = renewed;
                Ok(deadline(timing.renew_at(lease)))
            }
            Err(e @ LeaseError::Lost { .. }) => Err(DaemonError::LeaseLost(e)),
            Err(e) => {
                self.backoff = if self.failing {
                    (self.backoff * 2).min(Self::MAX_RETRY)
                } else {
                    Self::FIRST_RETRY
                };
                if !self.failing {
                    tracing::warn!(
                        "renew lease for {}: {e}; retrying with back-off, the datapath stays as it is",
                        lease.key()
                    );
                }
                self.failing = true;
                Ok(Instant::now() + self.backoff)
            }
        }
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
    lease: &Lease,
    mtu: u32,
) -> Result<(), DaemonError> {
    let env = subnet_env(config, lease, mtu, settings.ip_masq)?;
    env.write_atomic(&settings.subnet_file)?;
    tracing::info!(path = %settings.subnet_file.display(), "subnet file written");
    Ok(())
}

/// `subnet.env` as flannel writes it: each enabled family's network and
/// its gateway (the subnet's first address) with the subnet's prefix, e.g.
/// `FLANNEL_SUBNET=10.244.1.1/24`, `FLANNEL_IPV6_SUBNET=fd00:10:244:7::1/64`;
/// the IPv4 pair left out on an IPv6-only node.
pub fn subnet_env(
    config: &NetConfig,
    lease: &Lease,
    mtu: u32,
    ipmasq: bool,
) -> Result<SubnetEnv, SubnetEnvBuildError> {
    let (network, subnet) = match &config.ipv4 {
        Some(v4) => {
            let own = lease
                .ipv4()
                .ok_or_else(|| SubnetEnvBuildError::NoIpv4Subnet { lease: lease.key() })?;
            (Some(v4.network), Some(gateway(own)?))
        }
        None => (None, None),
    };
    let (ipv6_network, ipv6_subnet) = match (&config.ipv6, lease.ipv6_subnet) {
        (Some(v6), Some(own)) => (Some(v6.network), Some(gateway(own)?)),
        (Some(_), None) => return Err(SubnetEnvBuildError::NoIpv6Subnet { lease: lease.key() }),
        (None, _) => (None, None),
    };
    Ok(SubnetEnv {
        network,
        subnet,
        mtu,
        ipmasq,
        ipv6_network,
        ipv6_subnet,
    })
}

/// Why `subnet.env` could not be built from the lease.
#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvBuildError {
    #[error("write subnet.env: IPv4 is enabled but the lease {lease} has no IPv4 subnet")]
    NoIpv4Subnet { lease: String },
    #[error("write subnet.env: IPv6 is enabled but the lease for {lease} has no IPv6 subnet")]
    NoIpv6Subnet { lease: String },
    /// The subnet has no first address with its prefix.
    #[error("gateway of {subnet}")]
    Gateway { subnet: String },
}

/// `subnet`'s first address with its prefix (the bridge gateway).
fn gateway<N: Family>(subnet: N) -> Result<N, SubnetEnvBuildError> {
    let first = N::from_bits(N::to_bits(subnet.base()) + 1);
    N::new(first, subnet.prefix()).ok_or_else(|| SubnetEnvBuildError::Gateway {
        subnet: subnet.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;

    fn lease(v6: Option<&str>) -> Lease {
        Lease {
            subnet: "10.244.1.0/24".parse().expect("net"),
            ipv6_subnet: v6.map(|s| s.parse().expect("net")),
            attrs: LeaseAttrs::vxlan("192.168.64.1".parse().expect("ip"), 1, "0e:00:00:00:00:01"),
            expiration: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn subnet_env_as_flannel_writes_it() {
        let v4 = subnet_env(&NetConfig::default_config(), &lease(None), 1450, true).expect("env");
        assert_eq!(
            v4.subnet.map(|s| s.to_string()).as_deref(),
            Some("10.244.1.1/24")
        );
        assert_eq!((v4.ipv6_network, v4.ipv6_subnet), (None, None));
        let dual = NetConfig::parse(
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#,
        )
        .expect("config");
        let env = subnet_env(&dual, &lease(Some("fd00:10:244:7::/64")), 1430, false).expect("env");
        assert_eq!(
            env.network.map(|n| n.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
        assert_eq!(
            env.ipv6_network.map(|n| n.to_string()).as_deref(),
            Some("fd00:10:244::/56")
        );
        assert_eq!(
            env.ipv6_subnet.map(|n| n.to_string()).as_deref(),
            Some("fd00:10:244:7::1/64")
        );
        assert!(subnet_env(&dual, &lease(None), 1430, false).is_err());
        let v6only = NetConfig::parse(
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#,
        )
        .expect("config");
        let env =
            subnet_env(&v6only, &lease(Some("fd00:10:244:7::/64")), 1430, false).expect("env");
        assert_eq!(
            (env.network, env.subnet),
            (None, None),
            "no IPv4 pair on IPv6-only"
        );
        assert!(env.ipv6_subnet.is_some());
    }
}
