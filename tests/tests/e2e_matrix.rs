//! End to end, scenario 1: 3 nodes × 3 pods. Every pod reaches every other
//! (across and within nodes) by ping and by TCP, the servers see the real
//! client addresses, and each node's flannel.1 holds exactly its two peers'
//! entries — each matching the peer's own device and address.

use flannel_cluster::cluster::{Cluster, VXLAN_DEV};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(10);
const REACH: Duration = Duration::from_secs(10);

#[test]
fn three_nodes_by_three_pods_full_matrix_and_exactly_the_peers_entries() {
    let c = Cluster::new(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(3);
    for p in &pods {
        let subnet = c.node(p.node).subnet();
        assert_eq!(
            flannel_cluster::cluster::network_of(&format!("{}/24", p.ip)).as_deref(),
            Some(subnet.as_str()),
            "pod {} is not in {}'s subnet",
            p.ip,
            c.node(p.node).name
        );
    }
    let refs: Vec<_> = pods.iter().collect();
    let ping = c.ping_matrix(&refs, REACH);
    ping.assert_all_ok();
    assert_eq!(ping.pairs(), 9 * 8);
    let tcp = c.tcp_matrix(&refs, REACH);
    tcp.assert_all_ok();
    eprintln!("{}\n{}", ping.render(), tcp.render());

    for i in 0..3 {
        let peers = c.expected_peers(i);
        assert_eq!(peers.len(), 2, "{}: {peers:?}", c.node(i).name);
        c.check_entries(i, &peers).unwrap();
        // Each peer entry is the peer's truth: its flannel.1 MAC, its eth0
        // address, its subnet.env.
        for p in &peers {
            let j = c
                .nodes()
                .iter()
                .position(|n| n.ip.to_string() == p.public_ip)
                .unwrap_or_else(|| panic!("no node has {}", p.public_ip));
            assert_ne!(i, j);
            let link = c.kernel(j).link.expect("peer's flannel.1");
            assert_eq!(p.vtep_mac, link.mac, "{} on {}", p.subnet, c.node(i).name);
            assert_eq!(p.subnet, c.node(j).subnet());
        }
        // Cross-node traffic went through the VXLAN device.
        let stats = c
            .node(i)
            .ns
            .ip_json(&["-s", "link", "show", "dev", VXLAN_DEV]);
        let tx = stats[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0);
        let rx = stats[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0);
        assert!(
            tx > 0 && rx > 0,
            "{}: flannel.1 tx={tx} rx={rx}",
            c.node(i).name
        );
    }
}
