//! End to end on the Kubernetes API lease store (`--kube-subnet-mgr`),
//! against the stand-in API server in the underlay namespace (see
//! `flannel_cluster::cluster::kube`): podCIDRs handed out by its node IPAM
//! controller, each node's Node registered by the harness as a kubelet
//! would before its flanneld starts.
//!
//! The scenarios of the other suites on this store (reachability, join,
//! leave by Node deletion, restart, repair), what is particular to it
//! (flannel's annotations and the NetworkUnavailable condition, a node
//! annotated by upstream flannel, a node waiting for its podCIDR), and
//! watch breaks: dropped watches, a forced 410 relist and the API down for
//! 20 s, each ending with every node's entries exactly right and the
//! entries nothing changed for left untouched: netlink announces no change
//! to them (`EntryMonitor`), and when nothing changed at all, flanneld
//! sends no netlink write at all (`NetlinkWrites`, strace).
//!
//! `scenarios`: what the other suites check, and what is the kube store's
//! own; `switch`: a node left by upstream flannel switched to flannel-rs
//! under traffic, and back; `watch_breaks`: the watch cut, expired, and
//! the API down.

mod rbac;
mod scenarios;
mod switch;
mod watch_breaks;

use flannel_cluster::cluster::entry_monitor::EntryMonitor;
use flannel_cluster::cluster::{Cluster, LeaseFile, StoreKind};
use flannel_cluster::kube_api::RequestRecord;
use flannel_cluster::{eventually, http_status};
use serde_json::Value;
use std::time::Duration;

pub const CONVERGE: Duration = Duration::from_secs(10);
pub const REACH: Duration = Duration::from_secs(10);

pub fn kube_cluster(n: usize) -> Cluster {
    Cluster::builder().nodes(n).store(StoreKind::Kube).build()
}

/// The Node's condition of type `ty`.
pub fn condition(node: &Value, ty: &str) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .cloned()
}

/// A list of Nodes (not a watch).
pub fn is_list(r: &RequestRecord) -> bool {
    r.method == "GET"
        && r.path_only() == "/api/v1/nodes"
        && r.query_param("watch").as_deref() != Some("true")
}

/// A watch of Nodes, and the resourceVersion it starts from.
pub fn watch_from(r: &RequestRecord) -> Option<u64> {
    (r.method == "GET"
        && r.path_only() == "/api/v1/nodes"
        && r.query_param("watch").as_deref() == Some("true"))
    .then(|| r.query_param("resourceVersion")?.parse().ok())
    .flatten()
}

/// Waits until every running node has exactly its peers' entries and none
/// of `gone`'s.
pub fn wait_gone_everywhere(c: &Cluster, gone: &LeaseFile, timeout: Duration) {
    let running: Vec<usize> = (0..c.len()).filter(|&i| c.node(i).is_running()).collect();
    eventually(timeout, &format!("{}'s entries to go", gone.subnet), || {
        for &i in &running {
            c.no_trace_of(i, gone)?;
            c.check_entries(i, &c.expected_peers(i))?;
        }
        Ok(())
    });
}

/// Waits until exactly `n` watches are open on the nodes' API.
pub fn wait_watches(c: &Cluster, n: u64) {
    eventually(CONVERGE, &format!("{n} open watches"), || {
        let got = c.kube().open_watches();
        if got == n {
            Ok(())
        } else {
            Err(format!("{got} open watches"))
        }
    });
}

/// The changes each monitor saw that are about none of `changed`.
#[track_caller]
pub fn assert_untouched(c: &Cluster, mons: &[(usize, EntryMonitor)], changed: &[&LeaseFile]) {
    for (i, m) in mons {
        let stray: Vec<String> = m
            .events_not_about(changed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            stray.is_empty(),
            "{}: entries that did not change were written: {stray:?}",
            c.node(*i).name
        );
    }
}
