//! The steps the IPv6 scenarios share, each checking every family the
//! cluster runs: the node's files, lease and devices agree; the pods got
//! an address of each family in their node's subnets; the ping and TCP
//! matrices over each family; a node joins, leaves, restarts, and has its
//! IPv6 entries deleted under it.

use flannel_cluster::cluster::family::IPV6_NETWORK;
use flannel_cluster::cluster::{
    network_of, network_of6, Cluster, ClusterPod, IpFamily, VXLAN_DEV6,
};
use flannel_cluster::eventually;
use std::time::{Duration, Instant};

pub const CONVERGE: Duration = Duration::from_secs(10);
pub const REACH: Duration = Duration::from_secs(10);

/// The ping and TCP matrices over every family the cluster runs.
#[track_caller]
pub fn matrices_ok(c: &Cluster, pods: &[&ClusterPod]) {
    let n = pods.len();
    let mut ms = c.ping_matrices(pods, REACH);
    ms.extend(c.tcp_matrices(pods, REACH));
    assert_eq!(ms.len(), 2 * c.family().singles().len());
    for m in &ms {
        m.assert_all_ok();
        assert_eq!(m.pairs(), n * (n - 1));
        eprintln!("{}", m.render());
    }
}

/// Node `i`'s subnet.env, lease and devices agree, for each family the
/// cluster runs; a family it does not run has no trace there.
#[track_caller]
pub fn node_state_ok(c: &Cluster, i: usize) {
    let n = c.node(i);
    let fam = c.family();
    let env = n.subnet_env().expect("subnet.env");
    // Pods get an MTU that fits every tunnel they use: IPv6 VXLAN costs 70.
    let mtu = if fam.has_v6() { 1500 - 70 } else { 1500 - 50 };
    assert_eq!(
        env.get("FLANNEL_MTU").map(String::as_str),
        Some(mtu.to_string().as_str()),
        "{}: {env:?}",
        n.name
    );
    let lease = c.lease_of_ok(i);
    assert_eq!(lease.backend_type, "vxlan", "{lease:#?}");
    if fam.has_v4() {
        assert_eq!(lease.subnet, n.subnet(), "{}: {lease:#?}", n.name);
        assert_eq!(lease.public_ip, n.ip.to_string());
        let link = c.kernel(i).link.expect("flannel.1");
        assert_eq!(lease.vtep_mac, link.mac);
    } else {
        assert!(
            !env.contains_key("FLANNEL_SUBNET") && !env.contains_key("FLANNEL_NETWORK"),
            "{}: an IPv4 pair in an IPv6-only subnet.env: {env:?}",
            n.name
        );
        assert!(lease.subnet.is_empty(), "{}: {lease:#?}", n.name);
        assert!(
            c.kernel(i).link.is_none(),
            "{}: flannel.1 on an IPv6-only node",
            n.name
        );
    }
    if !fam.has_v6() {
        assert!(lease.subnet6.is_none(), "{lease:#?}");
        assert!(
            c.kernel_of(i, IpFamily::V6).link.is_none(),
            "{VXLAN_DEV6} on an IPv4 node"
        );
        return;
    }
    assert_eq!(
        env.get("FLANNEL_IPV6_NETWORK").map(String::as_str),
        Some(IPV6_NETWORK),
        "{}: {env:?}",
        n.name
    );
    let subnet6 = n
        .subnet6()
        .unwrap_or_else(|| panic!("{}: no FLANNEL_IPV6_SUBNET: {env:?}", n.name));
    assert!(
        subnet6.ends_with("/64"),
        "{subnet6}: flannel's default IPv6SubnetLen is 64"
    );
    let inside = network_of6(&subnet6.replace("/64", "/56"));
    assert_eq!(
        inside.as_deref(),
        Some(IPV6_NETWORK),
        "{subnet6} outside {IPV6_NETWORK}"
    );
    assert_eq!(
        lease.subnet6.as_deref(),
        Some(subnet6.as_str()),
        "{lease:#?}"
    );
    let ip6 = n.ip6.expect("an underlay IPv6 address").to_string();
    assert_eq!(
        lease.public_ipv6.as_deref(),
        Some(ip6.as_str()),
        "{lease:#?}"
    );
    let link = c.kernel_of(i, IpFamily::V6).link.expect("flannel-v6.1");
    assert_eq!(
        lease.vtep_mac6.as_deref(),
        Some(link.mac.as_str()),
        "{lease:#?}"
    );
    let vtep = format!("{}/128", subnet6.trim_end_matches("/64"));
    assert_eq!(
        (link.kind.as_str(), link.vni, link.port, link.learning),
        ("vxlan", Some(1), Some(8472), Some(false)),
        "{VXLAN_DEV6}: {:#}",
        link.raw
    );
    assert_eq!(
        (link.local.as_deref(), link.dev.as_deref(), link.mtu),
        (Some(ip6.as_str()), Some("eth0"), 1500 - 70),
        "{VXLAN_DEV6}: local = the public IPv6, dev eth0, MTU = eth0's - 70"
    );
    assert_eq!(link.addrs, vec![vtep], "{VXLAN_DEV6} addresses");
}

/// Every pod has exactly one address of each family the cluster runs,
/// each inside its node's subnet of that family.
#[track_caller]
pub fn pods_in_their_subnets(c: &Cluster, pods: &[ClusterPod]) {
    let fam = c.family();
    for p in pods {
        let n = c.node(p.node);
        assert_eq!(
            p.ips.len(),
            fam.singles().len(),
            "pod {}: {:?}",
            p.ns().name(),
            p.ips
        );
        if fam.has_v4() {
            let ip = p.ip_of_ok(IpFamily::V4);
            let net = network_of(&format!("{ip}/24"));
            assert_eq!(
                net,
                Some(n.subnet()),
                "pod {ip} outside {}'s subnet",
                n.name
            );
        }
        if fam.has_v6() {
            let ip = p.ip_of_ok(IpFamily::V6);
            let net = network_of6(&format!("{ip}/64"));
            assert_eq!(
                net,
                n.subnet6(),
                "pod {ip} outside {}'s IPv6 subnet",
                n.name
            );
        }
    }
}

/// A node joins: its flanneld starts, a pod on it reaches every pod (and
/// back) over each family, every node's entries match the leases.
pub fn join(c: &mut Cluster, pods: &mut Vec<ClusterPod>) {
    let new = c.add_node();
    c.start(new);
    c.wait_ready(new);
    node_state_ok(c, new);
    let p = c.add_pod(new);
    pods_in_their_subnets(c, std::slice::from_ref(&p));
    pods.push(p);
    c.wait_all_converged(CONVERGE);
    matrices_ok(c, &pods.iter().collect::<Vec<_>>());
}

/// On node 0, node 1's IPv6 route, neighbour and FDB entry are deleted,
/// then flannel-v6.1 itself: each is repaired (the device with its MAC),
/// and traffic flows again over each family.
pub fn repair_v6(c: &Cluster, pods: &[ClusterPod]) {
    let peer = c.lease_of_ok(1);
    let subnet6 = peer.subnet6.clone().expect("node 1's IPv6 subnet");
    let vtep6 = peer.vtep_ip6().expect("node 1's IPv6 VTEP").to_owned();
    let mac6 = peer.vtep_mac6.clone().expect("node 1's IPv6 VtepMAC");
    let public6 = peer.public_ipv6.clone().expect("node 1's PublicIPv6");
    let link = c.kernel_of(0, IpFamily::V6).link.expect("flannel-v6.1");
    let breaks: [(&str, Vec<&str>); 4] = [
        (
            "ip",
            vec!["-6", "route", "del", &subnet6, "dev", VXLAN_DEV6],
        ),
        ("ip", vec!["-6", "neigh", "del", &vtep6, "dev", VXLAN_DEV6]),
        (
            "bridge",
            vec![
                "fdb", "del", &mac6, "dev", VXLAN_DEV6, "dst", &public6, "self",
            ],
        ),
        ("ip", vec!["link", "del", VXLAN_DEV6]),
    ];
    for (prog, args) in &breaks {
        let out = c.node(0).ns.exec(prog, args);
        assert!(out.success(), "{out}");
        let t = Instant::now();
        eventually(
            c.resync_interval() + CONVERGE,
            &format!("repair after `{prog} {}`", args.join(" ")),
            || c.check_all_entries(0),
        );
        eprintln!(
            "`{prog} {}`: repaired after {:?}",
            args.join(" "),
            t.elapsed()
        );
    }
    let again = c
        .kernel_of(0, IpFamily::V6)
        .link
        .expect("flannel-v6.1 recreated");
    assert_ne!(again.ifindex, link.ifindex, "not a new device?");
    assert_eq!(
        again.mac, link.mac,
        "flannel-v6.1's MAC changed: the peers point at the old one"
    );
    node_state_ok(c, 0);
    matrices_ok(c, &pods.iter().collect::<Vec<_>>());
}

/// Node `i`'s flanneld is stopped (SIGKILL or SIGTERM) and started again:
/// it keeps its subnets, VtepMACs and devices (adopted, not recreated).
pub fn restart(c: &mut Cluster, i: usize, kill: bool, pods: &[ClusterPod]) {
    let lease = c.lease_of_ok(i);
    let links: Vec<_> = [IpFamily::V4, IpFamily::V6]
        .iter()
        .map(|f| c.kernel_of(i, *f).link.map(|l| (l.ifindex, l.mac)))
        .collect();
    c.stop_checked(i, kill);
    c.start(i);
    c.wait_ready(i);
    c.wait_all_converged(CONVERGE);
    let after = c.lease_of_ok(i);
    assert_eq!(
        (
            &after.subnet,
            &after.subnet6,
            &after.vtep_mac,
            &after.vtep_mac6
        ),
        (
            &lease.subnet,
            &lease.subnet6,
            &lease.vtep_mac,
            &lease.vtep_mac6
        ),
        "subnets or VtepMACs changed across the restart"
    );
    let links_after: Vec<_> = [IpFamily::V4, IpFamily::V6]
        .iter()
        .map(|f| c.kernel_of(i, *f).link.map(|l| (l.ifindex, l.mac)))
        .collect();
    assert_eq!(links_after, links, "a device was recreated, not adopted");
    node_state_ok(c, i);
    matrices_ok(c, &pods.iter().collect::<Vec<_>>());
}

/// Node `i` leaves (flanneld stopped, its lease released in the store):
/// nothing of it stays on any other node, in either family, and the other
/// nodes' pods (`rest`) keep reaching each other.
pub fn leave(c: &mut Cluster, i: usize, rest: &[&ClusterPod]) {
    let gone = c.lease_of_ok(i);
    c.stop(i);
    c.remove_lease(i);
    let others: Vec<usize> = (0..c.len())
        .filter(|&j| j != i && c.node(j).is_running())
        .collect();
    eventually(CONVERGE, "the released node's entries to go", || {
        for &j in &others {
            c.no_trace_of(j, &gone)?;
            c.check_all_entries(j)?;
        }
        Ok(())
    });
    matrices_ok(c, rest);
}
