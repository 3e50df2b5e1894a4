//! Subnet leases: the types every store shares and the trait they
//! implement. One module per store: `file` (embedded, the default),
//! `etcd`, `kube`; what they share: `mirror` (the watch diff), `backoff`,
//! `choose` (subnet choice, for the stores that choose), `listing` (a
//! watch's first listing, in pages), `skip` (logging
//! what is skipped), `open` (the store the flags name), `v6` (a peer's
//! IPv6 half, checked).
//!
//! Owns the shared lease types, `LeaseError` and the `LeaseStore` trait;
//! it does not talk to any store and does not decide when to acquire, renew
//! or watch (that is the daemon).

pub mod backoff;
mod choose;
pub mod etcd;
pub mod file;
pub mod kube;
pub mod listing;
pub mod mirror;
pub mod observe;
mod open;
pub mod skip;
pub mod v6;

pub use listing::{ListingPart, ListingRx};
pub use open::{open, StoreConfig};

pub(crate) use choose::{choose, Choice, Held};

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod fuzz;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::netconf::NetConfig;

/// A lease's value, byte for byte flannel's JSON:
/// `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`;
/// a dual-stack lease adds `"PublicIPv6":"2001:db8::3"` and, after
/// `BackendData`, `"BackendV6Data":{"VNI":1,"VtepMAC":…}` (the
/// `flannel-v6.<VNI>` device's), which flannel omits when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<Ipv6Addr>,
    #[serde(rename = "BackendType")]
    pub backend_type: String,
    /// `null` (and omitted, as flannel omits it) in an IPv6-only lease.
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "serde_json::Value::is_null"
    )]
    pub backend_data: serde_json::Value,
    #[serde(
        rename = "BackendV6Data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_v6_data: Option<serde_json::Value>,
}

/// `BackendData` (and `BackendV6Data`) of a vxlan lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

impl LeaseAttrs {
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, vtep_mac: &str) -> Self {
        Self {
            public_ip,
            public_ipv6: None,
            backend_type: "vxlan".to_string(),
            backend_data: serde_json::json!({ "VNI": vni, "VtepMAC": vtep_mac }),
            backend_v6_data: None,
        }
    }

    /// An IPv6-only vxlan lease's attributes, as flannel writes them:
    /// `PublicIP` `0.0.0.0`, no `BackendData`, the IPv6 half set.
    pub fn vxlan_v6_only(public_ipv6: Ipv6Addr, vni: u32, vtep_mac: &str) -> Self {
        Self {
            public_ip: Ipv4Addr::UNSPECIFIED,
            public_ipv6: None,
            backend_type: "vxlan".to_string(),
            backend_data: serde_json::Value::Null,
            backend_v6_data: None,
        }
        .with_ipv6(public_ipv6, vni, vtep_mac)
    }

    /// The address that tells nodes apart (whose a lease is): `PublicIP`,
    /// or `PublicIPv6` in an IPv6-only lease (`PublicIP` `0.0.0.0`).
    pub fn node_ip(&self) -> IpAddr {
        match self.public_ipv6 {
            Some(v6) if self.public_ip.is_unspecified() => IpAddr::V6(v6),
            _ => IpAddr::V4(self.public_ip),
        }
    }

    /// Adds the IPv6 half of a dual-stack vxlan lease: the IPv6 public IP
    /// and the `flannel-v6.<VNI>` device's VtepMAC.
    pub fn with_ipv6(mut self, public_ipv6: Ipv6Addr, vni: u32, vtep_mac: &str) -> Self {
        self.public_ipv6 = Some(public_ipv6);
        self.backend_v6_data = Some(serde_json::json!({ "VNI": vni, "VtepMAC": vtep_mac }));
        self
    }

    /// The vxlan data, when this is a well-formed vxlan lease.
    pub fn vxlan_data(&self) -> Option<VxlanData> {
        if self.backend_type != "vxlan" {
            return None;
        }
        serde_json::from_value(self.backend_data.clone()).ok()
    }

    /// The IPv6 vxlan data, when this is a vxlan lease with well-formed
    /// `BackendV6Data`.
    pub fn vxlan_v6_data(&self) -> Option<VxlanData> {
        if self.backend_type != "vxlan" {
            return None;
        }
        serde_json::from_value(self.backend_v6_data.clone()?).ok()
    }
}

/// The IPv4 part of an IPv6-only lease: flannel's empty `IP4Net`,
/// `0.0.0.0/0` (its `MakeSubnetKey` writes `0.0.0.0-0&fd00:10:244:1::-64`).
/// No store hands it out as an IPv4 subnet: it is never leasable.
pub const NO_IPV4: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(n) => n,
    None => panic!("0.0.0.0/0"),
};

/// What names a lease in the stores, the watch diff and the datapath: its
/// IPv4 subnet ([`NO_IPV4`] when IPv6-only) and its IPv6 subnet, if any.
pub type LeaseKey = (Ipv4Network, Option<Ipv6Network>);

/// `10.244.1.0/24` → `10.244.1.0-24`, a dual-stack lease
/// `10.244.1.0-24&fd00:10:244:1::-64` and an IPv6-only one
/// `0.0.0.0-0&fd00:10:244:1::-64` (flannel's `MakeSubnetKey`, whose
/// IPv4 part is then empty): a lease's name in both stores (etcd's key
/// suffix, the embedded store's file name).
pub fn subnet_key(subnet: Ipv4Network, ipv6: Option<Ipv6Network>) -> String {
    match ipv6 {
        None => format!("{}-{}", subnet.network(), subnet.prefix()),
        Some(v6) => format!(
            "{}-{}&{}-{}",
            subnet.network(),
            subnet.prefix(),
            v6.network(),
            v6.prefix()
        ),
    }
}

/// `10.244.1.0-24` → `10.244.1.0/24` (and the IPv6 subnet of a
/// dual-stack name); `None` for anything else, including a subnet written
/// with host bits set, and any spelling but the one [`subnet_key`] writes
/// (`10.244.1.0-+24`, `10.244.1.0-024`, `FD00::-64`): a lease has one
/// name, or two files or keys could hold one subnet.
pub fn parse_subnet_key(name: &str) -> Option<(Ipv4Network, Option<Ipv6Network>)> {
    let (v4, v6) = match name.split_once('&') {
        Some((v4, v6)) => (v4, Some(v6)),
        None => (name, None),
    };
    let (ip, len) = v4.split_once('-')?;
    let net = Ipv4Network::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    let net6 = match v6 {
        None => None,
        Some(v6) => {
            let (ip, len) = v6.rsplit_once('-')?;
            let ip: Ipv6Addr = ip.parse().ok()?;
            Some(Ipv6Network::new(ip, len.parse().ok()?).ok()?)
        }
    };
    (subnet_key(net, net6) == name).then_some((net, net6))
}

/// A subnet held by one node until `expiration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// [`NO_IPV4`] in an IPv6-only lease (see [`Lease::ipv4`]).
    pub subnet: Ipv4Network,
    /// The IPv6 subnet of a dual-stack lease.
    pub ipv6_subnet: Option<Ipv6Network>,
    pub attrs: LeaseAttrs,
    pub expiration: SystemTime,
}

impl Lease {
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expiration <= now
    }

    /// Its name in the stores ([`subnet_key`]).
    pub fn key(&self) -> String {
        subnet_key(self.subnet, self.ipv6_subnet)
    }

    /// Its identity in the watch diff and the datapath.
    pub fn id(&self) -> LeaseKey {
        (self.subnet, self.ipv6_subnet)
    }

    /// The subnet that names it to people: the IPv4 one, or the IPv6 one
    /// when IPv6-only.
    pub fn main_subnet(&self) -> IpNetwork {
        match (self.ipv4(), self.ipv6_subnet) {
            (None, Some(v6)) => v6.into(),
            _ => self.subnet.into(),
        }
    }

    /// Its IPv4 subnet; `None` when the lease is IPv6-only.
    pub fn ipv4(&self) -> Option<Ipv4Network> {
        (self.subnet != NO_IPV4).then_some(self.subnet)
    }
}

/// A change seen by a watch. A changed lease arrives as `Added` with its
/// new attributes; an expired or deleted one as `Removed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Added(Lease),
    Removed(Lease),
}

/// What a watch delivers: the current leases (a first listing, in one or
/// more pages), then every change after them.
pub struct LeaseWatch {
    pub listing: ListingRx,
    pub events: mpsc::Receiver<Result<LeaseEvent, LeaseError>>,
}

impl LeaseWatch {
    /// A watch whose first listing was read whole.
    pub fn whole(
        snapshot: Vec<Lease>,
        events: mpsc::Receiver<Result<LeaseEvent, LeaseError>>,
    ) -> Self {
        Self {
            listing: listing::whole(snapshot),
            events,
        }
    }

    /// The whole first listing, its pages collected.
    pub async fn snapshot(&mut self) -> Result<Vec<Lease>, LeaseError> {
        listing::collect(&mut self.listing).await
    }

    /// This watch with its first listing collected (tests).
    #[cfg(test)]
    pub async fn listed(mut self) -> Listed {
        let snapshot = self
            .snapshot()
            .await
            .unwrap_or_else(|e| panic!("the first listing: {e}"));
        Listed {
            snapshot,
            events: self.events,
        }
    }
}

/// `store`'s watch with its first listing collected (tests).
#[cfg(test)]
pub async fn listed(store: &dyn LeaseStore) -> Listed {
    store
        .watch()
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .listed()
        .await
}

/// A watch whose first listing was collected (tests).
#[cfg(test)]
pub struct Listed {
    pub snapshot: Vec<Lease>,
    pub events: mpsc::Receiver<Result<LeaseEvent, LeaseError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("no free subnet: every /{subnet_len} of {network} between the configured SubnetMin and SubnetMax is leased")]
    NoFreeSubnet { network: IpNetwork, subnet_len: u8 },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the lease watch ended before its first listing was complete")]
    ListingCut,
    #[error("lease for {subnet} is no longer ours (now held by {holder})")]
    Lost { subnet: String, holder: String },
    /// The network configuration file (file and kube stores); the
    /// message carries the whole chain, as the store's caller retries
    /// and logs it.
    #[error("{}", crate::chain::chain(.0))]
    Config(#[from] crate::netconf::NetConfError),
    #[error(transparent)]
    File(#[from] file::FileError),
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdError),
    #[error(transparent)]
    Kube(#[from] kube::KubeError),
}

/// How long a lease lives, and when it is renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// 24 h in production, as flannel.
    pub ttl: Duration,
    /// Renew this long before expiry (`--subnet-lease-renew-margin`),
    /// capped at half the TTL so short test TTLs still renew in time.
    pub renew_margin: Duration,
}

impl LeaseTiming {
    pub fn renew_at(&self, lease: &Lease) -> SystemTime {
        let margin = self.renew_margin.min(self.ttl / 2);
        lease
            .expiration
            .checked_sub(margin)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// A lease store. All three implementations keep flannel's semantics.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// The network configuration as this store holds it (a file, the etcd
    /// `<prefix>/config` key, or the kube-flannel ConfigMap's file).
    async fn network_config(&self) -> Result<NetConfig, LeaseError>;

    /// Takes a subnet (and an IPv6 one when IPv6 is enabled) for
    /// `attrs.public_ip`: the lease this public IP already holds, else
    /// `previous` (the subnets in the old subnet.env) where free, else a
    /// random free one. Never returns an expired or foreign lease.
    async fn acquire_with(
        &self,
        config: &NetConfig,
        attrs: &LeaseAttrs,
        previous: Previous,
    ) -> Result<Lease, LeaseError>;

    /// [`acquire_with`](Self::acquire_with) with only an IPv4 previous subnet.
    async fn acquire(
        &self,
        config: &NetConfig,
        attrs: &LeaseAttrs,
        previous: Option<Ipv4Network>,
    ) -> Result<Lease, LeaseError> {
        let previous = Previous {
            ipv4: previous,
            ipv6: None,
        };
        self.acquire_with(config, attrs, previous).await
    }

    /// Extends our lease by the TTL (and updates its attributes). `Lost`
    /// when someone else holds the subnet now.
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError>;

    /// Gives our lease back (a node leaving the cluster for good).
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError>;

    /// The current unexpired leases, then every change. Expiry of a lease
    /// is reported as `Removed` when it happens, without any write.
    async fn watch(&self) -> Result<LeaseWatch, LeaseError>;

    /// Whether the store answered its last request (for `/readyz`). A
    /// store that cannot be unreachable (the embedded one) is always so.
    fn is_reachable(&self) -> bool {
        true
    }

    /// Whether the store picks subnets itself (file, etcd: any leasable
    /// subnet between SubnetMin and SubnetMax), or is handed them by
    /// someone else (kube: kube-controller-manager's podCIDRs, anywhere
    /// inside Network). Decides which peers' subnets are trusted.
    fn chooses_subnets(&self) -> bool {
        true
    }

    /// What the store records about this node that must be known before
    /// the device is made: a public IP and a VtepMAC to keep.
    async fn node_hints(&self) -> Result<NodeHints, LeaseError> {
        Ok(NodeHints::default())
    }

    /// Called once `subnet.env` is written and the device is up.
    async fn datapath_ready(&self, _lease: &Lease) -> Result<(), LeaseError> {
        Ok(())
    }
}

/// The subnets of the old `subnet.env` (host bits allowed: they name the
/// gateway), for [`LeaseStore::acquire_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Previous {
    pub ipv4: Option<Ipv4Network>,
    pub ipv6: Option<Ipv6Network>,
}

/// See [`LeaseStore::node_hints`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHints {
    /// Replaces `--public-ip` (kube: the `node-public-ip` annotation).
    pub public_ip: Option<Ipv4Addr>,
    /// The VtepMAC peers already know this node by.
    pub vtep_mac: Option<[u8; 6]>,
    /// The `flannel-v6.<VNI>` VtepMAC peers know this node by
    /// (`BackendV6Data`; kube: the `backend-v6-data` annotation).
    pub vtep_mac_v6: Option<[u8; 6]>,
}
