//! End to end, scenario 5: someone deletes a peer's route, its neighbour
//! entry, its FDB entry, or flannel.1 itself on a node. flanneld puts it
//! back, the node's entries match the leases again, and pods on it reach
//! the other nodes' pods again.

use flannel_cluster::cluster::{Cluster, ClusterPod, VXLAN_DEV};
use flannel_cluster::eventually;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(10);
const REACH: Duration = Duration::from_secs(10);

struct Setup {
    c: Cluster,
    pods: Vec<ClusterPod>,
}

fn setup() -> Setup {
    let c = Cluster::new(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    Setup { c, pods }
}

/// Runs `prog args` in node 0, waits for the repair, and checks traffic
/// from node 0's pod to every other and back.
fn break_and_check(s: &Setup, prog: &str, args: &[&str]) {
    let c = &s.c;
    let before = c.kernel(0);
    let out = c.node(0).ns.exec(prog, args);
    assert!(out.success(), "{out}");
    let t = Instant::now();
    let subnet = c.node(0).subnet();
    eventually(
        c.resync_interval() + CONVERGE,
        &format!("repair after `{prog} {}`", args.join(" ")),
        || {
            let k = c.kernel(0);
            let l = k.link.as_ref().ok_or("no flannel.1")?;
            if l.addrs != vec![subnet.replace("/24", "/32")] {
                return Err(format!("flannel.1 addresses {:?}", l.addrs));
            }
            k.check_exactly(&c.expected_peers(0))
        },
    );
    let took = t.elapsed();
    let after = c.kernel(0);
    assert_eq!(
        after.link.as_ref().map(|l| &l.mac),
        before.link.as_ref().map(|l| &l.mac),
        "flannel.1's MAC changed: the peers' entries point at the old one"
    );
    let refs: Vec<_> = s.pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    c.tcp_matrix(&refs, REACH).assert_all_ok();
    eprintln!("`{prog} {}`: repaired after {took:?}", args.join(" "));
}

#[test]
fn a_deleted_route_is_repaired_and_traffic_flows() {
    let s = setup();
    let peer = s.c.lease_of_ok(1);
    break_and_check(&s, "ip", &["route", "del", &peer.subnet, "dev", VXLAN_DEV]);
}

#[test]
fn a_deleted_neighbour_entry_is_repaired_and_traffic_flows() {
    let s = setup();
    let peer = s.c.lease_of_ok(1);
    break_and_check(
        &s,
        "ip",
        &["neigh", "del", peer.vtep_ip(), "dev", VXLAN_DEV],
    );
}

#[test]
fn a_deleted_fdb_entry_is_repaired_and_traffic_flows() {
    let s = setup();
    let peer = s.c.lease_of_ok(1);
    let args = [
        "fdb",
        "del",
        &peer.vtep_mac,
        "dev",
        VXLAN_DEV,
        "dst",
        &peer.public_ip,
        "self",
    ];
    break_and_check(&s, "bridge", &args);
}

#[test]
fn a_deleted_flannel_1_is_recreated_and_traffic_flows() {
    let s = setup();
    let ifindex = s.c.kernel(0).link.expect("flannel.1").ifindex;
    break_and_check(&s, "ip", &["link", "del", VXLAN_DEV]);
    let l = s.c.kernel(0).link.expect("flannel.1");
    assert_ne!(l.ifindex, ifindex, "not a new device?");
    assert_eq!(
        (
            l.vni,
            l.port,
            l.learning,
            l.mtu,
            l.local.as_deref(),
            l.dev.as_deref()
        ),
        (
            Some(1),
            Some(8472),
            Some(false),
            1450,
            Some("192.168.64.10"),
            Some("eth0")
        )
    );
}
