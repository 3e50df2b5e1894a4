//! ipMasq's per-pod path through nf_tables netlink (issue 14): no `nft`
//! process after the one-time setup, IPv6 pods in `ip6 flannel-cni`, the
//! elements' comments as `nft` shows them, and the same ruleset as the
//! `nft` script the plugin ran per pod before.

use flannel_cluster::nft::SetElem;
use flannel_cluster::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn bin() -> PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

const TABLE: &str = "flannel-cni";
const SET: &str = "pods-cbr0";

fn elems(node: &CniNode, family: &str) -> Vec<SetElem> {
    node.ns
        .nft_set_elements(family, TABLE, SET)
        .unwrap_or_default()
}

/// The result's addresses without prefix, IPv4 first.
fn addresses(res: &Value) -> Vec<String> {
    res["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {res}"))
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or("").to_owned())
        .collect()
}

/// A PATH directory holding only `ip` (the harness runs the plugin with
/// `ip netns exec`, found through the call's PATH).
fn path_with_only_ip() -> TempDir {
    let dir = TempDir::new("nftpath");
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ip installed (ci/deps.sh)");
    std::os::unix::fs::symlink(ip, dir.path().join("ip")).expect("symlink ip");
    dir
}

/// A PATH directory whose `nft` appends a line to `calls` and runs the
/// real one.
struct CountingNft {
    dir: TempDir,
}

impl CountingNft {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = path_with_only_ip();
        let real = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nft installed (ci/deps.sh)");
        let calls = dir.path().join("calls");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec {real} \"$@\"\n",
            calls.display()
        );
        let nft = dir.path().join("nft");
        std::fs::write(&nft, script).expect("write nft wrapper");
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755))
            .expect("chmod nft wrapper");
        CountingNft { dir }
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

#[test]
fn per_pod_path_starts_no_nft_once_the_table_exists() {
    let node = CniNode::masquerading(bin());
    let conf = node.config("1.0.0");
    let nft = CountingNft::new();
    let run = |verb: &str, pod: &Pod, conf: &Value| {
        node.call(verb)
            .pod(pod)
            .config(conf)
            .env("PATH", &nft.path())
            .run()
    };
    let (a, b) = (Pod::new(), Pod::new());
    let ra = run("ADD", &a, &conf).success_json();
    assert_eq!(
        nft.calls(),
        1,
        "the first ADD creates the table with nft once"
    );
    let rb = run("ADD", &b, &conf).success_json();
    assert_eq!(nft.calls(), 1, "a second ADD started nft");
    let vals: Vec<String> = elems(&node, "ip").into_iter().map(|e| e.val).collect();
    assert!(
        vals.contains(&result_ip(&ra)) && vals.contains(&result_ip(&rb)),
        "{vals:?}"
    );
    run("DEL", &a, &with_prev_result(&conf, &ra)).success_empty();
    run("DEL", &b, &with_prev_result(&conf, &rb)).success_empty();
    // DEL again: the element is gone already, still no nft.
    run("DEL", &b, &with_prev_result(&conf, &rb)).success_empty();
    assert_eq!(nft.calls(), 1, "DEL started nft");
    assert!(elems(&node, "ip").is_empty(), "{:?}", elems(&node, "ip"));

    // With no nft on PATH at all (only `ip`), ADD and DEL still work.
    let empty = path_with_only_ip();
    let c = Pod::new();
    let rc = node
        .call("ADD")
        .pod(&c)
        .config(&conf)
        .env("PATH", &empty.path().display().to_string())
        .run()
        .success_json();
    let want = SetElem {
        val: result_ip(&rc),
        comment: Some(format!("{} eth0", c.cid)),
    };
    assert_eq!(elems(&node, "ip"), vec![want]);
    node.call("DEL")
        .pod(&c)
        .config(&with_prev_result(&conf, &rc))
        .env("PATH", &empty.path().display().to_string())
        .run()
        .success_empty();
    assert!(elems(&node, "ip").is_empty(), "{:?}", elems(&node, "ip"));
}

#[track_caller]
fn assert_ip6_rule(node: &CniNode) {
    let text = node
        .ns
        .nft_table_text("ip6", TABLE)
        .expect("table ip6 flannel-cni exists");
    for needle in [
        "chain masq-cbr0",
        "type nat hook postrouting",
        "ip6 saddr @pods-cbr0",
        "ip6 daddr != fd00:10:244::/56",
        "ip6 daddr != ff00::/8",
        "masquerade",
        "type ipv6_addr",
    ] {
        assert!(text.contains(needle), "ip6 table lacks {needle:?}:\n{text}");
    }
}

#[test]
fn dual_stack_pod_masquerades_in_both_families() {
    let node = CniNode::with_subnet(
        bin(),
        SubnetFile {
            ipmasq: false,
            ..SubnetFile::dual_stack()
        },
    );
    let conf = node.config("1.0.0");
    let pod = Pod::new();
    let res = node.add_ok(&pod, &conf);
    let ips = addresses(&res);
    assert_eq!(ips.len(), 2, "{res}");
    let comment = Some(format!("{} eth0", pod.cid));
    assert_eq!(
        elems(&node, "ip"),
        vec![SetElem {
            val: ips[0].clone(),
            comment: comment.clone()
        }]
    );
    assert_eq!(
        elems(&node, "ip6"),
        vec![SetElem {
            val: ips[1].clone(),
            comment
        }]
    );
    assert_ip6_rule(&node);
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    assert!(elems(&node, "ip").is_empty(), "{:?}", elems(&node, "ip"));
    assert!(elems(&node, "ip6").is_empty(), "{:?}", elems(&node, "ip6"));
}

#[test]
fn ipv6_only_pod_masquerades_and_del_without_netns_removes_it() {
    let node = CniNode::with_subnet(
        bin(),
        SubnetFile {
            ipmasq: false,
            ..SubnetFile::ipv6_only()
        },
    );
    let conf = node.config("1.0.0");
    let pod = Pod::new();
    let res = node.add_ok(&pod, &conf);
    let ips = addresses(&res);
    let vals: Vec<String> = elems(&node, "ip6").into_iter().map(|e| e.val).collect();
    assert_eq!(vals, ips);
    assert!(node.ns.nft_table_text("ip", TABLE).is_none());
    assert_ip6_rule(&node);
    // The pod's namespace is gone: DEL finds the address in the store.
    let (cid, ifname) = (pod.cid.clone(), pod.ifname.clone());
    pod.ns.delete();
    node.call("DEL")
        .container_id(&cid)
        .ifname(&ifname)
        .config(&conf)
        .run()
        .success_empty();
    assert!(elems(&node, "ip6").is_empty(), "{:?}", elems(&node, "ip6"));
}

#[test]
fn gc_removes_stale_elements_of_both_families() {
    let node = CniNode::with_subnet(
        bin(),
        SubnetFile {
            ipmasq: false,
            ..SubnetFile::dual_stack()
        },
    );
    let conf = node.config("1.1.0");
    let live = Pod::new();
    let ips = addresses(&node.add_ok(&live, &conf));
    // Elements of pods whose addresses are no longer allocated.
    for (fam, ip) in [("ip", "10.244.1.200"), ("ip6", "fd00:10:244:1::c8")] {
        let out = node
            .ns
            .nft(&["add", "element", fam, TABLE, SET, &format!("{{ {ip} }}")]);
        assert!(out.success(), "{out}");
    }
    assert_eq!(elems(&node, "ip").len() + elems(&node, "ip6").len(), 4);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": live.cid, "ifname": "eth0"}]);
    node.call("GC").config(&gc).run().success_empty();
    let v4: Vec<String> = elems(&node, "ip").into_iter().map(|e| e.val).collect();
    let v6: Vec<String> = elems(&node, "ip6").into_iter().map(|e| e.val).collect();
    assert_eq!((v4, v6), (vec![ips[0].clone()], vec![ips[1].clone()]));
}

/// `nft -j list table ip flannel-cni` without handles, set elements sorted.
fn table_json(ns: &NetNs) -> Value {
    fn scrub(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("handle");
                if let Some(Value::Array(a)) = o.get_mut("elem") {
                    a.sort_by_key(|e| e.to_string());
                }
                o.values_mut().for_each(scrub);
            }
            Value::Array(a) => a.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    let out = ns.nft(&["-j", "list", "table", "ip", TABLE]);
    assert!(out.success(), "{out}");
    let mut v: Value = serde_json::from_str(&out.stdout).expect("nft json");
    // The metainfo object names the nft version, not the ruleset.
    if let Some(items) = v["nftables"].as_array_mut() {
        items.retain(|i| i.get("metainfo").is_none());
    }
    scrub(&mut v);
    v
}

/// The script the plugin ran through `nft` for every ADD before netlink.
fn old_add_script(ip: &str, comment: &str) -> String {
    format!(
        "add table ip flannel-cni\n\
         add set ip flannel-cni pods-cbr0 {{ type ipv4_addr; }}\n\
         add chain ip flannel-cni masq-cbr0 {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip flannel-cni masq-cbr0\n\
         add rule ip flannel-cni masq-cbr0 ip saddr @pods-cbr0 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment \"flannel-rs pod masquerade\"\n\
         add element ip flannel-cni pods-cbr0 {{ {ip} comment \"{comment}\" }}\n"
    )
}

#[track_caller]
fn nft_script(ns: &NetNs, script: &str) {
    let out = flannel_cluster::cmd::run_with(
        ns.command("nft").arg("-f").arg("-"),
        Some(script.as_bytes()),
        std::time::Duration::from_secs(10),
    );
    assert!(out.success(), "{out}");
}

#[test]
fn ruleset_after_add_and_del_is_what_the_nft_script_made() {
    let node = CniNode::masquerading(bin());
    let reference = NetNs::new("oldmasq");
    let conf = node.config("1.0.0");
    let (a, b) = (Pod::new(), Pod::new());
    let ra = node.add_ok(&a, &conf);
    let rb = node.add_ok(&b, &conf);
    for (pod, res) in [(&a, &ra), (&b, &rb)] {
        nft_script(
            &reference,
            &old_add_script(&result_ip(res), &format!("{} eth0", pod.cid)),
        );
    }
    assert_eq!(
        table_json(&node.ns),
        table_json(&reference),
        "after two ADDs"
    );
    node.del(&a, &with_prev_result(&conf, &ra)).success_empty();
    let old_del = format!(
        "delete element ip flannel-cni pods-cbr0 {{ {} }}\n",
        result_ip(&ra)
    );
    nft_script(&reference, &old_del);
    assert_eq!(table_json(&node.ns), table_json(&reference), "after DEL");
    let text = node.ns.nft_table_text("ip", TABLE).expect("table");
    assert!(
        text.contains(&format!("{} comment \"{} eth0\"", result_ip(&rb), b.cid)),
        "{text}"
    );
}

#[test]
fn add_of_an_address_already_in_the_set_succeeds_and_del_removes_it() {
    // Every address of the node's subnet is in the set already (a DEL that
    // never came): ADD must not fail on the pod's element (no NLM_F_EXCL).
    let node = CniNode::masquerading(bin());
    let all: Vec<String> = (2..=254).map(|i| format!("10.244.1.{i}")).collect();
    let script = old_add_script("10.244.1.2", "stale eth0")
        + &format!(
            "add element ip flannel-cni pods-cbr0 {{ {} }}\n",
            all.join(", ")
        );
    nft_script(&node.ns, &script);
    let conf = node.config("1.0.0");
    let pod = Pod::new();
    let res = node.add_ok(&pod, &conf);
    let ip = result_ip(&res);
    assert!(elems(&node, "ip").iter().any(|e| e.val == ip));
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    let left = elems(&node, "ip");
    assert_eq!(
        left.len(),
        all.len() - 1,
        "DEL removed exactly the pod's element"
    );
    assert!(!left.iter().any(|e| e.val == ip), "{ip} still in the set");
}
