//! Dual-stack flanneld end to end on the file store and on etcd: nodes whose underlay
//! also has IPv6 get `flannel-v6.1` next to `flannel.1`, the IPv6 half in
//! their lease and subnet.env, each other as IPv6 peers, and real IPv6
//! traffic through the VXLAN-over-IPv6 tunnel; a deleted `flannel-v6.1`
//! comes back with its peers. Every run happens inside the cluster's
//! namespaces.

use flannel_tests::cluster::{Cluster, StoreKind};
use std::time::Duration;

const DUAL: &str = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;

/// node i's underlay IPv6.
fn underlay6(i: usize) -> String {
    format!("fd00:64::{}", 10 + i)
}

/// A dual-stack cluster of `n` running nodes (IPv6 added to each eth0).
fn dual_cluster(n: usize, store: StoreKind) -> Cluster {
    let mut c = Cluster::builder()
        .store(store)
        .nodes(n)
        .net_conf_raw(DUAL)
        .start(false)
        .build();
    for i in 0..n {
        let addr = format!("{}/64", underlay6(i));
        let out = c
            .node(i)
            .ns
            .exec("ip", &["addr", "add", &addr, "dev", "eth0", "nodad"]);
        assert!(out.success(), "{out}");
    }
    for i in 0..n {
        c.start(i);
        c.wait_ready(i);
    }
    c
}

/// The IPv6 subnet in node i's subnet.env ("fd00:10:244:N::1/64").
fn env_v6(c: &Cluster, i: usize) -> String {
    let env = c.node(i).subnet_env().expect("subnet.env");
    assert_eq!(
        env.get("FLANNEL_IPV6_NETWORK").map(String::as_str),
        Some("fd00:10:244::/56"),
        "{env:?}"
    );
    env.get("FLANNEL_IPV6_SUBNET")
        .cloned()
        .unwrap_or_else(|| panic!("no FLANNEL_IPV6_SUBNET: {env:?}"))
}

/// "fd00:10:244:N::/64" from "fd00:10:244:N::1/64".
fn v6_net(env_subnet: &str) -> String {
    let (addr, len) = env_subnet.split_once('/').expect("cidr");
    format!("{}/{len}", addr.trim_end_matches('1'))
}

fn v6_routes(c: &Cluster, i: usize) -> String {
    c.node(i)
        .ns
        .exec("ip", &["-6", "route", "show", "dev", "flannel-v6.1"])
        .stdout
}

#[test]
fn dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6_file_store() {
    dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6(StoreKind::File);
}

#[test]
fn dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6_etcd() {
    dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6(StoreKind::Etcd);
}

fn dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6(store: StoreKind) {
    let c = dual_cluster(2, store);
    let (s0, s1) = (env_v6(&c, 0), env_v6(&c, 1));
    assert_ne!(s0, s1);
    let (n0, n1) = (v6_net(&s0), v6_net(&s1));
    let gw1 = n1.split('/').next().expect("addr").to_string();

    // The device: IPv6 local, MTU 1500 - 70, its /128.
    let link = c
        .node(0)
        .ns
        .exec("ip", &["-d", "link", "show", "flannel-v6.1"]);
    assert!(link.success(), "{link}");
    assert!(
        link.stdout.contains(&format!("local {}", underlay6(0))),
        "{link}"
    );
    assert!(link.stdout.contains("mtu 1430"), "{link}");
    let addr = c
        .node(0)
        .ns
        .exec("ip", &["-6", "addr", "show", "dev", "flannel-v6.1"]);
    assert!(
        addr.stdout
            .contains(&format!("{}/128", n0.split('/').next().expect("a"))),
        "{addr}"
    );
    // Pods get an MTU that fits both devices.
    let env = c.node(0).subnet_env().expect("env");
    assert_eq!(
        env.get("FLANNEL_MTU").map(String::as_str),
        Some("1430"),
        "{env:?}"
    );

    // Node 1 as node 0's IPv6 peer: route, neighbour, FDB towards its IPv6.
    flannel_tests::eventually(Duration::from_secs(10), "IPv6 peer programmed", || {
        let routes = v6_routes(&c, 0);
        let fdb = c
            .node(0)
            .ns
            .exec("bridge", &["fdb", "show", "dev", "flannel-v6.1"])
            .stdout;
        if routes.contains(&format!("{n1} via {gw1}"))
            && fdb.contains(&format!("dst {}", underlay6(1)))
        {
            Ok(())
        } else {
            Err(format!("routes:\n{routes}\nfdb:\n{fdb}"))
        }
    });

    // Real traffic: node 1's flannel-v6 address, through the IPv6 tunnel.
    flannel_tests::eventually(Duration::from_secs(10), "ping6 over flannel-v6.1", || {
        let out = c
            .node(0)
            .ns
            .exec("ping", &["-6", "-c", "1", "-W", "1", &gw1]);
        if out.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });

    // Deleted by hand: recreated, and the peer replayed.
    let out = c.node(0).ns.exec("ip", &["link", "del", "flannel-v6.1"]);
    assert!(out.success(), "{out}");
    flannel_tests::eventually(Duration::from_secs(15), "flannel-v6.1 recreated", || {
        let routes = v6_routes(&c, 0);
        if routes.contains(&format!("{n1} via {gw1}")) {
            Ok(())
        } else {
            Err(routes)
        }
    });
    flannel_tests::eventually(Duration::from_secs(10), "ping6 after the repair", || {
        let out = c
            .node(0)
            .ns
            .exec("ping", &["-6", "-c", "1", "-W", "1", &gw1]);
        if out.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
    // IPv4 kept working alongside.
    let v4 = c
        .node(0)
        .ns
        .exec("ip", &["-4", "route", "show", "dev", "flannel.1"]);
    assert!(v4.stdout.contains("onlink"), "{v4}");
}
