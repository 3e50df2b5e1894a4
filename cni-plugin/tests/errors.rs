//! Bad input: the right CNI error code, a message naming the culprit, no
//! panic, and nothing left behind.

use flannel_cluster::*;
use serde_json::json;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

/// No veth in the node, no interface in the pod, no IP taken.
#[track_caller]
fn assert_nothing_left(node: &CniNode, pod: &Pod) {
    let veths = node.host_veths();
    assert!(veths.is_empty(), "veths left in the node: {veths:?}");
    assert!(
        !pod.ns.has_link(&pod.ifname),
        "{} left in the pod",
        pod.ifname
    );
    assert!(
        node.ipam_allocations().is_empty(),
        "IPs left: {:?}",
        node.ipam_allocations()
    );
}

#[test]
fn missing_or_unknown_cni_command_is_code_4() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("0.3.1");
    node.call("ADD")
        .unset("CNI_COMMAND")
        .pod(&pod)
        .config(&conf)
        .run()
        .error_mentioning(4, "CNI_COMMAND");
    node.call("FROB")
        .pod(&pod)
        .config(&conf)
        .run()
        .error_mentioning(4, "CNI_COMMAND");
    assert_nothing_left(&node, &pod);
}

#[test]
fn missing_env_vars_on_add_are_code_4_naming_the_var() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        node.call("ADD")
            .pod(&pod)
            .unset(var)
            .config(&conf)
            .run()
            .error_mentioning(4, var);
    }
    for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
        node.call("DEL")
            .pod(&pod)
            .unset(var)
            .config(&conf)
            .run()
            .error_mentioning(4, var);
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn bad_container_id_is_code_4() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    for bad in ["", "-abc", ".abc", "a/b", "a b", "a;b", "a\r\nb", "ä"] {
        node.call("ADD")
            .pod(&pod)
            .container_id(bad)
            .config(&conf)
            .run()
            .error_mentioning(4, "CNI_CONTAINERID");
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn bad_ifname_is_code_4() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    for bad in [
        "",
        ".",
        "..",
        "0123456789abcdef",
        "a/b",
        "a:b",
        "a b",
        "a\tb",
    ] {
        node.call("ADD")
            .pod(&pod)
            .ifname(bad)
            .config(&conf)
            .run()
            .error_mentioning(4, "CNI_IFNAME");
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn netns_that_is_not_a_netns_is_code_4() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    // An existing regular file, and a directory.
    for path in [node.subnet_file(), node.dir.path().to_owned()] {
        node.call("ADD")
            .pod(&pod)
            .netns(&path.to_string_lossy())
            .config(&conf)
            .run()
            .error_mentioning(4, "CNI_NETNS");
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn missing_netns_is_code_3() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let gone = format!(
        "{}/{}",
        flannel_cluster::netns::NETNS_DIR,
        flannel_cluster::names::unique("gone")
    );
    node.call("ADD")
        .pod(&pod)
        .netns(&gone)
        .config(&node.config("1.0.0"))
        .run()
        .error(3);
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": gone}],
        "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 0}],
    });
    let check_conf = with_prev_result(&node.config("1.0.0"), &prev);
    node.call("CHECK")
        .pod(&pod)
        .netns(&gone)
        .config(&check_conf)
        .run()
        .error(3);
    assert_nothing_left(&node, &pod);
}

#[test]
fn bad_json_is_code_6() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    for bad in [&b"{not json"[..], b"", b"[1,2]", b"\xff\xfe"] {
        node.call("ADD").pod(&pod).stdin_raw(bad).run().error(6);
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn unsupported_version_is_code_1() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    for v in ["0.2.0", "0.1.0", "9.9.9", "2.0.0"] {
        let mut conf = node.config("1.0.0");
        conf["cniVersion"] = json!(v);
        node.call("ADD").pod(&pod).config(&conf).run().error(1);
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn bad_network_name_is_code_7() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    for name in [json!(""), json!("a/b"), json!(null)] {
        let mut conf = node.config("1.0.0");
        conf["name"] = name;
        node.call("ADD").pod(&pod).config(&conf).run().error(7);
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn delegate_with_name_or_ipam_is_rejected_naming_the_key() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    for (key, val) in [
        ("name", json!("other")),
        ("ipam", json!({"type": "host-local"})),
    ] {
        let mut conf = node.config("0.3.1");
        conf["delegate"][key] = val;
        let out = node.call("ADD").pod(&pod).config(&conf).run();
        let code = serde_json::from_str::<serde_json::Value>(out.stdout())
            .ok()
            .and_then(|v| v["code"].as_u64());
        assert!(
            matches!(code, Some(2) | Some(7)),
            "expected code 2 or 7: {out}"
        );
        out.error_mentioning(code.unwrap(), key);
    }
    assert_nothing_left(&node, &pod);
}

#[test]
fn bad_delegate_value_is_code_7() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let cases = [
        ("mtu", json!("big")),
        ("mtu", json!(-1)),
        ("hairpinMode", json!("yes")),
        ("isDefaultGateway", json!(1)),
        ("bridge", json!("")),
        ("bridge", json!("a-bridge-name-too-long")),
        ("bridge", json!("a/b")),
        ("bridge", json!(7)),
    ];
    let mut wrong = Vec::new();
    for (key, val) in cases {
        let mut conf = node.config("0.3.1");
        conf["delegate"][key] = val.clone();
        let out = node.call("ADD").pod(&pod).config(&conf).run();
        let code = serde_json::from_str::<serde_json::Value>(out.stdout())
            .ok()
            .and_then(|v| v["code"].as_u64());
        if out.code() != Some(1) || code != Some(7) {
            wrong.push(format!(
                "delegate.{key}={val}: exit {:?}, stdout {}",
                out.code(),
                out.stdout().trim()
            ));
        }
        assert!(!out.stderr().contains("panicked"), "{out}");
    }
    assert_nothing_left(&node, &pod);
    assert!(
        wrong.is_empty(),
        "expected code 7 for:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn odd_configs_get_a_cni_error_never_a_panic() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let base = node.config("1.0.0");
    let mut cases = Vec::new();
    for (key, val) in [
        ("delegate", json!("x")),
        ("delegate", json!([1])),
        ("subnetFile", json!(5)),
        ("subnetFile", json!("")),
        ("dataDir", json!("")),
        ("dataDir", json!({"a": 1})),
        ("cniVersion", json!(1)),
        ("cniVersion", json!(null)),
    ] {
        let mut c = base.clone();
        c[key] = val;
        cases.push(c);
    }
    cases.push(json!({}));
    cases.push(json!(null));
    cases.push(json!("string"));
    let mut accepted = Vec::new();
    for conf in &cases {
        // ADD must refuse every one of these; then the other verbs must not panic.
        let out = node.call("ADD").pod(&pod).config(conf).run();
        assert!(!out.stderr().contains("panicked"), "{out}");
        if out.code() == Some(0) {
            accepted.push(format!("{conf}"));
            node.call("DEL").pod(&pod).config(conf).run();
        } else {
            let code = serde_json::from_str::<serde_json::Value>(out.stdout())
                .ok()
                .and_then(|v| v["code"].as_u64());
            out.error(code.unwrap_or(0));
        }
        for verb in ["DEL", "CHECK", "GC", "STATUS"] {
            let out = node.call(verb).pod(&pod).config(conf).run();
            assert!(!out.stderr().contains("panicked"), "{out}");
            assert_ne!(out.code(), None, "killed by a signal: {out}");
        }
    }
    let stray = node.stray_files();
    assert!(
        accepted.is_empty(),
        "ADD accepted invalid configs (stray files in its cwd: {stray:?}):\n{}",
        accepted.join("\n")
    );
    assert!(
        stray.is_empty(),
        "plugin wrote into its working directory: {stray:?}"
    );
    assert_nothing_left(&node, &pod);
}

#[test]
fn missing_subnet_env_on_add_is_code_11() {
    let node = CniNode::without_subnet_env(bin());
    let pod = Pod::new();
    let out = node.add(&pod, &node.config("0.3.1"));
    out.error_mentioning(11, &node.subnet_file().to_string_lossy());
    assert_nothing_left(&node, &pod);
    // Once flanneld writes it, the same ADD works.
    node.write_subnet_env(&SubnetFile::default());
    node.add_ok(&pod, &node.config("0.3.1"));
}

#[test]
fn invalid_subnet_env_is_code_7() {
    let node = CniNode::without_subnet_env(bin());
    let pod = Pod::new();
    let bad = [
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=banana\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=true\n",
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=maybe\n",
        "FLANNEL_NETWORK=10.244.0.0/99\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        "\u{0}\u{1}garbage",
    ];
    for text in bad {
        node.write_subnet_env_raw(text);
        let out = node.add(&pod, &node.config("0.3.1"));
        out.error(7);
        assert_nothing_left(&node, &pod);
    }
}

#[test]
fn range_exhausted_is_code_101_and_leaves_nothing() {
    // A /29: .2 … .6 are the only addresses to hand out.
    let subnet = SubnetFile {
        subnet: "10.244.1.1/29".into(),
        ..SubnetFile::default()
    };
    let node = CniNode::with_subnet(bin(), subnet);
    let conf = node.config("1.1.0");
    let pods: Vec<Pod> = (0..5).map(|_| Pod::new()).collect();
    let mut ips: Vec<String> = pods
        .iter()
        .map(|p| result_ip(&node.add_ok(p, &conf)))
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        [
            "10.244.1.2",
            "10.244.1.3",
            "10.244.1.4",
            "10.244.1.5",
            "10.244.1.6"
        ]
    );
    let veths_before = node.host_veths().len();
    let extra = Pod::new();
    node.add(&extra, &conf).error(101);
    assert!(
        !extra.ns.has_link("eth0"),
        "failed ADD left eth0 in the pod"
    );
    assert_eq!(
        node.host_veths().len(),
        veths_before,
        "failed ADD left a veth: {:?}",
        node.host_veths()
    );
    assert_eq!(node.ipam_allocations().len(), 5);
    // STATUS says why no ADD can succeed now.
    node.call("STATUS").config(&conf).run().error(50);
}

#[test]
fn interface_already_exists_is_code_102_and_leaves_nothing() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    pod.ns.add_veth_pair("eth0", "other0");
    let before = pod.ns.link("eth0").unwrap();
    node.add(&pod, &node.config("1.0.0")).error(102);
    assert!(
        node.host_veths().is_empty(),
        "veth left in node: {:?}",
        node.host_veths()
    );
    assert!(
        node.ipam_allocations().is_empty(),
        "IP left: {:?}",
        node.ipam_allocations()
    );
    // The pre-existing interface is untouched.
    let after = pod.ns.link("eth0").expect("pre-existing eth0 still there");
    assert_eq!(before["ifindex"], after["ifindex"]);
    assert!(pod.ns.ipv4_addrs("eth0").is_empty());
}

#[test]
fn existing_non_bridge_named_like_the_bridge_is_an_error() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    node.ns.add_veth_pair("cni0", "cni0peer");
    let out = node.add(&pod, &node.config("1.0.0"));
    assert_eq!(
        out.code(),
        Some(1),
        "ADD must fail when cni0 is not a bridge: {out}"
    );
    assert!(!out.stderr().contains("panicked"), "{out}");
    assert!(!pod.ns.has_link("eth0"));
    assert!(
        node.ipam_allocations().is_empty(),
        "IP left: {:?}",
        node.ipam_allocations()
    );
}

#[test]
fn masquerade_failure_rolls_back_veth_and_ip() {
    // A set of the wrong type where the plugin keeps its pods: the masq step
    // fails (code 104) and the ADD must undo everything it did before.
    let node = CniNode::with_subnet(
        bin(),
        SubnetFile {
            ipmasq: false,
            ..SubnetFile::default()
        },
    );
    let script = "add table ip flannel-cni\nadd set ip flannel-cni pods-cbr0 { type ipv4_addr . inet_service; }\n";
    let out = flannel_cluster::cmd::run_with(
        node.ns.command("nft").arg("-f").arg("-"),
        Some(script.as_bytes()),
        std::time::Duration::from_secs(10),
    );
    out.ok();
    let pod = Pod::new();
    node.add(&pod, &node.config("1.0.0")).error(104);
    assert_nothing_left(&node, &pod);
}
