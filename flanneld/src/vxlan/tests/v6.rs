//! The same backend on IPv6: `flannel-v6.<VNI>` made with the IPv6 local
//! and MTU, its `/128` address, and peers programmed, repaired, removed
//! and replayed on a new device by the very code the IPv4 tests run; and
//! both families side by side without touching each other's entries.

use ipnetwork::Ipv6Network;

use super::{expected, expected_on, peer, peer6, TestNs, LOCAL6, MAC6};
use crate::vxlan::{Peer, Repairs, Vxlan, VxlanError};

const DEV6: &str = "flannel-v6.1";

/// Creates (or adopts) flannel-v6.1 and reconciles it against `peers`.
fn reconcile6(ns: &TestNs, peers: &[Peer<Ipv6Network>]) -> Repairs {
    let spec = ns.spec6();
    ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        vx.reconcile(&dev, peers).await
    })
    .unwrap_or_else(|e| panic!("reconcile {DEV6}: {e}"))
}

fn check(ns: &TestNs, peers: &[&Peer<Ipv6Network>]) {
    let (neigh, fdb, routes) = expected_on(peers, DEV6);
    assert_eq!(ns.neighbours_af("-6", DEV6), neigh);
    assert_eq!(ns.fdb(DEV6), fdb);
    assert_eq!(ns.gw_routes_af("-6"), routes);
}

#[test]
fn v6_device_has_the_ipv6_local_mtu_and_a_128_address() {
    let ns = TestNs::new();
    let spec = ns.spec6();
    let network: Ipv6Network = "fd00:10:244::/56".parse().expect("net");
    ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        assert_eq!(dev.name, DEV6);
        assert_eq!(dev.mac, MAC6);
        // A previous lease's address goes, ours comes.
        vx.ensure_address(&dev, "fd00:10:244:9::".parse().expect("ip"), network)
            .await?;
        vx.ensure_address(&dev, "fd00:10:244:1::".parse().expect("ip"), network)
            .await
    })
    .unwrap_or_else(|e: VxlanError| panic!("{e}"));
    let link = ns.ip_json(&["-d", "link", "show", DEV6]);
    let info = &link[0]["linkinfo"]["info_data"];
    assert_eq!(info["id"], 1, "{link}");
    assert_eq!(info["local6"], LOCAL6.to_string(), "{link}");
    assert_eq!(info["port"], 8472, "{link}");
    assert_eq!(link[0]["mtu"], 1430, "{link}");
    let addrs = ns.ip_json(&["-6", "addr", "show", "dev", DEV6, "scope", "global"]);
    let globals: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        // iproute2 prints an empty object after the last address.
        .filter(|a| a.get("local").is_some())
        .map(|a| format!("{}/{}", super::s(&a["local"]), a["prefixlen"]))
        .collect();
    assert_eq!(globals, ["fd00:10:244:1::/128"], "{addrs}");
    assert_eq!(ns.proc_sys(&format!("net/ipv6/conf/{DEV6}/accept_ra")), "0");
}

#[test]
fn v6_peers_are_programmed_repaired_and_strays_removed() {
    let ns = TestNs::new();
    let a = peer6(2, 3);
    let b = peer6(3, 4);
    let peers = vec![a.clone(), b.clone()];

    let first = reconcile6(&ns, &peers);
    assert_eq!(first.added.len(), 6, "{first:?}");
    assert!(
        first.removed.is_empty() && first.failed.is_empty(),
        "{first:?}"
    );
    check(&ns, &[&a, &b]);
    // The routes carry IPv6's default metric, so the next pass finds them
    // right and writes nothing.
    assert_eq!(reconcile6(&ns, &peers), Repairs::default());

    // Damage each kind, and add a stray of each kind.
    ns.ip(&["-6", "route", "del", "fd00:10:244:2::/64", "dev", DEV6]);
    ns.ip(&["-6", "neigh", "del", "fd00:10:244:3::", "dev", DEV6]);
    ns.bridge(&[
        "fdb",
        "del",
        "0e:00:00:00:06:02",
        "dev",
        DEV6,
        "dst",
        "fd00:64::3",
        "self",
    ]);
    ns.ip(&[
        "-6",
        "neigh",
        "replace",
        "fd00:10:244:7::",
        "lladdr",
        "0e:00:00:00:06:07",
        "dev",
        DEV6,
        "nud",
        "permanent",
    ]);
    ns.bridge(&[
        "fdb",
        "append",
        "0e:00:00:00:06:07",
        "dev",
        DEV6,
        "dst",
        "fd00:64::7",
        "self",
        "permanent",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:10:244:7::/64",
        "via",
        "fd00:10:244:7::",
        "dev",
        DEV6,
        "onlink",
    ]);

    let r = reconcile6(&ns, &peers);
    assert!(r.failed.is_empty(), "{r:?}");
    let mut added = r.added.clone();
    added.sort();
    assert_eq!(
        added,
        [
            format!("fdb 0e:00:00:00:06:02 dst fd00:64::3 on {DEV6}"),
            format!("neighbour fd00:10:244:3:: lladdr 0e:00:00:00:06:03 on {DEV6}"),
            format!("route fd00:10:244:2::/64 via fd00:10:244:2:: dev {DEV6} onlink"),
        ]
    );
    let mut removed = r.removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            format!("fdb 0e:00:00:00:06:07 dst fd00:64::7 on {DEV6}"),
            format!("neighbour fd00:10:244:7:: lladdr 0e:00:00:00:06:07 on {DEV6}"),
            format!("route fd00:10:244:7::/64 via fd00:10:244:7:: dev {DEV6} onlink"),
        ]
    );
    check(&ns, &[&a, &b]);

    // A peer leaves: its three entries go.
    let r = reconcile6(&ns, std::slice::from_ref(&a));
    assert_eq!(r.removed.len(), 3, "{r:?}");
    check(&ns, &[&a]);
}

#[test]
fn v6_set_and_remove_peer_and_a_changed_vtep() {
    let ns = TestNs::new();
    let spec = ns.spec6();
    let a = peer6(2, 3);
    let mut moved = a.clone();
    moved.public_ip = "fd00:64::9".parse().expect("ip");
    moved.vtep_mac = [0x0e, 0, 0, 0, 6, 0x22];
    let (a2, moved2) = (a.clone(), moved.clone());
    ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        vx.set_peer(&dev, &a2, None).await
    })
    .unwrap_or_else(|e: VxlanError| panic!("{e}"));
    check(&ns, &[&a]);
    let spec = ns.spec6();
    let (a3, moved3) = (a.clone(), moved.clone());
    ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        vx.set_peer(&dev, &moved3, Some(&a3)).await
    })
    .unwrap_or_else(|e: VxlanError| panic!("{e}"));
    check(&ns, &[&moved2]);
    let spec = ns.spec6();
    ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        vx.remove_peer(&dev, &moved).await
    })
    .unwrap_or_else(|e: VxlanError| panic!("{e}"));
    check(&ns, &[]);
}

#[test]
fn v6_device_deleted_is_reported_gone_then_recreated_and_replayed() {
    let ns = TestNs::new();
    let peers = vec![peer6(2, 3)];
    reconcile6(&ns, &peers);
    let spec = ns.spec6();
    let old_index = ns.ifindex(DEV6);
    let peers2 = peers.clone();
    let found = ns.run(|vx: Vxlan<Ipv6Network>| async move { vx.find_device(1).await });
    let dev = found
        .unwrap_or_else(|e: VxlanError| panic!("{e}"))
        .unwrap_or_else(|| panic!("{DEV6} not found"));
    ns.ip(&["link", "del", DEV6]);
    let r = ns.run(|vx| async move { vx.reconcile(&dev, &peers2).await });
    assert!(
        matches!(r, Err(VxlanError::DeviceGone { .. })),
        "reconcile on a deleted device: {r:?}"
    );
    // What the datapath does then: ensure_device, and a full reconcile.
    let r = ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        vx.reconcile(&dev, &peers).await
    });
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.added.len(), 3, "{r:?}");
    assert_ne!(ns.ifindex(DEV6), old_index);
    check(&ns, &[&peer6(2, 3)]);
}

#[test]
fn both_families_side_by_side_leave_each_other_alone() {
    let ns = TestNs::new();
    let v4 = vec![peer(2, [192, 168, 64, 3])];
    let v6 = vec![peer6(2, 3)];
    let spec4 = ns.spec();
    let v4b = v4.clone();
    let first4 = ns
        .run(|vx| async move {
            let dev = vx.ensure_device(&spec4).await?;
            vx.reconcile(&dev, &v4b).await
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first4.added.len(), 3, "{first4:?}");
    let first6 = reconcile6(&ns, &v6);
    assert_eq!(first6.added.len(), 3, "{first6:?}");

    // Each family's pass finds its own entries right and does not see the
    // other's as strays, even though both live in the same tables.
    let spec4 = ns.spec();
    let v4b = v4.clone();
    let again4 = ns
        .run(|vx| async move {
            let dev = vx.ensure_device(&spec4).await?;
            vx.reconcile(&dev, &v4b).await
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again4, Repairs::default());
    assert_eq!(reconcile6(&ns, &v6), Repairs::default());

    let (neigh, fdb, routes) = expected(&[&v4[0]]);
    assert_eq!(ns.neighbours("flannel.1"), neigh);
    assert_eq!(ns.fdb("flannel.1"), fdb);
    assert_eq!(ns.gw_routes(), routes);
    check(&ns, &[&v6[0]]);
    // The IPv6 device has no IPv4 entries and the reverse.
    assert!(ns.neighbours_af("-4", DEV6).is_empty());
    assert!(ns
        .neighbours_af("-6", "flannel.1")
        .iter()
        .all(|n| !n.contains("PERMANENT")));
}
