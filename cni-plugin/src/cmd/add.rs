//! ADD: bridge, addresses from the IPAM store, upstream's per-pod file
//! (`scratch.rs`), veth, the pod's addresses and routes, masquerade. On any
//! failure it undoes what it did: the veth is deleted, the addresses freed,
//! the per-pod file removed. (Not the masquerade element of a dual-stack
//! pod's first family when the second family's fails: GC removes it, as
//! its address is no longer allocated.)
//!
//! Owns the order of those steps and the result it reports; how each is done
//! is the module it calls. Starts no process on the per-pod path (`nft` runs
//! only for the node's first masquerading pod, in `masq`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::netns::Netns;
use ipnetwork::IpNetwork;
use serde_json::Value;

use super::{ip_masq, ipam_error, open_netns, open_store, read_subnet_env};
use crate::bridge::ensure_bridge;
use crate::cni_err;
use crate::env::CniEnv;
use crate::error::Result;
use crate::netlink::{Link, Netlink, Pending};
use crate::spec::{AddResult, Interface, IpConfig, NetConf, RouteConfig};
use crate::{masq, random, scratch};

/// How many random host-side names to try before giving up.
const VETH_NAME_ATTEMPTS: usize = 8;

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<Value> {
    let senv = read_subnet_env(conf)?;
    let netns_path = env
        .netns
        .as_deref()
        .ok_or_else(|| cni_err!(InvalidEnv, "CNI_NETNS is not set"))?;
    let ns = open_netns(netns_path)?;
    let host = Netlink::open()?;
    // An existing CNI_IFNAME shows up as EEXIST when the veth is created.
    let pod = Netlink::open_in(&ns)?;

    let d = &conf.delegate;
    let mtu = d.mtu.unwrap_or(senv.mtu);
    // IPv4 first, then IPv6: host-local's range sets [[v4], [v6]].
    let families = senv.families();
    let gateways: Vec<IpNetwork> = families.iter().map(|f| f.subnet).collect();
    let bridge = ensure_bridge(
        &host,
        &d.bridge,
        mtu,
        if d.is_gateway { &gateways } else { &[] },
        d.promisc_mode,
    )?;

    let store = open_store(conf)?;
    let mut taken: Vec<IpAddr> = Vec::with_capacity(families.len());
    let undo = |taken: &[IpAddr]| {
        for &ip in taken {
            if let Err(undo) = store.release_ip(ip, &env.container_id) {
                tracing::warn!("ADD failed and releasing {ip} failed too: {undo}");
            }
        }
    };
    let mut fams = Vec::with_capacity(families.len());
    for (range_id, f) in families.iter().enumerate() {
        let prefix = f.subnet.prefix();
        let ip = match store.allocate(
            f.pod_subnet(),
            f.gateway(),
            range_id,
            &env.container_id,
            &env.ifname,
        ) {
            Ok(ip) => ip,
            Err(e) => {
                undo(&taken);
                return Err(ipam_error(e));
            }
        };
        taken.push(ip);
        let address = IpNetwork::new(ip, prefix).map_err(|e| {
            undo(&taken);
            cni_err!(InvalidConfig, "address {ip}/{prefix}: {e}")
        })?;
        fams.push(FamilyAddr {
            address,
            gateway: f.gateway(),
            network: f.network,
        });
    }
    let masq = ip_masq(conf, Some(&senv)).unwrap_or(false);
    let net = PodNet {
        env,
        conf,
        ns: &ns,
        mtu,
        fams,
        masq,
    };
    // Upstream's per-pod file first (its DEL after a rollback needs it),
    // then the pod; a failure of either undoes both.
    let delegate = scratch::delegate_config(conf, &senv, mtu, masq);
    match scratch::save(conf, &env.container_id, &delegate)
        .and_then(|()| attach(&net, &host, &pod, &bridge))
    {
        Ok(result) => Ok(result.to_json(conf.version)),
        Err(e) => {
            scratch::remove(conf, &env.container_id);
            undo(&taken);
            Err(e)
        }
    }
}

/// What ADD gives the pod, decided before the kernel is touched: its
/// namespace, MTU, one address per family (already allocated), and
/// whether it masquerades; plus the request it answers.
struct PodNet<'a> {
    env: &'a CniEnv,
    conf: &'a NetConf,
    ns: &'a Netns,
    mtu: u32,
    /// One per address family of subnet.env, IPv4 first.
    fams: Vec<FamilyAddr>,
    masq: bool,
}

/// The pod's address in one family, with that family's gateway and
/// cluster network.
struct FamilyAddr {
    address: IpNetwork,
    gateway: IpAddr,
    network: IpNetwork,
}

impl FamilyAddr {
    /// The cluster network, and the default route when asked, via the gateway.
    fn routes(&self, default: bool) -> Vec<RouteConfig> {
        let any = match self.network {
            IpNetwork::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpNetwork::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let mut dsts = vec![self.network];
        if default {
            dsts.extend(IpNetwork::new(any, 0).ok());
        }
        dsts.into_iter()
            .map(|dst| RouteConfig {
                dst,
                gw: self.gateway,
            })
            .collect()
    }
}

/// Creates the veth and configures both ends; on failure removes the veth.
fn attach(net: &PodNet<'_>, host: &Netlink, pod: &Netlink, bridge: &Link) -> Result<AddResult> {
    let ifname = &net.env.ifname;
    let mut attempt = 0;
    let peer_mac = random::mac();
    let (host_name, echoed) = loop {
        let name = random::name("veth");
        match host.create_veth(
            &name,
            ifname,
            peer_mac,
            net.ns.file(),
            net.mtu,
            bridge.index,
        ) {
            Ok(echoed) => break (name, echoed),
            Err(e) if e.is(libc::EEXIST) => {
                if pod.link_by_name(ifname)?.is_some() {
                    return Err(cni_err!(
                        InterfaceExists,
                        "interface {ifname} already exists in {}",
                        net.ns
                    ));
                }
                attempt += 1;
                if attempt == VETH_NAME_ATTEMPTS {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    // The kernel's echo of the new link names both ends; older kernels
    // do not echo, and the ends are looked up instead.
    let known = echoed.map(|(host_link, peer_index)| {
        let pod_link = Link {
            index: peer_index,
            name: ifname.clone(),
            mac: common::mac::format(&peer_mac),
            mtu: net.mtu,
            kind: None,
            controller: None,
            up: false,
            peer: Some(host_link.index),
            peer_netnsid: None,
        };
        (host_link, pod_link)
    });
    match configure(net, host, pod, bridge, &host_name, known) {
        Ok(result) => Ok(result),
        Err(e) => {
            // Deleting one end of a veth deletes both.
            if let Ok(Some(link)) = host.link_by_name(&host_name) {
                if let Err(undo) = host.delete_link(link.index, &host_name) {
                    tracing::warn!("ADD failed and removing its veth failed too: {undo}");
                }
            }
            Err(e)
        }
    }
}

/// The node's end: look it up (index, MAC) unless known, and send the
/// hairpin setting (its answer is read by the caller).
fn host_end(
    net: &PodNet<'_>,
    host: &Netlink,
    host_name: &str,
    known: Option<Link>,
) -> Result<(Link, Option<Pending>)> {
    let link = match known {
        Some(link) => link,
        None => host
            .link_by_name(host_name)?
            .ok_or_else(|| cni_err!(Kernel, "veth {host_name} vanished right after creation"))?,
    };
    // Sent now, its answer read after the pod's end is configured: the
    // two ends are independent, one socket each.
    let hairpin = if net.conf.delegate.hairpin_mode {
        Some(host.start(Netlink::hairpin_request(link.index, true))?)
    } else {
        None
    };
    Ok((link, hairpin))
}

/// The pod's end: arp_notify, addresses, up, routes. Returns the link and
/// the routes.
fn pod_end(
    net: &PodNet<'_>,
    pod: &Netlink,
    known: Option<Link>,
) -> Result<(Link, Vec<RouteConfig>)> {
    let ifname = &net.env.ifname;
    let link = match known {
        Some(link) => link,
        None => pod
            .link_by_name(ifname)?
            .ok_or_else(|| cni_err!(Kernel, "veth peer {ifname} did not appear in {}", net.ns))?,
    };
    let default = net.conf.delegate.is_default_gateway;
    let routes: Vec<RouteConfig> = net.fams.iter().flat_map(|f| f.routes(default)).collect();
    // arp_notify (before up, which announces the address), addresses
    // (IPv6 ones without DAD), up, then the routes through the gateways
    // that the addresses make reachable: sent on one socket in that
    // order, so the kernel applies them in that order, without a wait
    // between them.
    let index = link.index;
    let mut requests = vec![Netlink::arp_notify_request(index, ifname)];
    requests.extend(
        net.fams
            .iter()
            .map(|f| Netlink::address_request(index, f.address, ifname)),
    );
    requests.push(Netlink::up_request(index, ifname));
    requests.extend(
        routes
            .iter()
            .map(|r| Netlink::route_request(r.dst, r.gw, index)),
    );
    pod.run_all(requests)?;
    Ok((link, routes))
}

fn configure(
    net: &PodNet<'_>,
    host: &Netlink,
    pod: &Netlink,
    bridge: &Link,
    host_name: &str,
    known: Option<(Link, Link)>,
) -> Result<AddResult> {
    let ifname = &net.env.ifname;
    let d = &net.conf.delegate;
    let (host_known, pod_known) = match known {
        Some((h, p)) => (Some(h), Some(p)),
        None => (None, None),
    };
    let (host_link, hairpin) = host_end(net, host, host_name, host_known)?;
    let pod_end = pod_end(net, pod, pod_known);
    if let Some(pending) = hairpin {
        host.finish(pending)?;
    }
    let (pod_link, routes) = pod_end?;
    if net.masq {
        // Both families: `ip` and `ip6` tables (see masq/mod.rs).
        let pods: Vec<_> = net
            .fams
            .iter()
            .map(|f| (f.network, f.address.ip()))
            .collect();
        masq::add(&net.conf.name, &pods, &net.env.container_id, ifname)?;
    }
    Ok(AddResult {
        bridge: Interface {
            name: d.bridge.clone(),
            mac: bridge.mac.clone(),
            mtu: None,
            sandbox: None,
        },
        host: Interface {
            name: host_name.to_string(),
            mac: host_link.mac,
            mtu: None,
            sandbox: None,
        },
        container: Interface {
            name: ifname.clone(),
            mac: pod_link.mac,
            mtu: Some(net.mtu),
            sandbox: Some(net.ns.to_string()),
        },
        ips: net
            .fams
            .iter()
            .map(|f| IpConfig {
                address: f.address,
                gateway: f.gateway,
            })
            .collect(),
        routes,
    })
}
