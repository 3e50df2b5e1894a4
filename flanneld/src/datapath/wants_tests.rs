//! Kernel deletion notices against what the peers need, in a namespace:
//! the notices of our own removal of a peer ask for no check; an entry a
//! peer still needs, deleted by someone else, does (each kind: route,
//! neighbour, FDB entry).

use std::time::Duration;

use super::fixture::{adopted, lease, v4_specs};
use crate::lease::LeaseEvent;
use crate::vxlan::tests::TestNs;
use crate::watch_kernel::{self, Deleted, KernelEvents};

/// The notices that arrive until none has for 300 ms.
async fn notices(events: &mut KernelEvents, index: u32) -> Vec<Deleted> {
    let mut seen = Vec::new();
    let quiet = Duration::from_millis(300);
    while let Ok(d) = tokio::time::timeout(quiet, events.changed(&[index])).await {
        seen.push(d);
    }
    seen
}

#[test]
fn own_removals_need_no_check_and_a_needed_entry_deleted_does() {
    let ns = TestNs::new();
    let specs = v4_specs(&ns);
    let own = lease(2, 2, 0);
    let ns_ref = &ns;
    ns.within(|handle| async move {
        let mut dp = adopted(handle, specs, &own).await;
        dp.program(&[own.clone(), lease(3, 3, 0), lease(4, 4, 0)])
            .await;
        let index = dp.indexes()[0];
        let mut events = watch_kernel::subscribe().expect("subscribe");

        // Our own removal of peer 4: told of, but wanted by no peer.
        dp.on_lease_events(vec![LeaseEvent::Removed(lease(4, 4, 0))])
            .await
            .expect("events");
        let ours = notices(&mut events, index).await;
        assert!(
            ours.iter().any(|d| matches!(d, Deleted::Route { .. }))
                && ours.iter().any(|d| matches!(d, Deleted::Neigh { .. }))
                && ours.iter().any(|d| matches!(d, Deleted::Fdb { .. })),
            "each of peer 4's entries is told of: {ours:?}"
        );
        for d in &ours {
            assert!(!dp.wants(d), "peer 4's {d:?} is wanted by no peer");
        }

        // Peer 3's entries, deleted behind our back: each is wanted.
        for args in [
            &["route", "del", "10.244.3.0/24", "dev", "flannel.1"][..],
            &["neigh", "del", "10.244.3.0", "dev", "flannel.1"][..],
        ] {
            ns_ref.ip(args);
        }
        ns_ref.bridge(&[
            "fdb",
            "del",
            "0e:00:00:00:00:03",
            "dev",
            "flannel.1",
            "dst",
            "192.168.64.3",
        ]);
        let theirs = notices(&mut events, index).await;
        assert_eq!(theirs.len(), 3, "three deletions told of: {theirs:?}");
        for d in &theirs {
            assert!(dp.wants(d), "peer 3 needs {d:?}");
        }
        // What they ask for puts it back.
        assert_eq!(dp.resync("periodic").await, 3);
        assert!(dp.wants(&Deleted::Link));
    });
}

/// An FDB entry two subnets of one node share stays wanted until the last
/// of them goes.
#[test]
fn a_shared_fdb_entry_is_wanted_until_its_last_peer_goes() {
    let ns = TestNs::new();
    let specs = v4_specs(&ns);
    let own = lease(2, 2, 0);
    ns.within(|handle| async move {
        let mut dp = adopted(handle, specs, &own).await;
        // Subnets 3 and 5 are both node 3's (one VtepMAC, one VTEP).
        dp.program(&[own.clone(), lease(3, 3, 0), lease(5, 3, 0)])
            .await;
        let node3 = Deleted::Fdb {
            mac: vec![0x0e, 0, 0, 0, 0, 3],
            dst: Some("192.168.64.3".parse().expect("ip")),
        };
        let elsewhere = Deleted::Fdb {
            mac: vec![0x0e, 0, 0, 0, 0, 3],
            dst: Some("192.168.64.9".parse().expect("ip")),
        };
        assert!(dp.wants(&node3));
        assert!(!dp.wants(&elsewhere), "no peer has that VTEP");
        for (gone, wanted) in [(5, true), (3, false)] {
            dp.on_lease_events(vec![LeaseEvent::Removed(lease(gone, 3, 0))])
                .await
                .expect("events");
            assert_eq!(dp.wants(&node3), wanted, "after subnet {gone} went");
        }
    });
}
