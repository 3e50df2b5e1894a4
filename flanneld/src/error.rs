//! flanneld's top-level error ([`DaemonError`]), whose variants wrap each
//! module's own error, and [`chain`], which prints an error and its
//! sources on one line ("a: b: c") as `main` does.
//!
//! Sits above the other modules: only `daemon` (which returns it) and
//! `main` use [`DaemonError`]. The lease stores call [`chain`] to fold a
//! `NetConfError` into a `LeaseError`'s message (`lease/file.rs`,
//! `lease/kube.rs`, `lease/etcd.rs`). Logs nothing itself: `main` does.

use std::io;

use crate::cli::CliError;
use crate::daemon::SubnetEnvBuildError;
use crate::datapath::DatapathError;
use crate::http::ListenError;
use crate::iface::IfaceError;
use crate::lease::LeaseError;
use crate::masq::MasqError;
use crate::netconf::NetConfError;

/// Why flanneld stopped (or never started); `main` prints it with
/// [`chain`] as one line and exits 1. Each variant names the step; its
/// source says what went wrong there.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("start runtime")]
    Runtime(#[source] io::Error),
    #[error(transparent)]
    Flags(#[from] CliError),
    #[error("open the lease store")]
    OpenStore(#[source] LeaseError),
    #[error("read the network configuration")]
    ReadConfig(#[source] LeaseError),
    #[error(transparent)]
    NetConf(#[from] NetConfError),
    /// The interface chosen by IPv4 rules came with an IPv6 address only.
    #[error("interface {iface} has no IPv4 address ({addr})")]
    NoIpv4OnIface {
        iface: String,
        addr: std::net::Ipv6Addr,
    },
    #[error("open netlink socket")]
    Netlink(#[source] io::Error),
    #[error(transparent)]
    Iface(#[from] IfaceError),
    #[error(transparent)]
    Http(#[from] ListenError),
    #[error("install {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("read this node's record in the lease store")]
    NodeHints(#[source] LeaseError),
    #[error(
        "MTU {mtu} of {iface} leaves no room for VXLAN over {family} (needs at least {needed})"
    )]
    Mtu {
        mtu: u32,
        iface: String,
        family: &'static str,
        needed: u32,
    },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("acquire a subnet lease")]
    Acquire(#[source] LeaseError),
    #[error("our lease {lease} has no IPv6 subnet")]
    LeaseWithoutIpv6 { lease: String },
    #[error("our lease {lease} has no IPv4 subnet")]
    LeaseWithoutIpv4 { lease: String },
    #[error("no address family is enabled")]
    NoFamily,
    #[error("install masquerade rules")]
    Masquerade(#[source] MasqError),
    #[error(transparent)]
    SubnetEnv(#[from] SubnetEnvBuildError),
    #[error(transparent)]
    WriteSubnetEnv(#[from] common::SubnetEnvError),
    #[error("report the network ready")]
    Ready(#[source] LeaseError),
    #[error("watch leases")]
    Watch(#[source] LeaseError),
    #[error("subscribe to kernel events")]
    KernelEvents(#[source] io::Error),
    #[error("the lease watch ended")]
    WatchEnded,
    #[error("lease renewal task")]
    RenewTask(#[source] tokio::task::JoinError),
    /// Another node holds our subnet now (the lease error comes first in
    /// the message, so it is part of it rather than a source).
    #[error("{0}: exiting so this node stops serving a subnet it no longer owns")]
    LeaseLost(LeaseError),
}

pub use crate::chain::chain;
