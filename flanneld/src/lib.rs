//! flanneld: leases a subnet for this node, runs the VXLAN device and keeps
//! every peer's FDB, neighbour and route entries true to the leases.

pub mod cli;
pub mod daemon;
pub mod datapath;
pub mod error;
pub mod http;
pub mod iface;
pub mod lease;
pub mod mac;
pub mod masq;
pub mod metrics;
pub mod netconf;
pub mod vxlan;
pub mod watch_kernel;
