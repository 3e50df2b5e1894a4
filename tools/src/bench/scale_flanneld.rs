//! The one flanneld that `scale-bench` and `kube-scale` measure: its
//! command on node 0 of a one-node cluster (with the Kubernetes store's
//! flags in place of the lease directory), and its figures read from
//! /proc (CPU time, resident memory).
//!
//! It reads /proc and builds a command; it does not start flanneld (the
//! benchmark does, under a `ChildGuard`) and does not touch the host's own
//! namespace.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flannel_cluster::Cluster;

/// flanneld on node 0 of `c` as node `me`, with `extra` flags after the
/// cluster's own; `kubeconfig` set: on the Kubernetes store (no
/// `--lease-dir`). Logs at `info` (or `$SCALE_BENCH_RUST_LOG`) to `log`;
/// no stdin, stdout discarded.
pub fn flanneld_command(c: &Cluster, me: &str, kubeconfig: Option<&Path>, log: File) -> Command {
    let kube_path = kubeconfig.map(|p| p.to_string_lossy().into_owned());
    let extra: Vec<&str> = match &kube_path {
        Some(path) => vec!["--kube-subnet-mgr", "--kubeconfig-file", path],
        None => Vec::new(),
    };
    let mut args = c.flanneld_args(0, &extra);
    if kubeconfig.is_some() {
        if let Some(i) = args.iter().position(|a| a == "--lease-dir") {
            args.drain(i..i + 2);
        }
    }
    let mut cmd = c.node(0).ns.command(c.flanneld_bin());
    cmd.args(&args)
        .env("NODE_NAME", me)
        .env(
            "RUST_LOG",
            std::env::var("SCALE_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// CPU time `pid` has used (/proc/PID/schedstat).
pub fn cpu(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// `field` of /proc/PID/status in MiB: `VmRSS` (resident now) or `VmHWM`
/// (the peak so far).
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// `VmRSS` of `pid` in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}
