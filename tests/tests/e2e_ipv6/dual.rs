//! Dual-stack clusters (`EnableIPv6`, `IPv6Network` fd00:10:244::/56,
//! IPv6SubnetLen left at its default 64) on each lease store.

use crate::steps::{
    join, leave, matrices_ok, node_state_ok, pods_in_their_subnets, repair_v6, restart, CONVERGE,
};
use flannel_cluster::cluster::entry_monitor::EntryMonitor;
use flannel_cluster::cluster::kube::annotation;
use flannel_cluster::cluster::{node_ip6, Cluster, ClusterPod, IpFamily, LeaseFile, StoreKind};
use flannel_cluster::cluster::{VXLAN_DEV, VXLAN_DEV6};
use flannel_cluster::eventually;

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
    only_the_ipv6_half_changes(&mut c, &pods);
    // Leaving on the kube store: the Node is deleted.
    let rest: Vec<_> = pods.iter().filter(|p| p.node != 2).collect();
    leave(&mut c, 2, &rest);
}

/// A kube update that changes one family only (flannel drops it): node 2
/// is renumbered on IPv6 and its flanneld restarted, so its Node's
/// `public-ipv6` changes and nothing else. Every peer's FDB entry for its
/// IPv6 VtepMAC follows to the new address, no IPv4 entry is touched on
/// any peer, and traffic flows over both families.
fn only_the_ipv6_half_changes(c: &mut Cluster, pods: &[ClusterPod]) {
    let before = c.lease_of_ok(2);
    let monitors: Vec<(EntryMonitor, EntryMonitor)> = (0..2)
        .map(|j| {
            let ns = &c.node(j).ns;
            (
                EntryMonitor::start(ns, VXLAN_DEV),
                EntryMonitor::start(ns, VXLAN_DEV6),
            )
        })
        .collect();
    let new = node_ip6(20);
    c.stop_checked(2, false);
    let old = c.renumber_ip6(2, new);
    c.start(2);
    c.wait_ready(2);
    let name = c.node(2).name.clone();
    eventually(CONVERGE, "the new public-ipv6 on the Node", || {
        let node = c.kube().node(&name).ok_or("no Node")?;
        match annotation(&node, "public-ipv6") {
            Some(a) if a == new.to_string() => Ok(()),
            a => Err(format!("public-ipv6 {a:?}")),
        }
    });
    c.wait_all_converged(CONVERGE);
    let after = c.lease_of_ok(2);
    assert_eq!(after.public_ipv6, Some(new.to_string()), "{after:#?}");
    assert_eq!(
        (
            &after.subnet,
            &after.public_ip,
            &after.vtep_mac,
            &after.subnet6,
            &after.vtep_mac6
        ),
        (
            &before.subnet,
            &before.public_ip,
            &before.vtep_mac,
            &before.subnet6,
            &before.vtep_mac6
        ),
        "more than the IPv6 public address changed"
    );
    for (j, (v4, v6)) in monitors.iter().enumerate() {
        let fdb = c.kernel_of(j, IpFamily::V6).fdb;
        let mac6 = after.vtep_mac6.as_deref().unwrap_or_default();
        assert!(
            fdb.iter()
                .any(|f| f.mac == mac6 && f.dst == new.to_string()),
            "node{j}: no FDB entry {mac6} → {new} (old {old}): {fdb:?}"
        );
        let touched: Vec<String> = v4.events().iter().map(|e| e.to_string()).collect();
        assert!(
            touched.is_empty(),
            "node{j}: IPv4 entries written for an IPv6-only change: {touched:?}"
        );
        let v6_events: Vec<String> = v6.events().iter().map(|e| e.to_string()).collect();
        assert!(
            v6_events.iter().any(|e| e.contains(&new.to_string())),
            "node{j}: no IPv6 FDB write to {new}: {v6_events:?}"
        );
    }
    crate::steps::matrices_ok(c, &pods.iter().collect::<Vec<_>>());
}
