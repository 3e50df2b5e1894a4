//! The kernel is kept true to the leases: entries deleted by hand come back
//! within the resync interval, entries no lease explains go, and a deleted
//! flannel.1 is recreated with every peer.

use flannel_cluster::cluster::{Cluster, VXLAN_DEV};
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(10);
/// Slack on top of the resync interval for the repair to land.
const SLACK: Duration = Duration::from_millis(1500);

/// Runs `ip`/`bridge` in node 0, then waits for node 0 to match the leases
/// again; returns how long that took.
fn break_and_wait(c: &Cluster, prog: &str, args: &[&str]) -> Duration {
    let out = c.node(0).ns.exec(prog, args);
    assert!(out.success(), "{out}");
    let t = Instant::now();
    flannel_cluster::eventually(
        c.resync_interval() + Duration::from_secs(10),
        "repair",
        || c.check_entries(0, &c.expected_peers(0)),
    );
    t.elapsed()
}

#[test]
fn deleted_route_neighbour_and_fdb_entries_are_back_within_the_resync_interval() {
    let c = Cluster::new(2);
    c.wait_all_converged(CONVERGE);
    let peer = c.lease_of_ok(1);
    let limit = c.resync_interval() + SLACK;
    let cases: [(&str, Vec<&str>); 3] = [
        ("ip", vec!["route", "del", &peer.subnet, "dev", VXLAN_DEV]),
        ("ip", vec!["neigh", "del", peer.vtep_ip(), "dev", VXLAN_DEV]),
        (
            "bridge",
            vec![
                "fdb",
                "del",
                &peer.vtep_mac,
                "dev",
                VXLAN_DEV,
                "dst",
                &peer.public_ip,
                "self",
            ],
        ),
    ];
    for (prog, args) in &cases {
        let took = break_and_wait(&c, prog, args);
        assert!(
            took <= limit,
            "`{prog} {}` repaired after {took:?} (limit {limit:?})",
            args.join(" ")
        );
    }
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    c.wait_ping(&a, b.ip, CONVERGE);
}

#[test]
fn entries_no_lease_explains_are_removed_at_runtime_and_at_start_up() {
    let mut c = Cluster::new(2);
    c.wait_all_converged(CONVERGE);
    // A subnet nobody holds.
    let leased: Vec<String> = c.leases().iter().map(|l| l.subnet.clone()).collect();
    let free = (200..=254)
        .map(|x| format!("10.244.{x}.0"))
        .find(|s| !leased.contains(&format!("{s}/24")))
        .unwrap();
    let free_net = format!("{free}/24");
    let stray = |c: &Cluster| {
        let ns = &c.node(0).ns;
        ns.ip_ok(&[
            "neigh",
            "add",
            &free,
            "lladdr",
            "0e:00:00:00:00:fa",
            "dev",
            VXLAN_DEV,
            "nud",
            "permanent",
        ]);
        ns.ip_ok(&[
            "route", "add", &free_net, "via", &free, "dev", VXLAN_DEV, "onlink",
        ]);
        let out = ns.exec(
            "bridge",
            &[
                "fdb",
                "add",
                "0e:00:00:00:00:fa",
                "dev",
                VXLAN_DEV,
                "dst",
                "192.168.64.250",
                "self",
                "permanent",
            ],
        );
        assert!(out.success(), "{out}");
    };
    stray(&c);
    let t = Instant::now();
    flannel_cluster::eventually(
        c.resync_interval() + Duration::from_secs(10),
        "stray entries to go",
        || c.check_entries(0, &c.expected_peers(0)),
    );
    let took = t.elapsed();
    assert!(
        took <= c.resync_interval() + SLACK,
        "stray entries removed after {took:?}"
    );

    // Left behind while the daemon was down: cleaned at start-up.
    c.stop(0);
    stray(&c);
    c.start(0);
    c.wait_ready(0);
    c.wait_all_converged(CONVERGE);
}

#[test]
fn a_deleted_flannel_1_is_recreated_with_every_peer() {
    let c = Cluster::new(3);
    c.wait_all_converged(CONVERGE);
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    c.wait_ping(&a, b.ip, CONVERGE);
    let before = c.kernel(0).link.unwrap();
    let lease = c.lease_of_ok(0);

    c.node(0).ns.ip_ok(&["link", "del", VXLAN_DEV]);
    let t = Instant::now();
    flannel_cluster::eventually(
        c.resync_interval() + Duration::from_secs(10),
        "flannel.1 to be back",
        || {
            let k = c.kernel(0);
            let l = k.link.as_ref().ok_or("no flannel.1 yet")?;
            if l.addrs != vec![lease.subnet.replace("/24", "/32")] {
                return Err(format!("addresses {:?}", l.addrs));
            }
            if !l.flags.iter().any(|f| f == "UP") {
                return Err("down".into());
            }
            k.check_exactly(&c.expected_peers(0))
        },
    );
    let took = t.elapsed();
    let after = c.kernel(0).link.unwrap();
    assert_ne!(after.ifindex, before.ifindex, "not a new device?");
    assert_eq!(
        after.mac, before.mac,
        "the recreated device has a new MAC; peers hold the old one"
    );
    assert_eq!(
        (after.vni, after.port, after.learning, after.mtu),
        (Some(1), Some(8472), Some(false), 1450)
    );
    assert_eq!(after.local.as_deref(), Some("192.168.64.10"));
    assert_eq!(after.dev.as_deref(), Some("eth0"));
    assert_eq!(c.lease_of_ok(0).vtep_mac, lease.vtep_mac);
    assert_eq!(c.expected_peers(0).len(), 2);
    c.wait_all_converged(CONVERGE);
    c.wait_ping(&a, b.ip, CONVERGE);
    c.wait_ping(&b, a.ip, CONVERGE);
    eprintln!("flannel.1 recreated with all peers after {took:?}");
}
