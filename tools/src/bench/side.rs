//! One side of the comparison: a node namespace of its own, a temp dir for
//! its files, the plugin and its config, and the pods it wires up. Plus the
//! two ways of driving it: a long-lived thread inside the node namespace
//! for sequential calls, and a pool of such threads for a burst.
//!
//! Each side lives in a namespace and temp dir of its own, removed on drop;
//! nothing here runs in the host's own namespace.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flannel_cluster::{NetNs, Pod, SubnetFile, TempDir, IPV6_NETWORK, IPV6_SUBNET};
use serde_json::json;

use super::exec::{Plugin, PodRef};

/// The bridge both sides use, each in its own node namespace.
pub const BRIDGE: &str = "cni0";
/// How long a pod's namespace may take to lose its last non-`lo` link
/// after DEL (our DEL leaves the unregister to a detached helper).
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Side {
    pub label: &'static str,
    pub plugin: Plugin,
    pub node: NetNs,
    _dir: TempDir,
}

impl Side {
    /// flannel-rs: kube-flannel.yml's config, a subnet.env in which
    /// FLANNEL_IPMASQ=true (so the plugin does not masquerade itself), or
    /// false with `ip_masq` (flanneld's default: the plugin masquerades
    /// each pod), with the IPv6 keys too when `dual_stack`.
    pub fn flannel(bin: &Path, cni_path: &str, dual_stack: bool, ip_masq: bool) -> Side {
        let node = NetNs::new("n");
        let dir = TempDir::new("d");
        let subnet_file = dir.join("subnet.env");
        let env = if dual_stack {
            SubnetFile::dual_stack()
        } else {
            SubnetFile::default()
        };
        let env = SubnetFile {
            ipmasq: !ip_masq,
            ..env
        };
        std::fs::write(&subnet_file, env.render()).expect("write subnet.env");
        let conf = json!({
            "cniVersion": "0.3.1",
            "name": "cbr0",
            "type": "flannel",
            "delegate": {"hairpinMode": true, "isDefaultGateway": true},
            "subnetFile": subnet_file,
            "dataDir": dir.path(),
        });
        Side::with(node, dir, "flannel-rs", bin, cni_path, &conf)
    }

    /// The reference pair with the config flannel's Go plugin would hand to
    /// `bridge` for the same subnet.env: with `dual_stack`, host-local's
    /// ranges `[[v4], [v6]]` and a route to each family's network, as
    /// upstream's `getDelegateIPAM` builds them; `ip_masq` is bridge's
    /// `ipMasq` (what upstream's flannel plugin passes when it masquerades).
    pub fn reference(cni_path: &str, dual_stack: bool, ip_masq: bool) -> Side {
        let node = NetNs::new("n");
        let dir = TempDir::new("d");
        let (ranges, routes) = if dual_stack {
            let v6 = IPV6_SUBNET.replace("::1/", "::/");
            (
                json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": v6}]]),
                json!([{"dst": "10.244.0.0/16"}, {"dst": IPV6_NETWORK}]),
            )
        } else {
            (
                json!([[{"subnet": "10.244.1.0/24"}]]),
                json!([{"dst": "10.244.0.0/16"}]),
            )
        };
        let conf = json!({
            "cniVersion": "0.3.1",
            "name": "cbr0",
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipMasq": ip_masq,
            "mtu": 1450,
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "routes": routes,
                "dataDir": dir.path(),
            },
        });
        let bin = Path::new(cni_path).join("bridge");
        Side::with(node, dir, "reference", &bin, cni_path, &conf)
    }

    fn with(
        node: NetNs,
        dir: TempDir,
        label: &'static str,
        bin: &Path,
        cni_path: &str,
        conf: &serde_json::Value,
    ) -> Side {
        let plugin = Plugin {
            bin: bin.to_owned(),
            cni_path: cni_path.to_owned(),
            config: serde_json::to_vec(conf).expect("serialize config"),
        };
        Side {
            label,
            plugin,
            node,
            _dir: dir,
        }
    }
}

/// The CNI identity of a harness pod.
pub fn pod_ref(p: &Pod) -> PodRef {
    PodRef {
        cid: p.cid.clone(),
        netns: p.ns.path_str(),
        ifname: p.ifname.clone(),
        name: p.ns.name().to_owned(),
    }
}

/// The names of the links in the namespace at `netns` (read on this thread,
/// which enters it and comes back through the RAII guard).
pub fn links_in(netns: &str) -> Result<Vec<String>, String> {
    let file = common::netns::open(Path::new(netns)).map_err(|e| format!("open {netns}: {e}"))?;
    let text = common::netns::run_in(std::os::fd::AsFd::as_fd(&file), || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })
    .map_err(|e| format!("enter {netns}: {e}"))?
    .map_err(|e| format!("read links of {netns}: {e}"))?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect())
}

/// Polls until the pod namespace holds nothing but `lo` (after DEL, when any
/// deferred unregister has finished); returns when it saw that.
pub fn wait_quiet(netns: &str, timeout: Duration) -> Result<Instant, String> {
    wait_links(netns, &["lo"], timeout)
}

/// Polls until the namespace holds no links but `keep`.
pub fn wait_links(netns: &str, keep: &[&str], timeout: Duration) -> Result<Instant, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let links = links_in(netns)?;
        if links.iter().all(|l| keep.contains(&l.as_str())) {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{netns} still has links {links:?} after {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that lives inside a namespace and runs closures sent to it, one
/// at a time, for sequential calls that alternate between two sides.
pub struct NsThread {
    tx: Option<Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl NsThread {
    pub fn new(ns: &NetNs) -> NsThread {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = ns.spawn(move || {
            for job in rx {
                job();
            }
        });
        NsThread {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Runs `f` on the thread and waits for its result.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = rtx.send(f());
        });
        self.tx
            .as_ref()
            .expect("thread running")
            .send(job)
            .expect("namespace thread is gone");
        rrx.recv()
            .expect("namespace thread died (see its panic above)")
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A burst: `pods` invoked with `verb` by `width` threads inside the node
/// namespace, each taking the next pod as soon as its previous call is done.
/// Returns the wall time from the start signal to the last exit.
pub fn burst(
    side: &Side,
    verb: &'static str,
    pods: &[PodRef],
    width: usize,
) -> Result<Duration, String> {
    let pods: Arc<Vec<PodRef>> = Arc::new(pods.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let start_gate = Arc::new(Barrier::new(width + 1));
    let workers: Vec<JoinHandle<Option<Instant>>> = (0..width)
        .map(|_| {
            let (pods, next, abort, errors, gate, plugin) = (
                pods.clone(),
                next.clone(),
                abort.clone(),
                errors.clone(),
                start_gate.clone(),
                side.plugin.clone(),
            );
            side.node.spawn(move || {
                gate.wait();
                let mut last = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pods.len() || abort.load(Ordering::Relaxed) {
                        return last;
                    }
                    match plugin.call(verb, &pods[i]) {
                        Ok(_) => last = Some(Instant::now()),
                        Err(e) => {
                            abort.store(true, Ordering::Relaxed);
                            errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                            return last;
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    start_gate.wait();
    let mut end = start;
    for w in workers {
        match w.join() {
            Ok(Some(t)) => end = end.max(t),
            Ok(None) => {}
            Err(_) => errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push("a burst worker panicked".into()),
        }
    }
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(first) = errors.into_iter().next() {
        return Err(format!("{} burst {verb}: {first}", side.label));
    }
    Ok(end - start)
}
