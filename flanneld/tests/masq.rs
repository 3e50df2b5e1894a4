//! `--ip-masq` and the forward rules: flannel's rules as one nftables
//! table, kept in place, and real traffic masqueraded.

use flannel_cluster::cluster::Cluster;
use std::time::Duration;

fn table(c: &Cluster, i: usize) -> Option<String> {
    let out = c
        .node(i)
        .ns
        .exec("nft", &["list", "table", "ip", "flannel-rs"]);
    out.success().then(|| out.stdout.clone())
}

#[test]
fn ip_masq_installs_flannels_rules_and_keeps_them() {
    let c = Cluster::builder()
        .nodes(1)
        .flanneld_args(&["--ip-masq", "--iptables-resync", "1"])
        .build();
    let env = std::fs::read_to_string(c.node(0).subnet_file()).expect("subnet.env");
    assert!(env.contains("FLANNEL_IPMASQ=true"), "{env}");
    let subnet = c.lease_of_ok(0).subnet;
    let rules = table(&c, 0).expect("table ip flannel-rs exists");
    for want in [
        "type nat hook postrouting priority srcnat".to_string(),
        format!("ip saddr {subnet} ip daddr 10.244.0.0/16 return"),
        format!("ip saddr 10.244.0.0/16 ip daddr {subnet} return"),
        format!("ip saddr != 10.244.0.0/16 ip daddr {subnet} return"),
        "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random".to_string(),
        "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random".to_string(),
        "ip saddr 10.244.0.0/16 accept".to_string(),
        "ip daddr 10.244.0.0/16 accept".to_string(),
    ] {
        assert!(rules.contains(&want), "missing {want:?} in:\n{rules}");
    }

    // Deleted by hand: rewritten within the resync period.
    let out = c
        .node(0)
        .ns
        .exec("nft", &["delete", "table", "ip", "flannel-rs"]);
    assert!(out.success(), "{out}");
    flannel_cluster::eventually(Duration::from_secs(5), "rules restored", || {
        match table(&c, 0) {
            Some(t) if t == rules => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The log line follows the rewrite by a moment.
    flannel_cluster::eventually(Duration::from_secs(2), "repair logged", || {
        let log = c.log(0);
        if log.contains("rewrote table ip flannel-rs") {
            Ok(())
        } else {
            Err(log)
        }
    });
}

#[test]
fn without_ip_masq_only_the_forward_rules_exist() {
    let c = Cluster::new(1);
    let env = std::fs::read_to_string(c.node(0).subnet_file()).expect("subnet.env");
    assert!(env.contains("FLANNEL_IPMASQ=false"), "{env}");
    let rules = table(&c, 0).expect("forward rules are on by default");
    assert!(!rules.contains("masquerade"), "{rules}");
    assert!(rules.contains("ip saddr 10.244.0.0/16 accept"), "{rules}");
}

/// With --ip-masq, a pod talking to an address outside the cluster network
/// (here the underlay's bridge) is seen with its node's address; a pod on
/// another node still sees the pod's own address.
#[test]
fn ip_masq_rewrites_traffic_leaving_the_network_and_only_that() {
    use flannel_cluster::{tcp_fetch, TcpServer};
    use std::net::SocketAddr;

    let c = Cluster::builder()
        .nodes(2)
        .flanneld_args(&["--ip-masq"])
        .build();
    c.wait_all_converged(Duration::from_secs(10));
    let pod = c.add_pod(0);
    let peer = c.add_pod(1);

    let outside: SocketAddr = "192.168.64.1:18081".parse().expect("addr");
    let _world = TcpServer::start(c.underlay(), outside, "{peer}");
    let seen = flannel_cluster::eventually(Duration::from_secs(5), "outside reachable", || {
        tcp_fetch(pod.ns(), outside, Duration::from_secs(2))
    });
    assert_eq!(
        seen.trim(),
        c.node(0).ip.to_string(),
        "masqueraded to the node"
    );

    let inside = SocketAddr::new(peer.ip, 18082);
    let _svc = TcpServer::start(peer.ns(), inside, "{peer}");
    let seen = flannel_cluster::eventually(Duration::from_secs(5), "pod reachable", || {
        tcp_fetch(pod.ns(), inside, Duration::from_secs(2))
    });
    assert_eq!(
        seen.trim(),
        pod.ip.to_string(),
        "pod to pod keeps the pod's address"
    );
}
