//! Lease events applied as one batch, in a namespace: a burst of removals,
//! additions and changes leaves exactly the entries of the final leases; a
//! subnet removed and added again nets out; a node that moves to another
//! subnet keeps its FDB entry whichever of its two events comes first.

use super::fixture::{adopted, lease, v4_specs};
use super::Follow;
use crate::lease::{Lease, LeaseEvent};
use crate::vxlan::tests::TestNs;

/// What `leases` need on flannel.1: neighbours, FDB, routes (sorted as
/// the test namespace lists them).
fn expected(leases: &[Lease]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut neigh = Vec::new();
    let mut fdb = Vec::new();
    let mut routes = Vec::new();
    for l in leases {
        let mac = l.attrs.vxlan_data().expect("vxlan").vtep_mac;
        let base = l.subnet.network();
        neigh.push(format!("{base} {mac} PERMANENT"));
        fdb.push(format!("{mac} {} permanent", l.attrs.public_ip));
        routes.push(format!("{} via {base} dev flannel.1 onlink", l.subnet));
    }
    for v in [&mut neigh, &mut fdb, &mut routes] {
        v.sort();
        v.dedup();
    }
    (neigh, fdb, routes)
}

fn kernel(ns: &TestNs) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        ns.neighbours("flannel.1"),
        ns.fdb("flannel.1"),
        ns.gw_routes(),
    )
}

#[test]
fn a_burst_of_events_leaves_exactly_the_final_leases_entries() {
    let ns = TestNs::new();
    let specs = v4_specs(&ns);
    let own = lease(2, 2, 4);
    let start: Vec<Lease> = (3..=8).map(|n| lease(n, n, 4)).collect();
    let ns_ref = &ns;
    ns.within(|handle| async move {
        let mut dp = adopted(handle, specs, &own).await;
        let mut snapshot = start.clone();
        snapshot.push(own.clone());
        dp.program(&snapshot).await;
        assert_eq!(kernel(ns_ref), expected(&start));

        let burst = vec![
            // Removed and added again unchanged: nothing to do.
            LeaseEvent::Removed(lease(3, 3, 4)),
            LeaseEvent::Added(lease(3, 3, 4)),
            // Removed and added again with another VTEP MAC.
            LeaseEvent::Removed(lease(4, 4, 4)),
            LeaseEvent::Added(lease(4, 4, 5)),
            // Gone.
            LeaseEvent::Removed(lease(5, 5, 4)),
            // New.
            LeaseEvent::Added(lease(9, 9, 4)),
            // New and gone within the batch.
            LeaseEvent::Added(lease(10, 10, 4)),
            LeaseEvent::Removed(lease(10, 10, 4)),
            // Node 6 moves to subnet 11, its old key removed first; node 7
            // moves to subnet 12, its new key reported first. Both keep
            // their MAC and VTEP, so their FDB entries stay.
            LeaseEvent::Removed(lease(6, 6, 4)),
            LeaseEvent::Added(lease(11, 6, 4)),
            LeaseEvent::Added(lease(12, 7, 4)),
            LeaseEvent::Removed(lease(7, 7, 4)),
            // Our own lease renewed: nothing.
            LeaseEvent::Added(own.clone()),
        ];
        let f = dp.on_lease_events(burst).await;
        assert_eq!(f.map_err(|e| e.to_string()), Ok(Follow::Nothing));
        let now = [
            lease(3, 3, 4),
            lease(4, 4, 5),
            lease(8, 8, 4),
            lease(9, 9, 4),
            lease(11, 6, 4),
            lease(12, 7, 4),
        ];
        assert_eq!(kernel(ns_ref), expected(&now));
        // Nothing left for a resync to repair.
        assert_eq!(dp.resync("periodic").await, 0);

        // Everything removed in one batch, and our own lease with it.
        let mut gone: Vec<LeaseEvent> = now.iter().cloned().map(LeaseEvent::Removed).collect();
        gone.push(LeaseEvent::Removed(own.clone()));
        let f = dp.on_lease_events(gone).await;
        assert_eq!(f.map_err(|e| e.to_string()), Ok(Follow::RenewNow));
        assert_eq!(kernel(ns_ref), (vec![], vec![], vec![]));
    });
}

#[test]
fn a_subnet_passed_between_leases_in_one_batch_keeps_its_last_holder() {
    let ns = TestNs::new();
    let specs = v4_specs(&ns);
    let own = lease(2, 2, 4);
    let ns_ref = &ns;
    ns.within(|handle| async move {
        let mut dp = adopted(handle, specs, &own).await;
        dp.program(&[own.clone(), lease(3, 3, 4)]).await;
        // Subnet 3 goes from node 3 to node 4 and back to node 3 with a new
        // MAC, then to node 5: only node 5's entries remain.
        let burst = vec![
            LeaseEvent::Removed(lease(3, 3, 4)),
            LeaseEvent::Added(lease(3, 4, 4)),
            LeaseEvent::Added(lease(3, 3, 5)),
            LeaseEvent::Added(lease(3, 5, 4)),
        ];
        dp.on_lease_events(burst).await.expect("events");
        assert_eq!(kernel(ns_ref), expected(&[lease(3, 5, 4)]));
        assert_eq!(dp.resync("periodic").await, 0);
    });
}
