//! The conflist of deploy/kube-flannel-rs.yml's ConfigMap, run as a runtime
//! runs a conflist (libcni's rules): each plugin gets the list's
//! `cniVersion` and `name`, the runtime config for the capabilities it
//! declares, and the previous plugin's result; ADD in order, CHECK in
//! order with the final result, DEL in reverse. Our plugin must parse its
//! entry exactly as the manifest writes it; the only additions are the
//! node's `subnetFile` and `dataDir`, because this test may not use the
//! host's /run/flannel and /var/lib/cni.

use flannel_cluster::*;
use flannel_tests::deploy::Manifest;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

const NODE_ADDR: &str = "192.168.78.1";
const HOST_PORT: u16 = 18081;
const CONTAINER_PORT: u16 = 8081;

/// The network configuration libcni hands plugin `entry` of `list`.
fn net_conf(list: &Value, entry: &Value, node: &CniNode, prev: Option<&Value>) -> Value {
    let mut conf = entry.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if conf["capabilities"]["portMappings"] == true {
        conf["runtimeConfig"] = json!({"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}
        ]});
    }
    if conf["type"] == "flannel" {
        conf["subnetFile"] = json!(node.subnet_file());
        conf["dataDir"] = json!(node.data_dir());
    }
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

fn plugin_path(ty: &str) -> std::path::PathBuf {
    if ty == "flannel" {
        bin()
    } else {
        std::path::Path::new(flannel_cluster::cni::REFERENCE_CNI_PATH).join(ty)
    }
}

fn call(node: &CniNode, pod: &Pod, verb: &str, conf: &Value) -> CniOutput {
    let ty = conf["type"].as_str().expect("type");
    CniCall::new(plugin_path(ty), Some(&node.ns))
        .command(verb)
        .env("CNI_PATH", flannel_cluster::cni::REFERENCE_CNI_PATH)
        .pod(pod)
        .config(conf)
        .run()
}

#[test]
fn the_manifests_conflist_runs_as_a_chain_add_check_del() {
    let manifest = Manifest::load();
    let list: Value = serde_json::from_str(manifest.config_file("cni-conf.json"))
        .expect("the ConfigMap's cni-conf.json is JSON");
    let plugins = list["plugins"].as_array().expect("plugins").clone();

    let node = CniNode::new(bin());
    node.ns.add_veth_pair("ext0", "ext1");
    node.ns.add_addr("ext0", &format!("{NODE_ADDR}/24"));
    let pod = Pod::new();
    let server = TcpServer::start(
        &pod.ns,
        SocketAddr::from(([0, 0, 0, 0], CONTAINER_PORT)),
        "pod",
    );

    // ADD, in order, each with the previous result.
    let mut result: Option<Value> = None;
    for entry in &plugins {
        let conf = net_conf(&list, entry, &node, result.as_ref());
        let out = call(&node, &pod, "ADD", &conf);
        result = Some(out.success_json());
    }
    let result = result.expect("a result");
    assert_eq!(result["cniVersion"], list["cniVersion"], "{result}");
    let ip = result_ip(&result);
    assert!(
        node.ipam_allocations()
            .contains_key(&ip.parse().expect("ip")),
        "{ip} recorded"
    );

    // The chain works: the pod is on the bridge and the host port reaches it.
    let to: SocketAddr = format!("{NODE_ADDR}:{HOST_PORT}").parse().expect("addr");
    let got = tcp_fetch(&node.ns, to, Duration::from_secs(5));
    assert_eq!(
        got.as_deref(),
        Ok("pod"),
        "node {to} → pod {CONTAINER_PORT}"
    );
    assert_eq!(server.accepted(), 1);

    // CHECK, in order, with the final result; libcni refuses CHECK itself
    // below cniVersion 0.4.0 (kube-flannel.yml's 0.3.1), and so do we.
    let checkable = !matches!(
        list["cniVersion"].as_str(),
        Some("0.1.0" | "0.2.0" | "0.3.0" | "0.3.1")
    );
    for entry in &plugins {
        let out = call(
            &node,
            &pod,
            "CHECK",
            &net_conf(&list, entry, &node, Some(&result)),
        );
        if checkable {
            out.success_empty();
        } else if entry["type"] == "flannel" {
            out.error_mentioning(1, "CHECK needs cniVersion 0.4.0");
        }
    }
    // DEL, in reverse, with the final result.
    for entry in plugins.iter().rev() {
        call(
            &node,
            &pod,
            "DEL",
            &net_conf(&list, entry, &node, Some(&result)),
        )
        .success_empty();
    }
    assert!(!pod.ns.has_link("eth0"));
    assert!(node.ipam_allocations().is_empty());
}
