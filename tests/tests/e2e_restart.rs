//! End to end, scenario 3: flanneld restarted after SIGTERM, and after
//! SIGKILL, on one node while pods ping across it in both directions: the
//! node keeps its subnet, VtepMAC and device, and no more than a second of
//! traffic is lost on any path.

use flannel_cluster::cluster::traffic::Pinger;
use flannel_cluster::cluster::Cluster;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(10);
const REACH: Duration = Duration::from_secs(10);
const INTERVAL: Duration = Duration::from_millis(50);

fn restart_while_pinging(kill: bool) {
    let mut c = Cluster::new(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    let lease = c.lease_of_ok(1);
    let link = c.kernel(1).link.expect("flannel.1");
    let subnet = c.node(1).subnet();

    // Into, out of, and past the restarted node.
    let pingers = [
        Pinger::start(&pods[0], pods[1].ip, INTERVAL),
        Pinger::start(&pods[1], pods[2].ip, INTERVAL),
        Pinger::start(&pods[2], pods[0].ip, INTERVAL),
    ];
    // Traffic flows on every path before the restart.
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        c.wait_ping(&pods[a], pods[b].ip, REACH);
    }
    c.stop_checked(1, kill);
    c.start(1);
    c.wait_ready(1);
    c.wait_all_converged(CONVERGE);
    // A measurement window after the restart, not an assertion.
    std::thread::sleep(Duration::from_millis(500));
    for p in pingers {
        let s = p.finish();
        assert!(s.transmitted >= 10, "too few echoes to judge: {s:?}");
        assert!(
            s.lost_time() <= Duration::from_secs(1),
            "{:?} of traffic lost across the restart ({} of {} echoes):\n{}",
            s.lost_time(),
            s.transmitted - s.received,
            s.transmitted,
            s.output
        );
    }

    let after = c.lease_of_ok(1);
    let link_after = c.kernel(1).link.expect("flannel.1");
    assert_eq!(c.node(1).subnet(), subnet, "subnet changed");
    assert_eq!(after.subnet, lease.subnet);
    assert_eq!(after.vtep_mac, lease.vtep_mac, "VtepMAC changed");
    assert_eq!(link_after.mac, link.mac);
    assert_eq!(
        link_after.ifindex, link.ifindex,
        "flannel.1 was recreated, not adopted"
    );
    assert_eq!(c.leases().len(), 3, "{:#?}", c.leases());
    c.ping_matrix(&refs, REACH).assert_all_ok();
}

#[test]
fn sigterm_restart_keeps_subnet_vtep_mac_and_loses_under_a_second_of_traffic() {
    restart_while_pinging(false);
}

#[test]
fn sigkill_restart_keeps_subnet_vtep_mac_and_loses_under_a_second_of_traffic() {
    restart_while_pinging(true);
}
