//! `--ip-masq` and the forward rules: flannel's rules as one nftables
//! table, kept in place, and real traffic masqueraded.

use flannel_tests::cluster::Cluster;
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
    flannel_tests::eventually(Duration::from_secs(5), "rules restored", || {
        match table(&c, 0) {
            Some(t) if t == rules => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The log line follows the rewrite by a moment.
    flannel_tests::eventually(Duration::from_secs(2), "repair logged", || {
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
