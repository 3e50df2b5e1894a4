//! IPv6-only flanneld end to end on the file store and on etcd
//! (`EnableIPv4: false`): each node takes only an IPv6 subnet, named in the
//! store as flannel names it (`0.0.0.0-0&fd00:10:244:N::-64`, `PublicIP`
//! `0.0.0.0`, no `BackendData`), brings up `flannel-v6.1` and no
//! `flannel.1`, writes only the IPv6 half of subnet.env, programs the other
//! node as its IPv6 peer, and real IPv6 traffic crosses the tunnel. Every
//! run happens inside the cluster's namespaces.

mod v6;

use flannel_cluster::cluster::store::{etcdctl, ETCD_PREFIX};
use flannel_cluster::cluster::{Cluster, StoreKind};
use std::collections::BTreeMap;
use v6::{
    assert_device, cluster_with_ipv6, gateway, subnet_env, underlay6, v6_net, wait_peer, wait_ping6,
};

const V6ONLY: &str = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;

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
    // `--iface eth0`: chosen through its global IPv6 (no IPv4 to go by).
    let c = cluster_with_ipv6(2, store, V6ONLY, &["--iface", "eth0"]);
    let (e0, e1) = (subnet_env(&c, 0), subnet_env(&c, 1));
    // subnet.env: only the IPv6 half, as flannel writes it.
    for env in [&e0, &e1] {
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
    let gw1 = gateway(&n1);

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
    assert_device(&c, 0);
    let v4dev = c.node(0).ns.exec("ip", &["link", "show", "flannel.1"]);
    assert!(
        !v4dev.success(),
        "flannel.1 exists on an IPv6-only node: {v4dev}"
    );

    // Node 1 as node 0's IPv6 peer, then real traffic through the tunnel.
    wait_peer(&c, 1, &n1);
    wait_ping6(&c, &gw1, "ping6 over flannel-v6.1");
}
