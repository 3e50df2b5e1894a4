//! 64 ADDs at once on one node (kubelet after a reboot): all succeed with
//! distinct IPs, every pod reaches the gateway, and 64 DELs clean up.

use flannel_cluster::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}
const PODS: usize = 64;

/// Runs `f(i)` for i in 0..n on n threads released together; returns results in order.
fn all_at_once<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect()
}

#[test]
fn sixty_four_concurrent_adds_get_distinct_ips_and_reach_gateway() {
    let node = Arc::new(CniNode::new(bin()));
    let pods: Arc<Vec<Pod>> = Arc::new((0..PODS).map(|_| Pod::new()).collect());
    let conf = node.config("1.0.0");

    let start = Instant::now();
    let outs = {
        let (node, pods, conf) = (node.clone(), pods.clone(), conf.clone());
        all_at_once(PODS, move |i| node.add(&pods[i], &conf))
    };
    let burst = start.elapsed();
    let results: Vec<Value> = outs.iter().map(|o| o.success_json()).collect();
    eprintln!("{PODS} concurrent ADDs took {burst:?}");

    // 64 distinct addresses, each on its pod and recorded for its container.
    let ips: BTreeSet<String> = results.iter().map(result_ip).collect();
    assert_eq!(ips.len(), PODS, "duplicate IPs handed out: {ips:?}");
    let allocs = node.ipam_allocations();
    assert_eq!(allocs.len(), PODS);
    for (pod, res) in pods.iter().zip(&results) {
        assert_eq!(
            pod.ipv4_addrs(),
            vec![result_address(res)],
            "pod {}",
            pod.cid
        );
        let ip: std::net::IpAddr = result_ip(res).parse().unwrap();
        assert_eq!(allocs.get(&ip), Some(&format!("{}\r\neth0", pod.cid)));
        for bad in ["10.244.1.0", "10.244.1.1", "10.244.1.255"] {
            assert_ne!(result_ip(res), bad, "reserved address handed out");
        }
    }
    let veths: BTreeSet<String> = results.iter().map(result_host_veth).collect();
    assert_eq!(veths.len(), PODS, "host veth names collide");
    let on_bridge = node
        .ns
        .links()
        .into_iter()
        .filter(|l| l["master"] == "cni0" && l["linkinfo"]["info_kind"] == "veth")
        .count();
    assert_eq!(on_bridge, PODS, "veths attached to cni0");
    assert_eq!(node.ns.ipv4_addrs("cni0"), vec!["10.244.1.1/24".to_owned()]);
    // The bridge MAC stayed fixed while 64 ports joined: every result saw the same.
    let br_mac = node.ns.link("cni0").unwrap()["address"].clone();
    for r in &results {
        assert_eq!(
            r["interfaces"][0]["mac"], br_mac,
            "bridge MAC changed during the burst"
        );
    }

    // Every pod reaches the gateway: a listener in the node on 10.244.1.1.
    let srv = TcpServer::start(&node.ns, "10.244.1.1:0".parse().unwrap(), "gw");
    let to: SocketAddr = srv.addr();
    let fetched = {
        let pods = pods.clone();
        all_at_once(PODS, move |i| {
            tcp_fetch(&pods[i].ns, to, Duration::from_secs(10))
        })
    };
    for (i, got) in fetched.iter().enumerate() {
        assert_eq!(
            got.as_deref(),
            Ok("gw"),
            "pod {i} ({}) cannot reach the gateway",
            result_ip(&results[i])
        );
    }
    assert_eq!(srv.accepted(), PODS);

    // 64 concurrent DELs free everything.
    let dels = {
        let (node, pods, conf) = (node.clone(), pods.clone(), conf.clone());
        let results = Arc::new(results.clone());
        all_at_once(PODS, move |i| {
            node.del(&pods[i], &with_prev_result(&conf, &results[i]))
        })
    };
    for d in &dels {
        d.success_empty();
    }
    assert!(
        node.ipam_allocations().is_empty(),
        "{:?}",
        node.ipam_allocations()
    );
    eventually(Duration::from_secs(5), "all host veths to go", || {
        let v = node.host_veths();
        if v.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", v.len()))
        }
    });
}

#[test]
fn concurrent_adds_on_fresh_node_race_for_the_bridge() {
    // No cni0 yet: 16 ADDs all try to create it.
    let node = Arc::new(CniNode::new(bin()));
    let pods: Arc<Vec<Pod>> = Arc::new((0..16).map(|_| Pod::new()).collect());
    let conf = node.config("0.3.1");
    let outs = {
        let (node, pods) = (node.clone(), pods.clone());
        all_at_once(16, move |i| node.add(&pods[i], &conf))
    };
    for o in &outs {
        o.success_json();
    }
    assert_eq!(node.ns.links_of_kind("bridge"), vec!["cni0".to_owned()]);
    assert_eq!(node.ns.ipv4_addrs("cni0"), vec!["10.244.1.1/24".to_owned()]);
}
