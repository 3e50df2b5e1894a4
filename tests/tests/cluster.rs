//! The cluster builder's own promises (no flanneld needed): the underlay and
//! node namespaces are wired as documented (IPv6 too, usable at once), the
//! readers of `flannel-v6.1`'s entries and the entry monitor see IPv6
//! entries as they are, and everything goes on drop, also on panic.

use flannel_cluster::cluster::entry_monitor::{Entry, EntryMonitor};
use flannel_cluster::cluster::{
    node_ip6, Cluster, ExpectedPeer, IpFamily, UNDERLAY_BRIDGE, UNDERLAY_GATEWAY,
    UNDERLAY_GATEWAY6, VXLAN_DEV6,
};
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

#[test]
fn a_dual_stack_underlay_is_usable_at_once_and_an_ipv6_only_one_has_no_ipv4() {
    let c = Cluster::builder()
        .nodes(2)
        .ip_family(IpFamily::Dual)
        .start(false)
        .build();
    let conf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.net_conf_path()).expect("net-conf.json"))
            .expect("JSON");
    assert_eq!(conf, IpFamily::Dual.net_conf());
    for (i, n) in c.nodes().iter().enumerate() {
        assert_eq!(n.ip6, Some(node_ip6(i)));
        let def = n.ns.ip_json(&["-6", "route", "show", "default"]);
        assert_eq!(def[0]["gateway"], UNDERLAY_GATEWAY6, "{def}");
    }
    // No wait for DAD: the first echo, right after build, is answered.
    let out = c.node(0).ns.exec(
        "ping",
        &["-6", "-c", "1", "-W", "2", &node_ip6(1).to_string()],
    );
    assert!(out.success(), "node0 → node1 over the IPv6 underlay: {out}");

    let only6 = Cluster::builder()
        .nodes(2)
        .ip_family(IpFamily::V6)
        .underlay_ipv4(false)
        .start(false)
        .build();
    let n = only6.node(0);
    assert!(n.ns.ipv4_addrs("eth0").is_empty());
    assert!(n.ns.route_v4("default").is_none());
    let out = n.ns.exec(
        "ping",
        &["-6", "-c", "1", "-W", "2", &node_ip6(1).to_string()],
    );
    assert!(out.success(), "IPv6-only underlay: {out}");
}

#[test]
fn ipv6_entries_on_flannel_v6_are_read_and_monitored_as_they_are() {
    let c = Cluster::builder()
        .nodes(1)
        .ip_family(IpFamily::Dual)
        .start(false)
        .build();
    let ns = &c.node(0).ns;
    let local = node_ip6(0).to_string();
    ns.ip_ok(&[
        "link",
        "add",
        VXLAN_DEV6,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        &local,
        "dev",
        "eth0",
        "dstport",
        "8472",
        "nolearning",
    ]);
    ns.ip_ok(&[
        "-6",
        "addr",
        "add",
        "fd00:10:244:1::/128",
        "dev",
        VXLAN_DEV6,
        "nodad",
    ]);
    ns.ip_ok(&["link", "set", VXLAN_DEV6, "up"]);
    let peer = ExpectedPeer {
        subnet: "fd00:10:244:2::/64".into(),
        vtep_ip: "fd00:10:244:2::".into(),
        vtep_mac: "0e:00:00:00:00:02".into(),
        public_ip: node_ip6(1).to_string(),
    };
    let k = c.kernel_of(0, IpFamily::V6);
    let link = k.link.as_ref().expect("flannel-v6.1");
    assert_eq!(link.local.as_deref(), Some(local.as_str()));
    assert_eq!(link.addrs, vec!["fd00:10:244:1::/128".to_owned()]);
    // The kernel's own routes (link-local, the /128) are not peer entries.
    k.check_exactly(&[]).expect("no peer entries yet");
    assert!(k.check_exactly(std::slice::from_ref(&peer)).is_err());

    let mon = EntryMonitor::start(ns, VXLAN_DEV6);
    ns.ip_ok(&[
        "-6",
        "neigh",
        "replace",
        &peer.vtep_ip,
        "lladdr",
        &peer.vtep_mac,
        "dev",
        VXLAN_DEV6,
        "nud",
        "permanent",
    ]);
    let out = ns.exec(
        "bridge",
        &[
            "fdb",
            "replace",
            &peer.vtep_mac,
            "dev",
            VXLAN_DEV6,
            "dst",
            &peer.public_ip,
            "self",
            "permanent",
        ],
    );
    assert!(out.success(), "{out}");
    ns.ip_ok(&[
        "-6",
        "route",
        "replace",
        &peer.subnet,
        "via",
        &peer.vtep_ip,
        "dev",
        VXLAN_DEV6,
        "onlink",
    ]);
    c.kernel_of(0, IpFamily::V6)
        .check_exactly(std::slice::from_ref(&peer))
        .expect("exactly the peer's entries");
    let want = [
        Entry::Neigh {
            dst: peer.vtep_ip.clone(),
            lladdr: peer.vtep_mac.clone(),
        },
        Entry::Fdb {
            mac: peer.vtep_mac.clone(),
            dst: peer.public_ip.clone(),
        },
        Entry::Route {
            dst: peer.subnet.clone(),
            table: 254,
        },
    ];
    let seen = flannel_cluster::eventually(
        std::time::Duration::from_secs(2),
        "the monitor to see the three writes",
        || {
            let ev: Vec<Entry> = mon.events().into_iter().map(|e| e.entry).collect();
            if want.iter().all(|w| ev.contains(w)) {
                Ok(ev)
            } else {
                Err(format!("{ev:?}"))
            }
        },
    );
    assert_eq!(seen.len(), 3, "only the three writes: {seen:?}");
}
