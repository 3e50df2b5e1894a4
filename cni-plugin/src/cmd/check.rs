//! CHECK: is the pod's network still what ADD reported in `prevResult`?

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use super::{ipam_error, open_netns, open_store, read_subnet_env};
use crate::cni_err;
use crate::env::CniEnv;
use crate::error::Result;
use crate::netlink::Netlink;
use crate::spec::{NetConf, Version};

#[derive(Deserialize)]
struct Prev {
    #[serde(default)]
    interfaces: Vec<PrevInterface>,
    #[serde(default)]
    ips: Vec<PrevIp>,
    #[serde(default)]
    routes: Vec<PrevRoute>,
}

#[derive(Deserialize)]
struct PrevInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct PrevIp {
    address: String,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct PrevRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

fn mismatch(what: String) -> crate::error::CniError {
    cni_err!(CheckMismatch, "CHECK: {what}")
}

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<()> {
    if conf.version < Version::V040 {
        return Err(cni_err!(
            IncompatibleVersion,
            "CHECK needs cniVersion 0.4.0 or later, the configuration says {}",
            conf.version.as_str()
        ));
    }
    let prev_value = conf
        .prev_result
        .clone()
        .ok_or_else(|| cni_err!(InvalidConfig, "CHECK needs prevResult"))?;
    let prev: Prev = serde_json::from_value(prev_value)
        .map_err(|e| cni_err!(Decode, "decode prevResult: {e}"))?;
    let senv = read_subnet_env(conf)?;
    let path = env
        .netns
        .as_deref()
        .ok_or_else(|| cni_err!(InvalidEnv, "CNI_NETNS is not set"))?;
    let place = path.display().to_string();
    let ns = open_netns(path)?;
    let pod = Netlink::open_in(&ns, &place)?;
    let ifname = &env.ifname;

    // The container interface.
    let link = pod
        .link_by_name(ifname)?
        .ok_or_else(|| mismatch(format!("interface {ifname} not found in {place}")))?;
    if !link.up {
        return Err(mismatch(format!("interface {ifname} in {place} is down")));
    }
    let mtu = conf.delegate.mtu.unwrap_or(senv.mtu);
    if link.mtu != mtu {
        return Err(mismatch(format!(
            "interface {ifname} has MTU {}, expected {mtu}",
            link.mtu
        )));
    }
    let container_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == *ifname && i.sandbox.is_some());
    if let Some(mac) = container_idx.and_then(|i| prev.interfaces[i].mac.as_deref()) {
        if !mac.eq_ignore_ascii_case(&link.mac) {
            return Err(mismatch(format!(
                "interface {ifname} has MAC {}, prevResult says {mac}",
                link.mac
            )));
        }
    }

    // Its addresses, and the IPAM store's record of them.
    let have = pod.addresses(link.index)?;
    let held = open_store(conf)?
        .find(&env.container_id, ifname)
        .map_err(ipam_error)?;
    for ip in &prev.ips {
        if ip.interface.is_some() && ip.interface != container_idx {
            continue;
        }
        let want: Ipv4Network = ip.address.parse().map_err(|_| {
            cni_err!(
                Decode,
                "prevResult address {:?} is not IPv4 CIDR",
                ip.address
            )
        })?;
        if !have.contains(&want) {
            return Err(mismatch(format!(
                "address {want} is missing from {ifname} in {place}"
            )));
        }
        if !held.contains(&want.ip()) {
            return Err(mismatch(format!(
                "address {} is not allocated to {} {ifname} in the IPAM store",
                want.ip(),
                env.container_id
            )));
        }
    }

    // Routes.
    let routes = pod.routes()?;
    for r in &prev.routes {
        let dst: Ipv4Network = r
            .dst
            .parse()
            .map_err(|_| cni_err!(Decode, "prevResult route {:?} is not IPv4 CIDR", r.dst))?;
        let gw: Option<Ipv4Addr> = match r.gw.as_deref() {
            Some(g) => Some(
                g.parse()
                    .map_err(|_| cni_err!(Decode, "prevResult gateway {g:?} is not IPv4"))?,
            ),
            None => None,
        };
        let found = routes
            .iter()
            .any(|have| have.dst == dst && (gw.is_none() || have.gw == gw));
        if !found {
            return Err(mismatch(format!(
                "route {dst}{} is missing in {place}",
                gw.map(|g| format!(" via {g}")).unwrap_or_default()
            )));
        }
    }

    // The host end: present and attached to the bridge.
    let host = Netlink::open()?;
    let bridge_name = &conf.delegate.bridge;
    let bridge = host
        .link_by_name(bridge_name)?
        .ok_or_else(|| mismatch(format!("bridge {bridge_name} not found")))?;
    for i in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none() && i.name != *bridge_name)
    {
        let veth = host
            .link_by_name(&i.name)?
            .ok_or_else(|| mismatch(format!("host interface {} not found", i.name)))?;
        if veth.controller != Some(bridge.index) {
            return Err(mismatch(format!(
                "host interface {} is not attached to {bridge_name}",
                i.name
            )));
        }
    }
    Ok(())
}
