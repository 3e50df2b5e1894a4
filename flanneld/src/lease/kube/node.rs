//! The part of a Node object flanneld reads, and how a Node becomes a
//! lease.
//!
//! `SlimNode` is the type the Kubernetes client deserializes Node objects
//! into: metadata (name, resourceVersion, annotations) and
//! `spec.podCIDR(s)`. Everything else a Node carries (its image list, its
//! conditions, managed fields; about 10 KiB a node) is skipped by the
//! parser without being stored, and a `SlimNode` is turned into a
//! `NodeView` (name, IPv4 podCIDR, the flannel annotations) at once. This
//! is why flanneld's memory does not grow with the size of Node objects, as
//! flannel's full-object informer cache does.
//!
//! Owns no I/O: pure conversions, unit-tested here.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use ipnetwork::{IpNetwork, Ipv4Network};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::names::Names;
use crate::lease::{Lease, LeaseAttrs};

/// A Node as flanneld reads it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimNode {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SlimSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimSpec {
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Option<Vec<String>>,
}

/// Only name, resourceVersion and annotations of `metadata`.
fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        name: Option<String>,
        resource_version: Option<String>,
        #[serde(default)]
        annotations: Option<BTreeMap<String, String>>,
    }
    let w = Wire::deserialize(d)?;
    Ok(ObjectMeta {
        name: w.name,
        resource_version: w.resource_version,
        annotations: w.annotations,
        ..ObjectMeta::default()
    })
}

impl kube::Resource for SlimNode {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Node")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("nodes")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What flanneld keeps of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// The IPv4 podCIDR, or why there is none usable.
    pub pod_cidr: Result<Option<Ipv4Network>, String>,
    /// The annotations under our prefix, without it (`backend-data`, ...).
    pub annotations: BTreeMap<String, String>,
}

impl NodeView {
    pub fn of(node: &SlimNode, names: &Names) -> NodeView {
        let prefix = names.prefix();
        let annotations = node
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.clone())))
            .collect();
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            pod_cidr: pod_cidr_v4(&node.spec),
            annotations,
        }
    }

    /// The annotation `<prefix><short>`.
    pub fn annotation(&self, short: &str) -> Option<&str> {
        self.annotations.get(short).map(String::as_str)
    }

    /// The node as a peer's lease, or why it is not one: it must be
    /// managed by a flannel (`kube-subnet-manager: "true"`), name a public
    /// IPv4 address, and have an IPv4 podCIDR inside `network`. The backend
    /// (type, VNI, VtepMAC) and the address's kind are the datapath's to
    /// judge, as for every store.
    pub fn lease(&self, network: Ipv4Network) -> Result<Lease, String> {
        if self.annotation("kube-subnet-manager") != Some("true") {
            return Err("not managed by flannel (no kube-subnet-manager: \"true\")".into());
        }
        let subnet = inside(self.pod_cidr.clone()?, network)?;
        let ip = self.annotation("public-ip").unwrap_or_default();
        let public_ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("public-ip {ip:?} is not an IPv4 address"))?;
        let data = self.annotation("backend-data").unwrap_or("null");
        let backend_data: serde_json::Value = serde_json::from_str(data)
            .map_err(|e| format!("backend-data {data:?} is not JSON: {e}"))?;
        Ok(Lease {
            subnet,
            attrs: LeaseAttrs {
                public_ip,
                public_ipv6: None,
                backend_type: self
                    .annotation("backend-type")
                    .unwrap_or_default()
                    .to_owned(),
                backend_data,
            },
            expiration: never(),
        })
    }
}

/// Kubernetes owns the CIDR: a kube lease does not expire.
pub fn never() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX))
}

/// The podCIDR, checked to lie inside `network`.
pub fn inside(cidr: Option<Ipv4Network>, network: Ipv4Network) -> Result<Ipv4Network, String> {
    let cidr = cidr.ok_or("no IPv4 podCIDR")?;
    if cidr.prefix() >= network.prefix() && network.contains(cidr.network()) {
        Ok(cidr)
    } else {
        Err(format!("podCIDR {cidr} is outside Network {network}"))
    }
}

/// The IPv4 entry of `spec.podCIDRs` (one per family, at most two), else
/// `spec.podCIDR`. `Ok(None)` while none is assigned (or the node is
/// IPv6-only).
pub fn pod_cidr_v4(spec: &SlimSpec) -> Result<Option<Ipv4Network>, String> {
    let list: Vec<&str> = match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec.pod_cidr.iter().map(String::as_str).collect(),
    };
    if list.len() > 2 {
        return Err(format!("podCIDRs {list:?}: more than one per family"));
    }
    let mut v4 = None;
    for text in list.into_iter().filter(|t| !t.is_empty()) {
        let net: IpNetwork = text
            .parse()
            .map_err(|e| format!("podCIDR {text:?} does not parse: {e}"))?;
        if let IpNetwork::V4(net) = net {
            if net.ip() != net.network() {
                return Err(format!("podCIDR {text:?} has host bits set"));
            }
            if v4.replace(net).is_some() {
                return Err(format!("podCIDRs name two IPv4 ranges ({text:?})"));
            }
        }
    }
    Ok(v4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(value: serde_json::Value) -> NodeView {
        let slim: SlimNode = serde_json::from_value(value).expect("a node");
        NodeView::of(
            &slim,
            &Names::new("flannel.alpha.coreos.com").expect("names"),
        )
    }

    fn network() -> Ipv4Network {
        "10.244.0.0/16".parse().expect("net")
    }

    /// A node exactly as upstream flannel annotates it.
    fn upstream(name: &str, cidr: &str, ip: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name, "resourceVersion": "42", "uid": "abc",
                "labels": {"kubernetes.io/os": "linux"},
                "annotations": {
                    "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"c6:d2:32:6f:8f:44\"}",
                    "flannel.alpha.coreos.com/backend-type": "vxlan",
                    "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                    "flannel.alpha.coreos.com/public-ip": ip,
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"images": [{"names": ["x"], "sizeBytes": 1}], "conditions": []},
        })
    }

    #[test]
    fn an_upstream_node_is_a_peer() {
        let view = node(upstream("n1", "10.244.3.0/24", "192.168.64.3"));
        assert_eq!(view.name, "n1");
        assert_eq!(
            view.annotations.len(),
            4,
            "only ours: {:?}",
            view.annotations
        );
        let lease = view.lease(network()).expect("peer");
        assert_eq!(
            lease.subnet,
            "10.244.3.0/24".parse::<Ipv4Network>().expect("net")
        );
        assert_eq!(lease.attrs.public_ip, Ipv4Addr::new(192, 168, 64, 3));
        let data = lease.attrs.vxlan_data().expect("vxlan");
        assert_eq!((data.vni, data.vtep_mac.as_str()), (1, "c6:d2:32:6f:8f:44"));
    }

    #[test]
    fn pod_cidrs_alone_and_dual_stack_work() {
        let spec = |v: serde_json::Value| -> SlimSpec { serde_json::from_value(v).expect("spec") };
        let v4 = |s: &str| Some(s.parse::<Ipv4Network>().expect("net"));
        assert_eq!(
            pod_cidr_v4(&spec(json!({"podCIDRs": ["10.244.1.0/24"]}))),
            Ok(v4("10.244.1.0/24"))
        );
        assert_eq!(
            pod_cidr_v4(&spec(
                json!({"podCIDR": "fd00::/64", "podCIDRs": ["fd00::/64", "10.244.2.0/24"]})
            )),
            Ok(v4("10.244.2.0/24"))
        );
        assert_eq!(
            pod_cidr_v4(&spec(json!({"podCIDR": "10.244.4.0/24"}))),
            Ok(v4("10.244.4.0/24"))
        );
        assert_eq!(pod_cidr_v4(&spec(json!({}))), Ok(None));
        assert_eq!(
            pod_cidr_v4(&spec(json!({"podCIDRs": ["fd00::/64"]}))),
            Ok(None)
        );
        assert!(pod_cidr_v4(&spec(json!({"podCIDR": "banana"}))).is_err());
        assert!(pod_cidr_v4(&spec(json!({"podCIDR": "10.244.1.1/24"}))).is_err());
        assert!(pod_cidr_v4(&spec(json!({"podCIDRs": ["10.1.0.0/24", "10.2.0.0/24"]}))).is_err());
    }

    #[test]
    fn what_is_not_a_peer_says_why() {
        let mut bare = upstream("n2", "10.244.3.0/24", "192.168.64.3");
        bare["metadata"]["annotations"] = json!({});
        assert!(node(bare)
            .lease(network())
            .unwrap_err()
            .contains("not managed"));
        let outside = node(upstream("n3", "10.99.0.0/24", "192.168.64.3"));
        let err = outside.lease(network()).unwrap_err();
        assert!(
            err.contains("10.99.0.0/24") && err.contains("10.244.0.0/16"),
            "{err}"
        );
        let bad_ip = node(upstream("n4", "10.244.3.0/24", "not-an-ip"));
        assert!(bad_ip.lease(network()).unwrap_err().contains("public-ip"));
        let mut no_cidr = upstream("n5", "", "192.168.64.3");
        no_cidr["spec"] = json!({});
        assert!(node(no_cidr)
            .lease(network())
            .unwrap_err()
            .contains("no IPv4 podCIDR"));
    }
}
