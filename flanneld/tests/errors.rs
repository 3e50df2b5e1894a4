//! Bad `net-conf.json`s and bad flags: flanneld exits non-zero with one line
//! naming the field, and leaves nothing behind. Every run happens inside a
//! node namespace of a cluster, never in the host's.

use flannel_cluster::cluster::{Cluster, DaemonRun, VXLAN_DEV};
use std::time::Duration;

const EXIT_WITHIN: Duration = Duration::from_secs(10);

fn base_args(c: &Cluster) -> Vec<String> {
    let n = c.node(0);
    vec![
        "--lease-dir".into(),
        c.lease_dir().to_string_lossy().into_owned(),
        "--subnet-file".into(),
        n.subnet_file().to_string_lossy().into_owned(),
        "--net-config-path".into(),
        c.net_conf_path().to_string_lossy().into_owned(),
    ]
}

fn run(c: &Cluster, extra: &[&str]) -> DaemonRun {
    let mut args = base_args(c);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.run_flanneld(0, &args, EXIT_WITHIN)
}

/// Non-zero exit, no panic, the error on one line (the last) naming `field`,
/// no usage dump, and no subnet.env, lease or flannel.1 left behind.
#[track_caller]
fn assert_one_line_error(c: &Cluster, what: &str, r: &DaemonRun, field: &str) {
    assert!(
        r.exited,
        "{what}: flanneld accepted it and kept running:\n{r}"
    );
    assert!(
        r.code.is_some_and(|c| c != 0),
        "{what}: expected a non-zero exit:\n{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{what}: panic:\n{r}");
    assert!(
        !r.stderr.contains("Usage:"),
        "{what}: usage dump instead of one line:\n{r}"
    );
    let lines = r.stderr_lines();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("{what}: nothing on stderr:\n{r}"));
    assert!(
        last.contains(field),
        "{what}: the error line should name {field:?}:\n{r}"
    );
    let errors = lines
        .iter()
        .filter(|l| l.contains("ERROR") || l.starts_with("flanneld:"))
        .count();
    assert_eq!(errors, 1, "{what}: expected exactly one error line:\n{r}");
    assert!(
        r.stdout.trim().is_empty(),
        "{what}: stdout should be empty:\n{r}"
    );
    assert!(
        !c.node(0).subnet_file().exists(),
        "{what}: subnet.env written"
    );
    assert!(
        c.leases().is_empty(),
        "{what}: lease taken: {:#?}",
        c.leases()
    );
    assert!(
        !c.node(0).ns.has_link(VXLAN_DEV),
        "{what}: {VXLAN_DEV} created"
    );
}

#[test]
fn bad_net_conf_files_exit_non_zero_naming_the_field() {
    let c = Cluster::builder().nodes(1).start(false).build();
    let cases: &[(&str, &str)] = &[
        (
            r#"{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}"#,
            "SubnetLen",
        ),
        (r#"{"network":"10.244.0.0/16","subnetlen":31}"#, "SubnetLen"),
        (r#"{"Network":"10.244.0.0/16","SubnetLen":17}"#, "SubnetLen"),
        (
            r#"{"Network":"10.244.0.0/16","SubnetLen":"24"}"#,
            "SubnetLen",
        ),
        (r#"{"Network":"10.244.0.0/33"}"#, "Network"),
        (r#"{"Network":"10.244.1.0/16"}"#, "Network"),
        (r#"{"Network":42}"#, "Network"),
        (r#"{"SubnetLen":24}"#, "Network"),
        (
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}"#,
            "SubnetMin",
        ),
        (
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.3.7"}"#,
            "SubnetMin",
        ),
        (
            r#"{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.7"}"#,
            "SubnetMax",
        ),
        (
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}"#,
            "SubnetM",
        ),
        (
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}"#,
            "Type",
        ),
        (
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#,
            "VNI",
        ),
        (
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":70000}}"#,
            "Port",
        ),
        (
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":100}}"#,
            "MTU",
        ),
        (
            r#"{"Network":"10.244.0.0/16","Backend":"vxlan"}"#,
            "Backend",
        ),
        (r#"{"Network":"10.244.0.0/16""#, "JSON"),
        (r#"[1,2]"#, "object"),
        (
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true}"#,
            "IPv6Network",
        ),
        (r#"{"EnableIPv4":false}"#, "EnableIPv4"),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/64","IPv6SubnetLen":64}"#,
            "IPv6SubnetLen",
        ),
        // Valid dual-stack, but this node's interface has no global IPv6.
        (
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#,
            "has no global IPv6 address: give it one, or pass --public-ipv6",
        ),
        // Valid IPv6-only, but this node has no IPv6 default route (nor
        // --iface) to choose the external interface by.
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#,
            "no IPv6 default route",
        ),
    ];
    for (text, field) in cases {
        std::fs::write(c.net_conf_path(), text).unwrap();
        let r = run(&c, &[]);
        assert_one_line_error(&c, text, &r, field);
    }
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    let c = Cluster::builder().nodes(1).start(false).build();
    let cases: &[(&[&str], &str)] = &[
        (&["--lease-ttl", "abc"], "--lease-ttl"),
        (&["--lease-ttl", "1"], "--lease-ttl"),
        (&["--resync-interval", "0"], "--resync-interval"),
        (
            &["--subnet-lease-renew-margin=-5"],
            "--subnet-lease-renew-margin",
        ),
        (&["--public-ip", "not-an-ip"], "--public-ip"),
        (&["--public-ipv6", "not-an-ip"], "--public-ipv6"),
        (&["--healthz-port", "70000"], "--healthz-port"),
        (&["--healthz-ip", "nowhere"], "--healthz-ip"),
        (&["--no-such-flag"], "--no-such-flag"),
        (&["--iface", "nosuch0"], "nosuch0"),
        (&["--iface-regex", "("], "--iface-regex"),
        (
            &[
                "--kube-subnet-mgr",
                "--etcd-endpoints",
                "http://127.0.0.1:2379",
            ],
            "--kube-subnet-mgr",
        ),
    ];
    for (args, field) in cases {
        let r = run(&c, args);
        assert_one_line_error(&c, &args.join(" "), &r, field);
    }
}

#[test]
fn public_ipv6_must_be_global_unicast() {
    let c = Cluster::builder().nodes(1).start(false).build();
    std::fs::write(
        c.net_conf_path(),
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#,
    )
    .unwrap();
    for bad in ["fe80::1", "::1", "ff02::1"] {
        let r = run(&c, &["--public-ipv6", bad]);
        assert_one_line_error(
            &c,
            bad,
            &r,
            &format!("--public-ipv6 {bad} is not a global unicast IPv6 address"),
        );
    }
}

#[test]
fn version_and_help_exit_zero() {
    let c = Cluster::builder().nodes(1).start(false).build();
    let r = c.run_flanneld(0, &["--version"], EXIT_WITHIN);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")), "{r}");
    let r = c.run_flanneld(0, &["--help"], EXIT_WITHIN);
    assert_eq!(r.code, Some(0), "{r}");
    for flag in [
        "--iface",
        "--lease-dir",
        "--lease-ttl",
        "--resync-interval",
        "--subnet-file",
        "--net-config-path",
    ] {
        assert!(r.stdout.contains(flag), "--help lacks {flag}: {r}");
    }
}

#[test]
fn net_conf_keys_are_case_insensitive_and_honoured() {
    let conf = serde_json::json!({
        "network": "10.50.0.0/16", "subnetlen": 26,
        "backend": {"type": "vxlan", "vni": 7}
    });
    let c = Cluster::builder().nodes(2).net_conf(conf).build();
    for i in 0..2 {
        let env = c.node(i).subnet_env().unwrap();
        assert_eq!(env["FLANNEL_NETWORK"], "10.50.0.0/16");
        let s = &env["FLANNEL_SUBNET"];
        assert!(s.starts_with("10.50.") && s.ends_with("/26"), "{s}");
        let l = c
            .node(i)
            .ns
            .link("flannel.7")
            .unwrap_or_else(|| panic!("no flannel.7 on node{i}"));
        assert_eq!(l["linkinfo"]["info_data"]["id"], 7);
        assert_eq!(c.lease_of_ok(i).vni, Some(7));
    }
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    c.wait_ping(&a, b.ip, Duration::from_secs(10));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let c = Cluster::builder().nodes(1).start(false).build();
    let r = run(&c, &["--log-format", "json", "--iface", "nosuch0"]);
    assert!(r.exited && r.code.is_some_and(|c| c != 0), "{r}");
    let lines = r.stderr_lines();
    assert!(lines.len() >= 2, "{r}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}\n{r}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some_and(|k| k.is_string()), "{key} in {line}");
        }
    }
    let last: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).expect("json");
    assert_eq!(last["level"], "ERROR", "{r}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("nosuch0")),
        "{r}"
    );
    // A structured field stays a field of the object.
    assert!(
        lines.iter().any(|l| l.contains("\"dir\":")),
        "the lease store's dir field: {r}"
    );
}
