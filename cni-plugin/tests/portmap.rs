//! The reference `portmap` plugin chained after ours, as kube-flannel.yml's
//! conflist does: ADD flannel, ADD portmap with our result; a connection to
//! the node's own address on the host port reaches the pod; DEL in reverse.

use flannel_cluster::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}
const PORTMAP: &str = "/usr/lib/cni/portmap";
const NODE_ADDR: &str = "192.168.77.1";
const HOST_PORT: u16 = 18080;
const CONTAINER_PORT: u16 = 8080;

fn portmap_conf(version: &str, prev: &Value) -> Value {
    json!({
        "cniVersion": version,
        "name": "cbr0",
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}
        ]},
        "prevResult": prev,
    })
}

fn nat_rules(node: &CniNode) -> String {
    node.ns
        .exec("iptables-save", &["-t", "nat"])
        .ok()
        .to_owned()
}

#[test]
fn portmap_chained_after_flannel_forwards_host_port_to_pod() {
    assert!(
        Path::new(PORTMAP).exists(),
        "{PORTMAP} missing: install containernetworking-plugins (ci/deps.sh)"
    );
    // Debian's portmap (1.1.x) speaks up to 1.0.0; kube-flannel.yml uses 0.3.1.
    for version in ["0.3.1", "1.0.0"] {
        let node = CniNode::new(bin());
        node.ns.add_veth_pair("ext0", "ext1");
        node.ns.add_addr("ext0", &format!("{NODE_ADDR}/24"));
        let pod = Pod::new();
        let server = TcpServer::start(
            &pod.ns,
            SocketAddr::from(([0, 0, 0, 0], CONTAINER_PORT)),
            "pod",
        );

        let conf = node.config(version);
        let ours = node.add_ok(&pod, &conf);
        let pm = CniCall::new(PORTMAP, Some(&node.ns))
            .command("ADD")
            .env("CNI_PATH", flannel_cluster::cni::REFERENCE_CNI_PATH)
            .pod(&pod)
            .config(&portmap_conf(version, &ours))
            .run();
        let pm_res = pm.success_json();
        assert_eq!(
            pm_res["ips"], ours["ips"],
            "portmap passes our result through: {pm}"
        );

        let to: SocketAddr = format!("{NODE_ADDR}:{HOST_PORT}").parse().unwrap();
        let got = tcp_fetch(&node.ns, to, Duration::from_secs(5));
        assert_eq!(
            got.as_deref(),
            Ok("pod"),
            "{version}: node {to} → pod {CONTAINER_PORT}\n{}",
            nat_rules(&node)
        );
        assert_eq!(server.accepted(), 1);

        // DEL in reverse order, each with the chain's final result as prevResult.
        CniCall::new(PORTMAP, Some(&node.ns))
            .command("DEL")
            .env("CNI_PATH", flannel_cluster::cni::REFERENCE_CNI_PATH)
            .pod(&pod)
            .config(&portmap_conf(version, &pm_res))
            .run()
            .success_empty();
        assert!(
            !nat_rules(&node).contains(&HOST_PORT.to_string()),
            "portmap DNAT left:\n{}",
            nat_rules(&node)
        );
        node.del(&pod, &with_prev_result(&conf, &pm_res))
            .success_empty();
        assert!(!pod.ns.has_link("eth0"));
        assert!(node.ipam_allocations().is_empty());
        assert!(
            tcp_fetch(&node.ns, to, Duration::from_secs(2)).is_err(),
            "host port still forwarded"
        );
    }
}
