//! What the dual-stack and the IPv6-only suites share: a cluster whose
//! nodes have IPv6 on their underlay, and the checks of `flannel-v6.1`
//! (the device, the peer's entries, traffic through the tunnel).

use flannel_cluster::cluster::{Cluster, StoreKind};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const IPV6_NETWORK: &str = "fd00:10:244::/56";

/// Node i's underlay IPv6.
pub fn underlay6(i: usize) -> String {
    format!("fd00:64::{}", 10 + i)
}

/// `n` running nodes on `store` with `net_conf`, each with its underlay
/// IPv6 on eth0 (no DAD), started with `args`; returns once every node's
/// subnet.env names its IPv6 subnet.
pub fn cluster_with_ipv6(n: usize, store: StoreKind, net_conf: &str, args: &[&str]) -> Cluster {
    let mut c = Cluster::builder()
        .store(store)
        .nodes(n)
        .net_conf_raw(net_conf)
        .flanneld_args(args)
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
        subnet_env(&c, i);
    }
    c
}

/// Node i's subnet.env, once it names an IPv6 subnet in IPV6_NETWORK.
pub fn subnet_env(c: &Cluster, i: usize) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(env) = c.node(i).subnet_env() {
            if env.contains_key("FLANNEL_IPV6_SUBNET") {
                assert_eq!(
                    env.get("FLANNEL_IPV6_NETWORK").map(String::as_str),
                    Some(IPV6_NETWORK),
                    "{env:?}"
                );
                return env.into_iter().collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {i}: no subnet.env with FLANNEL_IPV6_SUBNET; log:\n{}",
            c.log(i)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// "fd00:10:244:N::/64" from "fd00:10:244:N::1/64".
pub fn v6_net(env_subnet: &str) -> String {
    let (addr, len) = env_subnet.split_once('/').expect("cidr");
    format!("{}/{len}", addr.trim_end_matches('1'))
}

/// The subnet's first address: the peer's address on its flannel-v6.1.
pub fn gateway(net: &str) -> String {
    net.split('/').next().expect("addr").to_string()
}

pub fn v6_routes(c: &Cluster, i: usize) -> String {
    c.node(i)
        .ns
        .exec("ip", &["-6", "route", "show", "dev", "flannel-v6.1"])
        .stdout
}

/// Node i's flannel-v6.1: local is its underlay IPv6, MTU 1500 - 70.
pub fn assert_device(c: &Cluster, i: usize) {
    let link = c
        .node(i)
        .ns
        .exec("ip", &["-d", "link", "show", "flannel-v6.1"]);
    assert!(link.success(), "{link}");
    assert!(
        link.stdout.contains(&format!("local {}", underlay6(i))),
        "{link}"
    );
    assert!(link.stdout.contains("mtu 1430"), "{link}");
}

/// Node 0 has node `peer` (subnet `net`) as its IPv6 peer: the route via
/// the peer's flannel-v6 address and the FDB entry towards its underlay.
pub fn wait_peer(c: &Cluster, peer: usize, net: &str) {
    let gw = gateway(net);
    flannel_cluster::eventually(Duration::from_secs(10), "IPv6 peer programmed", || {
        let routes = v6_routes(c, 0);
        let fdb = c
            .node(0)
            .ns
            .exec("bridge", &["fdb", "show", "dev", "flannel-v6.1"])
            .stdout;
        if routes.contains(&format!("{net} via {gw}"))
            && fdb.contains(&format!("dst {}", underlay6(peer)))
        {
            Ok(())
        } else {
            Err(format!("routes:\n{routes}\nfdb:\n{fdb}"))
        }
    });
}

/// Node 0 pings `addr` through the tunnel (retried while it comes up).
pub fn wait_ping6(c: &Cluster, addr: &str, what: &str) {
    flannel_cluster::eventually(Duration::from_secs(10), what, || {
        let out = c
            .node(0)
            .ns
            .exec("ping", &["-6", "-c", "1", "-W", "1", addr]);
        if out.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
}
