//! Switching a running node from upstream flannel to flannel-rs, and back
//! (README, "Switching a running cluster from flannel (and back)").
//!
//! Node 2 is left exactly as upstream flannel leaves it when its DaemonSet
//! pod is deleted (`flannel_cluster::cluster::upstream`): its Node annotated
//! by flannel's kube subnet manager with a MAC of this test's, upstream's
//! `subnet.env`, a hand-made `flannel.1` with the peers' entries, pods
//! attached by the reference bridge + host-local plugins. Nodes 0 and 1 run
//! flannel-rs. With pings every 10 ms both ways, flanneld starts on node 2;
//! then it stops and the reference plugins (as upstream's flannel plugin
//! delegates) add and delete pods on what flannel-rs left. Upstream
//! flanneld itself cannot run here; its state is made by hand.

use crate::*;
use flannel_cluster::cluster::kube::annotation;
use flannel_cluster::cluster::traffic::{PingStats, Pinger};
use flannel_cluster::cluster::upstream::upstream_subnet_env;
use flannel_cluster::cluster::{ClusterPod, VXLAN_DEV};
use flannel_cluster::eventually;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Upstream's random VtepMAC style: locally administered, unicast.
const UPSTREAM_MAC: &str = "c6:d2:32:6f:8f:44";
const HEALTHZ_PORT: u16 = 10244;
const INTERVAL: Duration = Duration::from_millis(10);
const MAX_GAP: Duration = Duration::from_secs(1);

/// flannel's annotations on a Node, prefix stripped.
fn flannel_annotations(node: &Value) -> BTreeMap<String, String> {
    node["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let short = k.strip_prefix(flannel_cluster::cluster::kube::ANNOTATION_PREFIX)?;
            Some((short.to_owned(), v.as_str()?.to_owned()))
        })
        .collect()
}

/// What must not change on a pod: its addresses and its interface.
fn pod_identity(p: &ClusterPod) -> (Vec<String>, Option<u64>) {
    let link = p.ns().link(&p.pod.ifname);
    (p.pod.ipv4_addrs(), link.and_then(|l| l["ifindex"].as_u64()))
}

#[track_caller]
fn assert_small_gap(what: &str, s: &PingStats) {
    let gap = s.longest_gap();
    eprintln!(
        "{what}: {} sent, {} answered, longest gap {gap:?} ({} echoes lost)",
        s.transmitted,
        s.received,
        s.transmitted.saturating_sub(s.received)
    );
    assert!(s.transmitted >= 50, "too few echoes to judge: {s:?}");
    assert!(
        gap <= MAX_GAP && s.lost_time() <= MAX_GAP,
        "{what}: {gap:?} without an answer ({:?} lost in all):\n{}",
        s.lost_time(),
        s.output
    );
}

#[test]
fn a_node_left_by_upstream_flannel_switches_to_flannel_rs_and_back_keeping_its_pods() {
    let mut c = Cluster::builder()
        .nodes(3)
        .store(StoreKind::Kube)
        .flanneld_args(&["--ip-masq"])
        .start(false)
        .build();
    // Node 2: what upstream flannel left.
    let cidr = c.annotate_as_upstream(2, UPSTREAM_MAC);
    for i in 0..2 {
        c.start(i);
    }
    for i in 0..2 {
        c.wait_ready(i);
    }
    c.leave_as_upstream(2, &cidr, UPSTREAM_MAC, true);
    let env_text = std::fs::read_to_string(c.node(2).subnet_file()).expect("subnet.env");
    // Everyone, node 2's hand-made entries too, exactly as the leases say.
    c.wait_converged(&[0, 1, 2], CONVERGE);
    let upstream_pods = [c.add_pod_upstream(2), c.add_pod_upstream(2)];
    let others = [c.add_pod(0), c.add_pod(1)];
    let all: Vec<&ClusterPod> = upstream_pods.iter().chain(&others).collect();
    c.ping_matrix(&all, REACH).assert_all_ok();
    let identities: Vec<_> = upstream_pods.iter().map(pod_identity).collect();
    let ipam_before = c.ipam_files(2);
    assert_eq!(ipam_before.len(), 2, "{ipam_before:?}");
    let link = c.kernel(2).link.expect("flannel.1");
    assert_eq!(link.mac, UPSTREAM_MAC);
    let cni0 = c.node(2).ns.link("cni0").expect("cni0")["ifindex"].clone();
    let node_before = c.kube_node(2);

    // The switch, under traffic both ways.
    let u = &upstream_pods[0];
    let pingers = [
        (
            "node2 pod → node0 pod",
            Pinger::start(u, others[0].ip, INTERVAL),
        ),
        (
            "node2 pod → node1 pod",
            Pinger::start(u, others[1].ip, INTERVAL),
        ),
        (
            "node0 pod → node2 pod",
            Pinger::start(&others[0], u.ip, INTERVAL),
        ),
        (
            "node1 pod → node2 pod",
            Pinger::start(&others[1], u.ip, INTERVAL),
        ),
    ];
    std::thread::sleep(Duration::from_secs(1));
    c.kube().clear_requests();
    let port = HEALTHZ_PORT.to_string();
    c.start_with(2, &["--healthz-ip", "127.0.0.1", "--healthz-port", &port]);
    c.wait_ready(2);
    c.wait_all_converged(CONVERGE);
    let ns = &c.node(2).ns;
    eventually(CONVERGE, "/readyz 200", || {
        match http_status(ns, HEALTHZ_PORT, "/readyz")? {
            200 => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    });
    // It reported the network up itself.
    eventually(CONVERGE, "node2's NetworkUnavailable patch", || {
        c.kube()
            .requests()
            .iter()
            .any(|r| {
                r.method == "PATCH"
                    && r.path_only() == "/api/v1/nodes/node2/status"
                    && r.body.contains("NetworkUnavailable")
            })
            .then_some(())
            .ok_or_else(|| "no patch yet".to_string())
    });
    // A measurement window after the switch, not an assertion.
    std::thread::sleep(Duration::from_secs(1));
    for (what, p) in pingers {
        assert_small_gap(what, &p.finish());
    }

    // What stayed: pods, flannel.1 (adopted, not recreated), cni0, the
    // Node's podCIDR and VtepMAC (annotations not even rewritten),
    // subnet.env byte for byte, the IPAM files.
    let ids_after: Vec<_> = upstream_pods.iter().map(pod_identity).collect();
    assert_eq!(ids_after, identities, "pods' addresses and interfaces");
    let link_after = c.kernel(2).link.expect("flannel.1");
    assert_eq!(
        (link_after.ifindex, link_after.mac.as_str()),
        (link.ifindex, UPSTREAM_MAC),
        "flannel.1 adopted with its MAC"
    );
    assert!(
        c.log(2).contains("adopting existing device"),
        "{}",
        c.log(2)
    );
    assert_eq!(c.node(2).ns.link("cni0").expect("cni0")["ifindex"], cni0);
    let node = c.kube_node(2);
    assert_eq!(node["spec"]["podCIDR"], node_before["spec"]["podCIDR"]);
    assert_eq!(
        flannel_annotations(&node),
        flannel_annotations(&node_before)
    );
    let patches: Vec<_> = c
        .kube()
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(
        patches.iter().all(|r| !r.body.contains("annotations")),
        "annotations rewritten: {patches:?}"
    );
    let cond = condition(&node, "NetworkUnavailable").expect("the condition");
    assert_eq!(cond["status"], "False", "{cond}");
    assert_eq!(
        std::fs::read_to_string(c.node(2).subnet_file()).expect("subnet.env"),
        env_text
    );
    assert_eq!(c.ipam_files(2), ipam_before);

    // A pod by flannel-rs's plugin: an address host-local did not hand
    // out, reachable from everyone.
    let ours = c.add_pod(2);
    assert!(
        upstream_pods.iter().all(|p| p.ip != ours.ip),
        "{} collides",
        ours.ip
    );
    let all: Vec<&ClusterPod> = upstream_pods.iter().chain(&others).chain([&ours]).collect();
    c.ping_matrix(&all, REACH).assert_all_ok();
    // It saved upstream's delegate config for the pod, as upstream's
    // plugin does, for upstream's DEL after a rollback.
    let saved = c.scratch_dir(2).join(&ours.pod.cid);
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(&saved).unwrap_or_else(|e| panic!("{}: {e}", saved.display())),
    )
    .expect("saved delegate config is JSON");
    let want = c.upstream_delegate_config(2);
    for k in [
        "name",
        "type",
        "ipMasq",
        "mtu",
        "isGateway",
        "hairpinMode",
        "ipam",
    ] {
        assert_eq!(saved[k], want[k], "{k} in {saved}");
    }
    // flannel-rs's plugin releases a host-local-made pod, and the
    // delegate config upstream saved for it.
    let [kept, released] = upstream_pods;
    let (gone, gone_cid) = (released.ip, released.pod.cid.clone());
    c.del_pod(released);
    assert!(c.ipam_files(2).iter().all(|(ip, _)| *ip != gone));
    assert!(!c.scratch_dir(2).join(gone_cid).exists());

    // And back: flanneld stops; the datapath stays, pods keep talking.
    c.stop_checked(2, false);
    assert_eq!(c.kernel(2).link.expect("flannel.1").mac, UPSTREAM_MAC);
    c.check_entries(2, &c.expected_peers(2)).unwrap();
    c.ping_from(&ours, &[&others[0], &others[1], &kept], REACH)
        .assert_all_ok();
    // The Node reads as upstream wrote it: the same four annotations,
    // backend-data byte for byte as Go's encoding/json writes it.
    let node = c.kube_node(2);
    let ann = flannel_annotations(&node);
    let mut want = BTreeMap::new();
    for (k, v) in [
        (
            "backend-data",
            format!(r#"{{"VNI":1,"VtepMAC":"{UPSTREAM_MAC}"}}"#),
        ),
        ("backend-type", "vxlan".into()),
        ("kube-subnet-manager", "true".into()),
        ("public-ip", c.node(2).ip.to_string()),
    ] {
        want.insert(k.to_owned(), v);
    }
    assert_eq!(ann, want);
    assert_eq!(annotation(&node, "backend-type"), Some("vxlan"));
    // subnet.env in upstream's format, as upstream's plugin reads it.
    assert_eq!(
        std::fs::read_to_string(c.node(2).subnet_file()).expect("subnet.env"),
        upstream_subnet_env("10.244.0.0/16", &cidr, 1450, true)
    );
    // The reference plugins, as upstream's flannel plugin delegates them:
    // ADD from flannel-rs's subnet.env takes a free address; DEL of
    // flannel-rs's pod, from the delegate config flannel-rs saved,
    // releases its address and its veth.
    let back = c.add_pod_upstream(2);
    assert!(
        [kept.ip, ours.ip].iter().all(|ip| *ip != back.ip),
        "{} collides",
        back.ip
    );
    c.ping_from(&back, &[&others[0], &others[1], &ours, &kept], REACH)
        .assert_all_ok();
    let veth = flannel_cluster::cni::result_host_veth(&ours.result);
    let ours_ip = ours.ip;
    c.del_pod_upstream(ours);
    let left: Vec<_> = c.ipam_files(2).into_iter().map(|(ip, _)| ip).collect();
    let mut want = vec![kept.ip, back.ip];
    want.sort();
    assert_eq!(left, want, "{ours_ip} released, the others kept");
    assert!(!c.node(2).ns.has_link(&veth), "{veth} left behind");
    assert!(c.node(2).ns.has_link(VXLAN_DEV));
}
