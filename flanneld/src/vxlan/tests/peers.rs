//! Programming peers: exactly three entries each, clean updates, removal.

use super::{expected, peer, TestNs};
use crate::vxlan::{Device, Peer, Vxlan, VxlanError};

/// Creates flannel.1, then runs `f` with the backend and the device.
fn with_device<F, Fut, T>(ns: &TestNs, f: F) -> T
where
    F: FnOnce(Vxlan, Device) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, VxlanError>>,
    T: Send,
{
    let spec = ns.spec();
    ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        f(vx, dev).await
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn assert_programmed(ns: &TestNs, peers: &[&Peer]) {
    let (neigh, fdb, routes) = expected(peers);
    assert_eq!(ns.neighbours("flannel.1"), neigh, "neighbours");
    assert_eq!(ns.fdb("flannel.1"), fdb, "fdb");
    assert_eq!(ns.gw_routes(), routes, "routes");
}

#[test]
fn set_peer_programs_exactly_three_entries() {
    let ns = TestNs::new();
    let a = peer(2, [192, 168, 64, 3]);
    let b = peer(3, [192, 168, 64, 4]);
    let (a2, b2) = (a.clone(), b.clone());
    with_device(&ns, |vx, dev| async move {
        vx.set_peer(&dev, &a2, None).await?;
        vx.set_peer(&dev, &b2, None).await?;
        // Idempotent.
        vx.set_peer(&dev, &a2, Some(&a2)).await
    });
    assert_programmed(&ns, &[&a, &b]);
    assert_eq!(
        ns.neighbours("flannel.1")[0],
        "10.244.2.0 0e:00:00:00:00:02 PERMANENT"
    );
    assert_eq!(
        ns.fdb("flannel.1")[0],
        "0e:00:00:00:00:02 192.168.64.3 permanent"
    );
    assert_eq!(
        ns.gw_routes()[0],
        "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
    );
}

#[test]
fn changed_mac_or_ip_updates_cleanly() {
    let ns = TestNs::new();
    let a = peer(2, [192, 168, 64, 3]);
    let new_mac = Peer {
        vtep_mac: [0x0e, 0, 0, 0, 0, 0x99],
        ..a.clone()
    };
    let new_ip = Peer {
        public_ip: "192.168.64.30".parse().expect("ip"),
        ..new_mac.clone()
    };
    let (a2, m2) = (a.clone(), new_mac.clone());
    with_device(&ns, |vx, dev| async move {
        vx.set_peer(&dev, &a2, None).await?;
        vx.set_peer(&dev, &m2, Some(&a2)).await
    });
    assert_programmed(&ns, &[&new_mac]);

    let (m2, i2) = (new_mac.clone(), new_ip.clone());
    with_device(&ns, |vx, dev| async move {
        vx.set_peer(&dev, &i2, Some(&m2)).await
    });
    assert_programmed(&ns, &[&new_ip]);

    // Both at once, back to the original.
    let (i2, a2) = (new_ip.clone(), a.clone());
    with_device(&ns, |vx, dev| async move {
        vx.set_peer(&dev, &a2, Some(&i2)).await
    });
    assert_programmed(&ns, &[&a]);
}

#[test]
fn remove_peer_removes_all_and_tolerates_missing_entries() {
    let ns = TestNs::new();
    let a = peer(2, [192, 168, 64, 3]);
    let b = peer(3, [192, 168, 64, 4]);
    let (a2, b2) = (a.clone(), b.clone());
    with_device(&ns, |vx, dev| async move {
        vx.set_peer(&dev, &a2, None).await?;
        vx.set_peer(&dev, &b2, None).await?;
        vx.remove_peer(&dev, &a2).await
    });
    assert_programmed(&ns, &[&b]);

    // Half gone already (someone deleted the route), then all gone.
    ns.ip(&["route", "del", "10.244.3.0/24"]);
    let b2 = b.clone();
    with_device(&ns, |vx, dev| async move {
        vx.remove_peer(&dev, &b2).await?;
        vx.remove_peer(&dev, &b2).await
    });
    assert_programmed(&ns, &[]);
}

#[test]
fn errors_name_the_operation_and_the_object() {
    let ns = TestNs::new();
    let spec = ns.spec();
    let err = ns.run(|vx| async move {
        let dev = vx.ensure_device(&spec).await?;
        let gone = Device {
            index: 9999,
            name: "flannel.9".to_string(),
            ..dev
        };
        vx.set_peer(&gone, &peer(2, [192, 168, 64, 3]), None).await
    });
    let err = match err {
        Err(e) => e,
        Ok(()) => panic!("set_peer on a missing device succeeded"),
    };
    assert!(err.is_device_gone(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "replace neighbour 10.244.2.0 lladdr 0e:00:00:00:00:02 on flannel.9: No such device (os error 19)"
    );
}
