//! The cluster builder's own promises (no flanneld needed): the underlay and
//! node namespaces are wired as documented, and everything goes on drop, also
//! on panic.

use flannel_tests::cluster::{Cluster, UNDERLAY_BRIDGE, UNDERLAY_GATEWAY};
use std::path::Path;

#[test]
fn nodes_are_wired_to_the_underlay_with_a_default_route() {
    let c = Cluster::builder().nodes(2).start(false).build();
    assert!(c.underlay().has_link(UNDERLAY_BRIDGE));
    assert_eq!(
        c.underlay().ipv4_addrs(UNDERLAY_BRIDGE),
        vec![format!("{UNDERLAY_GATEWAY}/24")]
    );
    for (i, n) in c.nodes().iter().enumerate() {
        assert_eq!(
            n.ns.ipv4_addrs("eth0"),
            vec![format!("192.168.64.{}/24", 10 + i)]
        );
        let def = n.ns.route_v4("default").expect("default route");
        assert_eq!(def["gateway"], UNDERLAY_GATEWAY);
        assert_eq!(def["dev"], "eth0");
        assert_eq!(n.ns.link("eth0").unwrap()["mtu"], 1500);
    }
    let out = c
        .node(0)
        .ns
        .exec("ping", &["-c", "1", "-W", "2", "192.168.64.11"]);
    assert!(out.success(), "node0 → node1 over the underlay: {out}");
    assert!(c.lease_dir().is_dir());
    assert!(c.net_conf_path().is_file());
    assert!(c.leases().is_empty());
}

#[test]
fn everything_is_removed_on_drop_and_on_panic() {
    let c = Cluster::builder().nodes(2).start(false).build();
    let mut paths = vec![c.dir().to_owned(), c.underlay().path().to_owned()];
    paths.extend(c.nodes().iter().map(|n| n.ns.path().to_owned()));
    assert!(paths.iter().all(|p| p.exists()));
    drop(c);
    for p in &paths {
        assert!(!p.exists(), "{} left after drop", p.display());
    }

    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let c = Cluster::builder().nodes(1).start(false).build();
        tx.send(vec![
            c.dir().to_owned(),
            c.underlay().path().to_owned(),
            c.node(0).ns.path().to_owned(),
        ])
        .unwrap();
        panic!("deliberate panic to test the cluster's cleanup");
    })
    .join();
    assert!(r.is_err());
    for p in rx.recv().unwrap() {
        assert!(!Path::new(&p).exists(), "{} survived a panic", p.display());
    }
}
