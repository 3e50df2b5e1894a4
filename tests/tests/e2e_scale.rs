//! End to end, scenario 6: 100 pods on one node, all reachable from a pod
//! on another node; then all deleted: every address free again in the IPAM
//! store, no veth left on the node, no pod port left on the bridge.

use flannel_cluster::cluster::{Cluster, ClusterPod};
use flannel_cluster::{eventually, is_host_veth_name};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

const PODS: usize = 100;
const PARALLEL: usize = 4;

fn ipam_ips(c: &Cluster, i: usize) -> Vec<String> {
    std::fs::read_dir(c.node(i).data_dir().join("cbr0"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

fn host_veths(c: &Cluster, i: usize) -> Vec<String> {
    c.node(i)
        .ns
        .links_of_kind("veth")
        .into_iter()
        .filter(|n| is_host_veth_name(n))
        .collect()
}

#[test]
fn a_hundred_pods_on_one_node_then_all_deleted_leave_nothing_behind() {
    let c = Cluster::new(2);
    c.wait_all_converged(Duration::from_secs(10));
    let remote = c.add_pod(1);

    // ADD, a few at a time (as a runtime starting a deployment would).
    let made = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                for _ in 0..PODS / PARALLEL {
                    let p = c.add_pod(0);
                    made.lock().unwrap().push(p);
                }
            });
        }
    });
    let pods: Vec<ClusterPod> = made.into_inner().unwrap();
    assert_eq!(pods.len(), PODS);
    let ips: BTreeSet<_> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), PODS, "duplicate addresses handed out");
    assert_eq!(ipam_ips(&c, 0).len(), PODS);
    assert_eq!(host_veths(&c, 0).len(), PODS);

    let refs: Vec<_> = pods.iter().collect();
    let m = c.ping_from(&remote, &refs, Duration::from_secs(10));
    m.assert_all_ok();

    // DEL, a few at a time; each pod's namespace goes after its DEL.
    let queue = Mutex::new(pods);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let Some(p) = queue.lock().unwrap().pop() else {
                    break;
                };
                c.del_pod(p);
            });
        }
    });
    assert!(
        ipam_ips(&c, 0).is_empty(),
        "addresses still allocated: {:?}",
        ipam_ips(&c, 0)
    );
    // The DEL detaches the veth at once; a helper deletes it shortly after.
    eventually(Duration::from_secs(10), "every host veth to go", || {
        let left = host_veths(&c, 0);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left: {left:?}", left.len()))
        }
    });
    let ports = c.node(0).ns.ip_json(&["link", "show", "master", "cni0"]);
    assert_eq!(
        ports.as_array().map(Vec::len),
        Some(0),
        "ports left on cni0: {ports}"
    );
    // The freed range is usable again.
    let again = c.add_pod(0);
    c.wait_ping(&remote, again.ip, Duration::from_secs(10));
    c.del_pod(again);
}
