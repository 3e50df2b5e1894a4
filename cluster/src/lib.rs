//! flannel-cluster: flannel-rs clusters in network namespaces, the library
//! under the tools (`tools/`: `netns-cluster`, the benchmarks) and the tests
//! (`tests/` and the product crates' own tests).
//!
//! Everything it builds lives in namespaces and temp dirs it owns, named
//! `ft<pid>-<n><tag>` and removed by `Drop` guards (so also on panic). It
//! never configures the host's own network namespace, and it drives the
//! product only through its binaries (`flanneld`, `flannel`) and the files
//! they read and write, never through their internals:
//!
//! - [`NetNs`]: a named netns (`ip netns add/del`), iproute2 inspection
//!   (`links`, `link`, `ipv4_addrs`, `routes_v4`, `sysctl`,
//!   `normalized_addrs/routes`), fixture plumbing (`add_veth_pair`,
//!   `add_veth_to`, `add_bridge`, `add_addr`), nft inspection, and
//!   `run`/`spawn` to execute Rust code on a thread inside the netns.
//! - [`TempDir`]: a private temp dir, removed on drop.
//! - [`cni`]: `CniCall` (one plugin invocation: env, stdin, run in a node
//!   netns), `CniOutput` (success/error assertions), `SubnetFile`, `Pod`, and
//!   `CniNode` (node netns + subnet.env + IPAM dir + flannel config).
//! - [`tcp`]: `TcpServer` inside a netns and `tcp_fetch` from another.
//! - [`wait::eventually`]: polling with a deadline for asynchronous kernel state.
//! - [`proc::ChildGuard`]: a started process, stopped by PID on drop.
//! - [`cluster`]: `Cluster`, an underlay netns + node netns with real
//!   `flanneld`s on a shared lease dir, etcd or the kube API stand-in, pods
//!   via the `flannel` CNI binary, kernel-state readers and peer-entry checks.
//! - [`etcd`]: a private etcd server for the etcd lease store.
//! - [`metrics`]: flanneld's `/metrics` scraped from inside a node's netns,
//!   parsed with `prometheus-parse`; raw HTTP exchanges for the server's tests.
//! - [`cmd`]: running commands with stdin, captured output and a timeout.
//! - [`kube_api`]: `KubeApiServer`, a Kubernetes API stand-in (Nodes, Pods;
//!   list/watch/patch as kube-rs expects them, TLS, bearer token, faults,
//!   node IPAM) for the Kubernetes lease store's tests and the clusters on
//!   `--store kube`. A stand-in used by the harness and the tests, not part
//!   of the product.

pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod etcd;
pub mod iproute;
pub mod kube_api;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod nft;
pub mod proc;
pub mod tcp;
pub mod tempdir;
pub mod wait;

pub use cluster::{Cluster, ClusterPod};
pub use cni::{
    assert_json_eq, is_host_veth_name, result_address, result_host_veth, result_ip,
    with_prev_result, CniCall, CniNode, CniOutput, Pod, SubnetFile, IPV6_NETWORK, IPV6_SUBNET,
    VERSIONS,
};
pub use netns::{require_root, NetNs};
pub use tcp::{http_status, tcp_fetch, TcpServer};
pub use tempdir::TempDir;
pub use wait::eventually;
