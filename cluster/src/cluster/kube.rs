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
//!
//! It starts and speaks to the stand-in only; the stand-in is the harness's,
//! not the product, and flanneld reaches it only over HTTPS as it would a
//! real API server.

use super::kube_client::{Answer, KubeClient};
pub use super::kube_lease::{annotation, kubelet_node, lease_of_node};
use super::kube_lease::{ipam_of_conf, network6_of_conf, network_of_conf, parse_cidr};
use super::lease::LeaseFile;
use super::{workspace_binary, UNDERLAY_GATEWAY};
use crate::kube_api::{DownMode, RequestRecord};
use crate::netns::NetNs;
use crate::proc::{ChildGuard, RecordedProcess, ServerProcess};
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

/// A running stand-in: started by this process (stopped on drop) or
/// recorded by another run of the tool (left alone on drop).
pub struct KubeStandin {
    // First: the client's thread (in the underlay) ends before the rest.
    client: KubeClient,
    server: ServerProcess,
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
        s.server.child = Some(child);
        s
    }

    fn with_client(underlay: &NetNs, cluster_dir: &Path, net_conf: Option<&str>) -> KubeStandin {
        let kubeconfig = cluster_dir.join("kubeconfig");
        let yaml = std::fs::read_to_string(&kubeconfig).unwrap_or_default();
        KubeStandin {
            client: KubeClient::start(underlay, yaml, &admin_url()),
            server: ServerProcess::default(),
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
        s.server.recorded = Some(r);
        s
    }

    /// Lets the stand-in outlive this handle; returns it as a recorded
    /// process (its command line names its TLS dir).
    pub fn detach(&mut self) -> Option<RecordedProcess> {
        self.server.detach(&self.dir.join("tls"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
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

impl super::Cluster {
    /// An in-process Kubernetes API stand-in (TLS) listening in the
    /// underlay at `UNDERLAY_GATEWAY:KUBE_API_PORT`, and the kubeconfig for
    /// it, written into the cluster's directory. For the benchmarks, which
    /// feed the API directly instead of through the stand-in process.
    pub fn kube_api_in_process(&self) -> (crate::kube_api::KubeApiServer, PathBuf) {
        use crate::kube_api::{KubeApiOptions, KubeApiServer};
        let api = self
            .underlay()
            .run(|| {
                let addr = format!("{UNDERLAY_GATEWAY}:{KUBE_API_PORT}");
                let addr = addr.parse().expect("the underlay gateway is an address");
                KubeApiServer::start_with(KubeApiOptions::new().listen(addr).tls())
            })
            .unwrap_or_else(|e| panic!("start the API stand-in: {e}"));
        let kubeconfig = self.dir().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)
            .unwrap_or_else(|e| panic!("write {}: {e}", kubeconfig.display()));
        (api, kubeconfig)
    }
}
