//! CHECK: is the pod's network still what ADD reported in `prevResult`?
//! The container interface (up, MTU, MAC), its addresses (on the interface
//! and held in the IPAM store), its routes, and the host ends on the bridge.
//!
//! Only looks: it changes nothing in the kernel, nftables or the store's
//! records (opening the store creates its directory if missing), and does
//! not check the masquerade element.

use std::net::IpAddr;

use common::netns::Netns;
use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::{ipam_error, open_netns, open_store, read_subnet_env};
use crate::cni_err;
use crate::env::CniEnv;
use crate::error::Result;
use crate::netlink::{Link, Netlink};
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

impl Prev {
    /// Decodes `prevResult`, in any supported version's shape.
    fn parse(value: serde_json::Value) -> Result<Prev> {
        serde_json::from_value(value).map_err(|e| cni_err!(Decode, "decode prevResult: {e}"))
    }

    /// The index of the container interface: `ifname`, in a sandbox.
    fn container(&self, ifname: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == ifname && i.sandbox.is_some())
    }

    /// The addresses of the container interface `container` (and those
    /// that name no interface), which must be CIDRs of either family.
    fn addresses(&self, container: Option<usize>) -> Result<Vec<IpNetwork>> {
        self.ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == container)
            .map(|ip| {
                parse_cidr(&ip.address).ok_or_else(|| {
                    cni_err!(
                        Decode,
                        "prevResult address {:?} is not an IP CIDR",
                        ip.address
                    )
                })
            })
            .collect()
    }

    /// Every route as (destination, gateway), of either family.
    fn routes(&self) -> Result<Vec<(IpNetwork, Option<IpAddr>)>> {
        self.routes
            .iter()
            .map(|r| {
                let dst = parse_cidr(&r.dst).ok_or_else(|| {
                    cni_err!(Decode, "prevResult route {:?} is not an IP CIDR", r.dst)
                })?;
                let gw = r.gw.as_deref().map(|g| {
                    g.parse().map_err(|_| {
                        cni_err!(Decode, "prevResult gateway {g:?} is not an IP address")
                    })
                });
                Ok((dst, gw.transpose()?))
            })
            .collect()
    }
}

/// A CIDR as the spec writes it, `10.244.1.5/24` or `fd00::5/64`.
/// `IpNetwork`'s own parser also takes a bare address (as a /32 or /128),
/// a netmask, a sign or leading zeros, which would turn a malformed
/// prevResult into a mismatch.
fn parse_cidr(s: &str) -> Option<IpNetwork> {
    let (_, len) = s.split_once('/')?;
    let digits = matches!(len.len(), 1..=3) && len.bytes().all(|b| b.is_ascii_digit());
    if digits && (len == "0" || !len.starts_with('0')) {
        s.parse().ok()
    } else {
        None
    }
}

fn mismatch(what: String) -> crate::error::CniError {
    cni_err!(CheckMismatch, "CHECK: {what}")
}

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<()> {
    let prev = prev_result(conf)?;
    let senv = read_subnet_env(conf)?;
    let path = env
        .netns
        .as_deref()
        .ok_or_else(|| cni_err!(InvalidEnv, "CNI_NETNS is not set"))?;
    let ns = open_netns(path)?;
    let pod = Pod {
        nl: Netlink::open_in(&ns)?,
        ns: &ns,
        ifname: &env.ifname,
    };
    let container = prev.container(pod.ifname);
    let mac = container.and_then(|i| prev.interfaces[i].mac.as_deref());
    let link = pod.interface(conf.delegate.mtu.unwrap_or(senv.mtu), mac)?;
    let held = open_store(conf)?
        .find(&env.container_id, pod.ifname)
        .map_err(ipam_error)?;
    pod.addresses(&link, &prev.addresses(container)?, &held, &env.container_id)?;
    pod.routes(&prev.routes()?)?;
    host_end(&conf.delegate.bridge, &prev)
}

/// `prevResult`, which CHECK needs, from a version that has CHECK.
fn prev_result(conf: &NetConf) -> Result<Prev> {
    if conf.version < Version::V040 {
        return Err(cni_err!(
            IncompatibleVersion,
            "CHECK needs cniVersion 0.4.0 or later, the configuration says {}",
            conf.version.as_str()
        ));
    }
    let value = conf
        .prev_result
        .clone()
        .ok_or_else(|| cni_err!(InvalidConfig, "CHECK needs prevResult"))?;
    Prev::parse(value)
}

/// The pod's side: its namespace and the container interface `ifname` in it.
struct Pod<'a> {
    nl: Netlink,
    ns: &'a Netns,
    ifname: &'a str,
}

impl Pod<'_> {
    /// The container interface: present, up, with the MTU ADD gave it and
    /// the MAC `prevResult` reported (when it reported one).
    fn interface(&self, mtu: u32, mac: Option<&str>) -> Result<Link> {
        let (ifname, ns) = (self.ifname, self.ns);
        let link = self
            .nl
            .link_by_name(ifname)?
            .ok_or_else(|| mismatch(format!("interface {ifname} not found in {ns}")))?;
        if !link.up {
            return Err(mismatch(format!("interface {ifname} in {ns} is down")));
        }
        if link.mtu != mtu {
            return Err(mismatch(format!(
                "interface {ifname} has MTU {}, expected {mtu}",
                link.mtu
            )));
        }
        if let Some(mac) = mac.filter(|m| !m.eq_ignore_ascii_case(&link.mac)) {
            return Err(mismatch(format!(
                "interface {ifname} has MAC {}, prevResult says {mac}",
                link.mac
            )));
        }
        Ok(link)
    }

    /// Every address `prevResult` gave the interface is on it, and the
    /// IPAM store (`held`) still records it as the container's.
    fn addresses(&self, link: &Link, want: &[IpNetwork], held: &[IpAddr], cid: &str) -> Result<()> {
        let (ifname, ns) = (self.ifname, self.ns);
        let have = self.nl.addresses(link.index)?;
        for want in want {
            if !have.contains(want) {
                return Err(mismatch(format!(
                    "address {want} is missing from {ifname} in {ns}"
                )));
            }
            if !held.contains(&want.ip()) {
                return Err(mismatch(format!(
                    "address {} is not allocated to {cid} {ifname} in the IPAM store",
                    want.ip()
                )));
            }
        }
        Ok(())
    }

    /// Every route of `prevResult` is in the pod (a route without a
    /// gateway matches any gateway).
    fn routes(&self, want: &[(IpNetwork, Option<IpAddr>)]) -> Result<()> {
        let routes = self.nl.routes()?;
        for &(dst, gw) in want {
            let found = routes
                .iter()
                .any(|have| have.dst == dst && (gw.is_none() || have.gw == gw));
            if !found {
                return Err(mismatch(format!(
                    "route {dst}{} is missing in {}",
                    gw.map(|g| format!(" via {g}")).unwrap_or_default(),
                    self.ns
                )));
            }
        }
        Ok(())
    }
}

/// The host end: the bridge exists, and every host interface of
/// `prevResult` is on it.
fn host_end(bridge_name: &str, prev: &Prev) -> Result<()> {
    let host = Netlink::open()?;
    let bridge = host
        .link_by_name(bridge_name)?
        .ok_or_else(|| mismatch(format!("bridge {bridge_name} not found")))?;
    let host_ifaces = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none() && i.name != bridge_name);
    for i in host_ifaces {
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

#[cfg(test)]
mod fuzz;
