//! Where a cluster's leases live: the embedded file store (a directory all
//! node flanneld shares), a real etcd (Debian's `etcd-server`) running inside
//! the underlay namespace on the bridge address, so its traffic never leaves
//! the cluster's namespaces, or the Kubernetes API (the stand-in API server,
//! also in the underlay namespace: see `kube.rs`).

pub use super::kube::KubeStandin;
use super::lease::{parse_etcdctl_leases, read_leases, LeaseFile};
use super::UNDERLAY_GATEWAY;
use crate::netns::NetNs;
use crate::proc::{ChildGuard, RecordedProcess, ServerProcess};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The lease store a cluster's flanneld processes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// The embedded store: `<cluster dir>/leases`, `--lease-dir`.
    #[default]
    File,
    /// etcd v3 at `http://192.168.64.1:2379` in the underlay namespace.
    Etcd,
    /// The Kubernetes API (`--kube-subnet-mgr`): the stand-in API server at
    /// `https://192.168.64.1:6443` in the underlay namespace.
    Kube,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Etcd => "etcd",
            StoreKind::Kube => "kube",
        }
    }

    pub fn parse(s: &str) -> Option<StoreKind> {
        match s {
            "file" => Some(StoreKind::File),
            "etcd" => Some(StoreKind::Etcd),
            "kube" => Some(StoreKind::Kube),
            _ => None,
        }
    }
}

/// flannel's default etcd prefix.
pub const ETCD_PREFIX: &str = "/coreos.com/network";

/// The client URL flanneld's are given (`--etcd-endpoints`).
pub fn etcd_endpoint() -> String {
    format!("http://{UNDERLAY_GATEWAY}:2379")
}

/// Where etcd lives on Debian.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// A running etcd: started by this process (stopped on drop) or recorded
/// by another run of the tool (left alone on drop).
pub struct EtcdServer {
    server: ServerProcess,
    dir: PathBuf,
    /// Started in a session of its own (kept across a restart).
    detached: bool,
}

impl EtcdServer {
    /// Starts etcd inside `underlay` with its data and log in `dir/etcd*`,
    /// waits until it answers, and stores the network config `net_conf`
    /// at `<prefix>/config`. `detached`: in a session of its own.
    pub fn start(underlay: &NetNs, dir: &Path, net_conf: &str, detached: bool) -> EtcdServer {
        for bin in [ETCD_BIN, ETCDCTL_BIN] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} not found: `apt-get install etcd-server etcd-client` (or run ci/deps.sh)"
            );
        }
        let mut server = EtcdServer {
            server: ServerProcess::default(),
            dir: dir.to_owned(),
            detached,
        };
        server.spawn(underlay);
        let key = format!("{ETCD_PREFIX}/config");
        etcdctl(underlay, &["put", &key, net_conf]).ok();
        server
    }

    /// Starts the etcd process (data dir `dir/etcd`, log appended to
    /// `dir/etcd.log`) and waits until it answers.
    fn spawn(&mut self, underlay: &NetNs) {
        let data = self.dir.join("etcd");
        let log_path = self.dir.join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
        let err = log.try_clone().expect("dup etcd log fd");
        let url = etcd_endpoint();
        let peer = "http://127.0.0.1:2380";
        let mut c = underlay.command(ETCD_BIN);
        c.args(["--name", "netns-cluster", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
            ])
            .args(["--initial-cluster", &format!("netns-cluster={peer}")])
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        if self.detached {
            crate::proc::new_session(&mut c);
        }
        self.server.child = Some(ChildGuard::spawn(&mut c));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = etcdctl(underlay, &["endpoint", "health"]);
            if out.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy within 20 s: {out}\n--- etcd.log ---\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the etcd this process started (SIGTERM, by its PID; SIGKILL
    /// after 10 s), keeping its data dir for [`restart`](Self::restart).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut g = self
            .server
            .child
            .take()
            .expect("stop: etcd is not running, or was not started by this process");
        g.stop(Duration::from_secs(10))
    }

    /// Starts etcd again after [`stop`](Self::stop): same data dir, same
    /// address; waits until it answers.
    pub fn restart(&mut self, underlay: &NetNs) {
        assert!(
            self.server.child.is_none() && self.server.recorded.is_none(),
            "restart: etcd is still running (stop it first)"
        );
        self.spawn(underlay);
    }

    /// A server another process started (from its saved state).
    pub fn recorded(r: RecordedProcess, dir: &Path) -> EtcdServer {
        EtcdServer {
            server: ServerProcess::recorded(r),
            dir: dir.to_owned(),
            detached: true,
        }
    }

    /// Lets etcd outlive this handle; returns it as a recorded process (its
    /// command line names its data dir).
    pub fn detach(&mut self) -> Option<RecordedProcess> {
        self.server.detach(&self.dir.join("etcd"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }
}

/// `etcdctl --endpoints <url> <args>` inside the underlay namespace (v3 API).
pub fn etcdctl(underlay: &NetNs, args: &[&str]) -> crate::cmd::Output {
    let url = etcd_endpoint();
    let mut c = underlay.command(ETCDCTL_BIN);
    c.env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &url,
            "--dial-timeout",
            "2s",
            "--command-timeout",
            "5s",
        ])
        .args(args);
    crate::cmd::run_with(&mut c, None, Duration::from_secs(15))
}

/// A cluster's store and how to read it.
pub enum Store {
    File(PathBuf),
    Etcd(EtcdServer),
    Kube(KubeStandin),
}

impl Store {
    pub fn kind(&self) -> StoreKind {
        match self {
            Store::File(_) => StoreKind::File,
            Store::Etcd(_) => StoreKind::Etcd,
            Store::Kube(_) => StoreKind::Kube,
        }
    }

    /// Every lease the store holds (for the file store: also expired ones).
    pub fn leases(&self, underlay: &NetNs) -> Vec<LeaseFile> {
        match self {
            Store::File(dir) => read_leases(dir),
            Store::Etcd(_) => {
                let prefix = format!("{ETCD_PREFIX}/subnets/");
                let out = etcdctl(underlay, &["get", "--prefix", &prefix]);
                if out.success() {
                    parse_etcdctl_leases(&out.stdout)
                } else {
                    vec![]
                }
            }
            Store::Kube(k) => k.leases(),
        }
    }

    /// Releases a lease the way its store does: the file goes, or the key,
    /// or (kube) the Node object: the node is deleted from the cluster.
    pub fn remove(&self, underlay: &NetNs, lease: &LeaseFile) {
        match self {
            Store::File(_) => std::fs::remove_file(&lease.path)
                .unwrap_or_else(|e| panic!("remove {}: {e}", lease.path.display())),
            Store::Etcd(_) => {
                let key = lease.path.to_string_lossy().into_owned();
                etcdctl(underlay, &["del", &key]).ok();
            }
            Store::Kube(k) => {
                k.delete_node(&lease.path.to_string_lossy());
            }
        }
    }

    /// What a node's kubelet does before flanneld starts (kube: registers
    /// its Node object); nothing for the other stores.
    pub fn register_node(
        &self,
        name: &str,
        ip: std::net::Ipv4Addr,
        ip6: Option<std::net::Ipv6Addr>,
    ) {
        if let Store::Kube(k) = self {
            k.register_node(name, ip, ip6);
        }
    }

    /// The etcd server, for a cluster on etcd.
    pub fn etcd_mut(&mut self) -> Option<&mut EtcdServer> {
        match self {
            Store::Etcd(e) => Some(e),
            _ => None,
        }
    }

    /// The flanneld flags that select this store.
    pub fn flanneld_args(&self) -> Vec<String> {
        match self {
            Store::File(dir) => vec!["--lease-dir".into(), dir.to_string_lossy().into_owned()],
            Store::Etcd(_) => vec!["--etcd-endpoints".into(), etcd_endpoint()],
            Store::Kube(k) => vec![
                "--kube-subnet-mgr".into(),
                "--kubeconfig-file".into(),
                k.kubeconfig().to_string_lossy().into_owned(),
            ],
        }
    }

    /// The environment flanneld on node `name` needs (kube: `NODE_NAME`,
    /// as kube-flannel.yml sets it from the downward API).
    pub fn flanneld_env(&self, name: &str) -> Vec<(String, String)> {
        match self {
            Store::Kube(_) => vec![("NODE_NAME".into(), name.into())],
            _ => Vec::new(),
        }
    }
}

impl super::Cluster {
    /// Stops the cluster's etcd (by its PID), keeping its data and address;
    /// the nodes' flanneld keep running and find etcd unreachable.
    pub fn stop_etcd(&mut self) {
        self.store
            .etcd_mut()
            .expect("stop_etcd: the cluster's store is not etcd")
            .stop();
    }

    /// Starts the cluster's etcd again (after [`stop_etcd`](Self::stop_etcd))
    /// on the same data dir and address; returns once it answers.
    pub fn restart_etcd(&mut self) {
        let etcd = match &mut self.store {
            Store::Etcd(e) => e,
            _ => panic!("restart_etcd: the cluster's store is not etcd"),
        };
        etcd.restart(&self.underlay);
    }
}
