//! The scale benchmark's kernel side: the fake peers (leases only, never
//! reached), what their entries on `flannel.1` look like, reading those
//! entries back, and the anchor: the same entries written by `ip -batch`
//! and `bridge -batch` into a fresh `flannel.1` in a namespace of its own.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flannel_cluster::cluster::entry_monitor::EntryMonitor;
use flannel_cluster::kube_api::NodeFixture;
use flannel_cluster::NetNs;

/// One fake peer: its subnet, public IP and VtepMAC.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FakePeer {
    pub index: u32,
    pub subnet: Ipv4Addr,
    pub public_ip: Ipv4Addr,
    pub mac: String,
}

impl FakePeer {
    /// Peer `i`: subnet 10.(1 + i/256).(i%256).0/24 (10.0.0.0/24 holds the
    /// public IPs), the public IP and MAC the kube fixtures give index `i`.
    pub fn new(i: u32) -> FakePeer {
        let fixture = NodeFixture::new("peer", i).flannel();
        let Some(f) = fixture.flannel else {
            panic!("NodeFixture::flannel() set no annotations")
        };
        FakePeer {
            index: i,
            subnet: Ipv4Addr::new(10, (1 + i / 256) as u8, (i % 256) as u8, 0),
            public_ip: f.public_ip,
            mac: f.vtep_mac,
        }
    }

    pub fn cidr(&self) -> String {
        format!("{}/24", self.subnet)
    }

    /// flannel's lease value for it.
    pub fn value(&self) -> String {
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            self.public_ip, self.mac
        )
    }

    /// Its key in etcd and name in the lease directory: `10.1.2.0-24`.
    pub fn key(&self) -> String {
        format!("{}-24", self.subnet)
    }
}

/// Entries on `flannel.1`, each as a comparable string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries {
    pub routes: BTreeSet<String>,
    pub neigh: BTreeSet<String>,
    pub fdb: BTreeSet<String>,
}

impl Entries {
    /// What `peers` call for.
    pub fn wanted<'a>(peers: impl IntoIterator<Item = &'a FakePeer>) -> Entries {
        let mut e = Entries::default();
        for p in peers {
            e.routes.insert(p.cidr());
            e.neigh.insert(format!("{} {}", p.subnet, p.mac));
            e.fdb.insert(format!("{} {}", p.mac, p.public_ip));
        }
        e
    }

    /// How many entries, of all kinds.
    pub fn count(&self) -> usize {
        self.routes.len() + self.neigh.len() + self.fdb.len()
    }

    /// The routes, permanent neighbours and FDB entries with a destination
    /// on `flannel.1` in `ns` (read with `ip -j`).
    pub fn read(ns: &str) -> Entries {
        let json = |prog: &str, args: &[&str]| -> Vec<serde_json::Value> {
            let out = Command::new(prog)
                .args(["-n", ns, "-j"])
                .args(args)
                .stderr(Stdio::null())
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            serde_json::from_slice(&out).unwrap_or_default()
        };
        let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
        let routes = json("ip", &["route", "show", "dev", "flannel.1"])
            .iter()
            .filter(|r| r["gateway"].is_string())
            .map(|r| {
                let dst = s(r, "dst");
                if dst.contains('/') {
                    dst
                } else {
                    format!("{dst}/32")
                }
            })
            .collect();
        let neigh = json(
            "ip",
            &["neigh", "show", "dev", "flannel.1", "nud", "permanent"],
        )
        .iter()
        .map(|n| format!("{} {}", s(n, "dst"), s(n, "lladdr")))
        .collect();
        let fdb = json("bridge", &["fdb", "show", "dev", "flannel.1"])
            .iter()
            .filter(|f| f["dst"].is_string())
            .map(|f| format!("{} {}", s(f, "mac"), s(f, "dst")))
            .collect();
        Entries { routes, neigh, fdb }
    }
}

/// Creates `flannel.1` in `ns` as flanneld would (VNI 1, port 8472, no
/// learning), up.
fn vxlan_device(ns: &NetNs) {
    ns.ip_ok(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "192.168.64.250",
        "dstport",
        "8472",
        "nolearning",
    ]);
    ns.ip_ok(&["link", "set", "flannel.1", "up"]);
}

/// The anchor: the entries of `peers` written by one `ip -batch` (routes
/// and neighbours) and one `bridge -batch` (FDB) into a fresh `flannel.1`
/// in a fresh namespace. Returns the wall time of the two batches; checks
/// that every entry landed.
pub fn ip_batch(peers: &[FakePeer], dir: &std::path::Path) -> Anchor {
    let mut ip = String::new();
    let mut bridge = String::new();
    for p in peers {
        ip.push_str(&format!(
            "neigh replace {} lladdr {} dev flannel.1 nud permanent\n",
            p.subnet, p.mac
        ));
        bridge.push_str(&format!(
            "fdb replace {} dev flannel.1 dst {} self permanent\n",
            p.mac, p.public_ip
        ));
        ip.push_str(&format!(
            "route replace {} via {} dev flannel.1 onlink\n",
            p.cidr(),
            p.subnet
        ));
    }
    let ip_file = dir.join("anchor.ip");
    let bridge_file = dir.join("anchor.bridge");
    std::fs::write(&ip_file, ip).expect("write the ip batch");
    std::fs::write(&bridge_file, bridge).expect("write the bridge batch");
    let want = Entries::wanted(peers);
    let write = |observed: bool| {
        let ns = NetNs::new("anchor");
        vxlan_device(&ns);
        let monitor = observed.then(|| EntryMonitor::start(&ns, "flannel.1"));
        let batch = |prog: &str, file: &std::path::Path| {
            let st = Command::new(prog)
                .args(["-n", ns.name(), "-batch"])
                .arg(file)
                .stdout(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("run {prog} -batch: {e}"));
            assert!(st.success(), "{prog} -batch {}: {st}", file.display());
        };
        let start = Instant::now();
        batch("ip", &ip_file);
        batch("bridge", &bridge_file);
        let mut took = start.elapsed();
        if let Some(m) = monitor {
            // The same end as flanneld's figure: the last change the
            // monitor saw.
            let deadline = Instant::now() + Duration::from_secs(30);
            while m.events().len() < want.count() {
                assert!(Instant::now() < deadline, "the monitor missed changes");
                std::thread::sleep(Duration::from_millis(10));
            }
            let last = m.events().iter().map(|e| e.at).max().unwrap_or(start);
            took = last.saturating_duration_since(start);
        }
        assert_eq!(
            Entries::read(ns.name()),
            want,
            "ip -batch wrote every entry"
        );
        took
    };
    let unobserved = write(false);
    let observed = write(true);
    Anchor {
        observed,
        unobserved,
    }
}

/// The anchor's time: under the same netlink monitor that times flanneld
/// (the ratio's base: the kernel tells every listener of every change, at
/// the writer's cost), and with no listener.
#[derive(Clone, Copy, Debug)]
pub struct Anchor {
    pub observed: Duration,
    pub unobserved: Duration,
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
