//! End to end, scenario 8: a node with a second interface on a second
//! underlay, its default route pointing there (the wrong one for the
//! overlay). `--iface` (by name or by address) picks eth0: flannel.1's
//! `local` and `dev`, the lease's PublicIP and real traffic say so. Without
//! it flanneld follows the default route — the setup really is a trap.

use flannel_cluster::cluster::{Cluster, SECOND_GATEWAY};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(10);
const REACH: Duration = Duration::from_secs(10);

fn two_homed() -> Cluster {
    let mut c = Cluster::builder().nodes(2).start(false).build();
    c.add_second_underlay(&[0]);
    let def = c.node(0).ns.route_v4("default").expect("default route");
    assert_eq!(
        (def["gateway"].as_str(), def["dev"].as_str()),
        (Some(SECOND_GATEWAY), Some("eth1"))
    );
    c.start(1);
    c.wait_ready(1);
    c
}

fn assert_uses(c: &Cluster, dev: &str, ip: &str) {
    let l = c.kernel(0).link.expect("flannel.1");
    assert_eq!(
        (l.dev.as_deref(), l.local.as_deref()),
        (Some(dev), Some(ip)),
        "{:#}",
        l.raw
    );
    let subnet = c.node(0).subnet();
    let lease = c.leases().into_iter().find(|l| l.subnet == subnet);
    assert_eq!(
        lease.map(|l| l.public_ip).as_deref(),
        Some(ip),
        "node0's lease"
    );
}

#[test]
fn iface_by_name_or_address_picks_the_right_interface_over_the_default_route() {
    let mut c = two_homed();
    for how in ["eth0", "192.168.64.10"] {
        c.start_with(0, &["--iface", how]);
        c.wait_ready(0);
        c.wait_all_converged(CONVERGE);
        assert_uses(&c, "eth0", "192.168.64.10");
        let pods = c.add_pods(1);
        let refs: Vec<_> = pods.iter().collect();
        c.ping_matrix(&refs, REACH).assert_all_ok();
        c.tcp_matrix(&refs, REACH).assert_all_ok();
        for p in pods {
            c.del_pod(p);
        }
        c.stop(0);
    }
}

#[test]
fn without_iface_the_default_routes_interface_is_picked() {
    let mut c = two_homed();
    c.start(0);
    c.wait_ready(0);
    // (Only node1: the harness expects node0's lease under its eth0 address.)
    c.wait_converged(&[1], CONVERGE);
    assert_uses(&c, "eth1", "192.168.65.10");
    // node1 (only on the first underlay) now has node0's VTEP behind an
    // address it cannot reach: the FDB entry says so.
    let k = c.kernel(1);
    assert!(k.fdb.iter().any(|f| f.dst == "192.168.65.10"), "{k:#?}");
}
