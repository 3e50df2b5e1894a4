//! flanneld: leases a subnet for this node, runs the VXLAN device and keeps
//! every peer's FDB, neighbour and route entries true to the leases.
//!
//! The modules, from the top down:
//! `cli` (flags) → `lease` (the `LeaseStore` trait and its stores: the only
//! code that talks to a store) → `daemon` (the order of start-up and the
//! loop: when to act) → `datapath` (which leases are peers, per family) →
//! `vxlan` (the device and its entries: the only code that writes them to
//! the kernel). Beside them: `netconf` (`net-conf.json`), `iface` (the
//! external interface), `masq` (flanneld's nftables tables), `watch_kernel`
//! (kernel change notices), `http` and `metrics`, `mac` (the VtepMAC), `error` (the top-level error `main` prints), `heap` (returning freed
//! memory after a listing) and `chain` (an error and
//! its sources as one line, for every layer).

pub mod chain;
pub mod cli;
pub mod daemon;
pub mod datapath;
pub mod error;
pub mod heap;
pub mod http;
pub mod iface;
pub mod lease;
pub mod mac;
pub mod masq;
pub mod metrics;
pub mod netconf;
pub mod vxlan;
pub mod watch_kernel;
