//! How a [`Cluster`] is built: its size, net-conf.json, IP families,
//! lease store, flanneld flags, names and directory; `build` makes the
//! underlay (with IPv6 when the overlay runs it), the store, the nodes,
//! and starts them.
//!
//! It only assembles and starts what the other modules make; it does not read
//! kernel state or talk to a store itself, and builds nothing in the host's
//! own namespace.

use super::family::IpFamily;
use super::store::{self, Store, StoreKind};
use super::{
    default_net_conf, workspace_binary, Cluster, UNDERLAY_BRIDGE, UNDERLAY_GATEWAY,
    UNDERLAY_GATEWAY6,
};
use crate::netns::NetNs;
use crate::tempdir::TempDir;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How to build a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    pub(super) nodes: usize,
    pub(super) net_conf: Option<String>,
    pub(super) lease_ttl: u64,
    pub(super) resync_interval: u64,
    pub(super) extra_args: Vec<String>,
    pub(super) start: bool,
    pub(super) mtu: Option<u32>,
    pub(super) prefix: Option<String>,
    pub(super) dir: Option<PathBuf>,
    pub(super) detached: bool,
    pub(super) store: StoreKind,
    pub(super) family: IpFamily,
    /// Does the underlay carry IPv4 (the stores' network)?
    pub(super) underlay_ipv4: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 2,
            net_conf: Some(default_net_conf().to_string()),
            lease_ttl: 86_400,
            resync_interval: 1,
            extra_args: Vec::new(),
            start: true,
            mtu: None,
            prefix: None,
            dir: None,
            detached: false,
            store: StoreKind::File,
            family: IpFamily::V4,
            underlay_ipv4: true,
        }
    }
}

impl ClusterBuilder {
    pub fn nodes(mut self, n: usize) -> Self {
        assert!(n <= 200, "at most 200 nodes fit the underlay /24");
        self.nodes = n;
        self
    }

    /// The `net-conf.json` to write (a JSON value).
    pub fn net_conf(self, conf: Value) -> Self {
        self.net_conf_raw(&conf.to_string())
    }

    /// The `net-conf.json` text, verbatim (for malformed files).
    pub fn net_conf_raw(mut self, text: &str) -> Self {
        self.net_conf = Some(text.to_owned());
        self
    }

    /// Write no `net-conf.json` at all.
    pub fn no_net_conf(mut self) -> Self {
        self.net_conf = None;
        self
    }

    /// `--lease-ttl` (seconds) for every node.
    pub fn lease_ttl(mut self, secs: u64) -> Self {
        self.lease_ttl = secs;
        self
    }

    /// `--resync-interval` (seconds) for every node; 1 by default.
    pub fn resync_interval(mut self, secs: u64) -> Self {
        self.resync_interval = secs;
        self
    }

    /// Extra flanneld arguments for every node.
    pub fn flanneld_args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Start every node's flanneld and wait for its subnet.env (default), or not.
    pub fn start(mut self, start: bool) -> Self {
        self.start = start;
        self
    }

    /// The MTU of the underlay (node `eth0`s and the bridge); 1500 by default.
    pub fn underlay_mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Names every namespace (and pod container ID) `<prefix><what>`
    /// exactly — `underlay`, `node0`, `node0-pod1` — instead of this
    /// process's unique `ft<pid>-<n>` names. For clusters that outlive the
    /// process (the `netns-cluster` tool); the caller makes the prefix unique.
    pub fn name_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// The cluster's directory (created; must not exist), instead of a
    /// fresh temp dir.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// Start daemons (flanneld, etcd) in sessions of their own, so that
    /// [`Cluster::persist`] can leave them running after this process exits.
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }

    /// The lease store (the embedded file store by default).
    pub fn store(mut self, store: StoreKind) -> Self {
        self.store = store;
        self
    }

    /// The overlay's families (IPv4 by default): the underlay gets IPv6
    /// addresses when it includes IPv6, and `net-conf.json` becomes the
    /// family's ([`IpFamily::net_conf`]; a later `net_conf` replaces it).
    /// An underlay without IPv4 (`false`): the nodes' `eth0` get only
    /// their IPv6 address and default route, as on an IPv6-only host;
    /// `Node::ip` is then a name, configured nowhere. Needs an IPv6-only
    /// overlay on the file store (etcd and the API stand-in listen on IPv4).
    pub fn underlay_ipv4(mut self, yes: bool) -> Self {
        self.underlay_ipv4 = yes;
        self
    }

    pub fn ip_family(mut self, family: IpFamily) -> Self {
        self.family = family;
        self.net_conf = Some(family.net_conf().to_string());
        self
    }

    /// A namespace named after `short` (this process's unique names) or
    /// `<prefix><long>` (with a name prefix).
    pub(super) fn make_ns(&self, short: &str, long: &str) -> NetNs {
        match &self.prefix {
            None => NetNs::new(short),
            Some(p) => NetNs::with_name(&format!("{p}{long}")).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    pub fn build(self) -> Cluster {
        crate::netns::require_root();
        let dir = match &self.dir {
            None => TempDir::new("c"),
            Some(d) => TempDir::create_at(d).unwrap_or_else(|e| panic!("{e}")),
        };
        assert!(
            self.underlay_ipv4 || (self.family == IpFamily::V6 && self.store == StoreKind::File),
            "an underlay without IPv4 needs an IPv6-only overlay on the file store"
        );
        let underlay = self.make_ns("u", "underlay");
        underlay.add_bridge(UNDERLAY_BRIDGE);
        if self.underlay_ipv4 {
            underlay.add_addr(UNDERLAY_BRIDGE, &format!("{UNDERLAY_GATEWAY}/24"));
        }
        if self.family.has_v6() {
            let a = format!("{UNDERLAY_GATEWAY6}/64");
            underlay.ip_ok(&["-6", "addr", "add", &a, "dev", UNDERLAY_BRIDGE, "nodad"]);
        }
        if let Some(mtu) = self.mtu {
            underlay.ip_ok(&["link", "set", UNDERLAY_BRIDGE, "mtu", &mtu.to_string()]);
        }
        std::fs::create_dir(dir.join("leases")).expect("create lease dir");
        if let Some(text) = &self.net_conf {
            std::fs::write(dir.join("net-conf.json"), text).expect("write net-conf.json");
        }
        let store = match self.store {
            StoreKind::File => Store::File(dir.join("leases")),
            StoreKind::Etcd => {
                let conf = self.net_conf.clone().unwrap_or_else(|| "{}".into());
                Store::Etcd(store::EtcdServer::start(
                    &underlay,
                    dir.path(),
                    &conf,
                    self.detached,
                ))
            }
            StoreKind::Kube => Store::Kube(store::KubeStandin::start(
                &underlay,
                dir.path(),
                self.net_conf.as_deref(),
                self.detached,
            )),
        };
        let mut c = Cluster {
            nodes: Vec::new(),
            extra: Vec::new(),
            store,
            underlay,
            flanneld: workspace_binary("flanneld"),
            flannel: crate::cni::plugin_override().unwrap_or_else(|| workspace_binary("flannel")),
            opts: self.clone(),
            dir,
        };
        for _ in 0..self.nodes {
            c.add_node();
        }
        if self.start {
            for i in 0..c.nodes.len() {
                c.start(i);
            }
            for i in 0..c.nodes.len() {
                c.wait_ready(i);
            }
        }
        c
    }
}
