//! `netns-cluster`: a flannel-rs cluster in network namespaces on this
//! machine, like kind for Kubernetes: every node and every pod is a network
//! namespace, each node runs the real `flanneld`, pods are attached by the
//! real `flannel` CNI plugin. Needs root. See `netns-cluster --help`.
//!
//! This file only parses the command line; the work is
//! `flannel_tools::netns_cluster`'s.

use clap::{Parser, Subcommand};
use flannel_cluster::cluster::{IpFamily, StoreKind};
use flannel_tools::netns_cluster as nc;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "netns-cluster",
    about = "A flannel-rs cluster whose nodes and pods are network namespaces on this machine",
    after_help = "Examples:\n  netns-cluster up --nodes 3 --pods-per-node 2\n  \
                  netns-cluster up --store kube\n  \
                  netns-cluster up --ip-family dual --store etcd\n  \
                  netns-cluster status\n  netns-cluster matrix\n  \
                  netns-cluster exec node0-pod0 -- ip addr\n  netns-cluster down"
)]
struct Cli {
    /// The cluster's name: every namespace it makes is called `nc-<NAME>-...`
    #[arg(long, global = true, default_value = "demo")]
    name: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the underlay, N nodes each running flanneld, M pods per node
    /// attached by the flannel CNI plugin; print the table and leave it running
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 2)]
        pods_per_node: usize,
        /// Lease store: the embedded file store, a real etcd in the underlay namespace, or
        /// the Kubernetes API (a stand-in API server there, handing out podCIDRs)
        #[arg(long, default_value = "file", value_parser = ["file", "etcd", "kube"])]
        store: String,
        /// The overlay's IP families: IPv4 only, dual-stack (both), or IPv6 only
        /// (EnableIPv4 false); the underlay gets IPv6 (fd00:192:168:64::/64) with IPv6
        #[arg(long, default_value = "ipv4", value_parser = ["ipv4", "dual", "ipv6"])]
        ip_family: String,
        /// When `up` fails, keep what it made (to look at it) instead of removing it
        #[arg(long)]
        keep: bool,
        /// flanneld's --lease-ttl (seconds)
        #[arg(long, default_value_t = 86_400)]
        lease_ttl: u64,
    },
    /// The table again, plus whether each node's kernel entries match the leases, and each node's figures from its flanneld's /metrics
    Status,
    /// Every pod to every other pod by ping (and TCP with --tcp)
    Matrix {
        #[arg(long)]
        tcp: bool,
        /// Seconds to keep retrying a pair before calling it unreachable
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Run a command inside a node, a pod or the underlay namespace
    Exec {
        /// `underlay`, `node0`, `node0-pod1`, ...
        target: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Stop the cluster's processes, delete its namespaces and files (harmless twice)
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = nc::preflight() {
        eprintln!("netns-cluster: {e}");
        return ExitCode::from(1);
    }
    let name = cli.name;
    let r: Result<(String, bool), String> = match cli.cmd {
        Cmd::Up {
            nodes,
            pods_per_node,
            store,
            ip_family,
            keep,
            lease_ttl,
        } => nc::up(&nc::UpOptions {
            name,
            nodes,
            pods_per_node,
            store: StoreKind::parse(&store).unwrap_or_default(),
            family: IpFamily::parse(&ip_family).unwrap_or_default(),
            keep,
            lease_ttl,
        })
        .map(|t| (t, true)),
        Cmd::Status => nc::status(&name),
        Cmd::Matrix { tcp, timeout } => nc::matrix(&name, tcp, Duration::from_secs(timeout)),
        Cmd::Exec { target, cmd } => nc::exec(&name, &target, &cmd).map(|never| match never {}),
        Cmd::Down => nc::down(&name).map(|t| (t + "\n", true)),
    };
    match r {
        Ok((text, ok)) => {
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("netns-cluster: {e}");
            ExitCode::from(1)
        }
    }
}
