//! Objects for tests: a realistic Node of about 10 KiB (labels, optional
//! flannel annotations, podCIDR(s), addresses, the five kubelet conditions,
//! a few dozen images with long digests, nodeInfo), cheap to make by the
//! thousand (the shared parts are built once and cloned), and a Pod.
//!
//! Objects only: it starts no server and makes no request.

use serde_json::{json, Map, Value};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

/// The annotations flannel's kube subnet manager puts on its Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlannelAnnotations {
    pub public_ip: Ipv4Addr,
    pub vtep_mac: String,
    pub vni: u32,
}

impl FlannelAnnotations {
    /// As a JSON map, with the keys upstream flannel uses.
    pub fn to_map(&self) -> Map<String, Value> {
        let backend = json!({"VNI": self.vni, "VtepMAC": self.vtep_mac}).to_string();
        let mut m = Map::new();
        m.insert(
            "flannel.alpha.coreos.com/backend-data".into(),
            backend.into(),
        );
        m.insert(
            "flannel.alpha.coreos.com/backend-type".into(),
            "vxlan".into(),
        );
        m.insert(
            "flannel.alpha.coreos.com/kube-subnet-manager".into(),
            "true".into(),
        );
        m.insert(
            "flannel.alpha.coreos.com/public-ip".into(),
            self.public_ip.to_string().into(),
        );
        m
    }
}

/// A Node to build: the name, its internal IP, and what is optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFixture {
    pub name: String,
    pub internal_ip: Ipv4Addr,
    /// A second `InternalIP`, IPv6 (a dual-stack kubelet's `--node-ip`).
    pub internal_ip6: Option<Ipv6Addr>,
    pub pod_cidr: Option<String>,
    pub flannel: Option<FlannelAnnotations>,
    /// Extra labels on top of the kubelet's usual ones.
    pub labels: Vec<(String, String)>,
}

impl NodeFixture {
    /// Node `name` whose internal IP is derived from `index`: 10.0.0.0
    /// plus `index + 1` (distinct for the first 2^23 indexes).
    pub fn new(name: &str, index: u32) -> NodeFixture {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + index % (1 << 23) + 1);
        NodeFixture {
            name: name.to_owned(),
            internal_ip: ip,
            internal_ip6: None,
            pod_cidr: None,
            flannel: None,
            labels: Vec::new(),
        }
    }

    pub fn pod_cidr(mut self, cidr: &str) -> NodeFixture {
        self.pod_cidr = Some(cidr.to_owned());
        self
    }

    /// Adds flannel's annotations (public IP = the internal IP, VNI 1, a
    /// MAC derived from the IP).
    pub fn flannel(mut self) -> NodeFixture {
        let o = self.internal_ip.octets();
        self.flannel = Some(FlannelAnnotations {
            public_ip: self.internal_ip,
            vtep_mac: format!("0e:6a:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
            vni: 1,
        });
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> NodeFixture {
        self.labels.push((k.to_owned(), v.to_owned()));
        self
    }

    /// The Node object (no resourceVersion, uid or creationTimestamp: the
    /// server sets those).
    pub fn build(&self) -> Value {
        let mut labels = json!({
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "n2-standard-8",
            "topology.kubernetes.io/region": "europe-west4",
            "topology.kubernetes.io/zone": "europe-west4-a",
        });
        for (k, v) in &self.labels {
            labels[k] = v.clone().into();
        }
        let mut annotations = json!({
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
        });
        if let (Some(f), Some(a)) = (&self.flannel, annotations.as_object_mut()) {
            a.extend(f.to_map());
        }
        let mut spec =
            json!({"providerID": format!("gce://flannel-rs/europe-west4-a/{}", self.name)});
        if let Some(c) = &self.pod_cidr {
            spec["podCIDR"] = c.clone().into();
            spec["podCIDRs"] = json!([c]);
        }
        let mut status = shared_status().clone();
        let mut addresses =
            vec![json!({"type": "InternalIP", "address": self.internal_ip.to_string()})];
        if let Some(ip6) = self.internal_ip6 {
            addresses.push(json!({"type": "InternalIP", "address": ip6.to_string()}));
        }
        addresses.push(json!({"type": "Hostname", "address": self.name}));
        status["addresses"] = Value::Array(addresses);
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": annotations},
            "spec": spec,
            "status": status,
        })
    }
}

/// A realistic Node `name` (about 10 KiB of JSON), internal IP from `index`.
pub fn realistic_node(name: &str, index: u32) -> Value {
    NodeFixture::new(name, index).build()
}

/// `count` realistic Nodes `<prefix><i>`, each with a podCIDR of its own
/// (10.128.0.0/24, 10.128.1.0/24, ...: distinct for up to 32768 nodes) and
/// flannel's annotations.
pub fn realistic_nodes(prefix: &str, count: u32) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let cidr = format!("10.{}.{}.0/24", 128 + (i >> 8) % 128, i % 256);
            NodeFixture::new(&format!("{prefix}{i}"), i)
                .pod_cidr(&cidr)
                .flannel()
                .build()
        })
        .collect()
}

/// Pod `ns/name` scheduled on `node_name` (running).
pub fn pod(ns: &str, name: &str, node_name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
        },
        "status": {"phase": "Running"},
    })
}

/// The status parts every Node shares (built once): conditions, images,
/// nodeInfo, capacity.
fn shared_status() -> &'static Value {
    static STATUS: OnceLock<Value> = OnceLock::new();
    STATUS.get_or_init(|| {
        let t = "2025-01-01T00:00:00Z";
        let cond = |ty: &str, st: &str, reason: &str, msg: &str| {
            json!({"type": ty, "status": st, "lastHeartbeatTime": t, "lastTransitionTime": t,
                   "reason": reason, "message": msg})
        };
        let images: Vec<Value> = (0..36u64)
            .map(|i| {
                let repo = format!("registry.example.com/platform/component-{i:02}");
                let digest: String = (0..4)
                    .map(|k| format!("{:016x}", splitmix(i * 4 + k)))
                    .collect();
                json!({
                    "names": [format!("{repo}@sha256:{digest}"), format!("{repo}:v1.{i}.0")],
                    "sizeBytes": 10_000_000 + splitmix(i) % 500_000_000,
                })
            })
            .collect();
        let resources = json!({"cpu": "8", "ephemeral-storage": "101430960Ki",
            "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": "32863416Ki", "pods": "110"});
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                cond("NetworkUnavailable", "False", "RouteCreated", "RouteController created a route"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": images,
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "5c2d7c59-5b8e-4f0e-9d7a-3f0c2f8f6b1a",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "6.1.0-28-cloud-amd64",
                "kubeProxyVersion": "v1.33.0",
                "kubeletVersion": "v1.33.0",
                "machineID": "0b3f4c1e9d2a4e6f8a7b5c3d1e0f2a4b",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": "0b3f4c1e-9d2a-4e6f-8a7b-5c3d1e0f2a4b",
            },
        })
    })
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
