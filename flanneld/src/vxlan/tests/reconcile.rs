//! Reconcile: repairs what was deleted or changed, removes what no peer
//! explains, leaves everything else alone, and writes nothing when the
//! kernel is already right.

use super::{expected, peer, TestNs};
use crate::vxlan::{Peer, Repairs};

/// Creates (or adopts) flannel.1 and reconciles it against `peers`.
fn reconcile(ns: &TestNs, peers: &[Peer]) -> Repairs {
    let spec = ns.spec();
    ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        vx.reconcile(&dev, peers).await
    })
    .unwrap_or_else(|e| panic!("reconcile: {e}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn reconcile_programs_repairs_and_removes_strays() {
    let ns = TestNs::new();
    let a = peer(2, [192, 168, 64, 3]);
    let b = peer(3, [192, 168, 64, 4]);
    let peers = vec![a.clone(), b.clone()];

    // From nothing: everything is added.
    let first = reconcile(&ns, &peers);
    assert_eq!(first.added.len(), 6, "{first:?}");
    assert!(
        first.removed.is_empty() && first.failed.is_empty(),
        "{first:?}"
    );
    let (neigh, fdb, routes) = expected(&[&a, &b]);
    assert_eq!(ns.neighbours("flannel.1"), neigh);
    assert_eq!(ns.fdb("flannel.1"), fdb);
    assert_eq!(ns.gw_routes(), routes);

    // Nothing wrong: nothing written.
    assert_eq!(reconcile(&ns, &peers), Repairs::default());

    // Damage: a route, a neighbour and an FDB entry deleted, one neighbour
    // with the wrong MAC, an FDB entry pointing elsewhere; strays of each
    // kind; and routes that are not ours.
    ns.ip(&["route", "del", "10.244.2.0/24"]);
    ns.ip(&["neigh", "del", "10.244.3.0", "dev", "flannel.1"]);
    ns.ip(&[
        "neigh",
        "replace",
        "10.244.2.0",
        "lladdr",
        "0e:00:00:00:00:77",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    ns.bridge(&[
        "fdb",
        "del",
        "0e:00:00:00:00:02",
        "dev",
        "flannel.1",
        "dst",
        "192.168.64.3",
        "self",
    ]);
    ns.bridge(&[
        "fdb",
        "replace",
        "0e:00:00:00:00:03",
        "dev",
        "flannel.1",
        "dst",
        "192.168.64.99",
        "self",
        "permanent",
    ]);
    ns.ip(&[
        "neigh",
        "add",
        "10.244.9.0",
        "lladdr",
        "0e:00:00:00:00:09",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    ns.bridge(&[
        "fdb",
        "add",
        "0e:00:00:00:00:09",
        "dev",
        "flannel.1",
        "dst",
        "192.168.64.9",
        "self",
        "permanent",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.244.9.0/24",
        "via",
        "10.244.9.0",
        "dev",
        "flannel.1",
        "onlink",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.99.0.0/16",
        "via",
        "192.168.64.1",
        "dev",
        "eth0",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.244.50.0/24",
        "via",
        "192.168.64.1",
        "dev",
        "eth0",
    ]);

    let repairs = reconcile(&ns, &peers);
    assert!(repairs.failed.is_empty(), "{repairs:?}");
    assert_eq!(
        sorted(repairs.added.clone()),
        [
            "fdb 0e:00:00:00:00:02 dst 192.168.64.3 on flannel.1",
            "fdb 0e:00:00:00:00:03 dst 192.168.64.4 on flannel.1",
            "neighbour 10.244.2.0 lladdr 0e:00:00:00:00:02 on flannel.1",
            "neighbour 10.244.3.0 lladdr 0e:00:00:00:00:03 on flannel.1",
            "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
        ],
        "{repairs:?}"
    );
    assert_eq!(
        sorted(repairs.removed.clone()),
        [
            "fdb 0e:00:00:00:00:03 dst 192.168.64.99 on flannel.1",
            "fdb 0e:00:00:00:00:09 dst 192.168.64.9 on flannel.1",
            "neighbour 10.244.9.0 lladdr 0e:00:00:00:00:09 on flannel.1",
            "route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink",
        ],
        "{repairs:?}"
    );
    assert_eq!(ns.neighbours("flannel.1"), neigh);
    assert_eq!(ns.fdb("flannel.1"), fdb);
    // Without a Routing the external interface's routes are never touched.
    let mut with_foreign = routes.clone();
    with_foreign.push("10.244.50.0/24 via 192.168.64.1 dev eth0".to_string());
    with_foreign.push("10.99.0.0/16 via 192.168.64.1 dev eth0".to_string());
    assert_eq!(ns.gw_routes(), sorted(with_foreign));

    assert_eq!(reconcile(&ns, &peers), Repairs::default());
}

#[test]
fn reconcile_removes_every_entry_of_a_vanished_peer() {
    let ns = TestNs::new();
    let a = peer(2, [192, 168, 64, 3]);
    let b = peer(3, [192, 168, 64, 4]);
    reconcile(&ns, &[a.clone(), b.clone()]);

    // As at start-up, with b's lease gone while we were down.
    let repairs = reconcile(&ns, std::slice::from_ref(&a));
    assert!(repairs.added.is_empty(), "{repairs:?}");
    assert_eq!(
        sorted(repairs.removed),
        [
            "fdb 0e:00:00:00:00:03 dst 192.168.64.4 on flannel.1",
            "neighbour 10.244.3.0 lladdr 0e:00:00:00:00:03 on flannel.1",
            "route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink",
        ]
    );
    let (neigh, fdb, routes) = expected(&[&a]);
    assert_eq!(ns.neighbours("flannel.1"), neigh);
    assert_eq!(ns.fdb("flannel.1"), fdb);
    assert_eq!(ns.gw_routes(), routes);
}

#[test]
fn reconcile_sets_a_downed_device_up_and_restores_its_routes() {
    let ns = TestNs::new();
    let a = peer(2, [192, 168, 64, 3]);
    reconcile(&ns, std::slice::from_ref(&a));
    // Link down flushes the device's routes.
    ns.ip(&["link", "set", "flannel.1", "down"]);
    assert!(ns.gw_routes().is_empty());

    let repairs = ns
        .run(|vx| async move {
            let dev = vx.find_device(1).await?.expect("flannel.1 exists");
            vx.reconcile(&dev, std::slice::from_ref(&a)).await
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        repairs.added.contains(&"link flannel.1 up".to_string()),
        "{repairs:?}"
    );
    assert!(
        repairs
            .added
            .contains(&"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink".to_string()),
        "{repairs:?}"
    );
    assert_eq!(
        ns.gw_routes(),
        ["10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"]
    );
}

#[test]
fn kernel_made_neighbours_are_left_alone() {
    let ns = TestNs::new();
    let a = peer(2, [192, 168, 64, 3]);
    reconcile(&ns, std::slice::from_ref(&a));
    // A non-permanent entry, as the kernel makes for traffic it resolves.
    ns.ip(&[
        "neigh",
        "add",
        "10.244.8.5",
        "lladdr",
        "0e:00:00:00:00:08",
        "dev",
        "flannel.1",
        "nud",
        "stale",
    ]);
    assert_eq!(reconcile(&ns, std::slice::from_ref(&a)), Repairs::default());
}
