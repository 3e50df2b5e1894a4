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
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::names::Names;
use crate::lease::{skip, Lease, LeaseAttrs, VxlanData, NO_IPV4};
use crate::netconf::NetConfig;

/// The overlay networks a node's podCIDRs must lie in: IPv4's unless
/// IPv6-only, and IPv6's when the configuration enables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Networks {
    pub v4: Option<Ipv4Network>,
    pub v6: Option<Ipv6Network>,
}

impl Networks {
    pub fn of(config: &NetConfig) -> Self {
        Self {
            v4: config.ipv4.map(|c| c.network),
            v6: config.ipv6.map(|c| c.network),
        }
    }
}

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
    pub pod_cidr: Result<Option<Ipv4Network>, NodeProblem>,
    /// The IPv6 entry of `podCIDRs` (`None` too when the list is malformed).
    pub pod_cidr_v6: Option<Ipv6Network>,
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
        let cidrs = pod_cidrs(&node.spec);
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            pod_cidr: cidrs.clone().map(|(v4, _)| v4),
            pod_cidr_v6: cidrs.ok().and_then(|(_, v6)| v6),
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
    pub fn lease(&self, networks: Networks) -> Result<Lease, NodeProblem> {
        if self.annotation("kube-subnet-manager") != Some("true") {
            return Err(NodeProblem::NotManaged);
        }
        let Some(v4) = networks.v4 else {
            let net6 = networks.v6.ok_or(NodeProblem::NoFamily)?;
            return self.lease_v6_only(net6);
        };
        let subnet = inside(self.pod_cidr.clone()?, v4)?;
        let ip = self.annotation("public-ip").unwrap_or_default();
        let public_ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| NodeProblem::PublicIp(ip.to_owned()))?;
        let data = self.annotation("backend-data").unwrap_or("null");
        let backend_data = json_annotation("backend-data", data)?;
        // The IPv6 half is checked apart: a bad one is dropped (and
        // logged), and the node stays an IPv4 peer.
        let what = format!("node {}'s IPv6 part", self.name);
        let public_ipv6 = drop_bad(&what, self.public_ipv6());
        let backend_v6_data = drop_bad(&what, self.backend_v6_data());
        let ipv6_subnet = match networks.v6 {
            None => None,
            Some(net) => drop_bad(&what, self.ipv6_subnet(net).map(Some)),
        };
        Ok(Lease {
            subnet,
            ipv6_subnet,
            attrs: LeaseAttrs {
                public_ip,
                public_ipv6,
                backend_type: self
                    .annotation("backend-type")
                    .unwrap_or_default()
                    .to_owned(),
                backend_data,
                backend_v6_data,
            },
            expiration: never(),
        })
    }

    /// The node as a peer's lease when the overlay is IPv6-only: an IPv6
    /// podCIDR inside `net6`, `public-ipv6` and `backend-v6-data` (flannel
    /// writes no `public-ip` nor `backend-data` then); named by
    /// [`NO_IPV4`] and its IPv6 subnet.
    fn lease_v6_only(&self, net6: Ipv6Network) -> Result<Lease, NodeProblem> {
        let ipv6_subnet = self.ipv6_subnet(net6)?;
        let public_ipv6 = self.public_ipv6()?.ok_or(NodeProblem::NoPublicIpv6)?;
        let backend_v6_data = self
            .backend_v6_data()?
            .ok_or(NodeProblem::NoBackendV6Data)?;
        Ok(Lease {
            subnet: NO_IPV4,
            ipv6_subnet: Some(ipv6_subnet),
            attrs: LeaseAttrs {
                public_ip: Ipv4Addr::UNSPECIFIED,
                public_ipv6: Some(public_ipv6),
                backend_type: self
                    .annotation("backend-type")
                    .unwrap_or_default()
                    .to_owned(),
                backend_data: serde_json::Value::Null,
                backend_v6_data: Some(backend_v6_data),
            },
            expiration: never(),
        })
    }

    /// The IPv6 podCIDR, checked to lie inside `network`.
    fn ipv6_subnet(&self, network: Ipv6Network) -> Result<Ipv6Network, NodeProblem> {
        match self.pod_cidr_v6 {
            None => Err(NodeProblem::NoIpv6PodCidr),
            Some(c) if network.contains(c.network()) && c.prefix() >= network.prefix() => Ok(c),
            Some(cidr) => Err(NodeProblem::Ipv6PodCidrOutside { cidr, network }),
        }
    }

    /// The `public-ipv6` annotation: a global unicast address, if any.
    pub fn public_ipv6(&self) -> Result<Option<Ipv6Addr>, NodeProblem> {
        let Some(text) = self.annotation("public-ipv6").filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let ip: Ipv6Addr = text
            .parse()
            .map_err(|_| NodeProblem::PublicIpv6(text.to_owned()))?;
        if !is_global_unicast(ip) {
            return Err(NodeProblem::PublicIpv6NotGlobal(ip));
        }
        Ok(Some(ip))
    }

    /// The `backend-v6-data` annotation: `{"VNI":…,"VtepMAC":…}` with a
    /// unicast MAC, if any.
    pub fn backend_v6_data(&self) -> Result<Option<serde_json::Value>, NodeProblem> {
        let Some(text) = self.annotation("backend-v6-data").filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let value = json_annotation("backend-v6-data", text)?;
        let data: VxlanData =
            serde_json::from_value(value.clone()).map_err(|e| NodeProblem::BackendV6DataShape {
                text: text.to_owned(),
                why: e.to_string(),
            })?;
        match crate::mac::parse(&data.vtep_mac) {
            Some(m) if m[0] & 1 == 0 && m != [0; 6] => Ok(Some(value)),
            _ => Err(NodeProblem::BackendV6DataMac(data.vtep_mac)),
        }
    }
}

/// The JSON value of annotation `annotation` (`text`).
fn json_annotation(annotation: &'static str, text: &str) -> Result<serde_json::Value, NodeProblem> {
    serde_json::from_str(text).map_err(|e| NodeProblem::NotJson {
        annotation,
        text: text.to_owned(),
        why: e.to_string(),
    })
}

/// A part that failed its check is left out, and logged.
fn drop_bad<T>(what: &str, r: Result<Option<T>, NodeProblem>) -> Option<T> {
    r.unwrap_or_else(|reason| {
        skip::skipped(what, &reason.to_string());
        None
    })
}

pub use crate::lease::v6::is_global_unicast;

/// Kubernetes owns the CIDR: a kube lease does not expire.
pub fn never() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX))
}

/// Why a node's IPv4 podCIDR cannot be its subnet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodCidrError {
    #[error("no IPv4 podCIDR")]
    Missing,
    #[error("podCIDR {cidr} is outside Network {network}")]
    Outside {
        cidr: Ipv4Network,
        network: Ipv4Network,
    },
}

/// The podCIDR, checked to lie inside `network`.
pub fn inside(
    cidr: Option<Ipv4Network>,
    network: Ipv4Network,
) -> Result<Ipv4Network, PodCidrError> {
    let cidr = cidr.ok_or(PodCidrError::Missing)?;
    if cidr.prefix() >= network.prefix() && network.contains(cidr.network()) {
        Ok(cidr)
    } else {
        Err(PodCidrError::Outside { cidr, network })
    }
}

/// The node's podCIDRs by family (`podCIDRs`, 1–2 entries in any order,
/// else `podCIDR`), each without host bits, at most one per family.
pub fn pod_cidrs(
    spec: &SlimSpec,
) -> Result<(Option<Ipv4Network>, Option<Ipv6Network>), NodeProblem> {
    let list: Vec<&str> = match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec.pod_cidr.iter().map(String::as_str).collect(),
    };
    if list.len() > 2 {
        let list = list.into_iter().map(str::to_owned).collect();
        return Err(NodeProblem::TooManyPodCidrs(list));
    }
    let (mut v4, mut v6) = (None, None);
    for text in list.into_iter().filter(|t| !t.is_empty()) {
        let net: IpNetwork = text.parse().map_err(|source| NodeProblem::PodCidrParse {
            text: text.to_owned(),
            source,
        })?;
        if net.ip() != net.network() {
            return Err(NodeProblem::HostBits(text.to_owned()));
        }
        let twice = match net {
            IpNetwork::V4(n) => v4.replace(n).is_some(),
            IpNetwork::V6(n) => v6.replace(n).is_some(),
        };
        if twice {
            return Err(NodeProblem::TwoOfOneFamily(text.to_owned()));
        }
    }
    Ok((v4, v6))
}

/// The IPv4 entry of the podCIDRs (flannel #2225: a dual-stack list with
/// an IPv4-only configuration takes the IPv4 entry, whatever the order).
#[cfg(test)]
pub fn pod_cidr_v4(spec: &SlimSpec) -> Result<Option<Ipv4Network>, NodeProblem> {
    pod_cidrs(spec).map(|(v4, _)| v4)
}

mod problem;
#[cfg(test)]
mod tests_v6;

pub use self::problem::NodeProblem;

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

    fn nets() -> Networks {
        Networks {
            v4: Some("10.244.0.0/16".parse().expect("net")),
            v6: None,
        }
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
        let lease = view.lease(nets()).expect("peer");
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
        assert!(pod_cidr_v4(&spec(json!({"podCIDRs": ["fd00::/64", "fd01::/64"]}))).is_err());
        assert!(pod_cidr_v4(&spec(json!({"podCIDRs": ["fd00::1/64"]}))).is_err());
        assert_eq!(
            pod_cidrs(&spec(
                json!({"podCIDRs": ["fd00:10:244:3::/64", "10.244.3.0/24"]})
            )),
            Ok((
                v4("10.244.3.0/24"),
                Some("fd00:10:244:3::/64".parse().expect("net"))
            ))
        );
    }

    #[test]
    fn what_is_not_a_peer_says_why() {
        let mut bare = upstream("n2", "10.244.3.0/24", "192.168.64.3");
        bare["metadata"]["annotations"] = json!({});
        assert!(node(bare)
            .lease(nets())
            .unwrap_err()
            .to_string()
            .contains("not managed"));
        let outside = node(upstream("n3", "10.99.0.0/24", "192.168.64.3"));
        let err = outside.lease(nets()).unwrap_err().to_string();
        assert!(
            err.contains("10.99.0.0/24") && err.contains("10.244.0.0/16"),
            "{err}"
        );
        let bad_ip = node(upstream("n4", "10.244.3.0/24", "not-an-ip"));
        let err = bad_ip.lease(nets()).unwrap_err().to_string();
        assert!(err.contains("public-ip"), "{err}");
        let mut no_cidr = upstream("n5", "", "192.168.64.3");
        no_cidr["spec"] = json!({});
        assert!(node(no_cidr)
            .lease(nets())
            .unwrap_err()
            .to_string()
            .contains("no IPv4 podCIDR"));
    }
}
