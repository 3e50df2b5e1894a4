//! IPv6-only clusters (`EnableIPv4: false`): no IPv4 pair in subnet.env,
//! no flannel.1, pods with only an IPv6 address; and flannel #2225's case:
//! the default (IPv4-only) config on Nodes whose podCIDRs are dual-stack.

use crate::steps::{
    join, leave, matrices_ok, node_state_ok, pods_in_their_subnets, repair_v6, restart, CONVERGE,
};
use flannel_cluster::cluster::{Cluster, IpFamily, StoreKind};
use serde_json::json;

/// `nodes` nodes on an IPv6-only overlay; on the file store the underlay
/// has no IPv4 at all (flanneld finds its interface by the IPv6 default
/// route), on the kube store it keeps IPv4 for the API server only.
fn ipv6_only(store: StoreKind, nodes: usize) -> Cluster {
    let c = Cluster::builder()
        .nodes(nodes)
        .store(store)
        .ip_family(IpFamily::V6)
        .underlay_ipv4(store != StoreKind::File)
        .build();
    c.wait_all_converged(CONVERGE);
    for i in 0..c.len() {
        node_state_ok(&c, i);
    }
    c
}

#[test]
fn ipv6_only_file_store_matrices_join_repair_restart_and_leave() {
    let mut c = ipv6_only(StoreKind::File, 2);
    let addrs = c.node(0).ns.ip_json(&["addr", "show", "dev", "eth0"]);
    let families: Vec<&str> = addrs[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["family"].as_str())
        .collect();
    assert!(
        families.contains(&"inet6") && !families.contains(&"inet"),
        "an IPv6-only node's eth0: {addrs}"
    );
    let mut pods = c.add_pods(1);
    pods_in_their_subnets(&c, &pods);
    matrices_ok(&c, &pods.iter().collect::<Vec<_>>());

    join(&mut c, &mut pods);
    repair_v6(&c, &pods);
    restart(&mut c, 1, false, &pods);
    let rest: Vec<_> = pods.iter().filter(|p| p.node != 2).collect();
    leave(&mut c, 2, &rest);
}

#[test]
fn ipv6_only_kube_store_ipv6_pod_cidrs_matrices_and_leave() {
    let mut c = ipv6_only(StoreKind::Kube, 3);
    for i in 0..c.len() {
        let cidrs = c.kube_node(i)["spec"]["podCIDRs"].clone();
        assert_eq!(cidrs, json!(c.node(i).subnets()), "{}", c.node(i).name);
    }
    let pods = c.add_pods(1);
    pods_in_their_subnets(&c, &pods);
    matrices_ok(&c, &pods.iter().collect::<Vec<_>>());
    let rest: Vec<_> = pods.iter().filter(|p| p.node != 2).collect();
    leave(&mut c, 2, &rest);
}

/// flannel #2225: kube-flannel.yml's default net-conf.json (IPv4 only) on
/// a dual-stack Kubernetes cluster, whose Nodes list an IPv4 and an IPv6
/// podCIDR. flanneld runs the IPv4 overlay from the IPv4 entry, leaves the
/// list as it is, and makes no IPv6 device.
#[test]
fn flannel_2225_default_config_on_dual_stack_pod_cidrs_runs_ipv4() {
    let mut c = Cluster::builder()
        .nodes(3)
        .store(StoreKind::Kube)
        .start(false)
        .build();
    let mut lists = Vec::new();
    for i in 0..c.len() {
        let v4 = c.wait_pod_cidr(i);
        let list = json!([v4, format!("fd00:10:244:{i:x}::/64")]);
        let name = c.node(i).name.clone();
        c.kube()
            .patch_node(&name, &json!({"spec": {"podCIDRs": list}}));
        lists.push(list);
    }
    for i in 0..c.len() {
        c.start(i);
    }
    for i in 0..c.len() {
        c.wait_ready(i);
    }
    c.wait_all_converged(CONVERGE);
    for (i, list) in lists.iter().enumerate() {
        node_state_ok(&c, i);
        assert_eq!(
            &c.kube_node(i)["spec"]["podCIDRs"],
            list,
            "podCIDRs changed"
        );
        assert_eq!(c.node(i).subnet(), list[0].as_str().unwrap_or(""));
    }
    let pods = c.add_pods(1);
    pods_in_their_subnets(&c, &pods);
    matrices_ok(&c, &pods.iter().collect::<Vec<_>>());
    for i in 0..c.len() {
        assert!(
            c.node(i).is_running(),
            "{} exited:\n{}",
            c.node(i).name,
            c.log(i)
        );
    }
}
