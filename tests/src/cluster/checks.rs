//! Building blocks the end-to-end suites share: pods on every node, "no
//! trace of a lease" on a node, and a second underlay for multi-homed nodes.

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

    /// `Ok` when nothing of `lease` is left on node `on`'s flannel.1: no
    /// route to its subnet, no neighbour for its VTEP address or MAC, no
    /// FDB entry for its MAC or public IP.
    pub fn no_trace_of(&self, on: usize, lease: &LeaseFile) -> Result<(), String> {
        let k = self.kernel(on);
        let vtep = lease.vtep_ip();
        let mac = &lease.vtep_mac;
        let left: Vec<String> = k
            .routes
            .iter()
            .filter(|r| r.dst == lease.subnet)
            .map(|r| format!("{r:?}"))
            .chain(
                k.neighs
                    .iter()
                    .filter(|n| n.dst == vtep || &n.lladdr == mac)
                    .map(|n| format!("{n:?}")),
            )
            .chain(
                k.fdb
                    .iter()
                    .filter(|f| &f.mac == mac || f.dst == lease.public_ip)
                    .map(|f| format!("{f:?}")),
            )
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} still has entries of {} ({}): {}",
                self.node(on).name,
                lease.subnet,
                lease.public_ip,
                left.join(", ")
            ))
        }
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
