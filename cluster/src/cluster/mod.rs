//! A netns cluster: an underlay namespace with a bridge, N node namespaces on
//! it, one `flanneld` per node on a shared lease store (embedded files, etcd,
//! or the Kubernetes API stand-in: `store.rs`, `kube.rs`), and pods attached
//! by the real `flannel` CNI binary. Used by the flanneld integration tests
//! and by the `netns-cluster` tool.
//!
//! Layout of one cluster (every name carries this process's `ft<pid>-` prefix):
//!
//! ```text
//!   underlay netns: br0 192.168.64.1/24 (+ fd00:192:168:64::1/64 with IPv6)
//!     ├─ veth ── node0 netns: eth0 192.168.64.10/24, default via 192.168.64.1
//!     │                        (+ fd00:192:168:64::a/64, default via ...::1)
//!     ├─ veth ── node1 netns: eth0 192.168.64.11/24 ...
//!   <tmp>/leases/            shared lease directory (--lease-dir)
//!   <tmp>/net-conf.json      --net-config-path
//!   <tmp>/node<i>/subnet.env --subnet-file
//!   <tmp>/node<i>/ipam/      the CNI IPAM dataDir
//!   <tmp>/node<i>/flanneld.log  flanneld's stderr (printed when a test fails)
//! ```
//!
//! The overlay runs IPv4, IPv6 or both ([`IpFamily`], `family.rs`): the
//! underlay gets IPv6 too when the overlay does, and the checks look at
//! `flannel-v6.1` next to `flannel.1`.
//!
//! Everything is removed on drop, also on panic: daemons stopped by PID,
//! namespaces deleted, the temp dir removed.
//!
//! The cluster drives flanneld and the plugin only through their binaries and
//! files; it never links the product's internals and never configures the
//! host's own network namespace.

mod builder;
mod checks;
mod entries;
pub mod entry_monitor;
pub mod family;
mod kernel;
pub mod kube;
pub mod kube_client;
mod kube_lease;
pub mod lease;
pub mod monitor;
pub mod netlink_writes;
mod nl_subscribe;
mod node;
pub mod persist;
mod pod;
pub mod store;
pub mod traffic;
pub mod upstream;

pub use builder::ClusterBuilder;
pub use checks::{SECOND_BRIDGE, SECOND_GATEWAY};
pub use family::{network_of6, network_of_any, node_ip6, IpFamily, UNDERLAY_GATEWAY6, VXLAN_DEV6};
pub use kernel::{
    vxlan_dev, ExpectedPeer, KernelState, ObservedFdb, ObservedNeigh, ObservedRoute, VxlanInfo,
};
pub use lease::LeaseFile;
pub use node::{env_is_ready, network_of, DaemonRun, Node};
pub use persist::{ClusterState, NodeState, PodState};
pub use pod::ClusterPod;
pub use store::{Store, StoreKind};

use crate::netns::NetNs;
use crate::tempdir::TempDir;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The underlay bridge's name and address (every node's default gateway).
pub const UNDERLAY_BRIDGE: &str = "br0";
pub const UNDERLAY_GATEWAY: &str = "192.168.64.1";
/// Node `i`'s address is `192.168.64.<NODE_IP_BASE + i>`.
pub const NODE_IP_BASE: u8 = 10;
/// The VXLAN device flanneld manages (VNI 1).
pub const VXLAN_DEV: &str = "flannel.1";
/// How long a node's flanneld may take to write its subnet.env.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The default `net-conf.json`.
pub fn default_net_conf() -> Value {
    json!({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}})
}

/// A binary of this workspace, from the target dir of the running executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
/// `FLANNEL_TESTS_BIN_DIR` overrides the directory.
pub fn workspace_binary(name: &str) -> PathBuf {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("FLANNEL_TESTS_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.to_owned());
            if let Some(up) = d.parent() {
                dirs.push(up.to_owned());
            }
        }
    }
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "binary `{name}` not found (looked in {dirs:?}); run `cargo build --workspace` \
         (with the same profile as the tests) first"
    )
}

/// A running netns cluster. Field order is drop order: daemons and node
/// namespaces first, then the underlay, then the temp dir.
pub struct Cluster {
    nodes: Vec<Node>,
    /// More namespaces a test wired in (e.g. a second underlay).
    extra: Vec<NetNs>,
    store: Store,
    underlay: NetNs,
    flanneld: PathBuf,
    flannel: PathBuf,
    opts: ClusterBuilder,
    dir: TempDir,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// `n` nodes with the default config, all started and ready.
    pub fn new(n: usize) -> Cluster {
        Cluster::builder().nodes(n).build()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn lease_dir(&self) -> PathBuf {
        self.dir.join("leases")
    }

    pub fn net_conf_path(&self) -> PathBuf {
        self.dir.join("net-conf.json")
    }

    pub fn underlay(&self) -> &NetNs {
        &self.underlay
    }

    pub fn flanneld_bin(&self) -> &Path {
        &self.flanneld
    }

    pub fn flannel_bin(&self) -> &Path {
        &self.flannel
    }

    /// The overlay's families.
    pub fn family(&self) -> IpFamily {
        self.opts.family
    }

    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.opts.resync_interval)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Adds a node namespace wired to the underlay (flanneld not started)
    /// and, on the kube store, registers its Node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let ip = Ipv4Addr::new(192, 168, 64, NODE_IP_BASE + i as u8);
        let name = format!("node{i}");
        let ns = self.opts.make_ns(&format!("n{i}"), &name);
        let peer = format!("v{i}");
        // The node's eth0, with its peer on the underlay bridge.
        ns.add_veth_to("eth0", &self.underlay, &peer);
        self.underlay.set_master(&peer, UNDERLAY_BRIDGE);
        if let Some(mtu) = self.opts.mtu {
            ns.ip_ok(&["link", "set", "eth0", "mtu", &mtu.to_string()]);
            self.underlay
                .ip_ok(&["link", "set", &peer, "mtu", &mtu.to_string()]);
        }
        if self.opts.underlay_ipv4 {
            ns.add_addr("eth0", &format!("{ip}/24"));
            ns.ip_ok(&["route", "add", "default", "via", UNDERLAY_GATEWAY]);
        }
        let ip6 = self.opts.family.has_v6().then(|| node_ip6(i));
        if let Some(ip6) = ip6 {
            let a = format!("{ip6}/64");
            ns.ip_ok(&["-6", "addr", "add", &a, "dev", "eth0", "nodad"]);
            ns.ip_ok(&["-6", "route", "add", "default", "via", UNDERLAY_GATEWAY6]);
        }
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(dir.join("ipam")).expect("create node dir");
        self.store.register_node(&name, ip, ip6);
        let mut node = Node::new(name, ns, ip, dir);
        node.ip6 = ip6;
        node.detached = self.opts.detached;
        self.nodes.push(node);
        i
    }

    /// The flanneld command line for node `i` (without `ip netns exec`).
    /// `--lease-ttl` or `--resync-interval` in `extra` replaces the
    /// cluster-wide value for this node (flanneld takes each flag once).
    pub fn flanneld_args(&self, i: usize, extra: &[&str]) -> Vec<String> {
        let n = &self.nodes[i];
        let mut a: Vec<String> = self.store.flanneld_args();
        a.extend([
            "--subnet-file".into(),
            n.subnet_file().to_string_lossy().into_owned(),
            "--net-config-path".into(),
            self.net_conf_path().to_string_lossy().into_owned(),
        ]);
        for (flag, value) in [
            ("--lease-ttl", self.opts.lease_ttl),
            ("--resync-interval", self.opts.resync_interval),
        ] {
            if !extra.contains(&flag) {
                a.extend([flag.to_string(), value.to_string()]);
            }
        }
        // /healthz, /readyz and /metrics on 127.0.0.1 in each node's own
        // netns (one port for all), unless the caller picks its own.
        let picks_port = extra
            .iter()
            .copied()
            .chain(self.opts.extra_args.iter().map(String::as_str))
            .any(|s| s.starts_with("--healthz-port"));
        if !picks_port {
            a.extend([
                "--healthz-ip".to_string(),
                "127.0.0.1".to_string(),
                "--healthz-port".to_string(),
                crate::metrics::PORT.to_string(),
            ]);
        }
        a.extend(self.opts.extra_args.iter().cloned());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Starts node `i`'s flanneld (does not wait for it to be ready).
    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// Starts node `i`'s flanneld with extra arguments.
    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
        let args = self.flanneld_args(i, extra);
        let env = self.store.flanneld_env(&self.nodes[i].name);
        let bin = self.flanneld.clone();
        self.nodes[i].spawn_daemon(&bin, &args, &env);
    }

    /// Starts node `i`'s flanneld with exactly `env` as its store
    /// environment (instead of the store's own, e.g. kube's `NODE_NAME`).
    pub fn start_with_env(&mut self, i: usize, extra: &[&str], env: &[(String, String)]) {
        let args = self.flanneld_args(i, extra);
        let bin = self.flanneld.clone();
        self.nodes[i].spawn_daemon(&bin, &args, env);
    }

    /// Runs flanneld on node `i` with exactly `args` (no defaults added) and
    /// waits up to `timeout` for it to exit; a daemon still running then is
    /// stopped and reported as `exited: false`.
    pub fn run_flanneld(&self, i: usize, args: &[&str], timeout: Duration) -> DaemonRun {
        self.nodes[i].run_once(&self.flanneld, args, timeout)
    }

    /// Waits for node `i`'s subnet.env (panics with its log if flanneld exits
    /// or does not get there within [`READY_TIMEOUT`]).
    pub fn wait_ready(&self, i: usize) {
        self.nodes[i].wait_ready(READY_TIMEOUT);
    }

    /// SIGTERM; waits for the exit and returns it.
    pub fn stop(&mut self, i: usize) -> std::process::ExitStatus {
        self.nodes[i].signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
    }

    /// SIGKILL; waits for the exit.
    pub fn kill(&mut self, i: usize) -> std::process::ExitStatus {
        self.nodes[i].signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10))
    }

    /// Stops node `i`'s flanneld with SIGKILL (`kill`) or SIGTERM and checks
    /// how it ended: killed by signal 9, or a clean exit 0.
    #[track_caller]
    pub fn stop_checked(&mut self, i: usize, kill: bool) {
        use std::os::unix::process::ExitStatusExt;
        if kill {
            let st = self.kill(i);
            assert_eq!(st.signal(), Some(9), "{st:?}");
        } else {
            let st = self.stop(i);
            assert_eq!(
                st.code(),
                Some(0),
                "SIGTERM should exit 0: {st:?}\n{}",
                self.log(i)
            );
        }
    }

    /// Every lease in the store (for the file store: unexpired or not).
    pub fn leases(&self) -> Vec<LeaseFile> {
        self.store.leases(&self.underlay)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Keeps `ns` until the cluster drops (before the node namespaces go).
    pub fn adopt_ns(&mut self, ns: NetNs) -> &NetNs {
        self.extra.push(ns);
        self.extra.last().expect("just pushed")
    }

    /// The name prefix (see [`ClusterBuilder::name_prefix`]), if any.
    pub fn name_prefix(&self) -> Option<&str> {
        self.opts.prefix.as_deref()
    }

    /// A namespace named like the cluster's own (`short`: tag of a unique
    /// name; `long`: the name after the cluster prefix).
    pub fn make_ns(&self, short: &str, long: &str) -> NetNs {
        self.opts.make_ns(short, long)
    }

    /// The unexpired lease whose PublicIP (or PublicIPv6) is node `i`'s.
    pub fn lease_of(&self, i: usize) -> Option<LeaseFile> {
        let n = &self.nodes[i];
        self.leases()
            .into_iter()
            .find(|l| l.is_of(n.ip, n.ip6) && !l.is_expired())
    }

    #[track_caller]
    pub fn lease_of_ok(&self, i: usize) -> LeaseFile {
        self.lease_of(i).unwrap_or_else(|| {
            panic!(
                "no lease for {} ({}); leases: {:#?}",
                self.nodes[i].name,
                self.nodes[i].ip,
                self.leases()
            )
        })
    }

    /// Releases node `i`'s lease in the store (file store: deletes the file).
    pub fn remove_lease(&self, i: usize) {
        let l = self.lease_of_ok(i);
        self.store.remove(&self.underlay, &l);
    }

    /// The CNI config a runtime would pass to the flannel plugin on node `i`.
    pub fn cni_config(&self, i: usize) -> Value {
        let n = &self.nodes[i];
        json!({
            "cniVersion": "1.0.0",
            "name": "cbr0",
            "type": "flannel",
            "delegate": {"hairpinMode": true, "isDefaultGateway": true},
            "subnetFile": n.subnet_file(),
            "dataDir": n.data_dir(),
        })
    }

    /// flanneld's log of node `i` so far.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }

    /// All nodes' logs, each under a header.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&format!(
                "===== {} ({}) flanneld log =====\n{}\n",
                n.name,
                n.ns.name(),
                n.log()
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.all_logs());
        }
        for n in &mut self.nodes {
            n.stop_daemon();
        }
    }
}
