//! ADD: bridge, veth, address, routes, masquerade; undo on any failure.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use ipnetwork::Ipv4Network;
use serde_json::Value;

use super::{ip_masq, ipam_error, open_netns, open_store, read_subnet_env};
use crate::bridge::{ensure_bridge, random_veth_name};
use crate::cni_err;
use crate::env::CniEnv;
use crate::error::Result;
use crate::netlink::{Link, Netlink};
use crate::spec::{AddResult, Interface, NetConf};
use crate::{masq, sysctl};

/// How many random host-side names to try before giving up.
const VETH_NAME_ATTEMPTS: usize = 8;

pub async fn run(env: &CniEnv, conf: &NetConf) -> Result<Value> {
    let senv = read_subnet_env(conf)?;
    let netns_path = env
        .netns
        .as_deref()
        .ok_or_else(|| cni_err!(InvalidEnv, "CNI_NETNS is not set"))?;
    let ns = open_netns(netns_path)?;
    let place = netns_path.display().to_string();
    let host = Netlink::open()?;
    // An existing CNI_IFNAME shows up as EEXIST when the veth is created.
    let pod = Netlink::open_in(&ns, &place)?;

    let d = &conf.delegate;
    let mtu = d.mtu.unwrap_or(senv.mtu);
    let prefix = senv.subnet.prefix();
    let gateway = senv.gateway();
    let gw_net = Ipv4Network::new(gateway, prefix)
        .map_err(|e| cni_err!(InvalidConfig, "gateway {gateway}/{prefix}: {e}"))?;
    let bridge = ensure_bridge(
        &host,
        &d.bridge,
        mtu,
        d.is_gateway.then_some(gw_net),
        d.promisc_mode,
    )
    .await?;

    let store = open_store(conf)?;
    let ip = store
        .allocate(senv.pod_subnet(), gateway, &env.container_id, &env.ifname)
        .map_err(ipam_error)?;
    let plan = Plan {
        env,
        conf,
        ns: &ns,
        place: &place,
        mtu,
        address: Ipv4Network::new(ip, prefix)
            .map_err(|e| cni_err!(InvalidConfig, "address {ip}/{prefix}: {e}"))?,
        gateway,
        network: senv.network,
        masq: ip_masq(conf, Some(&senv)).unwrap_or(false),
    };
    match attach(&plan, &host, &pod, &bridge).await {
        Ok(result) => Ok(result.to_json(conf.version)),
        Err(e) => {
            if let Err(undo) = store.release_ip(ip, &env.container_id) {
                tracing::warn!("ADD failed and releasing {ip} failed too: {undo}");
            }
            Err(e)
        }
    }
}

struct Plan<'a> {
    env: &'a CniEnv,
    conf: &'a NetConf,
    ns: &'a File,
    place: &'a str,
    mtu: u32,
    address: Ipv4Network,
    gateway: Ipv4Addr,
    network: Ipv4Network,
    masq: bool,
}

/// Creates the veth and configures both ends; on failure removes the veth.
async fn attach(
    plan: &Plan<'_>,
    host: &Netlink,
    pod: &Netlink,
    bridge: &Link,
) -> Result<AddResult> {
    let ifname = &plan.env.ifname;
    let mut attempt = 0;
    let host_name = loop {
        let name = random_veth_name();
        match host
            .create_veth(&name, ifname, plan.ns, plan.mtu, bridge.index)
            .await
        {
            Ok(()) => break name,
            Err(e) if e.is(libc::EEXIST) => {
                if pod.link_by_name(ifname).await?.is_some() {
                    return Err(cni_err!(
                        InterfaceExists,
                        "interface {ifname} already exists in {}",
                        plan.place
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
    match configure(plan, host, pod, bridge, &host_name).await {
        Ok(result) => Ok(result),
        Err(e) => {
            // Deleting one end of a veth deletes both.
            if let Ok(Some(link)) = host.link_by_name(&host_name).await {
                if let Err(undo) = host.delete_link(link.index, &host_name).await {
                    tracing::warn!("ADD failed and removing its veth failed too: {undo}");
                }
            }
            Err(e)
        }
    }
}

/// The node's end: look it up (index, MAC), hairpin as configured.
async fn host_end(plan: &Plan<'_>, host: &Netlink, host_name: &str) -> Result<Link> {
    let link = host
        .link_by_name(host_name)
        .await?
        .ok_or_else(|| cni_err!(Kernel, "veth {host_name} vanished right after creation"))?;
    if plan.conf.delegate.hairpin_mode {
        host.set_hairpin(link.index, true).await?;
    }
    Ok(link)
}

/// The pod's end: arp_notify, address, up, routes. Returns the link and
/// the routes' destinations.
async fn pod_end(plan: &Plan<'_>, pod: &Netlink) -> Result<(Link, Vec<Ipv4Network>)> {
    let ifname = &plan.env.ifname;
    let link = pod.link_by_name(ifname).await?.ok_or_else(|| {
        cni_err!(
            Kernel,
            "veth peer {ifname} did not appear in {}",
            plan.place
        )
    })?;
    common::netns::run_in(plan.ns.as_fd(), || {
        sysctl::ensure(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1")
    })
    .map_err(|e| cni_err!(Kernel, "enter {} to set arp_notify: {e}", plan.place))??;
    pod.ensure_address(link.index, plan.address, ifname).await?;
    pod.set_up(link.index, ifname).await?;
    let mut routes = vec![plan.network];
    if plan.conf.delegate.is_default_gateway {
        routes.push(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or(plan.network));
    }
    for dst in &routes {
        pod.ensure_route(*dst, plan.gateway, link.index).await?;
    }
    Ok((link, routes))
}

async fn configure(
    plan: &Plan<'_>,
    host: &Netlink,
    pod: &Netlink,
    bridge: &Link,
    host_name: &str,
) -> Result<AddResult> {
    let ifname = &plan.env.ifname;
    let d = &plan.conf.delegate;
    // The two ends are independent: configure them concurrently, one
    // netlink socket each.
    let (host_link, (pod_link, routes)) =
        futures::try_join!(host_end(plan, host, host_name), pod_end(plan, pod))?;
    if plan.masq {
        masq::add(
            &plan.conf.name,
            plan.network,
            plan.address.ip(),
            &plan.env.container_id,
            ifname,
        )?;
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
            mtu: Some(plan.mtu),
            sandbox: Some(plan.place.to_string()),
        },
        address: plan.address,
        gateway: plan.gateway,
        routes,
    })
}
