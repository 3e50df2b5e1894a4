//! A node's kernel state on `flannel.1` (IPv4) or `flannel-v6.1` (IPv6),
//! read back with iproute2, and the entries a set of peer leases calls for
//! on each.
//!
//! It reads with iproute2 inside the node's namespace; it does not change the
//! node's kernel state, and never looks at the host's.

use super::family::{IpFamily, VXLAN_DEV6};
use super::lease::LeaseFile;
use super::VXLAN_DEV;
use crate::netns::NetNs;
use serde_json::Value;
use std::collections::BTreeSet;

/// `ip -d -j link show flannel.1`, the parts that matter.
#[derive(Debug, Clone)]
pub struct VxlanInfo {
    pub ifindex: u64,
    pub mac: String,
    pub mtu: u64,
    pub kind: String,
    pub vni: Option<u64>,
    pub local: Option<String>,
    /// The underlay device (`dev eth0`).
    pub dev: Option<String>,
    pub port: Option<u64>,
    pub learning: Option<bool>,
    pub flags: Vec<String>,
    /// The device's addresses of its family, "a.b.c.d/len" (IPv6: global
    /// ones, "fd00:10:244:1::/128"; the kernel's link-local one left out).
    pub addrs: Vec<String>,
    pub raw: Value,
}

/// `ip -j -4 neigh show dev flannel.1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObservedNeigh {
    pub dst: String,
    pub lladdr: String,
    pub state: Vec<String>,
}

/// `bridge -j fdb show dev flannel.1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObservedFdb {
    pub mac: String,
    pub dst: String,
    pub flags: Vec<String>,
    pub state: String,
}

/// `ip -j -4 route show dev flannel.1` (main table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObservedRoute {
    pub dst: String,
    pub gateway: String,
    pub flags: Vec<String>,
}

/// Everything flanneld keeps on one node's flannel.1 (or flannel-v6.1).
#[derive(Debug, Clone)]
pub struct KernelState {
    /// The device looked at (`flannel.1` or `flannel-v6.1`).
    pub dev: &'static str,
    pub link: Option<VxlanInfo>,
    pub neighs: Vec<ObservedNeigh>,
    pub fdb: Vec<ObservedFdb>,
    pub routes: Vec<ObservedRoute>,
}

/// What one peer's lease calls for on the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPeer {
    /// "10.244.2.0/24"
    pub subnet: String,
    /// "10.244.2.0"
    pub vtep_ip: String,
    pub vtep_mac: String,
    pub public_ip: String,
}

impl ExpectedPeer {
    /// Its IPv4 entries (on flannel.1).
    pub fn from_lease(l: &LeaseFile) -> ExpectedPeer {
        ExpectedPeer {
            subnet: l.subnet.clone(),
            vtep_ip: l.vtep_ip().to_owned(),
            vtep_mac: l.vtep_mac.to_lowercase(),
            public_ip: l.public_ip.clone(),
        }
    }

    /// Its entries of single family `f` (IPv6: on flannel-v6.1, from the
    /// IPv6 subnet, `PublicIPv6` and `BackendV6Data`), if it has that family.
    pub fn of_family(l: &LeaseFile, f: IpFamily) -> Option<ExpectedPeer> {
        match f {
            IpFamily::V6 => Some(ExpectedPeer {
                subnet: l.subnet6.clone()?,
                vtep_ip: l.vtep_ip6()?.to_owned(),
                vtep_mac: l.vtep_mac6.clone()?,
                public_ip: l.public_ipv6.clone()?,
            }),
            _ => l.has(IpFamily::V4).then(|| ExpectedPeer::from_lease(l)),
        }
    }
}

/// The device flanneld keeps for single family `f`.
pub fn vxlan_dev(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V6 => VXLAN_DEV6,
        _ => VXLAN_DEV,
    }
}

/// An IPv6 link-local address or prefix (the kernel's own on every
/// device; flanneld never writes one).
fn is_link_local(s: &str) -> bool {
    s.to_ascii_lowercase().starts_with("fe80:")
}

fn strs(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => vec![],
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

fn json_lines(ns: &NetNs, prog: &str, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-n", ns.name(), "-j"];
    full.extend_from_slice(args);
    let out = crate::cmd::run_args(prog, &full);
    if !out.success() {
        // The device is gone: nothing on it.
        return vec![];
    }
    match serde_json::from_str::<Value>(&out.stdout) {
        Ok(Value::Array(a)) => a,
        _ => vec![],
    }
}

impl KernelState {
    /// flannel.1 and its IPv4 entries.
    pub fn read(ns: &NetNs) -> KernelState {
        KernelState::read_family(ns, IpFamily::V4)
    }

    /// The device of single family `f` and its entries of that family;
    /// IPv6: the kernel's routes and link-local neighbours left out.
    pub fn read_family(ns: &NetNs, f: IpFamily) -> KernelState {
        let dev = vxlan_dev(f);
        let fam = if f == IpFamily::V6 { "-6" } else { "-4" };
        let link = read_link(ns, dev, fam);
        if link.is_none() {
            return KernelState {
                dev,
                link,
                neighs: vec![],
                fdb: vec![],
                routes: vec![],
            };
        }
        let mut neighs: Vec<ObservedNeigh> =
            json_lines(ns, "ip", &[fam, "neigh", "show", "dev", dev])
                .iter()
                .filter(|n| !is_link_local(&s(&n["dst"])))
                .map(|n| ObservedNeigh {
                    dst: s(&n["dst"]),
                    lladdr: s(&n["lladdr"]).to_lowercase(),
                    state: strs(&n["state"]),
                })
                .collect();
        let mut fdb: Vec<ObservedFdb> = json_lines(ns, "bridge", &["fdb", "show", "dev", dev])
            .iter()
            .map(|f| ObservedFdb {
                mac: s(&f["mac"]).to_lowercase(),
                dst: s(&f["dst"]),
                flags: strs(&f["flags"]),
                state: s(&f["state"]),
            })
            .collect();
        let mut routes: Vec<ObservedRoute> =
            json_lines(ns, "ip", &[fam, "route", "show", "dev", dev])
                .iter()
                // IPv6: the kernel's own routes (link-local, the device's
                // /128) are not flanneld's.
                .filter(|r| f != IpFamily::V6 || s(&r["protocol"]) != "kernel")
                .map(|r| ObservedRoute {
                    dst: s(&r["dst"]),
                    gateway: s(&r["gateway"]),
                    flags: strs(&r["flags"]),
                })
                .collect();
        neighs.sort();
        fdb.sort();
        routes.sort();
        KernelState {
            dev,
            link,
            neighs,
            fdb,
            routes,
        }
    }

    /// `Ok` when the routes, neighbours and FDB entries on the device are
    /// exactly those `peers` call for (no missing, no extra, right flags).
    pub fn check_exactly(&self, peers: &[ExpectedPeer]) -> Result<(), String> {
        if self.link.is_none() {
            return if peers.is_empty() {
                Ok(())
            } else {
                Err(format!("no {}", self.dev))
            };
        }
        let mut errs = Vec::new();
        let want_routes: BTreeSet<(String, String)> = peers
            .iter()
            .map(|p| (p.subnet.clone(), p.vtep_ip.clone()))
            .collect();
        let got_routes: BTreeSet<(String, String)> = self
            .routes
            .iter()
            .map(|r| (r.dst.clone(), r.gateway.clone()))
            .collect();
        if want_routes != got_routes {
            errs.push(format!(
                "routes (dst, via): want {want_routes:?}, got {got_routes:?}"
            ));
        }
        for r in &self.routes {
            if !r.flags.iter().any(|f| f == "onlink") {
                errs.push(format!("route {} is not onlink: {r:?}", r.dst));
            }
        }
        let want_neigh: BTreeSet<(String, String)> = peers
            .iter()
            .map(|p| (p.vtep_ip.clone(), p.vtep_mac.clone()))
            .collect();
        let got_neigh: BTreeSet<(String, String)> = self
            .neighs
            .iter()
            .map(|n| (n.dst.clone(), n.lladdr.clone()))
            .collect();
        if want_neigh != got_neigh {
            errs.push(format!(
                "neighbours (ip, lladdr): want {want_neigh:?}, got {got_neigh:?}"
            ));
        }
        for n in &self.neighs {
            if !n.state.iter().any(|s| s == "PERMANENT") {
                errs.push(format!("neighbour {} is not PERMANENT: {n:?}", n.dst));
            }
        }
        let want_fdb: BTreeSet<(String, String)> = peers
            .iter()
            .map(|p| (p.vtep_mac.clone(), p.public_ip.clone()))
            .collect();
        let got_fdb: BTreeSet<(String, String)> = self
            .fdb
            .iter()
            .map(|f| (f.mac.clone(), f.dst.clone()))
            .collect();
        if want_fdb != got_fdb {
            errs.push(format!(
                "fdb (mac, dst): want {want_fdb:?}, got {got_fdb:?}"
            ));
        }
        for f in &self.fdb {
            if !f.flags.iter().any(|x| x == "self") || f.state != "permanent" {
                errs.push(format!("fdb {} is not `self permanent`: {f:?}", f.mac));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", self.dev, errs.join("; ")))
        }
    }
}

fn read_link(ns: &NetNs, dev: &str, fam: &str) -> Option<VxlanInfo> {
    let raw = ns.link(dev)?;
    let li = &raw["linkinfo"];
    let d = &li["info_data"];
    let addrs = json_lines(ns, "ip", &[fam, "addr", "show", "dev", dev])
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| !is_link_local(a["local"].as_str().unwrap_or("")))
        .filter_map(|a| {
            Some(format!(
                "{}/{}",
                a["local"].as_str()?,
                a["prefixlen"].as_u64()?
            ))
        })
        .collect();
    Some(VxlanInfo {
        ifindex: raw["ifindex"].as_u64().unwrap_or(0),
        mac: s(&raw["address"]).to_lowercase(),
        mtu: raw["mtu"].as_u64().unwrap_or(0),
        kind: s(&li["info_kind"]),
        vni: d["id"].as_u64(),
        local: d["local"]
            .as_str()
            .or(d["local6"].as_str())
            .map(str::to_owned),
        dev: d["link"].as_str().map(str::to_owned),
        port: d["port"].as_u64(),
        learning: d["learning"].as_bool(),
        flags: strs(&raw["flags"]),
        addrs,
        raw,
    })
}
