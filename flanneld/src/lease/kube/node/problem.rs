//! Why a Node is not a peer's lease, or why one of its parts is dropped
//! ([`NodeProblem`]): the reasons `skip` logs. Each names the annotation,
//! podCIDR or network it is about.
//!
//! Owns the reasons only: it reads no Node and logs nothing.

use std::net::Ipv6Addr;

use ipnetwork::{IpNetworkError, Ipv6Network};

use super::PodCidrError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeProblem {
    #[error("not managed by flannel (no kube-subnet-manager: \"true\")")]
    NotManaged,
    #[error("no address family enabled")]
    NoFamily,
    #[error(transparent)]
    PodCidr(#[from] PodCidrError),
    #[error("podCIDRs {0:?}: more than one per family")]
    TooManyPodCidrs(Vec<String>),
    #[error("podCIDR {text:?} does not parse: {source}")]
    PodCidrParse {
        text: String,
        source: IpNetworkError,
    },
    #[error("podCIDR {0:?} has host bits set")]
    HostBits(String),
    #[error("podCIDRs name two ranges of one family ({0:?})")]
    TwoOfOneFamily(String),
    #[error("no IPv6 podCIDR")]
    NoIpv6PodCidr,
    #[error("podCIDR {cidr} is outside IPv6Network {network}")]
    Ipv6PodCidrOutside {
        cidr: Ipv6Network,
        network: Ipv6Network,
    },
    #[error("public-ip {0:?} is not an IPv4 address")]
    PublicIp(String),
    #[error("no public-ipv6")]
    NoPublicIpv6,
    #[error("public-ipv6 {0:?} is not an IPv6 address")]
    PublicIpv6(String),
    #[error("public-ipv6 {0} is not a global unicast address")]
    PublicIpv6NotGlobal(Ipv6Addr),
    /// `why`: serde's message (serde_json's error is neither `Clone` nor
    /// `Eq`, which a `NodeView` is).
    #[error("{annotation} {text:?} is not JSON: {why}")]
    NotJson {
        annotation: &'static str,
        text: String,
        why: String,
    },
    #[error("no backend-v6-data")]
    NoBackendV6Data,
    #[error("backend-v6-data {text:?}: {why}")]
    BackendV6DataShape { text: String, why: String },
    #[error("backend-v6-data VtepMAC {0:?} is not a unicast MAC")]
    BackendV6DataMac(String),
}
