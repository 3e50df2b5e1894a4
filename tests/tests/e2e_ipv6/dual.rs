//! Dual-stack clusters (`EnableIPv6`, `IPv6Network` fd00:10:244::/56,
//! IPv6SubnetLen left at its default 64) on each lease store.

use crate::steps::{
    join, leave, matrices_ok, node_state_ok, pods_in_their_subnets, repair_v6, restart, CONVERGE,
};
use flannel_tests::cluster::kube::annotation;
use flannel_tests::cluster::{Cluster, IpFamily, LeaseFile, StoreKind};

fn dual(store: StoreKind, nodes: usize) -> Cluster {
    let c = Cluster::builder()
        .nodes(nodes)
        .store(store)
        .ip_family(IpFamily::Dual)
        .build();
    c.wait_all_converged(CONVERGE);
    for i in 0..c.len() {
        node_state_ok(&c, i);
    }
    c
}

/// A dual-stack lease's name: flannel's `MakeSubnetKey`,
/// `10.244.1.0-24&fd00:10:244:1::-64`.
fn dual_key(l: &LeaseFile) -> String {
    let six = l.subnet6.as_deref().expect("an IPv6 subnet");
    format!("{}&{}", l.subnet.replace('/', "-"), six.replace('/', "-"))
}

#[test]
fn dual_stack_file_store_matrices_join_repair_restart_and_leave() {
    let mut c = dual(StoreKind::File, 3);
    for l in c.leases() {
        let name = l.path.file_name().map(|n| n.to_string_lossy().into_owned());
        assert_eq!(name, Some(dual_key(&l)), "lease file name");
    }
    let mut pods = c.add_pods(1);
    pods_in_their_subnets(&c, &pods);
    matrices_ok(&c, &pods.iter().collect::<Vec<_>>());

    join(&mut c, &mut pods);
    repair_v6(&c, &pods);
    restart(&mut c, 1, true, &pods);
    let rest: Vec<_> = pods.iter().filter(|p| p.node != 2).collect();
    leave(&mut c, 2, &rest);
}

#[test]
fn dual_stack_etcd_store_matrices_restart_and_leave() {
    let mut c = dual(StoreKind::Etcd, 3);
    assert_eq!(c.leases().len(), 3, "{:#?}", c.leases());
    for l in c.leases() {
        let key = l.path.to_string_lossy().into_owned();
        assert_eq!(key, format!("/coreos.com/network/subnets/{}", dual_key(&l)));
    }
    let pods = c.add_pods(2);
    pods_in_their_subnets(&c, &pods);
    matrices_ok(&c, &pods.iter().collect::<Vec<_>>());

    restart(&mut c, 0, false, &pods);
    let rest: Vec<_> = pods.iter().filter(|p| p.node != 2).collect();
    leave(&mut c, 2, &rest);
}

#[test]
fn dual_stack_kube_store_dual_pod_cidrs_annotations_matrices_restart_and_leave() {
    let mut c = dual(StoreKind::Kube, 3);
    for i in 0..c.len() {
        let node = c.kube_node(i);
        let n = c.node(i);
        let cidrs: Vec<String> = node["spec"]["podCIDRs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            cidrs,
            n.subnets(),
            "{}: podCIDRs are subnet.env's subnets",
            n.name
        );
        let ip6 = n.ip6.map(|a| a.to_string());
        assert_eq!(annotation(&node, "public-ipv6"), ip6.as_deref());
        let link6 = c.kernel_of(i, IpFamily::V6).link.expect("flannel-v6.1");
        let data: serde_json::Value = annotation(&node, "backend-v6-data")
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_else(|| panic!("{}: no backend-v6-data: {node:#}", n.name));
        assert_eq!(data["VNI"], 1);
        assert_eq!(
            data["VtepMAC"].as_str().map(str::to_lowercase),
            Some(link6.mac)
        );
    }
    let pods = c.add_pods(1);
    pods_in_their_subnets(&c, &pods);
    matrices_ok(&c, &pods.iter().collect::<Vec<_>>());

    restart(&mut c, 1, true, &pods);
    // Leaving on the kube store: the Node is deleted.
    let rest: Vec<_> = pods.iter().filter(|p| p.node != 2).collect();
    leave(&mut c, 2, &rest);
}
