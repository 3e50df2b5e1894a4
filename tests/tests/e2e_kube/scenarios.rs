//! The scenarios of the other end-to-end suites on the kube store
//! (reachability, join, leave by Node deletion, restart, repair), and what
//! is its own: flannel's annotations and the NetworkUnavailable condition,
//! a node annotated by upstream flannel, a node waiting for its podCIDR.

use crate::*;
use flannel_cluster::cluster::entry_monitor::EntryMonitor;
use flannel_cluster::cluster::kube::annotation;
use flannel_cluster::cluster::traffic::Pinger;
use flannel_cluster::cluster::VXLAN_DEV;
use flannel_cluster::eventually;
use flannel_cluster::kube_api::{FlannelAnnotations, NodeFixture, RequestRecord};
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn three_nodes_reach_each_other_with_flannels_annotations_and_network_available() {
    let c = kube_cluster(3);
    c.wait_all_converged(CONVERGE);
    assert_eq!(c.leases().len(), 3, "{:#?}", c.leases());
    let mut cidrs = Vec::new();
    for i in 0..3 {
        let node = c.kube_node(i);
        let ip = c.node(i).ip.to_string();
        let cidr = node["spec"]["podCIDR"].as_str().expect("a podCIDR");
        assert_eq!(c.node(i).subnet(), cidr, "subnet.env is the podCIDR");
        cidrs.push(cidr.to_owned());
        let mac = c.kernel(i).link.expect("flannel.1").mac;
        assert_eq!(annotation(&node, "backend-type"), Some("vxlan"));
        assert_eq!(annotation(&node, "kube-subnet-manager"), Some("true"));
        assert_eq!(annotation(&node, "public-ip"), Some(ip.as_str()));
        let data: Value =
            serde_json::from_str(annotation(&node, "backend-data").expect("backend-data"))
                .expect("backend-data is JSON");
        assert_eq!(data, json!({"VNI": 1, "VtepMAC": mac}));
        // Registered with NetworkUnavailable=True; flanneld set it False.
        let cond = condition(&node, "NetworkUnavailable").expect("the condition");
        assert_eq!(
            (cond["status"].as_str(), cond["reason"].as_str()),
            (Some("False"), Some("FlannelIsUp")),
            "{}: {cond}",
            c.node(i).name
        );
        assert_eq!(
            condition(&node, "Ready").map(|r| r["status"].clone()),
            Some(json!("True")),
            "the kubelet's conditions are kept"
        );
    }
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "distinct podCIDRs: {cidrs:?}");
    // Every write went through nodes/<name>/status, as a strategic merge.
    let patches: Vec<RequestRecord> = c
        .kube()
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(!patches.is_empty());
    for r in &patches {
        assert!(
            r.method == "PATCH"
                && r.path_only().ends_with("/status")
                && r.content_type.as_deref() == Some("application/strategic-merge-patch+json"),
            "{r:?}"
        );
    }

    let pods = c.add_pods(2);
    let refs: Vec<_> = pods.iter().collect();
    let ping = c.ping_matrix(&refs, REACH);
    ping.assert_all_ok();
    assert_eq!(ping.pairs(), 6 * 5);
    c.tcp_matrix(&refs, REACH).assert_all_ok();
    for i in 0..3 {
        assert_eq!(c.expected_peers(i).len(), 2);
        c.check_entries(i, &c.expected_peers(i)).unwrap();
    }
}

#[test]
fn a_node_annotated_by_upstream_flannel_is_a_peer_until_deleted() {
    let c = kube_cluster(2);
    c.wait_all_converged(CONVERGE);
    // As flannel's kube subnet manager leaves a node: its own MAC style,
    // a podCIDR the controller gave it, the four annotations.
    let (mac, ip, cidr) = ("c6:d2:32:6f:8f:44", "192.168.64.99", "10.244.200.0/24");
    let mut f = NodeFixture::new("upstream-flannel", 0).pod_cidr(cidr);
    f.internal_ip = ip.parse().expect("ip");
    f.flannel = Some(FlannelAnnotations {
        public_ip: f.internal_ip,
        vtep_mac: mac.into(),
        vni: 1,
    });
    c.kube().create_node(&f.build());
    eventually(
        CONVERGE,
        "the upstream node's entries on every node",
        || {
            for i in 0..2 {
                let k = c.kernel(i);
                let route = k
                    .routes
                    .iter()
                    .any(|r| r.dst == cidr && r.gateway == "10.244.200.0");
                let neigh = k
                    .neighs
                    .iter()
                    .any(|n| n.dst == "10.244.200.0" && n.lladdr == mac);
                let fdb = k.fdb.iter().any(|e| e.mac == mac && e.dst == ip);
                if !(route && neigh && fdb) {
                    return Err(format!("{}: {k:#?}", c.node(i).name));
                }
                c.check_entries(i, &c.expected_peers(i))?;
            }
            Ok(())
        },
    );
    let upstream = c
        .leases()
        .into_iter()
        .find(|l| l.subnet == cidr)
        .expect("its lease");
    assert!(c.kube().delete_node("upstream-flannel"));
    wait_gone_everywhere(&c, &upstream, CONVERGE);
    for i in 0..2 {
        assert_eq!(c.expected_peers(i).len(), 1);
    }
}

#[test]
fn a_joining_node_is_reachable_and_a_deleted_node_vanishes_from_every_peer() {
    let mut c = kube_cluster(3);
    c.wait_all_converged(CONVERGE);
    let mut pods = c.add_pods(1);

    let new = c.add_node();
    let name = c.node(new).name.clone();
    assert!(c.kube().node(&name).is_some(), "registered before flanneld");
    c.start(new);
    c.wait_ready(new);
    let cidr = c.kube_node(new)["spec"]["podCIDR"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(Some(c.node(new).subnet()), cidr);
    pods.push(c.add_pod(new));
    c.wait_all_converged(CONVERGE);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();

    // Node 1 leaves: its flanneld stops and its Node is deleted.
    let gone = c.lease_of_ok(1);
    c.stop_checked(1, false);
    c.remove_lease(1);
    assert!(c.kube().node("node1").is_none());
    wait_gone_everywhere(&c, &gone, CONVERGE);
    for i in [0, 2, 3] {
        assert_eq!(c.expected_peers(i).len(), 2, "{}", c.node(i).name);
    }
    let stay: Vec<_> = pods.iter().filter(|p| p.node != 1).collect();
    c.ping_matrix(&stay, REACH).assert_all_ok();
    for q in &stay {
        assert!(
            c.ping_once(q, pods[1].ip).is_err(),
            "{} still reaches the deleted node's pod",
            q.ip
        );
    }
}

#[test]
fn a_restarted_flanneld_keeps_subnet_and_vtep_mac_writes_nothing_and_pods_keep_talking() {
    let mut c = kube_cluster(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    let lease = c.lease_of_ok(1);
    let link = c.kernel(1).link.expect("flannel.1");
    let subnet = c.node(1).subnet();
    let interval = Duration::from_millis(50);
    let pingers = [
        Pinger::start(&pods[0], pods[1].ip, interval),
        Pinger::start(&pods[1], pods[2].ip, interval),
    ];
    for (a, b) in [(0, 1), (1, 2)] {
        c.wait_ping(&pods[a], pods[b].ip, REACH);
    }
    for kill in [true, false] {
        c.kube().clear_requests();
        c.stop_checked(1, kill);
        c.start(1);
        c.wait_ready(1);
        c.wait_all_converged(CONVERGE);
        // It reports the network up again, and leaves the annotations,
        // unchanged, alone.
        let patches = eventually(CONVERGE, "node1's condition patch", || {
            let p: Vec<RequestRecord> = c
                .kube()
                .requests()
                .into_iter()
                .filter(|r| r.method == "PATCH" && r.path_only() == "/api/v1/nodes/node1/status")
                .collect();
            if p.iter().any(|r| r.body.contains("NetworkUnavailable")) {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        });
        assert!(
            patches.iter().all(|r| !r.body.contains("annotations")),
            "annotations rewritten on restart: {patches:?}"
        );
        assert!(c.log(1).contains("node annotations already up to date"));
    }
    // A measurement window after the restarts, not an assertion.
    std::thread::sleep(Duration::from_millis(500));
    for p in pingers {
        let s = p.finish();
        assert!(s.transmitted >= 10, "too few echoes to judge: {s:?}");
        assert!(
            s.lost_time() <= Duration::from_secs(1),
            "{:?} of traffic lost across the restarts:\n{}",
            s.lost_time(),
            s.output
        );
    }
    let after = c.lease_of_ok(1);
    let link_after = c.kernel(1).link.expect("flannel.1");
    assert_eq!(c.node(1).subnet(), subnet);
    assert_eq!(
        (after.subnet.as_str(), after.vtep_mac.as_str()),
        (lease.subnet.as_str(), lease.vtep_mac.as_str())
    );
    assert_eq!(
        (link_after.ifindex, &link_after.mac),
        (link.ifindex, &link.mac)
    );
    c.ping_matrix(&refs, REACH).assert_all_ok();
}

#[test]
fn a_route_deleted_by_hand_comes_back_and_traffic_flows() {
    let c = kube_cluster(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    let peer = c.lease_of_ok(1);
    let mon = EntryMonitor::start(&c.node(0).ns, VXLAN_DEV);
    let trace = c.trace_netlink_writes(0);
    let out = c
        .node(0)
        .ns
        .exec("ip", &["route", "del", &peer.subnet, "dev", VXLAN_DEV]);
    assert!(out.success(), "{out}");
    // flanneld hears of it from the kernel and may put it back at once:
    // the monitor saw it go, then come back.
    eventually(
        c.resync_interval() + CONVERGE,
        "the route to come back",
        || {
            let seen: Vec<String> = mon.events().iter().map(ToString::to_string).collect();
            let (del, add) = (
                format!("-route {}", peer.subnet),
                format!("+route {}", peer.subnet),
            );
            let gone_at = seen.iter().position(|e| e.starts_with(&del));
            if !gone_at.is_some_and(|g| seen[g..].iter().any(|e| e.starts_with(&add))) {
                return Err(format!("route events {seen:?}"));
            }
            c.check_entries(0, &c.expected_peers(0))
        },
    );
    // Put back by flanneld itself: one route written, nothing else.
    let writes = trace.finish();
    assert!(
        writes.len() == 1 && writes[0].contains("nlmsg_type=RTM_NEWROUTE,"),
        "{writes:#?}"
    );
    c.ping_matrix(&refs, REACH).assert_all_ok();
}

#[test]
fn a_node_without_a_pod_cidr_waits_unready_then_proceeds_when_it_gets_one() {
    let mut c = kube_cluster(2);
    c.wait_all_converged(CONVERGE);
    c.kube().pause_node_ipam(true);
    let new = c.add_node();
    assert!(c.kube_node(new)["spec"]["podCIDR"].is_null());
    let port = 10256;
    c.start_with(new, &["--healthz-port", &port.to_string()]);
    let ns = &c.node(new).ns;
    eventually(CONVERGE, "flanneld to say it waits", || {
        let log = c.log(new);
        if log.contains("has no podCIDR yet") {
            Ok(())
        } else {
            Err(log)
        }
    });
    eventually(CONVERGE, "/readyz 503", || {
        match http_status(ns, port, "/readyz")? {
            503 => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    });
    assert_eq!(http_status(ns, port, "/healthz"), Ok(200));
    assert!(c.node(new).is_running(), "{}", c.log(new));
    assert!(c.node(new).subnet_env().is_none());
    assert_eq!(annotation(&c.kube_node(new), "public-ip"), None);
    for i in 0..2 {
        assert_eq!(c.expected_peers(i).len(), 1);
        c.check_entries(i, &c.expected_peers(i)).unwrap();
    }

    c.kube().pause_node_ipam(false);
    c.wait_ready(new);
    let cidr = c.kube_node(new)["spec"]["podCIDR"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(Some(c.node(new).subnet()), cidr);
    eventually(CONVERGE, "/readyz 200", || {
        match http_status(ns, port, "/readyz")? {
            200 => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    });
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
}
