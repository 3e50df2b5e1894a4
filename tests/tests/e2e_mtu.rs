//! End to end, scenario 7: on a 1500-byte underlay, pods see MTU 1450
//! (VXLAN's 50 bytes of overhead), a 1400-byte ping with don't-fragment
//! crosses nodes, so does the largest that fits (1450), and one byte more
//! is refused at the pod.

use flannel_cluster::cluster::{Cluster, VXLAN_DEV};
use std::time::Duration;

fn mtu(ns: &flannel_cluster::NetNs, dev: &str) -> u64 {
    ns.link(dev)
        .unwrap_or_else(|| panic!("no {dev} in {}", ns.name()))["mtu"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn pods_see_1450_and_df_pings_up_to_1450_bytes_cross_nodes() {
    let c = Cluster::new(2);
    c.wait_all_converged(Duration::from_secs(10));
    let pods = c.add_pods(1);
    for i in 0..2 {
        assert_eq!(mtu(&c.node(i).ns, "eth0"), 1500);
        assert_eq!(mtu(&c.node(i).ns, VXLAN_DEV), 1450);
        assert_eq!(c.node(i).subnet_env().unwrap()["FLANNEL_MTU"], "1450");
    }
    for p in &pods {
        assert_eq!(mtu(p.ns(), "eth0"), 1450, "pod {}", p.ip);
    }
    c.wait_ping(&pods[0], pods[1].ip, Duration::from_secs(10));
    // 1372 + 8 (ICMP) + 20 (IP) = 1400 bytes; 1422 → 1450, the pod MTU.
    for size in ["1372", "1422"] {
        for (a, b) in [(0, 1), (1, 0)] {
            let out = pods[a].ns().exec(
                "ping",
                &[
                    "-n",
                    "-c",
                    "1",
                    "-W",
                    "2",
                    "-M",
                    "do",
                    "-s",
                    size,
                    &pods[b].ip.to_string(),
                ],
            );
            assert!(out.success(), "DF ping of {size}+28 bytes {a}→{b}: {out}");
        }
    }
    let out = pods[0].ns().exec(
        "ping",
        &[
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1423",
            &pods[1].ip.to_string(),
        ],
    );
    assert!(
        !out.success(),
        "a 1451-byte DF ping went out of a 1450 MTU pod: {out}"
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("1450"),
        "the refusal should name the MTU: {out}"
    );
}
