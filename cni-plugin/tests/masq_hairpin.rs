//! ipMasq (nftables set + rule), DEL after the pod's netns is gone, and the
//! hairpin flag on the host veth.

use flannel_cluster::nft::SetElem;
use flannel_cluster::*;
use serde_json::{json, Value};
use std::time::Duration;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}
const TABLE: &str = "flannel-cni";
const SET: &str = "pods-cbr0";
const CHAIN: &str = "masq-cbr0";

fn elems(node: &CniNode) -> Vec<SetElem> {
    node.ns
        .nft_set_elements("ip", TABLE, SET)
        .unwrap_or_default()
}

/// A node where the plugin masquerades (FLANNEL_IPMASQ=false).
fn masq_node() -> CniNode {
    CniNode::masquerading(bin())
}

#[track_caller]
fn assert_masq_rule(node: &CniNode) {
    let text = node
        .ns
        .nft_table_text("ip", TABLE)
        .expect("table ip flannel-cni exists");
    let chain_start = text
        .find(&format!("chain {CHAIN}"))
        .unwrap_or_else(|| panic!("no chain {CHAIN}:\n{text}"));
    let chain = &text[chain_start..];
    for needle in [
        "type nat hook postrouting",
        "@pods-cbr0",
        "10.244.0.0/16",
        "224.0.0.0/4",
        "masquerade",
    ] {
        assert!(
            chain.contains(needle),
            "masq chain lacks {needle:?}:\n{text}"
        );
    }
    assert!(
        text.contains(&format!("set {SET}")),
        "no set {SET}:\n{text}"
    );
}

#[test]
fn ipmasq_adds_set_element_and_rule_and_del_removes_element() {
    let node = masq_node();
    let (a, b) = (Pod::new(), Pod::new());
    let conf = node.config("1.0.0");
    let ra = node.add_ok(&a, &conf);
    let rb = node.add_ok(&b, &conf);
    assert_masq_rule(&node);
    let got = elems(&node);
    for (pod, res) in [(&a, &ra), (&b, &rb)] {
        let want = SetElem {
            val: result_ip(res),
            comment: Some(format!("{} eth0", pod.cid)),
        };
        assert!(got.contains(&want), "missing {want:?} in {got:?}");
    }
    node.del(&a, &with_prev_result(&conf, &ra)).success_empty();
    let got = elems(&node);
    let vals: Vec<&str> = got.iter().map(|e| e.val.as_str()).collect();
    assert_eq!(
        vals,
        vec![result_ip(&rb).as_str()],
        "after DEL of a: {got:?}"
    );
    node.del(&b, &with_prev_result(&conf, &rb)).success_empty();
    assert!(
        elems(&node).is_empty(),
        "after DEL of both: {:?}",
        elems(&node)
    );
}

#[test]
fn delegate_ipmasq_overrides_subnet_env() {
    // flanneld masquerades (FLANNEL_IPMASQ=true): no element by default...
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let res = node.add_ok(&pod, &node.config("0.3.1"));
    assert!(
        !elems(&node).iter().any(|e| e.val == result_ip(&res)),
        "{:?}",
        elems(&node)
    );
    // ...but an explicit delegate ipMasq:true wins.
    let pod2 = Pod::new();
    let mut conf = node.config("0.3.1");
    conf["delegate"]["ipMasq"] = json!(true);
    let res2 = node.add_ok(&pod2, &conf);
    assert!(
        elems(&node).iter().any(|e| e.val == result_ip(&res2)),
        "{:?}",
        elems(&node)
    );
    assert_masq_rule(&node);
    // And delegate ipMasq:false on a masq node adds nothing.
    let node = masq_node();
    let pod3 = Pod::new();
    let mut conf = node.config("0.3.1");
    conf["delegate"]["ipMasq"] = json!(false);
    node.add_ok(&pod3, &conf);
    assert!(elems(&node).is_empty(), "{:?}", elems(&node));
}

/// A node with an uplink veth to an "outside" namespace (192.168.78.0/24).
fn uplink(node: &CniNode) -> NetNs {
    let outside = NetNs::new("o");
    node.ns.add_veth_to("up0", &outside, "up1");
    node.ns.add_addr("up0", "192.168.78.1/24");
    outside.add_addr("up1", "192.168.78.2/24");
    outside
}

#[test]
fn ipmasq_rewrites_source_of_traffic_leaving_the_cluster() {
    let node = masq_node();
    let outside = uplink(&node);
    let pod = Pod::new();
    node.add_ok(&pod, &node.config("1.0.0"));
    let srv = TcpServer::start(&outside, "192.168.78.2:0".parse().unwrap(), "{peer}");
    // The outside has no route to 10.244/16: only a masqueraded flow can answer.
    let seen = tcp_fetch(&pod.ns, srv.addr(), Duration::from_secs(5));
    assert_eq!(
        seen.as_deref(),
        Ok("192.168.78.1"),
        "outside should see the node's address"
    );
}

#[test]
fn without_ipmasq_pod_source_is_kept() {
    // FLANNEL_IPMASQ=true: flanneld masquerades, the plugin does not.
    let node = CniNode::new(bin());
    let outside = uplink(&node);
    outside.ip_ok(&["route", "add", "10.244.0.0/16", "via", "192.168.78.1"]);
    let pod = Pod::new();
    let res = node.add_ok(&pod, &node.config("1.0.0"));
    let srv = TcpServer::start(&outside, "192.168.78.2:0".parse().unwrap(), "{peer}");
    let seen = tcp_fetch(&pod.ns, srv.addr(), Duration::from_secs(5));
    assert_eq!(
        seen,
        Ok(result_ip(&res)),
        "outside should see the pod's own address"
    );
}

fn del_after_netns_gone(netns_env: Option<&str>, prev: bool) {
    let node = masq_node();
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    let res = node.add_ok(&pod, &conf);
    let veth = result_host_veth(&res);
    let Pod { ns, cid, ifname } = pod;
    let path = ns.path_str();
    ns.delete();
    assert!(!std::path::Path::new(&path).exists());
    let conf = if prev {
        with_prev_result(&conf, &res)
    } else {
        conf
    };
    let mut call = node
        .call("DEL")
        .container_id(&cid)
        .ifname(&ifname)
        .config(&conf);
    call = match netns_env {
        Some("<old>") => call.netns(&path),
        Some(v) => call.netns(v),
        None => call,
    };
    call.run().success_empty();
    assert!(
        node.ipam_allocations().is_empty(),
        "IP not freed: {:?}",
        node.ipam_allocations()
    );
    assert!(
        elems(&node).is_empty(),
        "masq element left: {:?}",
        elems(&node)
    );
    // The veth died with the netns (kernel, asynchronously).
    eventually(Duration::from_secs(5), "host veth to go", || {
        if node.ns.has_link(&veth) {
            Err(veth.clone())
        } else {
            Ok(())
        }
    });
    // A second DEL is still fine.
    node.call("DEL")
        .container_id(&cid)
        .ifname(&ifname)
        .config(&conf)
        .run()
        .success_empty();
}

#[test]
fn del_after_netns_deleted_frees_ip_and_masq_element() {
    del_after_netns_gone(Some("<old>"), true);
}

#[test]
fn del_without_cni_netns_frees_ip_and_masq_element() {
    del_after_netns_gone(None, false);
}

#[test]
fn del_with_empty_cni_netns_frees_ip_and_masq_element() {
    del_after_netns_gone(Some(""), true);
}

fn hairpin(node: &CniNode, res: &Value) -> Value {
    let veth = result_host_veth(res);
    let l = node.ns.link(&veth).expect("host veth");
    l["linkinfo"]["info_slave_data"]["hairpin"].clone()
}

#[test]
fn hairpin_flag_follows_delegate_hairpin_mode() {
    let node = CniNode::new(bin());
    let conf = node.config("0.3.1"); // hairpinMode: true, as kube-flannel.yml
                                     // Keep the pods alive: dropping one deletes its netns and so its veth.
    let (pod_on, pod_off) = (Pod::new(), Pod::new());
    let on = node.add_ok(&pod_on, &conf);
    assert_eq!(hairpin(&node, &on), json!(true), "hairpinMode:true");
    let mut conf_off = conf.clone();
    conf_off["delegate"]["hairpinMode"] = json!(false);
    let off = node.add_ok(&pod_off, &conf_off);
    assert_eq!(hairpin(&node, &off), json!(false), "hairpinMode:false");
}
