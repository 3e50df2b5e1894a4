//! DirectRouting: peers on our L2 network get one direct route, the others
//! the three VXLAN entries; reconcile covers the direct routes and never
//! touches the node's other routes.

use super::{expected, net, peer, TestNs};
use crate::vxlan::{Device, Peer, Repairs, Vxlan, VxlanError};

/// flannel.1 plus a backend with DirectRouting on eth0; runs `f`.
fn with_direct<F, Fut, T>(ns: &TestNs, f: F) -> T
where
    F: FnOnce(Vxlan, Device) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, VxlanError>>,
    T: Send,
{
    let spec = ns.spec();
    ns.run(|vx| async move {
        let vx = vx
            .with_routing(net("10.244.0.0/16"), 24, spec.ext_index, true)
            .await?;
        let routing = vx.routing().expect("routing was read");
        assert_eq!(routing.ext_name, "eth0");
        assert_eq!(routing.ext_subnets, vec![net("192.168.64.0/24")]);
        let dev = vx.ensure_device(&spec).await?;
        f(vx, dev).await
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn on_l2() -> Peer {
    peer(2, [192, 168, 64, 3])
}

fn remote() -> Peer {
    peer(3, [10, 0, 0, 5])
}

#[test]
fn direct_peer_gets_only_a_direct_route() {
    let ns = TestNs::new();
    let (near, far) = (on_l2(), remote());
    let (n2, f2) = (near.clone(), far.clone());
    let direct = with_direct(&ns, |vx, dev| async move {
        vx.set_peer(&dev, &n2, None).await?;
        vx.set_peer(&dev, &f2, None).await?;
        Ok((vx.is_direct(&n2), vx.is_direct(&f2)))
    });
    assert_eq!(direct, (true, false));
    let (neigh, fdb, mut routes) = expected(&[&far]);
    routes.insert(0, "10.244.2.0/24 via 192.168.64.3 dev eth0".to_string());
    assert_eq!(ns.neighbours("flannel.1"), neigh);
    assert_eq!(ns.fdb("flannel.1"), fdb);
    assert_eq!(ns.gw_routes(), routes);

    let (n2, f2) = (near.clone(), far.clone());
    with_direct(&ns, |vx, dev| async move {
        vx.remove_peer(&dev, &n2).await?;
        vx.remove_peer(&dev, &f2).await
    });
    assert!(ns.gw_routes().is_empty(), "{:?}", ns.gw_routes());
    assert!(ns.neighbours("flannel.1").is_empty());
    assert!(ns.fdb("flannel.1").is_empty());
}

#[test]
fn peer_moving_onto_our_l2_switches_to_direct_cleanly() {
    let ns = TestNs::new();
    let before = remote();
    let after = Peer {
        public_ip: "192.168.64.3".parse().expect("ip"),
        ..before.clone()
    };
    let (b2, a2) = (before.clone(), after.clone());
    with_direct(&ns, |vx, dev| async move {
        vx.set_peer(&dev, &b2, None).await?;
        vx.set_peer(&dev, &a2, Some(&b2)).await
    });
    assert!(ns.neighbours("flannel.1").is_empty());
    assert!(ns.fdb("flannel.1").is_empty());
    assert_eq!(ns.gw_routes(), ["10.244.3.0/24 via 192.168.64.3 dev eth0"]);
}

#[test]
fn reconcile_covers_direct_routes_and_nothing_else() {
    let ns = TestNs::new();
    let peers = vec![on_l2(), remote()];
    let reconcile = |peers: Vec<Peer>| -> Repairs {
        with_direct(
            &ns,
            |vx, dev| async move { vx.reconcile(&dev, &peers).await },
        )
    };
    let first = reconcile(peers.clone());
    assert_eq!(first.added.len(), 4, "{first:?}");
    assert_eq!(reconcile(peers.clone()), Repairs::default());

    // The direct route deleted; a stray direct route; a leftover overlay
    // entry set for the direct peer; and routes that are not ours: another
    // prefix length, outside Network, no gateway.
    ns.ip(&["route", "del", "10.244.2.0/24"]);
    ns.ip(&[
        "route",
        "add",
        "10.244.9.0/24",
        "via",
        "192.168.64.7",
        "dev",
        "eth0",
    ]);
    ns.ip(&[
        "neigh",
        "add",
        "10.244.2.0",
        "lladdr",
        "0e:00:00:00:00:02",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.244.0.0/16",
        "via",
        "192.168.64.1",
        "dev",
        "eth0",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "192.168.64.1",
        "dev",
        "eth0",
    ]);
    ns.ip(&["route", "add", "10.244.60.0/24", "dev", "eth0"]);

    let repairs = reconcile(peers.clone());
    assert!(repairs.failed.is_empty(), "{repairs:?}");
    assert_eq!(
        repairs.added,
        ["route 10.244.2.0/24 via 192.168.64.3 dev eth0"]
    );
    let mut removed = repairs.removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            "neighbour 10.244.2.0 lladdr 0e:00:00:00:00:02 on flannel.1",
            "route 10.244.9.0/24 via 192.168.64.7 dev eth0",
        ]
    );
    let mut routes = vec![
        "10.244.0.0/16 via 192.168.64.1 dev eth0".to_string(),
        "10.244.2.0/24 via 192.168.64.3 dev eth0".to_string(),
        "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink".to_string(),
        "10.99.0.0/24 via 192.168.64.1 dev eth0".to_string(),
    ];
    routes.sort();
    assert_eq!(ns.gw_routes(), routes);
    let all = ns.ip(&["-4", "route", "show", "10.244.60.0/24"]);
    assert!(all.contains("10.244.60.0/24 dev eth0"), "{all}");
    assert_eq!(reconcile(peers), Repairs::default());
}
