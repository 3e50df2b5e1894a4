//! The `netns-cluster` tool: a flannel-rs cluster whose nodes and pods are
//! network namespaces on this machine, built by one process (`up`) and
//! looked at (`status`, `matrix`, `exec`) and removed (`down`) by others.
//!
//! A cluster named `NAME` is made of:
//! - namespaces `nc-NAME-underlay` (bridge `br0`, 192.168.64.1/24),
//!   `nc-NAME-node<i>` (`eth0` 192.168.64.<10+i>/24) and
//!   `nc-NAME-node<i>-pod<k>`;
//! - one detached `flanneld` per node (its own session, output in
//!   `node<i>/flanneld.log`), and with `--store etcd` an `etcd` in the
//!   underlay namespace on 192.168.64.1:2379, or with `--store kube` the
//!   Kubernetes API stand-in `kube-api-standin` there on
//!   https://192.168.64.1:6443 (admin :6444; output in `kube/standin.log`,
//!   flanneld's kubeconfig in `kubeconfig`), each node registered as a
//!   Node and given its podCIDR by the stand-in's IPAM controller;
//! - the directory `/run/flannel-rs-netns-cluster/NAME/` (override the parent
//!   with `NETNS_CLUSTER_RUN_DIR`): `state.json` (names, PIDs, pods and
//!   their IPs), the lease store, `net-conf.json`, per-node `subnet.env`,
//!   IPAM store and logs.
//!
//! Nothing is configured in the machine's own network namespace.
//!
//! It drives flanneld and the plugin only through their binaries and files
//! (via flannel-cluster); it removes only what a cluster's state records, and
//! never configures the host's own namespace.

mod figures;
mod ops;
mod table;
mod up;

pub use figures::render_figures;
pub use ops::{down, exec, matrix, status};
pub use table::render_table;
pub use up::{up, UpOptions};

use flannel_cluster::cluster::{Cluster, ClusterPod, ClusterState};
use std::path::{Path, PathBuf};

/// Where clusters keep their directories by default.
pub const RUN_DIR: &str = "/run/flannel-rs-netns-cluster";

/// The parent of every cluster's directory.
pub fn run_dir() -> PathBuf {
    std::env::var_os("NETNS_CLUSTER_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(RUN_DIR))
}

/// Cluster `name`'s directory.
pub fn cluster_dir(name: &str) -> PathBuf {
    run_dir().join(name)
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// The prefix of every namespace of cluster `name`.
pub fn prefix(name: &str) -> String {
    format!("nc-{name}-")
}

/// Lowercase letters, digits and '-', starting with a letter or digit, at
/// most 20 characters (namespace names get long).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad cluster name {name:?}: use 1-20 of [a-z0-9-], not starting with '-'"
        ))
    }
}

/// Is `prog` an executable in `PATH`?
pub fn in_path(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(prog))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Root, and the tools the cluster needs (`ip`, `bridge` from iproute2,
/// `ping` from iputils, `nft` that flanneld and the plugin call).
pub fn preflight() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "must run as root: it creates network namespaces (try: sudo netns-cluster ...)".into(),
        );
    }
    let missing: Vec<&str> = [
        ("ip", "iproute2"),
        ("bridge", "iproute2"),
        ("ping", "iputils-ping"),
        ("nft", "nftables"),
    ]
    .iter()
    .filter(|(p, _)| !in_path(p))
    .map(|(_, pkg)| *pkg)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        let p = missing.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Err(format!(
            "missing tools: apt-get install {} (or run ci/deps.sh)",
            dedup(p).join(" ")
        ))
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// Loads cluster `name`'s state.
pub fn load(name: &str) -> Result<ClusterState, String> {
    check_name(name)?;
    let dir = cluster_dir(name);
    let path = state_path(&dir);
    if !path.exists() {
        return Err(format!(
            "no cluster named {name:?} (no {}); start one with `netns-cluster up --name {name}`",
            path.display()
        ));
    }
    ClusterState::load(&path)
}

/// A look-only handle on cluster `name` and its pods.
pub fn attach(name: &str) -> Result<(ClusterState, Cluster, Vec<ClusterPod>), String> {
    let st = load(name)?;
    let (c, pods) = Cluster::attach(&st);
    Ok((st, c, pods))
}

/// Runs `f`, turning a panic of the harness (which reports failures that
/// way) into an error message; the panic's own report is suppressed.
pub fn catching<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    match r {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "failed".into())),
    }
}
