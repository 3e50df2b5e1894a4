//! The Kubernetes API lease store of a cluster: the `kube-api-standin`
//! process inside the underlay namespace (the API on 192.168.64.1:6443 for
//! the nodes' flanneld, the admin listener on :6444 for the harness; TLS
//! and a bearer token; the node IPAM controller handing out podCIDRs of
//! the Network as kube-controller-manager does), the Node objects the
//! harness registers as kubelets would, the leases read back from the
//! Nodes (a node's podCIDR and flannel's annotations), and the faults a
//! test injects. The kubeconfig flanneld reads is `<cluster dir>/kubeconfig`.
//!
//! The harness talks to the admin listener only: it answers while the
//! nodes' API is down, and its requests stay out of the request log, which
//! so holds exactly what the nodes asked.

use super::kube_client::{Answer, KubeClient};
use super::lease::LeaseFile;
use super::node::network_of;
use super::{workspace_binary, UNDERLAY_GATEWAY};
use crate::kube_api::{DownMode, NodeFixture, RequestRecord};
use crate::netns::NetNs;
use crate::proc::{ChildGuard, RecordedProcess};
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The port the nodes' flanneld reach the API on.
pub const KUBE_API_PORT: u16 = 6443;
/// The admin listener's port (the harness's requests and the faults).
pub const KUBE_ADMIN_PORT: u16 = 6444;
/// Where flannel's annotations live (flanneld's default prefix).
pub const ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com/";
/// How long the stand-in may take to serve (it makes its certificates).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The API URL flanneld is given (in the kubeconfig).
pub fn kube_api_url() -> String {
    format!("https://{UNDERLAY_GATEWAY}:{KUBE_API_PORT}")
}

fn admin_url() -> String {
    format!("https://{UNDERLAY_GATEWAY}:{KUBE_ADMIN_PORT}")
}

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
fn parse_cidr(s: &str) -> Option<(u32, u8)> {
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
    let (subnet, public_ip) = v4
        .map(|(s, ip)| (s, ip.to_string()))
        .unwrap_or_default();
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
fn ipam_of_conf(net_conf: Option<&str>) -> (Vec<String>, u8, u8) {
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
fn network6_of_conf(net_conf: Option<&str>) -> Option<(u128, u8)> {
    let v: Value = serde_json::from_str(net_conf?).ok()?;
    if v["EnableIPv6"].as_bool() != Some(true) {
        return None;
    }
    parse_cidr6(v["IPv6Network"].as_str()?)
}

/// The `Network` and `SubnetLen` of a net-conf.json text (flannel's
/// defaults: 10.244.0.0/16 if it names none, /24).
fn network_of_conf(net_conf: Option<&str>) -> (String, u8) {
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

/// A running stand-in: started by this process (stopped on drop) or
/// recorded by another run of the tool (left alone on drop).
pub struct KubeStandin {
    // First: the client's thread (in the underlay) ends before the rest.
    client: KubeClient,
    child: Option<ChildGuard>,
    recorded: Option<RecordedProcess>,
    /// `<cluster dir>/kube`: TLS material and the stand-in's log.
    dir: PathBuf,
    kubeconfig: PathBuf,
    network: Option<(u32, u8)>,
    network6: Option<(u128, u8)>,
}

impl KubeStandin {
    /// Starts `kube-api-standin` inside `underlay` with its files in
    /// `cluster_dir/kube` and the kubeconfig at `cluster_dir/kubeconfig`,
    /// the IPAM controller over the Network of `net_conf`, and waits until
    /// it serves. `detached`: in a session of its own.
    pub fn start(
        underlay: &NetNs,
        cluster_dir: &Path,
        net_conf: Option<&str>,
        detached: bool,
    ) -> KubeStandin {
        let dir = cluster_dir.join("kube");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let log_path = dir.join("standin.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
        let err = log.try_clone().expect("dup the stand-in's log fd");
        let kubeconfig = cluster_dir.join("kubeconfig");
        let (cidrs, node_len, node_len6) = ipam_of_conf(net_conf);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!("ft-{:x}-{:x}", std::process::id(), seed);
        let mut c = underlay.command(workspace_binary("kube-api-standin"));
        c.arg("--listen")
            .arg(format!("{UNDERLAY_GATEWAY}:{KUBE_API_PORT}"))
            .arg("--admin-listen")
            .arg(format!("{UNDERLAY_GATEWAY}:{KUBE_ADMIN_PORT}"))
            .arg("--tls-dir")
            .arg(dir.join("tls"))
            .args(["--cluster-cidr", &cidrs.join(",")])
            .args(["--node-cidr-mask", &node_len.to_string()])
            .args(["--node-cidr-mask-ipv6", &node_len6.to_string()])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            // Kept off the command line.
            .env("KUBE_API_STANDIN_TOKEN", &token)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        if detached {
            crate::proc::new_session(&mut c);
        }
        let mut child = ChildGuard::spawn(&mut c);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("admin on ") {
                break;
            }
            if let Some(st) = child.try_wait() {
                panic!("kube-api-standin exited at start ({st}); its log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "kube-api-standin did not serve within {START_TIMEOUT:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut s = KubeStandin::with_client(underlay, cluster_dir, net_conf);
        s.child = Some(child);
        s
    }

    fn with_client(underlay: &NetNs, cluster_dir: &Path, net_conf: Option<&str>) -> KubeStandin {
        let kubeconfig = cluster_dir.join("kubeconfig");
        let yaml = std::fs::read_to_string(&kubeconfig).unwrap_or_default();
        KubeStandin {
            client: KubeClient::start(underlay, yaml, &admin_url()),
            child: None,
            recorded: None,
            dir: cluster_dir.join("kube"),
            kubeconfig,
            network: parse_cidr(&network_of_conf(net_conf).0),
            network6: network6_of_conf(net_conf),
        }
    }

    /// A stand-in another process started (from its saved state).
    pub fn recorded(r: RecordedProcess, cluster_dir: &Path, underlay: &NetNs) -> KubeStandin {
        let conf = std::fs::read_to_string(cluster_dir.join("net-conf.json")).ok();
        let mut s = KubeStandin::with_client(underlay, cluster_dir, conf.as_deref());
        s.recorded = Some(r);
        s
    }

    /// Lets the stand-in outlive this handle; returns it as a recorded
    /// process (its command line names its TLS dir).
    pub fn detach(&mut self) -> Option<RecordedProcess> {
        if let Some(g) = self.child.take() {
            self.recorded = Some(RecordedProcess {
                pid: g.detach(),
                cmdline_contains: self.dir.join("tls").to_string_lossy().into_owned(),
            });
        }
        self.recorded.clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .map(ChildGuard::pid)
            .or(self.recorded.as_ref().map(|r| r.pid))
    }

    /// The kubeconfig flanneld reads (`--kubeconfig-file`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The stand-in's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("standin.log")).unwrap_or_default()
    }

    /// The harness's client (of the admin listener).
    pub fn client(&self) -> &KubeClient {
        &self.client
    }

    /// Every Node, or why not.
    pub fn try_nodes(&self) -> Result<Vec<Value>, String> {
        let list = self.client.get("/api/v1/nodes")?.json()?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    #[track_caller]
    pub fn nodes(&self) -> Vec<Value> {
        self.try_nodes()
            .unwrap_or_else(|e| panic!("list nodes: {e}"))
    }

    /// Node `name`, if it exists.
    #[track_caller]
    pub fn node(&self, name: &str) -> Option<Value> {
        let a = self
            .client
            .get(&format!("/api/v1/nodes/{name}"))
            .unwrap_or_else(|e| panic!("get node {name}: {e}"));
        match a.status {
            404 => None,
            _ => Some(a.json().unwrap_or_else(|e| panic!("get node {name}: {e}"))),
        }
    }

    /// Creates `node` (`POST /api/v1/nodes`); returns it as stored.
    #[track_caller]
    pub fn create_node(&self, node: &Value) -> Value {
        self.client
            .send_json("POST", "/api/v1/nodes", "application/json", node)
            .and_then(|a| a.json())
            .unwrap_or_else(|e| panic!("create node {}: {e}", node["metadata"]["name"]))
    }

    /// Registers node `name` at `ip` (and `ip6`) as its kubelet would
    /// ([`kubelet_node`]).
    pub fn register_node(&self, name: &str, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) -> Value {
        self.create_node(&kubelet_node(name, ip, ip6))
    }

    /// Deletes Node `name`; false if there was none.
    #[track_caller]
    pub fn delete_node(&self, name: &str) -> bool {
        let a = self
            .client
            .request("DELETE", &format!("/api/v1/nodes/{name}"), None)
            .unwrap_or_else(|e| panic!("delete node {name}: {e}"));
        match a.status {
            404 => false,
            _ if a.is_success() => true,
            s => panic!("delete node {name}: HTTP {s}: {}", a.text()),
        }
    }

    /// A JSON merge patch of Node `name` (metadata and spec).
    #[track_caller]
    pub fn patch_node(&self, name: &str, merge_patch: &Value) -> Value {
        let path = format!("/api/v1/nodes/{name}");
        self.client
            .send_json("PATCH", &path, "application/merge-patch+json", merge_patch)
            .and_then(|a| a.json())
            .unwrap_or_else(|e| panic!("patch node {name}: {e}"))
    }

    /// Every Node that is a lease (see [`lease_of_node`]), by subnet.
    pub fn leases(&self) -> Vec<LeaseFile> {
        let mut v: Vec<LeaseFile> = self
            .try_nodes()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| lease_of_node(n, self.network, self.network6))
            .collect();
        v.sort_by(|a, b| a.subnet.cmp(&b.subnet));
        v
    }

    #[track_caller]
    fn admin(&self, what: &str) -> Answer {
        let a = self
            .client
            .request("POST", &format!("/_standin/{what}"), None)
            .unwrap_or_else(|e| panic!("stand-in {what}: {e}"));
        assert!(
            a.is_success(),
            "stand-in {what}: HTTP {}: {}",
            a.status,
            a.text()
        );
        a
    }

    /// Cuts every open watch (the clients resume from their last version).
    pub fn drop_watches(&self) {
        self.admin("faults/drop-watches");
    }

    /// A compaction: resuming from any version handed out so far gets
    /// 410 Gone (open watches go on).
    pub fn expire_resource_versions(&self) {
        self.admin("faults/expire-resource-versions");
    }

    /// Takes the nodes' API down (`Some`) or brings it back (`None`).
    pub fn set_down(&self, mode: Option<DownMode>) {
        match mode {
            None => self.admin("faults/up"),
            Some(DownMode::CloseConnections) => self.admin("faults/down?mode=close"),
            Some(DownMode::Unavailable) => self.admin("faults/down?mode=unavailable"),
        };
    }

    /// Clears failures, delay and downtime.
    pub fn clear_faults(&self) {
        self.admin("faults/clear");
    }

    /// Pauses (or resumes) the node IPAM controller: new Nodes get no
    /// podCIDR meanwhile.
    pub fn pause_node_ipam(&self, paused: bool) {
        self.admin(if paused { "ipam/pause" } else { "ipam/resume" });
    }

    /// `resourceVersion`, `openWatches`, `requests`, `down`, `nodeIpamPaused`.
    #[track_caller]
    pub fn status(&self) -> Value {
        self.client
            .get("/_standin/status")
            .and_then(|a| a.json())
            .unwrap_or_else(|e| panic!("stand-in status: {e}"))
    }

    /// How many watches are open on the nodes' API.
    pub fn open_watches(&self) -> u64 {
        self.status()["openWatches"].as_u64().unwrap_or(0)
    }

    /// The requests the nodes made (the most recent 10 000), oldest first.
    #[track_caller]
    pub fn requests(&self) -> Vec<RequestRecord> {
        let v = self
            .client
            .get("/_standin/requests")
            .and_then(|a| a.json())
            .unwrap_or_else(|e| panic!("stand-in requests: {e}"));
        serde_json::from_value(v["items"].clone())
            .unwrap_or_else(|e| panic!("stand-in requests: {e}"))
    }

    pub fn clear_requests(&self) {
        self.admin("requests/clear");
    }
}

impl super::Cluster {
    /// The cluster's Kubernetes API stand-in (panics on another store).
    #[track_caller]
    pub fn kube(&self) -> &KubeStandin {
        match self.store() {
            super::Store::Kube(k) => k,
            other => panic!("the cluster's store is {:?}, not kube", other.kind()),
        }
    }

    /// Node `i`'s Node object (panics when there is none).
    #[track_caller]
    pub fn kube_node(&self, i: usize) -> Value {
        let name = &self.node(i).name;
        self.kube()
            .node(name)
            .unwrap_or_else(|| panic!("no Node {name}"))
    }
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
        assert!(lease_of_node(&n, net, None).is_none(), "outside the Network");
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
        assert_eq!(n["status"]["addresses"][1]["address"], json!("fd00:192:168:64::a"));
        let a = |k: &str| format!("{ANNOTATION_PREFIX}{k}");
        n["metadata"]["annotations"][a("kube-subnet-manager")] = json!("true");
        n["metadata"]["annotations"][a("public-ipv6")] = json!(ip6.to_string());
        n["metadata"]["annotations"][a("backend-v6-data")] =
            json!(r#"{"VNI":1,"VtepMAC":"0E:00:00:00:00:06"}"#);
        n["spec"]["podCIDRs"] = json!(["fd00:10:244:3::/64"]);
        let net6 = parse_cidr6("fd00:10:244::/56");
        let l = lease_of_node(&n, None, net6).expect("an IPv6-only lease");
        assert_eq!((l.subnet.as_str(), l.subnet6.as_deref()), ("", Some("fd00:10:244:3::/64")));
        assert_eq!(l.vtep_mac6.as_deref(), Some("0e:00:00:00:00:06"));
        n["spec"]["podCIDRs"] = json!(["fd00:99::/64"]);
        assert!(lease_of_node(&n, None, net6).is_none(), "outside IPv6Network");
        let dual = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#;
        let (cidrs, len, len6) = ipam_of_conf(Some(dual));
        assert_eq!((cidrs.join(","), len, len6), ("10.244.0.0/16,fd00:10:244::/56".into(), 24, 64));
        let only6 = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#;
        assert_eq!(ipam_of_conf(Some(only6)).0, vec!["fd00:10:244::/56".to_owned()]);
        assert_eq!(network6_of_conf(Some(only6)), net6);
    }
}
