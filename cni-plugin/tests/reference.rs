//! Side by side with what flannel delegates to today: the reference `bridge`
//! and `host-local` plugins. Same subnet, separate node namespaces; the pods
//! must come out the same (addresses, routes, MTU), and the IPAM store must
//! be interchangeable.

use flannel_cluster::*;
use serde_json::{json, Value};
use std::path::Path;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}
const REF_BRIDGE: &str = "/usr/lib/cni/bridge";
const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// The delegate config flannel would have built for the default subnet.env.
fn reference_conf(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "0.3.1", "name": "cbr0", "type": "bridge", "bridge": "cni0",
        "isGateway": true, "isDefaultGateway": true, "hairpinMode": true, "ipMasq": false, "mtu": 1450,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.244.1.0/24"}]],
            "routes": [{"dst": "10.244.0.0/16"}],
            "dataDir": data_dir,
        }
    })
}

fn reference_call(bin: &str, node: &NetNs, verb: &str) -> CniCall {
    assert!(
        Path::new(bin).exists(),
        "{bin} missing: install containernetworking-plugins (ci/deps.sh)"
    );
    CniCall::new(bin, Some(node))
        .command(verb)
        .env("CNI_PATH", flannel_cluster::cni::REFERENCE_CNI_PATH)
}

#[test]
fn pod_matches_reference_bridge_host_local() {
    // Ours.
    let ours = CniNode::new(bin());
    let pod_a = Pod::new();
    let conf = ours.config("0.3.1");
    ours.add_ok(&pod_a, &conf);
    // Reference, in its own node netns with the same subnet.
    let ref_node = NetNs::new("r");
    let ref_dir = TempDir::new("rd");
    let pod_b = Pod::new();
    reference_call(REF_BRIDGE, &ref_node, "ADD")
        .pod(&pod_b)
        .config(&reference_conf(&ref_dir.join("ipam")))
        .run()
        .success_json();

    assert_json_eq(
        &pod_a.ns.normalized_addrs(),
        &pod_b.ns.normalized_addrs(),
        "pod links/addresses (ours, reference)",
    );
    assert_json_eq(
        &pod_a.ns.normalized_routes(),
        &pod_b.ns.normalized_routes(),
        "pod routes (ours, reference)",
    );
    assert_eq!(
        pod_a.ns.link("eth0").unwrap()["mtu"],
        pod_b.ns.link("eth0").unwrap()["mtu"]
    );
    // Node side: the same gateway address on cni0, forwarding on.
    assert_eq!(ours.ns.ipv4_addrs("cni0"), ref_node.ipv4_addrs("cni0"));
    assert_eq!(
        ours.ns.sysctl("net/ipv4/ip_forward"),
        ref_node.sysctl("net/ipv4/ip_forward")
    );
    assert_eq!(
        pod_a.ns.sysctl("net/ipv4/conf/eth0/arp_notify"),
        pod_b.ns.sysctl("net/ipv4/conf/eth0/arp_notify")
    );
    // Same IPAM file layout and content format.
    let ours_alloc = ours.ipam_allocations();
    let ref_file = ref_dir.join("ipam/cbr0/10.244.1.2");
    let ref_content = std::fs::read_to_string(&ref_file).expect("host-local allocation file");
    assert_eq!(ref_content, format!("{}\r\neth0", pod_b.cid));
    assert_eq!(
        ours_alloc.get(&"10.244.1.2".parse().unwrap()),
        Some(&format!("{}\r\neth0", pod_a.cid))
    );
    assert_eq!(
        std::fs::read_to_string(ours.ipam_dir().join("last_reserved_ip.0"))
            .unwrap()
            .trim(),
        std::fs::read_to_string(ref_dir.join("ipam/cbr0/last_reserved_ip.0"))
            .unwrap()
            .trim(),
    );

    reference_call(REF_BRIDGE, &ref_node, "DEL")
        .pod(&pod_b)
        .config(&reference_conf(&ref_dir.join("ipam")))
        .run()
        .success_empty();
}

#[test]
fn store_written_by_host_local_is_adopted() {
    // A node switched from flannel: host-local allocated .2 and .3 in the same
    // store. Our ADD must skip them; our DEL must free a host-local allocation.
    let node = CniNode::new(bin());
    let ipam_conf = json!({
        "cniVersion": "0.3.1", "name": "cbr0",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "dataDir": node.data_dir()},
    });
    let old: Vec<Pod> = (0..2).map(|_| Pod::new()).collect();
    for p in &old {
        let r = reference_call(REF_HOST_LOCAL, &node.ns, "ADD")
            .pod(p)
            .config(&ipam_conf)
            .run()
            .success_json();
        assert!(r["ips"][0]["address"].as_str().is_some(), "{r}");
    }
    assert_eq!(node.ipam_allocations().len(), 2);

    let pod = Pod::new();
    let res = node.add_ok(&pod, &node.config("0.3.1"));
    assert_eq!(
        result_address(&res),
        "10.244.1.4/24",
        "after host-local's .2 and .3 (round robin)"
    );

    // DEL of an old pod (its netns still there, no interface of ours) frees host-local's file.
    node.del(&old[0], &node.config("0.3.1")).success_empty();
    let left = node.allocated_ips();
    assert_eq!(left, vec!["10.244.1.3".to_owned(), "10.244.1.4".to_owned()]);

    // And host-local can release what we allocated (same file format).
    reference_call(REF_HOST_LOCAL, &node.ns, "DEL")
        .pod(&pod)
        .config(&ipam_conf)
        .run()
        .success_empty();
    let left = node.allocated_ips();
    assert_eq!(left, vec!["10.244.1.3".to_owned()]);
}

#[test]
fn legacy_container_id_only_allocation_is_freed_by_del() {
    // Older host-local files hold only the container ID.
    let node = CniNode::new(bin());
    std::fs::create_dir_all(node.ipam_dir()).unwrap();
    let pod = Pod::new();
    std::fs::write(node.ipam_dir().join("10.244.1.7"), &pod.cid).unwrap();
    let other = Pod::new();
    let res = node.add_ok(&other, &node.config("0.3.1"));
    assert_ne!(
        result_ip(&res),
        "10.244.1.7",
        "a taken address was handed out"
    );
    node.del(&pod, &node.config("0.3.1")).success_empty();
    let left = node.allocated_ips();
    assert_eq!(left, vec![result_ip(&res)]);
}

#[test]
fn node_switched_from_reference_plugins_keeps_working() {
    // cni0 and one pod made by bridge + host-local; then our plugin takes over
    // the same node and store: it adopts the bridge and the pods talk.
    let node = CniNode::new(bin());
    let old = Pod::new();
    reference_call(REF_BRIDGE, &node.ns, "ADD")
        .pod(&old)
        .config(&reference_conf(&node.data_dir()))
        .run()
        .success_json();
    let br_mac = node.ns.link("cni0").unwrap()["address"].clone();
    let new = Pod::new();
    let res = node.add_ok(&new, &node.config("0.3.1"));
    assert_eq!(result_address(&res), "10.244.1.3/24");
    assert_eq!(node.ns.ipv4_addrs("cni0"), vec!["10.244.1.1/24".to_owned()]);
    assert_eq!(
        node.ns.link("cni0").unwrap()["address"],
        br_mac,
        "bridge MAC kept"
    );
    let srv = TcpServer::start(&old.ns, "0.0.0.0:0".parse().unwrap(), "old");
    let to = std::net::SocketAddr::from(([10, 244, 1, 2], srv.port()));
    assert_eq!(
        tcp_fetch(&new.ns, to, std::time::Duration::from_secs(5)).as_deref(),
        Ok("old")
    );
    // Our DEL of the old pod frees host-local's file and removes its interface.
    node.del(&old, &node.config("0.3.1")).success_empty();
    assert!(!old.ns.has_link("eth0"));
    let left = node.allocated_ips();
    assert_eq!(left, vec!["10.244.1.3".to_owned()]);
}

#[test]
fn existing_down_bridge_without_address_is_adopted() {
    // cni0 left by someone else: a bridge, down, no address.
    let node = CniNode::new(bin());
    node.ns.ip_ok(&["link", "add", "cni0", "type", "bridge"]);
    let pod = Pod::new();
    node.add_ok(&pod, &node.config("1.0.0"));
    let br = node.ns.link("cni0").unwrap();
    assert!(
        br["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{br}"
    );
    assert_eq!(node.ns.ipv4_addrs("cni0"), vec!["10.244.1.1/24".to_owned()]);
    let srv = TcpServer::start(&node.ns, "10.244.1.1:0".parse().unwrap(), "gw");
    let got = tcp_fetch(&pod.ns, srv.addr(), std::time::Duration::from_secs(5));
    assert_eq!(got.as_deref(), Ok("gw"));
}
