//! `kube-api-standin`: the Kubernetes API stand-in of `flannel_cluster::
//! kube_api` as a process, for tools that run it in a network namespace
//! (e.g. `ip netns exec <ns> kube-api-standin ...`). Nodes are made through
//! the API itself (`POST /api/v1/nodes`, `PUT`, `PATCH`, `DELETE`).
//!
//! With `--admin-listen`, a second listener serves the same API plus the
//! test controls under `/_standin/` (faults, request log, IPAM pause; see
//! `flannel_cluster::kube_api`), never subject to the faults.
//!
//! Prints `listening on <url>` (then `admin on <url>`) once it serves;
//! stops on SIGTERM or SIGINT.
//!
//! ```text
//! kube-api-standin --listen 10.0.0.1:6443 --admin-listen 10.0.0.1:6444 --tls-dir /run/x/tls \
//!     --token T --cluster-cidr 10.244.0.0/16 --node-cidr-mask 24 --kubeconfig /run/x/kubeconfig
//! ```

use clap::Parser;
use flannel_cluster::kube_api::{KubeApiOptions, KubeApiServer, NodeIpam};
use nix::sys::signal::{SigSet, Signal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kube-api-standin",
    about = "A Kubernetes API stand-in (Nodes, Pods) for flannel-rs tests"
)]
struct Cli {
    /// Address to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Also serve the API and the `/_standin/` controls here, without faults
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Serve HTTPS with a CA and server certificate generated into this directory
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// The bearer token every request must carry
    #[arg(
        long,
        env = "KUBE_API_STANDIN_TOKEN",
        hide_env_values = true,
        default_value = "flannel-test-token",
        conflicts_with = "no_auth"
    )]
    token: String,
    /// Accept requests without a token
    #[arg(long)]
    no_auth: bool,
    /// Run the node IPAM controller over this cluster CIDR (e.g. 10.244.0.0/16),
    /// or one per family (10.244.0.0/16,fd00:10:244::/56: dual-stack podCIDRs)
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// Prefix length of each node's IPv4 podCIDR
    #[arg(long, default_value_t = 24)]
    node_cidr_mask: u8,
    /// Prefix length of each node's IPv6 podCIDR
    #[arg(long, default_value_t = 64)]
    node_cidr_mask_ipv6: u8,
    /// Milliseconds the IPAM controller waits before giving a new node its podCIDR
    #[arg(long, default_value_t = 0)]
    ipam_delay_ms: u64,
    /// Milliseconds between watch bookmarks
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
    /// Write a kubeconfig for this server here
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and sigwait below receives them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if let Err(e) = stop.thread_block() {
        eprintln!("kube-api-standin: block SIGTERM/SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    let mut opts = KubeApiOptions::new()
        .listen(cli.listen)
        .token((!cli.no_auth).then_some(cli.token.as_str()))
        .bookmark_interval(Duration::from_millis(cli.bookmark_interval_ms));
    if let Some(addr) = cli.admin_listen {
        opts = opts.admin_listen(addr);
    }
    if let Some(dir) = &cli.tls_dir {
        opts = opts.tls_in(dir);
    }
    if let Some(cidr) = &cli.cluster_cidr {
        match NodeIpam::dual(cidr, cli.node_cidr_mask, cli.node_cidr_mask_ipv6) {
            Ok(ipam) => opts = opts.node_ipam(ipam.delay(Duration::from_millis(cli.ipam_delay_ms))),
            Err(e) => {
                eprintln!("kube-api-standin: --cluster-cidr: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let server = match KubeApiServer::start_with(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-api-standin: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &cli.kubeconfig {
        if let Err(e) = server.write_kubeconfig(path) {
            eprintln!("kube-api-standin: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("listening on {}", server.url());
    if let Some(url) = server.admin_url() {
        println!("admin on {url}");
    }
    match stop.wait() {
        Ok(sig) => eprintln!("kube-api-standin: {sig}, stopping"),
        Err(e) => eprintln!("kube-api-standin: sigwait: {e}, stopping"),
    }
    drop(server);
    ExitCode::SUCCESS
}
