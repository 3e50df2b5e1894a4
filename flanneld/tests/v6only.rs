//! IPv6-only flanneld end to end on the file store and on etcd
//! (`EnableIPv4: false`): each node takes only an IPv6 subnet, named in the
//! store as flannel names it (`0.0.0.0-0&fd00:10:244:N::-64`, `PublicIP`
//! `0.0.0.0`, no `BackendData`), brings up `flannel-v6.1` and no
//! `flannel.1`, writes only the IPv6 half of subnet.env, programs the other
//! node as its IPv6 peer, and real IPv6 traffic crosses the tunnel. Every
//! run happens inside the cluster's namespaces.

use flannel_tests::cluster::store::{etcdctl, ETCD_PREFIX};
use flannel_tests::cluster::{Cluster, StoreKind};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const V6ONLY: &str = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;

/// node i's underlay IPv6.
fn underlay6(i: usize) -> String {
    format!("fd00:64::{}", 20 + i)
}

/// Waits for node i's subnet.env to name an IPv6 subnet; returns it.
fn wait_env(c: &Cluster, i: usize) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(env) = c.node(i).subnet_env() {
            if env.contains_key("FLANNEL_IPV6_SUBNET") {
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

/// An IPv6-only cluster of `n` running nodes (IPv6 added to each eth0,
/// chosen by `--iface eth0` through its global IPv6).
fn v6only_cluster(n: usize, store: StoreKind) -> Cluster {
    let mut c = Cluster::builder()
        .store(store)
        .nodes(n)
        .net_conf_raw(V6ONLY)
        .flanneld_args(&["--iface", "eth0"])
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
        wait_env(&c, i);
    }
    c
}

/// "fd00:10:244:N::/64" from "fd00:10:244:N::1/64".
fn v6_net(env_subnet: &str) -> String {
    let (addr, len) = env_subnet.split_once('/').expect("cidr");
    format!("{}/{len}", addr.trim_end_matches('1'))
}

/// The store's leases as (name, value): file names, or etcd key suffixes.
fn raw_leases(c: &Cluster, store: StoreKind) -> BTreeMap<String, serde_json::Value> {
    let pairs: Vec<(String, String)> = match store {
        StoreKind::File => std::fs::read_dir(c.lease_dir())
            .expect("lease dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                let text = std::fs::read_to_string(c.lease_dir().join(&n)).expect("read lease");
                (n, text)
            })
            .collect(),
        _ => {
            let prefix = format!("{ETCD_PREFIX}/subnets/");
            let out = etcdctl(c.underlay(), &["get", "--prefix", &prefix]);
            assert!(out.success(), "{out}");
            let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
            lines
                .chunks(2)
                .map(|kv| {
                    let name = kv[0].strip_prefix(&prefix).expect("key").to_string();
                    (name, kv.get(1).copied().unwrap_or_default().to_string())
                })
                .collect()
        }
    };
    pairs
        .into_iter()
        .filter(|(n, _)| n.contains('-'))
        .map(|(n, text)| {
            let v =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("lease {n}: {e}: {text}"));
            (n, v)
        })
        .collect()
}

#[test]
fn ipv6_only_nodes_peer_over_ipv6_file_store() {
    ipv6_only_nodes_peer_over_ipv6(StoreKind::File);
}

#[test]
fn ipv6_only_nodes_peer_over_ipv6_etcd() {
    ipv6_only_nodes_peer_over_ipv6(StoreKind::Etcd);
}

fn ipv6_only_nodes_peer_over_ipv6(store: StoreKind) {
    let c = v6only_cluster(2, store);
    let (e0, e1) = (wait_env(&c, 0), wait_env(&c, 1));
    // subnet.env: only the IPv6 half, as flannel writes it.
    for env in [&e0, &e1] {
        assert_eq!(
            env.get("FLANNEL_IPV6_NETWORK").map(String::as_str),
            Some("fd00:10:244::/56"),
            "{env:?}"
        );
        assert!(!env.contains_key("FLANNEL_NETWORK"), "{env:?}");
        assert!(!env.contains_key("FLANNEL_SUBNET"), "{env:?}");
        assert_eq!(
            env.get("FLANNEL_MTU").map(String::as_str),
            Some("1430"),
            "{env:?}"
        );
    }
    let (n0, n1) = (
        v6_net(&e0["FLANNEL_IPV6_SUBNET"]),
        v6_net(&e1["FLANNEL_IPV6_SUBNET"]),
    );
    assert_ne!(n0, n1);
    let gw1 = n1.split('/').next().expect("addr").to_string();

    // The store: one lease a node, named and valued as flannel does.
    let leases = raw_leases(&c, store);
    assert_eq!(leases.len(), 2, "{leases:?}");
    for (i, n) in [(0, &n0), (1, &n1)] {
        let name = format!("0.0.0.0-0&{}", n.replace('/', "-"));
        let value = leases
            .get(&name)
            .unwrap_or_else(|| panic!("no lease {name}: {leases:?}"));
        assert_eq!(value["PublicIP"], "0.0.0.0", "{value}");
        assert_eq!(value["PublicIPv6"], underlay6(i).as_str(), "{value}");
        assert!(value.get("BackendData").is_none(), "{value}");
        assert_eq!(value["BackendV6Data"]["VNI"], 1, "{value}");
    }

    // Devices: flannel-v6.1 with the IPv6 local and MTU 1500 - 70, no flannel.1.
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
    let v4dev = c.node(0).ns.exec("ip", &["link", "show", "flannel.1"]);
    assert!(
        !v4dev.success(),
        "flannel.1 exists on an IPv6-only node: {v4dev}"
    );

    // Node 1 as node 0's IPv6 peer, then real traffic through the tunnel.
    flannel_tests::eventually(Duration::from_secs(10), "IPv6 peer programmed", || {
        let routes = c
            .node(0)
            .ns
            .exec("ip", &["-6", "route", "show", "dev", "flannel-v6.1"])
            .stdout;
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
}
