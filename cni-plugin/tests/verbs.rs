//! Every CNI verb against the contract: ADD, DEL, CHECK, STATUS, GC, VERSION.

use flannel_cluster::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

/// The kernel and IPAM state ADD must leave, checked against the result.
fn assert_pod_configured(node: &CniNode, pod: &Pod, result: &Value, default_route: bool) {
    let gw = node.subnet.gateway();
    let addr = result_address(result);
    let ip = result_ip(result);
    // node side
    let br = node.ns.link("cni0").expect("bridge cni0 exists");
    assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br}");
    assert!(
        br["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "cni0 down: {br}"
    );
    assert_eq!(node.ns.ipv4_addrs("cni0"), vec![format!("{gw}/24")]);
    let veth = result_host_veth(result);
    assert!(is_host_veth_name(&veth), "host veth name {veth}");
    let hv = node.ns.link(&veth).expect("host veth exists");
    assert_eq!(hv["master"], "cni0", "{hv}");
    assert!(
        hv["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "host veth down: {hv}"
    );
    assert_eq!(node.ns.sysctl("net/ipv4/ip_forward"), "1");
    // pod side
    let l = pod.ns.link(&pod.ifname).expect("pod interface exists");
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{l}"
    );
    assert_eq!(l["mtu"], node.subnet.mtu, "{l}");
    assert_eq!(pod.ipv4_addrs(), vec![addr.clone()]);
    let r = pod
        .ns
        .route_v4(&node.subnet.network)
        .expect("cluster route");
    assert_eq!(r["gateway"], gw, "{r}");
    match pod.ns.route_v4("default") {
        Some(d) if default_route => assert_eq!(d["gateway"], gw, "{d}"),
        None if !default_route => {}
        other => panic!("default route: {other:?} (expected: {default_route})"),
    }
    assert_eq!(
        pod.ns
            .sysctl(&format!("net/ipv4/conf/{}/arp_notify", pod.ifname)),
        "1"
    );
    // IPAM store
    let allocs = node.ipam_allocations();
    assert_eq!(
        allocs.get(&ip.parse().unwrap()),
        Some(&format!("{}\r\n{}", pod.cid, pod.ifname))
    );
    assert!(node.ipam_dir().join("last_reserved_ip.0").exists());
    assert!(node.ipam_dir().join("lock").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(node.ipam_dir().join(&ip)), 0o600, "IP file mode");
    assert_eq!(mode(node.ipam_dir()), 0o755, "store dir mode");
}

#[test]
fn add_configures_bridge_veth_address_routes_and_ipam() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let res = node.add_ok(&pod, &node.config("0.3.1"));
    assert_pod_configured(&node, &pod, &res, true);
    assert_eq!(result_address(&res), "10.244.1.2/24", "first pod gets .2");
    // The pod reaches its gateway (a listener in the node netns on 10.244.1.1).
    let srv = TcpServer::start(&node.ns, "10.244.1.1:0".parse().unwrap(), "node");
    let got = tcp_fetch(&pod.ns, srv.addr(), Duration::from_secs(5));
    assert_eq!(got.as_deref(), Ok("node"));
}

#[test]
fn add_without_default_gateway_and_with_delegate_mtu() {
    let node = CniNode::new(bin());
    let pod = Pod::new().with_ifname("net1");
    let mut conf = node.config("1.0.0");
    conf["delegate"] = json!({"hairpinMode": false, "isDefaultGateway": false, "mtu": 1400});
    let res = node.add_ok(&pod, &conf);
    assert!(
        pod.ns.route_v4("default").is_none(),
        "no default route: {:?}",
        pod.ns.routes_v4()
    );
    let dsts: Vec<&str> = res["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert_eq!(dsts, vec!["10.244.0.0/16"], "{res}");
    assert_eq!(pod.ns.link("net1").unwrap()["mtu"], 1400);
    assert!(pod.ns.route_v4("10.244.0.0/16").is_some());
}

#[test]
fn add_tolerates_cni_args_and_runtime_injected_keys() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let mut conf = node.config("1.1.0");
    conf["runtimeConfig"] = json!({"portMappings": [], "bandwidth": {}});
    conf["capabilities"] = json!({"portMappings": true});
    conf["args"] = json!({"cni": {"ips": []}});
    conf["cni.dev/something"] = json!(1);
    let out = node
        .call("ADD")
        .pod(&pod)
        .env("CNI_ARGS", &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={}", pod.cid))
        .config(&conf)
        .run();
    let res = out.success_json();
    assert_pod_configured(&node, &pod, &res, true);
}

fn add_del_with_masq(cid: String, ifname: &str) {
    let node = CniNode::with_subnet(
        bin(),
        SubnetFile {
            ipmasq: false,
            ..SubnetFile::default()
        },
    );
    let conf = node.config("1.0.0");
    let pod = Pod {
        ns: NetNs::new("p"),
        cid,
        ifname: ifname.into(),
    };
    let res = node.add_ok(&pod, &conf);
    assert_pod_configured(&node, &pod, &res, true);
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    assert!(!pod.ns.has_link(ifname));
    assert!(node.ipam_allocations().is_empty());
}

#[test]
fn containerd_style_id_and_15_char_ifname_work_with_masq() {
    // The ID also ends up in the nft element comment.
    let hex64: String = (0..64)
        .map(|i| char::from(b"0123456789abcdef"[i % 16]))
        .collect();
    add_del_with_masq(hex64, "abcdefghijklmno");
}

#[test]
fn very_long_container_id_works_with_masq() {
    // 200 characters: valid per the spec's regex, which sets no length limit.
    add_del_with_masq(std::iter::repeat_n("a1_.-", 40).collect(), "eth0");
}

#[test]
fn network_name_keys_the_store_and_masq_set() {
    let mut node = CniNode::with_subnet(
        bin(),
        SubnetFile {
            ipmasq: false,
            ..SubnetFile::default()
        },
    );
    node.net_name = "k8s-pod-network".into();
    let pod = Pod::new();
    let res = node.add_ok(&pod, &node.config("0.3.1"));
    assert!(
        node.ipam_dir().join(result_ip(&res)).exists(),
        "store under <dataDir>/<name>"
    );
    let elems = node
        .ns
        .nft_set_elements("ip", "flannel-cni", "pods-k8s-pod-network")
        .unwrap_or_default();
    assert!(elems.iter().any(|e| e.val == result_ip(&res)), "{elems:?}");
}

#[test]
fn second_pod_gets_next_address() {
    let node = CniNode::new(bin());
    let (a, b) = (Pod::new(), Pod::new());
    let conf = node.config("0.3.1");
    let ra = node.add_ok(&a, &conf);
    let rb = node.add_ok(&b, &conf);
    assert_eq!(result_address(&ra), "10.244.1.2/24");
    assert_eq!(result_address(&rb), "10.244.1.3/24");
    assert_eq!(
        std::fs::read_to_string(node.ipam_dir().join("last_reserved_ip.0"))
            .unwrap()
            .trim(),
        "10.244.1.3"
    );
    // Both pods talk to each other over the bridge.
    let srv = TcpServer::start(&b.ns, "0.0.0.0:0".parse().unwrap(), "b");
    let to = SocketAddr::new(result_ip(&rb).parse().unwrap(), srv.port());
    assert_eq!(
        tcp_fetch(&a.ns, to, Duration::from_secs(5)).as_deref(),
        Ok("b")
    );
}

#[test]
fn del_removes_interface_and_frees_ip() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    let res = node.add_ok(&pod, &conf);
    let veth = result_host_veth(&res);
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    assert!(
        !pod.ns.has_link("eth0"),
        "pod interface still there after DEL"
    );
    assert!(
        node.ipam_allocations().is_empty(),
        "IP not freed: {:?}",
        node.ipam_allocations()
    );
    eventually(Duration::from_secs(2), "host veth to go", || {
        if node.ns.has_link(&veth) {
            Err(format!("{veth} still present"))
        } else {
            Ok(())
        }
    });
}

#[test]
fn del_twice_and_del_of_unknown_container_succeed() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("0.3.1");
    let res = node.add_ok(&pod, &conf);
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    // Without prevResult, and for a container that never had an ADD.
    node.del(&pod, &conf).success_empty();
    let never = Pod::new();
    node.del(&never, &conf).success_empty();
    assert!(node.ipam_allocations().is_empty());
}

#[test]
fn del_works_when_subnet_env_is_gone() {
    // After a reboot kubelet DELs old pods before flanneld has written subnet.env.
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    let res = node.add_ok(&pod, &conf);
    std::fs::remove_file(node.subnet_file()).unwrap();
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    assert!(
        node.ipam_allocations().is_empty(),
        "{:?}",
        node.ipam_allocations()
    );
    assert!(!pod.ns.has_link("eth0"));
}

#[test]
fn repeated_add_is_code_102_and_keeps_the_first_attachment() {
    // A runtime retrying ADD for the same (container, ifname): the second one
    // fails, and its cleanup must not tear down what the first one built.
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    let res = node.add_ok(&pod, &conf);
    node.add(&pod, &conf).error(102);
    assert_pod_configured(&node, &pod, &res, true);
    assert_eq!(
        node.ipam_allocations().len(),
        1,
        "{:?}",
        node.ipam_allocations()
    );
    assert_eq!(node.host_veths(), vec![result_host_veth(&res)]);
}

#[test]
fn freed_address_is_not_reused_at_once() {
    let node = CniNode::new(bin());
    let conf = node.config("0.3.1");
    let a = Pod::new();
    let ra = node.add_ok(&a, &conf);
    node.del(&a, &with_prev_result(&conf, &ra)).success_empty();
    let rb = node.add_ok(&Pod::new(), &conf);
    assert_eq!(result_address(&ra), "10.244.1.2/24");
    assert_eq!(
        result_address(&rb),
        "10.244.1.3/24",
        "round robin after last_reserved_ip"
    );
}

#[test]
fn mtu_comes_from_subnet_env_and_bridge_name_from_delegate() {
    let node = CniNode::with_subnet(
        bin(),
        SubnetFile {
            mtu: 1370,
            ..SubnetFile::default()
        },
    );
    let pod = Pod::new();
    let mut conf = node.config("1.1.0");
    conf["delegate"]["bridge"] = json!("br-ft");
    let res = node.add_ok(&pod, &conf);
    assert_eq!(pod.ns.link("eth0").unwrap()["mtu"], 1370);
    assert_eq!(res["interfaces"][0]["name"], "br-ft");
    assert_eq!(res["interfaces"][2]["mtu"], 1370);
    assert_eq!(
        node.ns.link(&result_host_veth(&res)).unwrap()["master"],
        "br-ft"
    );
    assert!(!node.ns.has_link("cni0"));
}

#[test]
fn del_frees_only_its_own_ip() {
    let node = CniNode::new(bin());
    let (a, b) = (Pod::new(), Pod::new());
    let conf = node.config("0.4.0");
    let ra = node.add_ok(&a, &conf);
    let rb = node.add_ok(&b, &conf);
    node.del(&a, &with_prev_result(&conf, &ra)).success_empty();
    let left = node.allocated_ips();
    assert_eq!(left, vec![result_ip(&rb)]);
    assert_eq!(b.ipv4_addrs(), vec![result_address(&rb)]);
}

#[test]
fn check_passes_on_fresh_pod_and_names_what_drifted() {
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let node = CniNode::new(bin());
        let pod = Pod::new();
        let conf = node.config(version);
        let res = node.add_ok(&pod, &conf);
        let with_prev = with_prev_result(&conf, &res);
        node.check(&pod, &with_prev).success_empty();
        // Drift 1: the default route is gone.
        pod.ns.ip_ok(&["route", "del", "default"]);
        node.check(&pod, &with_prev).error(103);
        // Drift 2: the address is gone too.
        pod.ns
            .ip_ok(&["addr", "del", &result_address(&res), "dev", "eth0"]);
        node.check(&pod, &with_prev)
            .error_mentioning(103, &result_ip(&res));
    }
}

#[test]
fn check_detects_lost_ipam_allocation_and_missing_cluster_route() {
    let node = CniNode::new(bin());
    let (a, b) = (Pod::new(), Pod::new());
    let conf = node.config("1.0.0");
    let ra = node.add_ok(&a, &conf);
    let rb = node.add_ok(&b, &conf);
    std::fs::remove_file(node.ipam_dir().join(result_ip(&ra))).unwrap();
    node.check(&a, &with_prev_result(&conf, &ra)).error(103);
    b.ns.ip_ok(&["route", "del", "10.244.0.0/16"]);
    node.check(&b, &with_prev_result(&conf, &rb))
        .error_mentioning(103, "10.244.0.0/16");
}

#[test]
fn check_detects_missing_interface() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    let res = node.add_ok(&pod, &conf);
    pod.ns.ip_ok(&["link", "del", "eth0"]);
    let out = node.check(&pod, &with_prev_result(&conf, &res));
    assert_eq!(
        out.code(),
        Some(1),
        "CHECK must fail when the interface is gone: {out}"
    );
}

#[test]
fn status_ready_when_subnet_env_present() {
    let node = CniNode::new(bin());
    node.call("STATUS")
        .config(&node.config("1.1.0"))
        .run()
        .success_empty();
}

#[test]
fn status_not_ready_without_or_with_bad_subnet_env() {
    let node = CniNode::without_subnet_env(bin());
    let conf = node.config("1.1.0");
    let path = node.subnet_file().to_string_lossy().into_owned();
    node.call("STATUS")
        .config(&conf)
        .run()
        .error_mentioning(50, &path);
    node.write_subnet_env_raw("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=bogus\n");
    node.call("STATUS").config(&conf).run().error(50);
    node.write_subnet_env(&SubnetFile::default());
    node.call("STATUS").config(&conf).run().success_empty();
}

fn gc_frees_unlisted(key: &str) {
    let node = CniNode::new(bin());
    let conf = node.config("1.1.0");
    let mut masq = conf.clone();
    masq["delegate"]["ipMasq"] = json!(true);
    let pods: Vec<Pod> = (0..3).map(|_| Pod::new()).collect();
    let results: Vec<Value> = pods.iter().map(|p| node.add_ok(p, &masq)).collect();
    // A second attachment of pod 0 on another interface: same cid, other ifname.
    let pod0b = Pod {
        ns: NetNs::new("p"),
        cid: pods[0].cid.clone(),
        ifname: "net1".into(),
    };
    let r0b = node.add_ok(&pod0b, &masq);
    assert_eq!(node.ipam_allocations().len(), 4);

    let mut gc = conf.clone();
    gc[key] = json!([{"containerID": pods[0].cid, "ifname": "eth0"}, {"containerID": pods[2].cid, "ifname": "eth0"}]);
    node.call("GC").config(&gc).run().success_empty();

    let left = node.allocated_ips();
    let mut want = vec![result_ip(&results[0]), result_ip(&results[2])];
    want.sort();
    assert_eq!(left, want, "GC with {key} kept the wrong IPs");
    let elems = node
        .ns
        .nft_set_elements("ip", "flannel-cni", "pods-cbr0")
        .unwrap_or_default();
    let vals: Vec<&str> = elems.iter().map(|e| e.val.as_str()).collect();
    assert!(
        !vals.contains(&result_ip(&results[1]).as_str()),
        "masq element of GC'd pod left: {elems:?}"
    );
    assert!(
        !vals.contains(&result_ip(&r0b).as_str()),
        "masq element of GC'd attachment left: {elems:?}"
    );
    assert!(
        vals.contains(&result_ip(&results[0]).as_str()),
        "masq element of kept pod gone: {elems:?}"
    );
    // The kept pods still work: DEL of pod 0 frees its IP.
    node.del(&pods[0], &with_prev_result(&conf, &results[0]))
        .success_empty();
    assert_eq!(node.ipam_allocations().len(), 1);
}

#[test]
fn gc_frees_attachments_not_in_valid_attachments() {
    gc_frees_unlisted("cni.dev/valid-attachments");
}

#[test]
fn gc_accepts_legacy_attachments_key() {
    gc_frees_unlisted("cni.dev/attachments");
}

#[test]
fn gc_with_empty_list_frees_everything() {
    let node = CniNode::new(bin());
    let conf = node.config("1.1.0");
    for _ in 0..2 {
        node.add_ok(&Pod::new(), &conf);
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    node.call("GC").config(&gc).run().success_empty();
    assert!(
        node.ipam_allocations().is_empty(),
        "{:?}",
        node.ipam_allocations()
    );
}

#[test]
fn version_reports_supported_versions() {
    let node = CniNode::new(bin());
    for v in ["0.3.1", "1.1.0"] {
        let out = node
            .call("VERSION")
            .stdin_raw(json!({"cniVersion": v}).to_string().as_bytes())
            .run();
        let got = out.success_json();
        assert_eq!(got["cniVersion"], v, "{out}");
        assert_eq!(got["supportedVersions"], json!(VERSIONS), "{out}");
    }
}
