//! Dual-stack flanneld end to end on the file store and on etcd: nodes whose underlay
//! also has IPv6 get `flannel-v6.1` next to `flannel.1`, the IPv6 half in
//! their lease and subnet.env, each other as IPv6 peers, and real IPv6
//! traffic through the VXLAN-over-IPv6 tunnel; a deleted `flannel-v6.1`
//! comes back with its peers. Every run happens inside the cluster's
//! namespaces.

mod v6;

use flannel_cluster::cluster::StoreKind;
use std::time::Duration;
use v6::{
    assert_device, cluster_with_ipv6, gateway, subnet_env, v6_net, v6_routes, wait_peer, wait_ping6,
};

const DUAL: &str = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;

#[test]
fn dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6_file_store() {
    dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6(StoreKind::File);
}

#[test]
fn dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6_etcd() {
    dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6(StoreKind::Etcd);
}

fn dual_stack_nodes_peer_over_ipv6_and_repair_flannel_v6(store: StoreKind) {
    let c = cluster_with_ipv6(2, store, DUAL, &[]);
    let (s0, s1) = (
        subnet_env(&c, 0)["FLANNEL_IPV6_SUBNET"].clone(),
        subnet_env(&c, 1)["FLANNEL_IPV6_SUBNET"].clone(),
    );
    assert_ne!(s0, s1);
    let (n0, n1) = (v6_net(&s0), v6_net(&s1));
    let gw1 = gateway(&n1);

    // The device: IPv6 local, MTU 1500 - 70, its /128.
    assert_device(&c, 0);
    let addr = c
        .node(0)
        .ns
        .exec("ip", &["-6", "addr", "show", "dev", "flannel-v6.1"]);
    assert!(
        addr.stdout.contains(&format!("{}/128", gateway(&n0))),
        "{addr}"
    );
    // Pods get an MTU that fits both devices.
    let env = subnet_env(&c, 0);
    assert_eq!(
        env.get("FLANNEL_MTU").map(String::as_str),
        Some("1430"),
        "{env:?}"
    );

    // Node 1 as node 0's IPv6 peer, and real traffic through the tunnel.
    wait_peer(&c, 1, &n1);
    wait_ping6(&c, &gw1, "ping6 over flannel-v6.1");

    // Deleted by hand: recreated, and the peer replayed.
    let out = c.node(0).ns.exec("ip", &["link", "del", "flannel-v6.1"]);
    assert!(out.success(), "{out}");
    flannel_cluster::eventually(Duration::from_secs(15), "flannel-v6.1 recreated", || {
        let routes = v6_routes(&c, 0);
        if routes.contains(&format!("{n1} via {gw1}")) {
            Ok(())
        } else {
            Err(routes)
        }
    });
    wait_ping6(&c, &gw1, "ping6 after the repair");
    // IPv4 kept working alongside.
    let v4 = c
        .node(0)
        .ns
        .exec("ip", &["-4", "route", "show", "dev", "flannel.1"]);
    assert!(v4.stdout.contains("onlink"), "{v4}");
}
