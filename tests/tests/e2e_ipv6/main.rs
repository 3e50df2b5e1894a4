//! End to end with IPv6 (issue 12): dual-stack clusters on the embedded
//! file store, etcd and the Kubernetes stand-in, and IPv6-only clusters on
//! the file store and the stand-in. Each test is one cluster taken through
//! several scenarios, every check made for each family the cluster runs:
//! the ping and TCP matrices, each node's subnet.env, lease and
//! `flannel-v6.1` (local = the public IPv6, MTU − 70, exactly the peers'
//! IPv6 neighbour, FDB and onlink route entries), a node joining, leaving
//! (no trace in either family), restarting (subnets, VtepMACs and devices
//! kept) and having its IPv6 entries and device deleted under it.
//!
//! Flannel's reported failures: a dual-stack Node podCIDR list with the
//! default (IPv4-only) config (flannel #2225's crash) and an IPv6-only
//! cluster.
//!
//! `steps`: the shared steps; `dual`: the dual-stack clusters; `only6`:
//! IPv6 only and the default config on dual-stack Nodes.

mod dual;
mod only6;
mod steps;
