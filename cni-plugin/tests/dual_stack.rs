//! IPv6 and dual-stack (issue 12): every verb and every result version with
//! a subnet.env carrying FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET, with and
//! without the IPv4 pair; the IPAM store against the reference host-local.

use flannel_cluster::*;
use serde_json::{json, Value};
use std::path::Path;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// The result's addresses, in order.
fn result_addresses(res: &Value) -> Vec<String> {
    res["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {res}"))
        .iter()
        .map(|ip| ip["address"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn strip_prefix(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or("")
}

/// ping from inside `ns`, one packet, at once (no retry: the addresses
/// must be usable the moment ADD returns).
#[track_caller]
fn ping(ns: &NetNs, to: &str) {
    let out = ns.exec("ping", &["-c", "1", "-W", "2", to]);
    assert!(out.success(), "ping {to} from {}: {out}", ns.name());
}

/// What ADD must leave for a dual-stack (or IPv6-only) pod.
fn assert_pod(node: &CniNode, pod: &Pod, res: &Value, version: &str) {
    let s = &node.subnet;
    let v4 = !s.network.is_empty();
    let ips = res["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), if v4 { 2 } else { 1 }, "{res}");
    let v6 = ips.last().expect("an IPv6 entry");
    for ip in ips {
        assert_eq!(ip["interface"], 2, "{res}");
    }
    if version.starts_with("0.") {
        assert_eq!(v6["version"], "6", "{res}");
        if v4 {
            assert_eq!(ips[0]["version"], "4", "{res}");
        }
    } else {
        assert!(ips.iter().all(|ip| ip.get("version").is_none()), "{res}");
    }
    assert_eq!(v6["gateway"], s.gateway6(), "{res}");
    let addr6 = v6["address"].as_str().expect("address").to_owned();
    assert!(addr6.starts_with("fd00:10:244:1::") && addr6.ends_with("/64"));

    // Node side: both gateways on cni0, usable (not tentative).
    let gw6 = format!("{}/64", s.gateway6());
    assert_eq!(node.ns.ipv6_addrs("cni0"), vec![gw6]);
    if v4 {
        assert_eq!(node.ns.ipv4_addrs("cni0"), vec![s.subnet.clone()]);
    }
    assert_eq!(node.ns.sysctl("net/ipv6/conf/all/forwarding"), "1");

    // Pod side: the addresses, usable at once; both families' routes.
    assert_eq!(pod.ipv6_addrs(), vec![addr6.clone()], "no tentative flag");
    if v4 {
        assert_eq!(pod.ipv4_addrs(), vec![result_address(res)]);
        let d = pod.ns.route_v4("default").expect("IPv4 default route");
        assert_eq!(d["gateway"], s.gateway(), "{d}");
    }
    let d = pod.ns.route_v6("default").expect("IPv6 default route");
    assert_eq!(d["gateway"], s.gateway6(), "{d}");
    let c = pod.ns.route_v6(IPV6_NETWORK).expect("IPv6 cluster route");
    assert_eq!(c["gateway"], s.gateway6(), "{c}");
    let routes = res["routes"].as_array().expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "::/0" && r["gw"] == s.gateway6()),
        "{res}"
    );

    // IPAM: one file per family, host-local's names and content.
    let allocs = node.ipam_allocations();
    let ip6: std::net::IpAddr = strip_prefix(&addr6).parse().expect("v6");
    assert_eq!(
        allocs.get(&ip6),
        Some(&format!("{}\r\n{}", pod.cid, pod.ifname))
    );
    assert!(node.ipam_dir().join(ip6.to_string()).exists());
    let last =
        |n: u32| std::fs::read_to_string(node.ipam_dir().join(format!("last_reserved_ip.{n}")));
    let v6_index = if v4 { 1 } else { 0 };
    assert_eq!(
        last(v6_index).expect("last_reserved_ip of the IPv6 range"),
        ip6.to_string()
    );
}

fn add_check_del(subnet: SubnetFile, version: &str) {
    let node = CniNode::with_subnet(bin(), subnet);
    let pod = Pod::new();
    let conf = node.config(version);
    let res = node.add_ok(&pod, &conf);
    assert_pod(&node, &pod, &res, version);
    // Usable right away: the gateway answers over IPv6 (and IPv4).
    ping(&pod.ns, node.subnet.gateway6());
    if !node.subnet.network.is_empty() {
        ping(&pod.ns, node.subnet.gateway());
    }
    let prev = with_prev_result(&conf, &res);
    if version >= "0.4.0" {
        node.check(&pod, &prev).success_empty();
    }
    node.del(&pod, &prev).success_empty();
    assert!(node.ipam_allocations().is_empty(), "DEL freed both");
    assert!(!pod.ns.has_link(&pod.ifname));
    node.del(&pod, &prev).success_empty(); // idempotent
}

#[test]
fn dual_stack_add_check_del_every_version() {
    for v in VERSIONS {
        add_check_del(SubnetFile::dual_stack(), v);
    }
}

#[test]
fn ipv6_only_add_check_del_every_version() {
    for v in VERSIONS {
        add_check_del(SubnetFile::ipv6_only(), v);
    }
}

#[test]
fn ipv6_pod_to_pod_on_the_same_bridge_at_once() {
    let node = CniNode::with_subnet(bin(), SubnetFile::dual_stack());
    let conf = node.config("1.1.0");
    let (a, b) = (Pod::new(), Pod::new());
    node.add_ok(&a, &conf);
    let rb = node.add_ok(&b, &conf);
    let b6 = result_addresses(&rb)[1].clone();
    ping(&a.ns, strip_prefix(&b6));
    ping(&a.ns, &result_ip(&rb));
}

#[test]
fn ipam_store_matches_reference_host_local() {
    assert!(
        Path::new(REF_HOST_LOCAL).exists(),
        "{REF_HOST_LOCAL} missing"
    );
    let node = CniNode::with_subnet(bin(), SubnetFile::dual_stack());
    let conf = node.config("1.0.0");
    let pods: Vec<Pod> = (0..2).map(|_| Pod::new()).collect();
    for p in &pods {
        node.add_ok(p, &conf);
    }
    // The reference host-local with flannel's delegate ranges [[v4], [v6]],
    // the same pods, into its own data dir.
    let ref_dir = TempDir::new("rd");
    let ipam = json!({
        "cniVersion": "1.0.0", "name": "cbr0",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
            "dataDir": ref_dir.join("ipam"),
        }
    });
    for p in &pods {
        CniCall::new(REF_HOST_LOCAL, Some(&node.ns))
            .command("ADD")
            .env("CNI_PATH", flannel_cluster::cni::REFERENCE_CNI_PATH)
            .pod(p)
            .config(&ipam)
            .run()
            .success_json();
    }
    let listing = |dir: &Path| {
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect("store dir")
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let content = std::fs::read_to_string(e.path()).unwrap_or_default();
                (
                    name,
                    if name_is_lock(&e.path()) {
                        String::new()
                    } else {
                        content
                    },
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        listing(&node.ipam_dir()),
        listing(&ref_dir.join("ipam").join("cbr0")),
        "store files (ours, host-local's)"
    );
    // And the stores are interchangeable: our DEL frees host-local's files.
    for p in &pods {
        let c = json!({"cniVersion":"1.0.0","name":"cbr0","type":"flannel",
            "subnetFile": node.subnet_file(), "dataDir": ref_dir.join("ipam")});
        node.call("DEL").pod(p).config(&c).run().success_empty();
    }
    let left: Vec<_> = listing(&ref_dir.join("ipam").join("cbr0"))
        .into_iter()
        .filter(|(n, _)| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn name_is_lock(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == "lock")
}

#[test]
fn check_detects_a_missing_ipv6_address_or_route() {
    let node = CniNode::with_subnet(bin(), SubnetFile::dual_stack());
    let conf = node.config("1.0.0");
    let (a, b) = (Pod::new(), Pod::new());
    let ra = node.add_ok(&a, &conf);
    let rb = node.add_ok(&b, &conf);
    a.ns.ip_ok(&["-6", "route", "del", "default"]);
    node.check(&a, &with_prev_result(&conf, &ra))
        .error_mentioning(103, "route ::/0");
    let b6 = result_addresses(&rb)[1].clone();
    b.ns.ip_ok(&["-6", "addr", "del", &b6, "dev", "eth0"]);
    node.check(&b, &with_prev_result(&conf, &rb))
        .error_mentioning(103, &b6);
    // DEL still frees both families of the pod missing its IPv6 address.
    node.del(&b, &with_prev_result(&conf, &rb)).success_empty();
    assert_eq!(node.ipam_allocations().len(), 2, "only pod a's two left");
}

#[test]
fn gc_frees_both_families() {
    let node = CniNode::with_subnet(bin(), SubnetFile::dual_stack());
    let conf = node.config("1.1.0");
    let pods: Vec<Pod> = (0..3).map(|_| Pod::new()).collect();
    let results: Vec<Value> = pods.iter().map(|p| node.add_ok(p, &conf)).collect();
    assert_eq!(node.ipam_allocations().len(), 6);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": pods[1].cid, "ifname": "eth0"}]);
    node.call("GC").config(&gc).run().success_empty();
    let mut want: Vec<String> = result_addresses(&results[1])
        .iter()
        .map(|a| strip_prefix(a).to_owned())
        .collect();
    want.sort_by_key(|a| a.parse::<std::net::IpAddr>().expect("ip"));
    assert_eq!(node.allocated_ips(), want);
}

#[test]
fn ipv6_exhaustion_is_code_101_and_frees_the_ipv4_address() {
    let subnet = SubnetFile {
        ipv6: Some((IPV6_NETWORK.into(), "fd00:10:244:1::1/126".into())),
        ..SubnetFile::default()
    };
    let node = CniNode::with_subnet(bin(), subnet);
    let conf = node.config("1.1.0");
    // ::2 and ::3 are the /126's only pod addresses.
    for _ in 0..2 {
        node.add_ok(&Pod::new(), &conf);
    }
    node.call("STATUS").config(&conf).run().error(50);
    let pod = Pod::new();
    node.add(&pod, &conf)
        .error_mentioning(101, "fd00:10:244:1::/126");
    assert_eq!(
        node.ipam_allocations().len(),
        4,
        "the IPv4 address went back"
    );
    assert!(!pod.ns.has_link("eth0"), "the failed ADD made no interface");
}

#[test]
fn status_gc_and_version_with_ipv6_only() {
    let node = CniNode::with_subnet(bin(), SubnetFile::ipv6_only());
    let conf = node.config("1.1.0");
    node.call("STATUS").config(&conf).run().success_empty();
    let pod = Pod::new();
    node.add_ok(&pod, &conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    node.call("GC").config(&gc).run().success_empty();
    assert!(node.ipam_allocations().is_empty());
    let out = node
        .call("VERSION")
        .stdin_raw(json!({"cniVersion": "1.1.0"}).to_string().as_bytes())
        .run();
    assert_eq!(out.success_json()["supportedVersions"], json!(VERSIONS));
}

#[test]
fn subnet_env_with_neither_family_is_code_7() {
    let node = CniNode::without_subnet_env(bin());
    node.write_subnet_env_raw("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
    let pod = Pod::new();
    node.add(&pod, &node.config("1.0.0"))
        .error_mentioning(7, "FLANNEL_IPV6_SUBNET");
    assert!(!pod.ns.has_link("eth0"));
    // Half an IPv6 pair names the missing key.
    node.write_subnet_env_raw("FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_MTU=1450\n");
    node.add(&pod, &node.config("1.0.0"))
        .error_mentioning(7, "FLANNEL_IPV6_SUBNET is missing");
}
