//! Nodes on the embedded lease store: distinct subnets, a correctly
//! parameterised flannel.1, exactly the peers' routes/neighbours/FDB entries,
//! and pod-to-pod traffic across nodes.

use flannel_cluster::cluster::{Cluster, KernelState, VXLAN_DEV};
use std::net::Ipv4Addr;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(10);

fn subnet_in_network(subnet: &str) {
    let (ip, len) = subnet.split_once('/').expect("cidr");
    assert_eq!(len, "24", "subnet {subnet} is not a /24");
    let ip: Ipv4Addr = ip.parse().unwrap();
    let o = ip.octets();
    assert_eq!(
        (o[0], o[1], o[3]),
        (10, 244, 0),
        "subnet {subnet} is not a /24 of 10.244.0.0/16"
    );
    assert_ne!(
        o[2], 0,
        "the first subnet (10.244.0.0/24) is below the default SubnetMin"
    );
}

fn assert_distinct_subnets(c: &Cluster) -> Vec<String> {
    let subnets: Vec<String> = c.nodes().iter().map(|n| n.subnet()).collect();
    for s in &subnets {
        subnet_in_network(s);
    }
    let mut uniq = subnets.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(
        uniq.len(),
        subnets.len(),
        "subnets not distinct: {subnets:?}"
    );
    subnets
}

/// Every node: the lease names its IP and its device's MAC, and the entries
/// on flannel.1 are exactly the n−1 peers' (spelled out for node 0's peers).
fn assert_every_node_has_exactly_its_peers(c: &Cluster) {
    c.wait_all_converged(CONVERGE);
    for i in 0..c.len() {
        let lease = c.lease_of_ok(i);
        assert_eq!(
            lease.subnet,
            c.node(i).subnet(),
            "{}: lease vs subnet.env",
            c.node(i).name
        );
        assert_eq!(lease.backend_type, "vxlan");
        assert_eq!(lease.vni, Some(1));
        let k = c.kernel(i);
        let link = k.link.as_ref().expect("flannel.1");
        assert_eq!(
            lease.vtep_mac,
            link.mac,
            "{}: lease VtepMAC vs flannel.1's MAC",
            c.node(i).name
        );
        let peers = c.expected_peers(i);
        assert_eq!(
            peers.len(),
            c.len() - 1,
            "{}: peers from the leases: {peers:?}",
            c.node(i).name
        );
        assert_eq!(
            (k.routes.len(), k.neighs.len(), k.fdb.len()),
            (c.len() - 1, c.len() - 1, c.len() - 1),
            "{k:#?}"
        );
    }
    // The exact form of each entry, on node 0, for every peer.
    let k = c.kernel(0);
    for j in 1..c.len() {
        let l = c.lease_of_ok(j);
        let vtep = l.vtep_ip().to_owned();
        let r = k
            .routes
            .iter()
            .find(|r| r.dst == l.subnet)
            .unwrap_or_else(|| panic!("no route {}: {k:#?}", l.subnet));
        assert_eq!(r.gateway, vtep);
        assert!(r.flags.contains(&"onlink".to_owned()), "{r:?}");
        let n = k
            .neighs
            .iter()
            .find(|n| n.dst == vtep)
            .unwrap_or_else(|| panic!("no neigh {vtep}: {k:#?}"));
        assert_eq!(n.lladdr, l.vtep_mac);
        assert_eq!(n.state, vec!["PERMANENT".to_owned()]);
        let f = k
            .fdb
            .iter()
            .find(|f| f.mac == l.vtep_mac)
            .unwrap_or_else(|| panic!("no fdb {}: {k:#?}", l.vtep_mac));
        assert_eq!(f.dst, c.node(j).ip.to_string());
        assert!(
            f.flags.contains(&"self".to_owned()) && f.state == "permanent",
            "{f:?}"
        );
    }
}

fn in_subnet(ip: std::net::IpAddr, subnet24: &str) -> bool {
    let net: Ipv4Addr = subnet24.split('/').next().unwrap().parse().unwrap();
    matches!(ip, std::net::IpAddr::V4(v4) if v4.octets()[..3] == net.octets()[..3])
}

#[test]
fn two_then_three_nodes_get_distinct_subnets_and_exactly_their_peers_entries() {
    let mut c = Cluster::new(2);
    let first = assert_distinct_subnets(&c);
    assert_every_node_has_exactly_its_peers(&c);

    let i = c.add_node();
    c.start(i);
    c.wait_ready(i);
    let now = assert_distinct_subnets(&c);
    assert_eq!(&now[..2], &first[..], "existing nodes kept their subnets");
    assert_every_node_has_exactly_its_peers(&c);
    assert_eq!(
        c.leases().len(),
        3,
        "one lease file per node: {:#?}",
        c.leases()
    );
}

#[test]
fn subnet_env_and_lease_file_have_flannels_format() {
    let c = Cluster::new(1);
    let env = c.node(0).subnet_env().unwrap();
    let subnet = c.node(0).subnet();
    assert_eq!(
        env.get("FLANNEL_NETWORK").map(String::as_str),
        Some("10.244.0.0/16")
    );
    assert_eq!(env["FLANNEL_SUBNET"], subnet.replace(".0/24", ".1/24"));
    assert_eq!(env.get("FLANNEL_MTU").map(String::as_str), Some("1450"));
    assert_eq!(env.get("FLANNEL_IPMASQ").map(String::as_str), Some("false"));
    let l = c.lease_of_ok(0);
    assert_eq!(
        l.path.file_name().unwrap().to_string_lossy(),
        subnet.replace('/', "-")
    );
    assert_eq!(l.public_ip, "192.168.64.10");
    assert!(!l.is_expired());
    let mac = &l.vtep_mac;
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert!(
        first & 0x02 != 0 && first & 0x01 == 0,
        "VtepMAC {mac} is not locally administered unicast"
    );
}

#[test]
fn flannel_1_has_the_vxlan_parameters() {
    let c = Cluster::new(2);
    for i in 0..2 {
        let k = KernelState::read(&c.node(i).ns);
        let l = k
            .link
            .unwrap_or_else(|| panic!("{}: no {VXLAN_DEV}", c.node(i).name));
        let ctx = format!("{}: {:#}", c.node(i).name, l.raw);
        assert_eq!(l.kind, "vxlan", "{ctx}");
        assert_eq!(l.vni, Some(1), "{ctx}");
        assert_eq!(
            l.local.as_deref(),
            Some(c.node(i).ip.to_string().as_str()),
            "{ctx}"
        );
        assert_eq!(l.dev.as_deref(), Some("eth0"), "{ctx}");
        assert_eq!(l.port, Some(8472), "{ctx}");
        assert_eq!(l.learning, Some(false), "{ctx}");
        assert_eq!(l.mtu, 1450, "{ctx}");
        assert!(l.flags.iter().any(|f| f == "UP"), "{ctx}");
        let subnet = c.node(i).subnet();
        assert_eq!(l.addrs, vec![subnet.replace("/24", "/32")], "{ctx}");
        assert_eq!(
            c.node(i).ns.sysctl("net/ipv6/conf/flannel.1/accept_ra"),
            "0",
            "{ctx}"
        );
    }
}

#[test]
fn mtu_follows_the_underlay() {
    let c = Cluster::builder().nodes(1).underlay_mtu(9000).build();
    let k = c.kernel(0);
    assert_eq!(k.link.expect("flannel.1").mtu, 8950);
    assert_eq!(c.node(0).subnet_env().unwrap()["FLANNEL_MTU"], "8950");
}

#[test]
fn pods_on_different_nodes_reach_each_other_by_ping_and_tcp() {
    let c = Cluster::new(2);
    c.wait_all_converged(CONVERGE);
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    assert!(
        in_subnet(a.ip, &c.node(0).subnet()),
        "{} not in node0's subnet",
        a.ip
    );
    assert!(
        in_subnet(b.ip, &c.node(1).subnet()),
        "{} not in node1's subnet",
        b.ip
    );
    c.wait_ping(&a, b.ip, Duration::from_secs(10));
    c.wait_ping(&b, a.ip, Duration::from_secs(10));
    c.wait_tcp(&a, &b, Duration::from_secs(10));
    c.wait_tcp(&b, &a, Duration::from_secs(10));
    // The traffic really crossed the overlay: the peer's neighbour entry is used.
    let tx_packets = c
        .node(0)
        .ns
        .ip_json(&["-s", "link", "show", "dev", VXLAN_DEV])[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(tx_packets > 0, "no packets sent on node0's flannel.1");
    c.del_pod(a);
    c.del_pod(b);
}
