//! Building blocks the end-to-end suites share: pods on every node, "no
//! trace of a lease" on a node, and a second underlay for multi-homed nodes.
//!
//! Each block composes the cluster's own readers and builders; none touches a
//! namespace the cluster does not own, or the product's internals.

use super::family::IpFamily;
use super::{Cluster, ClusterPod, LeaseFile, NODE_IP_BASE};
use std::net::Ipv4Addr;

/// The second underlay's bridge, its address, and the nodes' second subnet.
pub const SECOND_BRIDGE: &str = "br1";
pub const SECOND_GATEWAY: &str = "192.168.65.1";

impl Cluster {
    /// `per_node` pods on every node, node by node.
    #[track_caller]
    pub fn add_pods(&self, per_node: usize) -> Vec<ClusterPod> {
        (0..self.len())
            .flat_map(|i| (0..per_node).map(move |_| i))
            .map(|i| self.add_pod(i))
            .collect()
    }

    /// `Ok` when nothing of `lease` is left on node `on`'s flannel.1 nor
    /// flannel-v6.1: no route to its subnets, no neighbour for its VTEP
    /// addresses or MACs, no FDB entry for its MACs or public IPs.
    pub fn no_trace_of(&self, on: usize, lease: &LeaseFile) -> Result<(), String> {
        let mut left: Vec<String> = Vec::new();
        for f in [IpFamily::V4, IpFamily::V6] {
            let k = self.kernel_of(on, f);
            let (subnet, vtep, mac, public) = match f {
                IpFamily::V6 => (
                    lease.subnet6.clone().unwrap_or_default(),
                    lease.vtep_ip6().unwrap_or_default().to_owned(),
                    lease.vtep_mac6.clone().unwrap_or_default(),
                    lease.public_ipv6.clone().unwrap_or_default(),
                ),
                _ => (
                    lease.subnet.clone(),
                    lease.vtep_ip().to_owned(),
                    lease.vtep_mac.clone(),
                    lease.public_ip.clone(),
                ),
            };
            let is = |a: &str, b: &str| !b.is_empty() && a == b;
            left.extend(
                k.routes
                    .iter()
                    .filter(|r| is(&r.dst, &subnet))
                    .map(|r| format!("{}: {r:?}", k.dev))
                    .chain(
                        k.neighs
                            .iter()
                            .filter(|n| is(&n.dst, &vtep) || is(&n.lladdr, &mac))
                            .map(|n| format!("{}: {n:?}", k.dev)),
                    )
                    .chain(
                        k.fdb
                            .iter()
                            .filter(|e| is(&e.mac, &mac) || is(&e.dst, &public))
                            .map(|e| format!("{}: {e:?}", k.dev)),
                    ),
            );
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} still has entries of {} ({} {}): {}",
                self.node(on).name,
                lease.subnets(),
                lease.public_ip,
                lease.public_ipv6.as_deref().unwrap_or(""),
                left.join(", ")
            ))
        }
    }

    /// Node `i`'s underlay IPv6 address becomes `new` (added, `nodad`,
    /// before the old one goes, so the /64 and the default route stay):
    /// a renumbering that changes only the IPv6 half of its lease once
    /// its flanneld restarts. Returns the old address.
    pub fn renumber_ip6(&mut self, i: usize, new: std::net::Ipv6Addr) -> std::net::Ipv6Addr {
        let n = &mut self.nodes[i];
        let old = n
            .ip6
            .unwrap_or_else(|| panic!("{} has no IPv6 address", n.name));
        let (a_new, a_old) = (format!("{new}/64"), format!("{old}/64"));
        n.ns.ip_ok(&["-6", "addr", "add", &a_new, "dev", "eth0", "nodad"]);
        n.ns.ip_ok(&["-6", "addr", "del", &a_old, "dev", "eth0"]);
        n.ip6 = Some(new);
        old
    }

    /// A second underlay: a namespace with bridge `br1` 192.168.65.1/24;
    /// each node of `which` gets `eth1` 192.168.65.<10+i>/24 on it, and its
    /// default route moved there (the wrong interface for the overlay: the
    /// other nodes are only on the first underlay). Before flanneld starts.
    pub fn add_second_underlay(&mut self, which: &[usize]) {
        let u2 = self.make_ns("u2", "underlay2");
        u2.add_bridge(SECOND_BRIDGE);
        u2.add_addr(SECOND_BRIDGE, &format!("{SECOND_GATEWAY}/24"));
        for &i in which {
            let ns = &self.node(i).ns;
            let peer = format!("w{i}");
            ns.add_veth_to("eth1", &u2, &peer);
            u2.set_master(&peer, SECOND_BRIDGE);
            let ip = Ipv4Addr::new(192, 168, 65, NODE_IP_BASE + i as u8);
            ns.add_addr("eth1", &format!("{ip}/24"));
            ns.ip_ok(&[
                "route",
                "replace",
                "default",
                "via",
                SECOND_GATEWAY,
                "dev",
                "eth1",
            ]);
        }
        self.adopt_ns(u2);
    }
}
