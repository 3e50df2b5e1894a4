//! A cluster that outlives the process that built it: [`Cluster::persist`]
//! leaves its daemons, namespaces and directory in place and returns a
//! [`ClusterState`] (saved as JSON); [`Cluster::attach`] makes a handle on it
//! again in another process (one that looks, never destroys), and
//! [`ClusterState::destroy`] removes exactly what the state records.

use super::family::IpFamily;
use super::store::{EtcdServer, KubeStandin, Store, StoreKind};
use super::{Cluster, ClusterBuilder, ClusterPod, Node};
use crate::cni::Pod;
use crate::netns::NetNs;
use crate::proc::RecordedProcess;
use crate::tempdir::TempDir;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a persisted cluster is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    /// Every namespace of the cluster is named `<prefix>...`.
    pub prefix: String,
    /// Holds this state, the leases, net-conf.json and per-node files.
    pub dir: PathBuf,
    pub store: String,
    /// The overlay's families (`ipv4`, `ipv6`, `dual`).
    #[serde(default)]
    pub family: Option<String>,
    pub etcd: Option<RecordedProcess>,
    /// The Kubernetes API stand-in (`--store kube`).
    #[serde(default)]
    pub kube: Option<RecordedProcess>,
    pub underlay: String,
    pub extra_netns: Vec<String>,
    pub flanneld: PathBuf,
    pub flannel: PathBuf,
    pub lease_ttl: u64,
    pub resync_interval: u64,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    pub dir: PathBuf,
    pub flanneld: Option<RecordedProcess>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    /// e.g. "node0-pod1"
    pub name: String,
    pub node: usize,
    pub netns: String,
    pub container_id: String,
    pub ifname: String,
    pub ip: IpAddr,
    /// Every address (both families on a dual-stack pod).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// The CNI ADD result.
    pub result: Value,
}

impl ClusterState {
    /// Writes the state as JSON, atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
    }

    pub fn load(path: &Path) -> Result<ClusterState, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn store_kind(&self) -> StoreKind {
        StoreKind::parse(&self.store).unwrap_or_default()
    }

    pub fn ip_family(&self) -> IpFamily {
        self.family
            .as_deref()
            .and_then(IpFamily::parse)
            .unwrap_or_default()
    }

    /// Stops the recorded daemons (by PID, after checking each one's command
    /// line), deletes the recorded namespaces and any other `<prefix>*` one,
    /// and removes the directory. Idempotent; returns what could not be done.
    pub fn destroy(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let grace = Duration::from_secs(5);
        for n in &self.nodes {
            if let Some(p) = &n.flanneld {
                if let Err(e) = p.stop(grace) {
                    errs.push(format!("{}'s flanneld: {e}", n.name));
                }
            }
        }
        if let Some(p) = &self.etcd {
            if let Err(e) = p.stop(grace) {
                errs.push(format!("etcd: {e}"));
            }
        }
        if let Some(p) = &self.kube {
            if let Err(e) = p.stop(grace) {
                errs.push(format!("kube-api-standin: {e}"));
            }
        }
        let mut names: Vec<&str> = self.pods.iter().map(|p| p.netns.as_str()).collect();
        names.extend(self.nodes.iter().map(|n| n.netns.as_str()));
        names.extend(self.extra_netns.iter().map(String::as_str));
        names.push(&self.underlay);
        let mut all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        // Also what an interrupted `up` made before it could record it.
        all.extend(crate::netns::namespaces_with_prefix(&self.prefix));
        for name in all {
            if let Err(e) = crate::netns::delete_by_name(&name) {
                errs.push(e);
            }
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                errs.push(format!("remove {}: {e}", self.dir.display()));
            }
        }
        errs
    }
}

impl Cluster {
    /// Leaves the cluster running past this handle (and this process): the
    /// daemons keep running, namespaces and directory stay. Returns what
    /// [`ClusterState::destroy`] needs to remove it all. Daemons must have
    /// been started `detached` to survive the process's session.
    pub fn persist(mut self, name: &str, pods: Vec<ClusterPod>) -> ClusterState {
        let prefix = self.opts.prefix.clone().unwrap_or_default();
        let nodes = self
            .nodes
            .iter_mut()
            .map(|n| {
                let flanneld = n.detach_daemon();
                n.ns.disarm();
                NodeState {
                    name: n.name.clone(),
                    netns: n.ns.name().to_owned(),
                    ip: n.ip,
                    ip6: n.ip6,
                    dir: n.dir.clone(),
                    flanneld,
                }
            })
            .collect();
        let pods = pods
            .into_iter()
            .map(|mut p| {
                p.pod.ns.disarm();
                let netns = p.pod.ns.name().to_owned();
                PodState {
                    name: netns.strip_prefix(&prefix).unwrap_or(&netns).to_owned(),
                    node: p.node,
                    netns,
                    container_id: p.pod.cid.clone(),
                    ifname: p.pod.ifname.clone(),
                    ip: p.ip,
                    ips: p.ips.clone(),
                    result: p.result.clone(),
                }
            })
            .collect();
        let (etcd, kube) = match &mut self.store {
            Store::Etcd(e) => (e.detach(), None),
            Store::Kube(k) => (None, k.detach()),
            Store::File(_) => (None, None),
        };
        for ns in &mut self.extra {
            ns.disarm();
        }
        self.underlay.disarm();
        self.dir.disarm();
        ClusterState {
            name: name.to_owned(),
            prefix,
            dir: self.dir.path().to_owned(),
            store: self.store.kind().as_str().into(),
            family: Some(self.opts.family.as_str().into()),
            etcd,
            kube,
            underlay: self.underlay.name().to_owned(),
            extra_netns: self.extra.iter().map(|n| n.name().to_owned()).collect(),
            flanneld: self.flanneld.clone(),
            flannel: self.flannel.clone(),
            lease_ttl: self.opts.lease_ttl,
            resync_interval: self.opts.resync_interval,
            nodes,
            pods,
        }
    }

    /// A handle on a persisted cluster, and its pods. Dropping them leaves
    /// everything in place.
    pub fn attach(st: &ClusterState) -> (Cluster, Vec<ClusterPod>) {
        let mut opts = ClusterBuilder::default()
            .name_prefix(&st.prefix)
            .dir(&st.dir)
            .detached(true)
            .store(st.store_kind())
            .ip_family(st.ip_family())
            .lease_ttl(st.lease_ttl)
            .resync_interval(st.resync_interval);
        opts.nodes = st.nodes.len();
        let nodes = st
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut node = Node::new(
                    n.name.clone(),
                    NetNs::existing(&n.netns),
                    n.ip,
                    n.dir.clone(),
                );
                node.detached = true;
                node.ip6 = n.ip6;
                node.set_recorded(n.flanneld.clone());
                node.set_pods_made(st.pods.iter().filter(|p| p.node == i).count() as u32);
                node
            })
            .collect();
        let underlay = NetNs::existing(&st.underlay);
        let store = match (st.store_kind(), &st.etcd, &st.kube) {
            (StoreKind::Etcd, Some(r), _) => Store::Etcd(EtcdServer::recorded(r.clone(), &st.dir)),
            (StoreKind::Kube, _, Some(r)) => {
                Store::Kube(KubeStandin::recorded(r.clone(), &st.dir, &underlay))
            }
            _ => Store::File(st.dir.join("leases")),
        };
        let c = Cluster {
            nodes,
            extra: st.extra_netns.iter().map(|n| NetNs::existing(n)).collect(),
            store,
            underlay,
            flanneld: st.flanneld.clone(),
            flannel: st.flannel.clone(),
            opts,
            dir: TempDir::existing(&st.dir),
        };
        let pods = st
            .pods
            .iter()
            .map(|p| ClusterPod {
                node: p.node,
                ip: p.ip,
                ips: if p.ips.is_empty() {
                    vec![p.ip]
                } else {
                    p.ips.clone()
                },
                result: p.result.clone(),
                pod: Pod {
                    ns: NetNs::existing(&p.netns),
                    cid: p.container_id.clone(),
                    ifname: p.ifname.clone(),
                },
            })
            .collect();
        (c, pods)
    }
}
