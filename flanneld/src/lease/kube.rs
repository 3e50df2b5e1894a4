//! The Kubernetes API lease store (`--kube-subnet-mgr`), as
//! `kube-flannel.yml` runs flanneld.
//!
//! Kubernetes owns the subnets: a node's is its `spec.podCIDR(s)`, handed
//! out by kube-controller-manager (`--allocate-node-cidrs`). flanneld waits
//! for it (flannel exits and crash-loops instead), publishes how to reach
//! the node as flannel's annotations on the Node object, and watches every
//! Node for its peers:
//!
//! - names: `names.rs` (`--kube-annotation-prefix`, flannel's rule);
//! - what is read of a Node and how it becomes a lease: `node.rs`;
//! - the watch: `watch.rs`.
//!
//! Writes are strategic-merge patches of `nodes/<name>/status`, so RBAC
//! `nodes/status patch` is enough; the annotations are written only when
//! they differ from what the node has, and `NetworkUnavailable=False`
//! (reason `FlannelIsUp`) once the datapath is up, unless
//! `--set-node-network-unavailable=false`. Renew and release do nothing,
//! and a lease never expires.
//!
//! Owns the store's API requests; how a Node becomes a lease is `node`'s,
//! annotation names are `names`', the watch task is `watch`'s. It never
//! touches the kernel.

mod error;
pub mod names;
mod node;
mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

pub use self::error::KubeError;
use self::names::Names;
use self::node::{inside, never, Networks, NodeView, SlimNode};
use super::backoff::Backoff;
use super::{Lease, LeaseAttrs, LeaseError, LeaseStore, LeaseWatch, NodeHints, NO_IPV4};
use crate::mac;
use crate::netconf::NetConfig;

/// How often a node without a podCIDR says so.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(30);
/// How often a node without a podCIDR is looked at again.
const WAITING_POLL: Duration = Duration::from_secs(1);
/// How long a write (annotations, condition) is retried.
const PATCH_RETRY_FOR: Duration = Duration::from_secs(30);

/// Where the API is and who this node is (flannel's `--kube-*` flags and
/// the downward-API environment of `kube-flannel.yml`).
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// `--kube-api-url`.
    pub api_url: Option<String>,
    /// `--kubeconfig-file`.
    pub kubeconfig: Option<PathBuf>,
    /// `--kube-annotation-prefix`.
    pub annotation_prefix: String,
    /// `--set-node-network-unavailable`.
    pub set_network_unavailable: bool,
    /// `--net-config-path`.
    pub net_config_path: PathBuf,
    /// `NODE_NAME`; else the node of the pod `POD_NAMESPACE/POD_NAME`.
    pub node_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

pub struct KubeStore {
    nodes: Api<SlimNode>,
    /// The client's settings, for the watch's own client on its thread.
    config: Config,
    names: Names,
    node: String,
    net_config_path: PathBuf,
    set_network_unavailable: bool,
    reachable: Arc<AtomicBool>,
}

impl KubeStore {
    /// Builds the client (kubeconfig, else `--kube-api-url`, else the
    /// in-cluster service account) and finds out this node's name.
    pub async fn connect(cfg: KubeConfig) -> Result<KubeStore, LeaseError> {
        let names = Names::new(&cfg.annotation_prefix).map_err(KubeError::from)?;
        let config = client_config(&cfg).await?;
        let client =
            Client::try_from(config.clone()).map_err(|source| KubeError::Client { source })?;
        let node = match cfg.node_name.filter(|n| !n.is_empty()) {
            Some(name) => name,
            None => node_of_pod(&client, cfg.pod_namespace, cfg.pod_name).await?,
        };
        tracing::info!(node = %node, prefix = %names.prefix(), "Kubernetes API lease store");
        Ok(KubeStore {
            nodes: Api::all(client),
            config,
            names,
            node,
            net_config_path: cfg.net_config_path,
            set_network_unavailable: cfg.set_network_unavailable,
            reachable: Arc::new(AtomicBool::new(true)),
        })
    }

    /// This node's Node object, waiting (with back-off) while the API does
    /// not answer or the node is not registered yet. A refusal (401, 403)
    /// is an error that says which permission is missing.
    async fn own_node(&self) -> Result<NodeView, LeaseError> {
        let mut backoff = Backoff::new("the Kubernetes API", format!("get node {}", self.node));
        loop {
            match self.nodes.get_opt(&self.node).await {
                Ok(Some(node)) => {
                    self.answered(&mut backoff);
                    return Ok(NodeView::of(&node, &self.names));
                }
                Ok(None) => {
                    self.answered(&mut backoff);
                    backoff
                        .failed("not found", "no such node yet (is the kubelet registered?)")
                        .await;
                }
                Err(e) => self.retry_or_fail(&mut backoff, e, "get").await?,
            }
        }
    }

    /// A strategic-merge patch of `nodes/<name>/status`, retried for a
    /// while when the API does not answer.
    async fn patch_status(
        &self,
        patch: serde_json::Value,
        what: &'static str,
    ) -> Result<(), LeaseError> {
        let mut backoff = Backoff::new(
            "the Kubernetes API",
            format!("patch node {} ({what})", self.node),
        );
        let until = Instant::now() + PATCH_RETRY_FOR;
        let params = PatchParams::default();
        loop {
            match self
                .nodes
                .patch_status(&self.node, &params, &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    self.answered(&mut backoff);
                    return Ok(());
                }
                Err(e) if Instant::now() < until => {
                    self.retry_or_fail(&mut backoff, e, "patch").await?
                }
                Err(source) => {
                    let node = self.node.clone();
                    return Err(KubeError::PatchStatus { node, what, source }.into());
                }
            }
        }
    }

    /// Writes flannel's annotations for `attrs` where the node's differ.
    async fn write_annotations(
        &self,
        view: &NodeView,
        attrs: &LeaseAttrs,
    ) -> Result<(), LeaseError> {
        let mut wanted = vec![
            ("backend-type", attrs.backend_type.clone()),
            ("kube-subnet-manager", "true".to_owned()),
        ];
        // The IPv4 half, unless IPv6-only (flannel then writes neither
        // backend-data nor public-ip).
        let v6_only = attrs.backend_data.is_null() && attrs.vxlan_v6_data().is_some();
        if !v6_only {
            let data = attrs.vxlan_data().ok_or(KubeError::NotVxlan)?;
            let data = serde_json::to_string(&data).map_err(|source| {
                let annotation = "backend-data";
                KubeError::EncodeAnnotation { annotation, source }
            })?;
            wanted.push(("backend-data", data));
            wanted.push(("public-ip", attrs.public_ip.to_string()));
        }
        // The IPv6 half, when this node has one (as flannel: both or none).
        if let (Some(ip), Some(data)) = (attrs.public_ipv6, attrs.vxlan_v6_data()) {
            let data = serde_json::to_string(&data).map_err(|source| {
                let annotation = "backend-v6-data";
                KubeError::EncodeAnnotation { annotation, source }
            })?;
            wanted.push(("backend-v6-data", data));
            wanted.push(("public-ipv6", ip.to_string()));
        }
        let changed: serde_json::Map<String, serde_json::Value> = wanted
            .into_iter()
            .filter(|(short, value)| view.annotation(short) != Some(value.as_str()))
            .map(|(short, value)| (format!("{}{short}", self.names.prefix()), value.into()))
            .collect();
        if changed.is_empty() {
            tracing::info!(node = %self.node, "node annotations already up to date");
            return Ok(());
        }
        let keys: Vec<&String> = changed.keys().collect();
        tracing::info!(node = %self.node, "writing annotations {keys:?}");
        let patch = json!({ "metadata": { "annotations": changed } });
        self.patch_status(patch, "annotations").await
    }

    fn answered(&self, backoff: &mut Backoff) {
        self.reachable.store(true, Ordering::Relaxed);
        backoff.succeeded();
    }

    /// Waits before the next try, unless the API refused for good.
    async fn retry_or_fail(
        &self,
        backoff: &mut Backoff,
        e: kube::Error,
        verb: &'static str,
    ) -> Result<(), LeaseError> {
        if let kube::Error::Api(status) = &e {
            if matches!(status.code, 401 | 403) {
                let (node, message) = (self.node.clone(), status.message.clone());
                return Err(KubeError::Forbidden {
                    verb,
                    node,
                    message,
                }
                .into());
            }
        }
        self.reachable.store(false, Ordering::Relaxed);
        let state = match &e {
            kube::Error::Api(status) => format!("HTTP {}", status.code),
            _ => "unreachable".to_owned(),
        };
        backoff.failed(&state, &e.to_string()).await;
        Ok(())
    }
}

/// `--kube-api-url` as the client's URL type.
fn api_url<T>(url: &str) -> Result<T, KubeError>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    url.parse().map_err(|e| KubeError::ApiUrl {
        url: url.to_owned(),
        source: Box::new(e),
    })
}

/// How long one connection to the API (TCP and TLS) may take.
const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn client_config(cfg: &KubeConfig) -> Result<Config, KubeError> {
    let mut config = match (&cfg.kubeconfig, &cfg.api_url) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|source| {
                let path = path.clone();
                KubeError::ReadKubeconfig { path, source }
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| {
                    let path = path.clone();
                    KubeError::Kubeconfig { path, source }
                })?
        }
        (None, Some(url)) => Config::new(api_url(url)?),
        (None, None) => Config::incluster().map_err(|source| KubeError::InCluster { source })?,
    };
    if let (Some(_), Some(url)) = (&cfg.kubeconfig, &cfg.api_url) {
        config.cluster_url = api_url(url)?;
    }
    // kube's default waits 30 s for a connection (TCP and TLS) whose SYN
    // went nowhere (an API address moving, a gateway's MAC changing): the
    // daemon would notice an API that is back only that late. A connect to
    // the API takes milliseconds; give up after 10 s and retry on the
    // back-off.
    config.connect_timeout = Some(API_CONNECT_TIMEOUT);
    Ok(config)
}

/// `spec.nodeName` of the pod `namespace/name` (flanneld's own pod).
async fn node_of_pod(
    client: &Client,
    namespace: Option<String>,
    name: Option<String>,
) -> Result<String, LeaseError> {
    let (Some(namespace), Some(name)) = (namespace, name) else {
        return Err(KubeError::NoNodeName.into());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pod = match pods.get(&name).await {
        Ok(pod) => pod,
        Err(source) => {
            return Err(KubeError::GetPod {
                namespace,
                name,
                source,
            }
            .into())
        }
    };
    match pod.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()) {
        Some(node) => Ok(node),
        None => Err(KubeError::PodWithoutNode { namespace, name }.into()),
    }
}

#[async_trait::async_trait]
impl LeaseStore for KubeStore {
    async fn network_config(&self) -> Result<NetConfig, LeaseError> {
        Ok(NetConfig::read_file(&self.net_config_path)?)
    }

    fn chooses_subnets(&self) -> bool {
        false
    }

    /// `node-public-ip` replaces `--public-ip`; a valid VtepMAC in our own
    /// `backend-data` (flannel's, or ours) is kept, so switching a node
    /// between flannel and flannel-rs changes nothing for its peers.
    async fn node_hints(&self) -> Result<NodeHints, LeaseError> {
        let view = self.own_node().await?;
        let public_ip = view.annotation("node-public-ip").and_then(|ip| {
            let parsed = ip.parse().ok();
            if parsed.is_none() {
                tracing::warn!(
                    "node {}: ignoring node-public-ip {ip:?}: not an IPv4 address",
                    self.node
                );
            }
            parsed
        });
        let vtep_mac = view
            .annotation("backend-data")
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|d| d["VtepMAC"].as_str().and_then(mac::parse))
            .filter(|m| m[0] & 1 == 0 && *m != [0; 6]);
        let vtep_mac_v6 = view
            .backend_v6_data()
            .ok()
            .flatten()
            .and_then(|d| d["VtepMAC"].as_str().and_then(mac::parse));
        Ok(NodeHints {
            public_ip,
            vtep_mac,
            vtep_mac_v6,
        })
    }

    /// Waits for the podCIDR, then writes flannel's annotations if they
    /// differ from the node's.
    async fn acquire_with(
        &self,
        config: &NetConfig,
        attrs: &LeaseAttrs,
        _previous: super::Previous,
    ) -> Result<Lease, LeaseError> {
        let mut said = None::<Instant>;
        let view = loop {
            let view = self.own_node().await?;
            match &view.pod_cidr {
                // IPv6-only: the IPv6 podCIDR is the one awaited.
                _ if config.ipv4.is_none() && view.pod_cidr_v6.is_some() => break view,
                Ok(Some(_)) if config.ipv4.is_some() => break view,
                Ok(_) => {}
                Err(reason) => tracing::warn!("node {}: {reason}", self.node),
            }
            if said.is_none_or(|at| at.elapsed() >= WAITING_LOG_EVERY) {
                tracing::warn!(
                    "node {} has no podCIDR yet: is kube-controller-manager running with --allocate-node-cidrs?",
                    self.node
                );
                said = Some(Instant::now());
            }
            tokio::time::sleep(WAITING_POLL).await;
        };
        let networks = Networks::of(config);
        let subnet = match networks.v4 {
            Some(v4) => inside(view.pod_cidr.clone().ok().flatten(), v4).map_err(|source| {
                let node = self.node.clone();
                KubeError::PodCidr { node, source }
            })?,
            None => NO_IPV4,
        };
        let ipv6_subnet = match networks.v6 {
            None => None,
            Some(net) => match view.pod_cidr_v6 {
                Some(c) if c.prefix() >= net.prefix() && net.contains(c.network()) => Some(c),
                Some(cidr) => {
                    let node = self.node.clone();
                    return Err(KubeError::Ipv6PodCidrOutside {
                        node,
                        cidr,
                        network: net,
                    }
                    .into());
                }
                None => {
                    let node = self.node.clone();
                    return Err(KubeError::NoIpv6PodCidr { node }.into());
                }
            },
        };

        let mut attrs = attrs.clone();
        if let Some(ip) = view
            .annotation("public-ip-overwrite")
            .filter(|s| !s.is_empty() && networks.v4.is_some())
        {
            match ip.parse() {
                Ok(ip) => {
                    tracing::info!("public IP {ip} from the node's public-ip-overwrite annotation");
                    attrs.public_ip = ip;
                }
                Err(_) => {
                    tracing::warn!("ignoring public-ip-overwrite {ip:?}: not an IPv4 address")
                }
            }
        }
        if ipv6_subnet.is_some() {
            if let Some(ip) = view
                .annotation("public-ipv6-overwrite")
                .filter(|s| !s.is_empty())
            {
                match ip.parse::<std::net::Ipv6Addr>() {
                    Ok(ip) if node::is_global_unicast(ip) => {
                        tracing::info!(
                            "public IPv6 {ip} from the node's public-ipv6-overwrite annotation"
                        );
                        attrs.public_ipv6 = Some(ip);
                    }
                    _ => tracing::warn!(
                        "ignoring public-ipv6-overwrite {ip:?}: not a global unicast IPv6 address"
                    ),
                }
            }
        }
        self.write_annotations(&view, &attrs).await?;
        Ok(Lease {
            subnet,
            ipv6_subnet,
            attrs,
            expiration: never(),
        })
    }

    /// Kubernetes owns the CIDR, so there is nothing to extend: the
    /// daemon asks only when our lease vanished from the watch (the Node
    /// was deleted and registered again, or its annotations were
    /// removed). The Node is read again: the same podCIDR gets flannel's
    /// annotations back; another podCIDR means this node's subnet is no
    /// longer ours, and the daemon exits to start over with the new one.
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let view = self.own_node().await?;
        let now = view.pod_cidr.clone().ok().flatten();
        let moved6 = lease.ipv6_subnet.is_some() && view.pod_cidr_v6 != lease.ipv6_subnet;
        let moved4 = lease.ipv4().is_some() && now != Some(lease.subnet);
        if moved4 || moved6 {
            let holder = match now {
                _ if lease.ipv4().is_none() => match view.pod_cidr_v6 {
                    Some(v6) => format!("no one; node {} now has IPv6 podCIDR {v6}", self.node),
                    None => format!("no one; node {} has no IPv6 podCIDR now", self.node),
                },
                Some(cidr) if moved6 => match view.pod_cidr_v6 {
                    Some(v6) => format!("no one; node {} now has podCIDRs {cidr}, {v6}", self.node),
                    None => format!("no one; node {} has no IPv6 podCIDR now", self.node),
                },
                Some(cidr) => format!("no one; node {} now has podCIDR {cidr}", self.node),
                None => format!("no one; node {} has no podCIDR now", self.node),
            };
            return Err(LeaseError::Lost {
                subnet: lease.key(),
                holder,
            });
        }
        self.write_annotations(&view, &lease.attrs).await?;
        Ok(lease.clone())
    }

    async fn release(&self, _lease: &Lease) -> Result<(), LeaseError> {
        Ok(())
    }

    async fn watch(&self) -> Result<LeaseWatch, LeaseError> {
        let network = Networks::of(&self.network_config().await?);
        watch::start(
            self.config.clone(),
            self.names.clone(),
            network,
            Arc::clone(&self.reachable),
        )
        .await
    }

    async fn datapath_ready(&self, _lease: &Lease) -> Result<(), LeaseError> {
        if !self.set_network_unavailable {
            return Ok(());
        }
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let patch = json!({"status": {"conditions": [{
            "type": "NetworkUnavailable",
            "status": "False",
            "reason": "FlannelIsUp",
            "message": "Flannel is running on this node",
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }]}});
        self.patch_status(patch, "NetworkUnavailable=False").await?;
        tracing::info!(node = %self.node, "node condition NetworkUnavailable=False");
        Ok(())
    }

    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }
}
