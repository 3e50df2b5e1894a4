//! The Nodes of a cluster on the Kubernetes store, read as flanneld reads
//! them: the Node a kubelet registers (an IPv6 `InternalIP` too on a
//! dual-stack or IPv6-only node), the lease a Node stands for (its
//! podCIDRs of each family and flannel's annotations: `public-ip`,
//! `backend-data`, `public-ipv6`, `backend-v6-data`), and the CIDRs the
//! stand-in's node IPAM hands out for a net-conf.json.
//!
//! Pure conversions from Node objects; it makes no request and does not use
//! flanneld's own parser.

use super::kube::ANNOTATION_PREFIX;
use super::lease::LeaseFile;
use super::node::network_of;
use crate::kube_api::NodeFixture;
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// The Node a kubelet registers for node `name` at `ip` (and `ip6`): a
/// realistic Node (about 10 KiB) with `InternalIP` `ip` (and a second,
/// `ip6`), no podCIDR yet, and the condition `NetworkUnavailable=True` a
/// cloud's route controller leaves on a new node until the network is up.
pub fn kubelet_node(name: &str, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) -> Value {
    let mut f = NodeFixture::new(name, 0);
    f.internal_ip = ip;
    f.internal_ip6 = ip6;
    let mut node = f.build();
    let conds = node
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut);
    for c in conds.into_iter().flatten() {
        if c["type"] == "NetworkUnavailable" {
            c["status"] = "True".into();
            c["reason"] = "NoRouteCreated".into();
            c["message"] = "Node created without a route".into();
        }
    }
    node
}

/// `a.b.c.d/len` as (network address, prefix length).
pub(super) fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((u32::from(ip), len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The node's podCIDRs: `spec.podCIDRs`, else `spec.podCIDR`.
fn pod_cidrs(node: &Value) -> Vec<&str> {
    match node.pointer("/spec/podCIDRs").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).collect(),
        _ => node
            .pointer("/spec/podCIDR")
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
    }
}

/// The node's IPv4 podCIDR: the IPv4 entry of its podCIDRs, if it is a
/// network address.
fn pod_cidr_v4(node: &Value) -> Option<String> {
    pod_cidrs(node)
        .into_iter()
        .find(|c| parse_cidr(c).is_some())
        .filter(|c| network_of(c).as_deref() == Some(*c))
        .map(str::to_owned)
}

/// The node's IPv6 podCIDR, if it is a network address inside `network6`
/// (when known).
fn pod_cidr_v6(node: &Value, network6: Option<(u128, u8)>) -> Option<String> {
    let c = pod_cidrs(node)
        .into_iter()
        .find(|c| super::family::network_of6(c).as_deref() == Some(*c))?;
    let (ip, len) = parse_cidr6(c)?;
    if let Some((net, nlen)) = network6 {
        if len < nlen || ip & mask6(nlen) != net & mask6(nlen) {
            return None;
        }
    }
    Some(c.to_owned())
}

/// `fd00::/56` as (network address, prefix length).
fn parse_cidr6(s: &str) -> Option<(u128, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 128)?;
    Some((u128::from(ip), len))
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// The annotation `<prefix><short>` of `node`.
pub fn annotation<'a>(node: &'a Value, short: &str) -> Option<&'a str> {
    node.pointer("/metadata/annotations")?
        .get(format!("{ANNOTATION_PREFIX}{short}"))?
        .as_str()
}

/// The lease a Node stands for, as flanneld reads it: flannel manages it
/// (`kube-subnet-manager: "true"`); its IPv4 half when it names an IPv4
/// public IP and its IPv4 podCIDR lies inside `network` (when known); its
/// IPv6 half when it names a `public-ipv6` and its IPv6 podCIDR lies
/// inside `network6` (when known); at least one half. `path` is the
/// node's name.
pub fn lease_of_node(
    node: &Value,
    network: Option<(u32, u8)>,
    network6: Option<(u128, u8)>,
) -> Option<LeaseFile> {
    if annotation(node, "kube-subnet-manager") != Some("true") {
        return None;
    }
    let v4 = || -> Option<(String, Ipv4Addr)> {
        let public_ip: Ipv4Addr = annotation(node, "public-ip")?.parse().ok()?;
        let subnet = pod_cidr_v4(node)?;
        if let Some((net, len)) = network {
            let (ip, sub_len) = parse_cidr(&subnet)?;
            if sub_len < len || ip & mask(len) != net & mask(len) {
                return None;
            }
        }
        Some((subnet, public_ip))
    };
    let v6 = || -> Option<(String, Ipv6Addr)> {
        let public_ip: Ipv6Addr = annotation(node, "public-ipv6")?.parse().ok()?;
        Some((pod_cidr_v6(node, network6)?, public_ip))
    };
    let (v4, v6) = (v4(), v6());
    if v4.is_none() && v6.is_none() {
        return None;
    }
    let json_of = |key: &str| -> Value {
        annotation(node, key)
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null)
    };
    let data = json_of("backend-data");
    let data6 = json_of("backend-v6-data");
    let name = node.pointer("/metadata/name").and_then(Value::as_str)?;
    let (subnet, public_ip) = v4.map(|(s, ip)| (s, ip.to_string())).unwrap_or_default();
    Some(LeaseFile {
        path: PathBuf::from(name),
        subnet,
        subnet6: v6.as_ref().map(|(s, _)| s.clone()),
        public_ip,
        public_ipv6: v6.map(|(_, ip)| ip.to_string()),
        vtep_mac6: data6["VtepMAC"].as_str().map(str::to_lowercase),
        backend_type: annotation(node, "backend-type").unwrap_or("").to_owned(),
        vni: data["VNI"].as_u64(),
        vtep_mac: data["VtepMAC"].as_str().unwrap_or("").to_lowercase(),
        expires: None,
        raw: node.clone(),
    })
}

/// The CIDRs the node IPAM controller hands out for a net-conf.json
/// text, as kube-controller-manager's `--cluster-cidr` list and node mask
/// sizes: the IPv4 `Network` (unless `EnableIPv4` is false) and the
/// `IPv6Network` (when `EnableIPv6`, each node a /`IPv6SubnetLen`, 64 by
/// default).
pub(super) fn ipam_of_conf(net_conf: Option<&str>) -> (Vec<String>, u8, u8) {
    let v: Value = net_conf
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let (net, len) = network_of_conf(net_conf);
    let mut cidrs = Vec::new();
    if v["EnableIPv4"].as_bool() != Some(false) {
        cidrs.push(net);
    }
    let len6 = v["IPv6SubnetLen"]
        .as_u64()
        .and_then(|l| u8::try_from(l).ok())
        .unwrap_or(64);
    if v["EnableIPv6"].as_bool() == Some(true) {
        cidrs.extend(v["IPv6Network"].as_str().map(str::to_owned));
    }
    (cidrs, len, len6)
}

/// The `IPv6Network` of a net-conf.json text, when IPv6 is enabled.
pub(super) fn network6_of_conf(net_conf: Option<&str>) -> Option<(u128, u8)> {
    let v: Value = serde_json::from_str(net_conf?).ok()?;
    if v["EnableIPv6"].as_bool() != Some(true) {
        return None;
    }
    parse_cidr6(v["IPv6Network"].as_str()?)
}

/// The `Network` and `SubnetLen` of a net-conf.json text (flannel's
/// defaults: 10.244.0.0/16 if it names none, /24).
pub(super) fn network_of_conf(net_conf: Option<&str>) -> (String, u8) {
    let v: Value = net_conf
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let net = v["Network"]
        .as_str()
        .filter(|n| parse_cidr(n).is_some())
        .unwrap_or("10.244.0.0/16")
        .to_owned();
    let len = v["SubnetLen"]
        .as_u64()
        .and_then(|l| u8::try_from(l).ok())
        .unwrap_or(24);
    (net, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_become_leases_as_flanneld_reads_them() {
        let ip = Ipv4Addr::new(192, 168, 64, 10);
        let mut n = kubelet_node("node0", ip, None);
        let cond = n["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "NetworkUnavailable"))
            .cloned();
        assert_eq!(cond.map(|c| c["status"].clone()), Some(json!("True")));
        let net = parse_cidr("10.244.0.0/16");
        assert!(lease_of_node(&n, net, None).is_none(), "no annotations yet");
        n["spec"]["podCIDRs"] = json!(["10.244.3.0/24"]);
        n["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .extend(
                crate::kube_api::FlannelAnnotations {
                    public_ip: ip,
                    vtep_mac: "C6:D2:32:6F:8F:44".into(),
                    vni: 1,
                }
                .to_map(),
            );
        let l = lease_of_node(&n, net, None).expect("a lease");
        assert_eq!(
            (l.subnet.as_str(), l.public_ip.as_str(), l.vni),
            ("10.244.3.0/24", "192.168.64.10", Some(1))
        );
        assert_eq!(l.vtep_mac, "c6:d2:32:6f:8f:44");
        assert_eq!(l.path, PathBuf::from("node0"));
        assert!(!l.is_expired());
        n["spec"]["podCIDRs"] = json!(["10.99.3.0/24"]);
        assert!(
            lease_of_node(&n, net, None).is_none(),
            "outside the Network"
        );
        n["spec"]["podCIDRs"] = json!(["fd00::/64", "10.244.4.0/24"]);
        assert_eq!(
            lease_of_node(&n, net, None).map(|l| l.subnet).as_deref(),
            Some("10.244.4.0/24")
        );
        assert_eq!(
            network_of_conf(Some(r#"{"Network":"10.1.0.0/16","SubnetLen":26}"#)),
            ("10.1.0.0/16".to_owned(), 26)
        );
        assert_eq!(network_of_conf(None), ("10.244.0.0/16".to_owned(), 24));
    }

    #[test]
    fn dual_stack_and_ipv6_only_nodes_become_leases() {
        let ip6: Ipv6Addr = "fd00:192:168:64::a".parse().unwrap();
        let mut n = kubelet_node("node0", Ipv4Addr::new(192, 168, 64, 10), Some(ip6));
        assert_eq!(
            n["status"]["addresses"][1]["address"],
            json!("fd00:192:168:64::a")
        );
        let a = |k: &str| format!("{ANNOTATION_PREFIX}{k}");
        n["metadata"]["annotations"][a("kube-subnet-manager")] = json!("true");
        n["metadata"]["annotations"][a("public-ipv6")] = json!(ip6.to_string());
        n["metadata"]["annotations"][a("backend-v6-data")] =
            json!(r#"{"VNI":1,"VtepMAC":"0E:00:00:00:00:06"}"#);
        n["spec"]["podCIDRs"] = json!(["fd00:10:244:3::/64"]);
        let net6 = parse_cidr6("fd00:10:244::/56");
        let l = lease_of_node(&n, None, net6).expect("an IPv6-only lease");
        assert_eq!(
            (l.subnet.as_str(), l.subnet6.as_deref()),
            ("", Some("fd00:10:244:3::/64"))
        );
        assert_eq!(l.vtep_mac6.as_deref(), Some("0e:00:00:00:00:06"));
        n["spec"]["podCIDRs"] = json!(["fd00:99::/64"]);
        assert!(
            lease_of_node(&n, None, net6).is_none(),
            "outside IPv6Network"
        );
        let dual =
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#;
        let (cidrs, len, len6) = ipam_of_conf(Some(dual));
        assert_eq!(
            (cidrs.join(","), len, len6),
            ("10.244.0.0/16,fd00:10:244::/56".into(), 24, 64)
        );
        let only6 = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#;
        assert_eq!(
            ipam_of_conf(Some(only6)).0,
            vec!["fd00:10:244::/56".to_owned()]
        );
        assert_eq!(network6_of_conf(Some(only6)), net6);
    }
}
