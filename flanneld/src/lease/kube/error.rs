//! The Kubernetes store's errors ([`KubeError`]): the client's
//! configuration, learning the node's name, a refused or failed request,
//! a podCIDR that does not fit net-conf.json, and the watch ending. Each
//! names the operation and the node, pod, file or flag.
//!
//! Owns the error type only: it does not call the API and does not decide
//! what is retried (the store's backoff loops do).

use std::path::PathBuf;

use ipnetwork::Ipv6Network;

use super::names::PrefixError;
use super::node::PodCidrError;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("read kubeconfig {}: {source}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("--kube-api-url {url:?}: {source}")]
    ApiUrl {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "in-cluster Kubernetes configuration: {source} (outside a pod, give --kubeconfig-file)"
    )]
    InCluster {
        source: kube::config::InClusterError,
    },
    #[error("create the Kubernetes client: {source}")]
    Client { source: kube::Error },
    #[error(
        "--kube-subnet-mgr needs the node's name: set NODE_NAME, or POD_NAME and POD_NAMESPACE"
    )]
    NoNodeName,
    #[error("get pod {namespace}/{name} (to learn the node name): {source}")]
    GetPod {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("pod {namespace}/{name} has no spec.nodeName")]
    PodWithoutNode { namespace: String, name: String },
    /// 401 or 403: retrying will not help.
    #[error("{verb} node {node}: {message} (flanneld needs RBAC nodes get/list/watch, nodes/status patch, pods get)")]
    Forbidden {
        verb: &'static str,
        node: String,
        message: String,
    },
    #[error("patch node {node} status ({what}): {source}")]
    PatchStatus {
        node: String,
        what: &'static str,
        source: kube::Error,
    },
    #[error("only the vxlan backend is supported")]
    NotVxlan,
    #[error("encode the {annotation} annotation: {source}")]
    EncodeAnnotation {
        annotation: &'static str,
        source: serde_json::Error,
    },
    #[error("node {node}: {source} (net-conf.json)")]
    PodCidr { node: String, source: PodCidrError },
    #[error("node {node}: IPv6 podCIDR {cidr} is outside IPv6Network {network} (net-conf.json)")]
    Ipv6PodCidrOutside {
        node: String,
        cidr: Ipv6Network,
        network: Ipv6Network,
    },
    #[error("node {node}: EnableIPv6 is set but the node has no IPv6 podCIDR (is the cluster dual-stack?)")]
    NoIpv6PodCidr { node: String },
    #[error("the node watch ended")]
    WatchEnded,
    #[error("start the node watch's thread: {source}")]
    WatchThread { source: std::io::Error },
}
