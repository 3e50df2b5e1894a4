//! Nodes coming and going: a removed or expired lease takes its entries off
//! every peer; a restarted flanneld (SIGTERM or SIGKILL) keeps its subnet and
//! VtepMAC, and pods keep working through the restart.

use flannel_cluster::cluster::traffic::Pinger;
use flannel_cluster::cluster::Cluster;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(10);

#[test]
fn a_removed_lease_takes_its_entries_off_every_peer() {
    let mut c = Cluster::new(3);
    c.wait_all_converged(CONVERGE);
    let gone = c.lease_of_ok(2);
    let st = c.stop(2);
    assert_eq!(
        st.code(),
        Some(0),
        "SIGTERM should exit 0: {st:?}\n{}",
        c.log(2)
    );
    // Stopping alone does not withdraw the lease: the peers keep routing to it.
    for i in 0..2 {
        c.check_entries(i, &c.expected_peers(i)).unwrap();
        assert_eq!(c.expected_peers(i).len(), 2);
    }
    c.remove_lease(2);
    flannel_cluster::eventually(CONVERGE, "node2's entries to go", || {
        for i in 0..2 {
            c.no_trace_of(i, &gone)?;
            c.check_entries(i, &c.expected_peers(i))?;
        }
        Ok(())
    });
    for i in 0..2 {
        assert_eq!(c.expected_peers(i).len(), 1);
        assert_eq!(c.kernel(i).routes.len(), 1);
    }
}

#[test]
fn an_expired_lease_takes_its_entries_off_every_peer_and_live_ones_are_renewed() {
    let ttl = 3;
    let mut c = Cluster::builder().nodes(3).lease_ttl(ttl).build();
    c.wait_all_converged(CONVERGE);
    let gone = c.lease_of_ok(2);
    let first0 = c.lease_of_ok(0);
    c.kill(2);
    let killed = Instant::now();
    flannel_cluster::eventually(
        Duration::from_secs(ttl + 10),
        "node2's lease to expire on its peers",
        || {
            for i in 0..2 {
                c.no_trace_of(i, &gone)?;
            }
            Ok(())
        },
    );
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(ttl + 3),
        "removal took {took:?} with a {ttl} s TTL"
    );
    // The live nodes renewed theirs (the expiry moved on) and still see each other.
    let now0 = c.lease_of_ok(0);
    if let (Some(a), Some(b)) = (first0.expires, now0.expires) {
        assert!(
            b > a,
            "node0's lease was not renewed: {first0:?} → {now0:?}"
        );
    }
    assert_eq!(now0.subnet, first0.subnet);
    for i in 0..2 {
        let peers = c.expected_peers(i);
        assert_eq!(peers.len(), 1, "{peers:?}");
        c.check_entries(i, &peers).unwrap();
    }
}

/// `ping -i 0.1 -c <count>` from `from` to `to` in the background.
fn restart_keeps_subnet_mac_and_traffic(kill: bool) {
    let mut c = Cluster::new(2);
    c.wait_all_converged(CONVERGE);
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    c.wait_ping(&a, b.ip, CONVERGE);
    let before = c.lease_of_ok(1);
    let dev_before = c.kernel(1).link.unwrap();
    let subnet_before = c.node(1).subnet();

    let pinger = Pinger::start(&a, b.ip, Duration::from_millis(100));
    c.stop_checked(1, kill);
    // The datapath stays while the daemon is down.
    c.ping_once(&a, b.ip).unwrap();
    c.ping_once(&b, a.ip).unwrap();
    c.start(1);
    c.wait_ready(1);
    c.wait_all_converged(CONVERGE);
    // A measurement window around the restart (which takes well under a
    // second), not an assertion: enough echoes to see a gap if there is one.
    std::thread::sleep(Duration::from_millis(1500));
    let s = pinger.finish();
    assert!(s.transmitted >= 10, "too few echoes to judge: {s:?}");
    assert!(
        s.lost_time() <= Duration::from_secs(1),
        "{:?} of traffic lost across the restart:\n{}",
        s.lost_time(),
        s.output
    );

    let after = c.lease_of_ok(1);
    let dev_after = c.kernel(1).link.unwrap();
    assert_eq!(
        c.node(1).subnet(),
        subnet_before,
        "subnet changed across the restart"
    );
    assert_eq!(after.subnet, before.subnet);
    assert_eq!(
        after.vtep_mac, before.vtep_mac,
        "VtepMAC changed across the restart"
    );
    assert_eq!(dev_after.mac, dev_before.mac);
    assert_eq!(
        dev_after.ifindex, dev_before.ifindex,
        "flannel.1 was recreated instead of adopted"
    );
    assert_eq!(c.leases().len(), 2, "{:#?}", c.leases());
    c.wait_ping(&a, b.ip, CONVERGE);
    c.wait_ping(&b, a.ip, CONVERGE);
    c.wait_tcp(&a, &b, CONVERGE);
}

#[test]
fn restart_after_sigterm_keeps_subnet_vtep_mac_and_pods_working() {
    restart_keeps_subnet_mac_and_traffic(false);
}

#[test]
fn restart_after_sigkill_keeps_subnet_vtep_mac_and_pods_working() {
    restart_keeps_subnet_mac_and_traffic(true);
}

#[test]
fn a_node_whose_lease_was_removed_while_stopped_gets_its_old_subnet_back_from_subnet_env() {
    let mut c = Cluster::new(2);
    let subnet = c.node(1).subnet();
    c.stop(1);
    c.remove_lease(1);
    c.start(1);
    c.wait_ready(1);
    assert_eq!(c.node(1).subnet(), subnet);
    assert_eq!(c.lease_of_ok(1).subnet, subnet);
    c.wait_all_converged(CONVERGE);
}
