//! Tests of the VXLAN backend. `plan.rs` is pure; the others run as root,
//! each in network namespaces it creates (the harness's `NetNs`, named
//! `ft<pid>-<n>-vx`, deleted on drop, also on panic): the backend runs on a thread that enters the namespace
//! and opens its netlink socket there; iproute2 reads back what it did.
//!
//! Never configures the host's own namespace.

mod device;
mod direct;
mod peers;
mod plan;
mod reconcile;
mod v6;

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::process::Command;

use flannel_cluster::netns::NetNs;
use ipnetwork::{Ipv4Network, Ipv6Network};
use serde_json::Value;

use super::{DeviceSpec, Peer, Vxlan, VxlanFamily};

/// Our address on the namespace's `eth0`.
pub(super) const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 168, 64, 2);
pub(super) const MAC: [u8; 6] = [0x0e, 0x00, 0x00, 0x00, 0x00, 0x11];
/// Our IPv6 address on the namespace's `eth0`.
pub(super) const LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, 2);

/// A network namespace with `eth0` (a veth whose peer `eth0p` stays in the
/// same namespace) at 192.168.64.2/24 and fd00:64::2/64, up. The
/// harness's [`NetNs`] owns it (deleted on drop, also on panic).
pub(crate) struct TestNs {
    ns: NetNs,
    name: String,
}

impl TestNs {
    pub fn new() -> TestNs {
        let ns = NetNs::new("-vx");
        let name = ns.name().to_string();
        let ns = TestNs { ns, name };
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ]);
        ns.ip(&["addr", "add", "192.168.64.2/24", "dev", "eth0"]);
        ns.ip(&["addr", "add", "fd00:64::2/64", "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0p", "up"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns
    }

    /// `ip -n NS ARGS`, panicking on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        self.ns.ip_ok(args)
    }

    /// `ip -j -n NS ARGS` as JSON (empty output is `[]`).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        self.ns.ip_json(args)
    }

    /// `bridge -j -n NS ARGS` as JSON.
    pub fn bridge_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j", "-n", &self.name];
        full.extend_from_slice(args);
        json(&run("bridge", &full))
    }

    /// `bridge -n NS ARGS`.
    pub fn bridge(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("bridge", &full)
    }

    /// `/proc/sys/<key>` as seen inside the namespace.
    pub fn proc_sys(&self, key: &str) -> String {
        let path = format!("/proc/sys/{key}");
        run("ip", &["netns", "exec", &self.name, "cat", &path])
            .trim()
            .to_string()
    }

    /// `nft ARGS` inside the namespace, panicking on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, "nft"];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `nft list table FAMILY TABLE` inside the namespace; None when the
    /// table does not exist.
    pub fn nft_table(&self, family: &str, table: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "list", "table", family, table,
            ])
            .output()
            .unwrap_or_else(|e| panic!("run nft: {e}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn ifindex(&self, dev: &str) -> u32 {
        let v = self.ip_json(&["link", "show", dev]);
        v[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no ifindex for {dev}: {v}"))
    }

    /// Runs `f` with a backend whose netlink socket lives in this
    /// namespace: on a thread that enters it, under a current-thread
    /// runtime. A panic inside is re-raised here with its message.
    pub fn run<'a, A, F, Fut, T>(&'a self, f: F) -> T
    where
        A: VxlanFamily,
        F: FnOnce(Vxlan<A>) -> Fut + Send + 'a,
        Fut: Future<Output = T>,
        T: Send + 'a,
    {
        self.within(|handle| f(Vxlan::new(handle)))
    }

    /// Runs `f` on a thread inside this namespace (so are the processes it
    /// starts), with a netlink handle opened there.
    pub fn within<'a, F, Fut, T>(&'a self, f: F) -> T
    where
        F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'a,
        Fut: Future<Output = T>,
        T: Send + 'a,
    {
        let path = self.ns.path().to_path_buf();
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let file = std::fs::File::open(&path).expect("open the namespace file");
                // This thread only ever serves this namespace, and ends.
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the namespace");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let (conn, handle, _) =
                        rtnetlink::new_connection().expect("open a netlink socket");
                    tokio::spawn(conn);
                    f(handle).await
                })
            });
            match worker.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// The spec of the default device: flannel.1 on eth0.
    pub fn spec(&self) -> DeviceSpec {
        DeviceSpec {
            vni: 1,
            port: 8472,
            local: LOCAL,
            ext_index: self.ifindex("eth0"),
            mtu: 1450,
            mac: MAC,
            gbp: false,
            learning: false,
        }
    }

    /// The spec of the default IPv6 device: flannel-v6.1 on eth0.
    pub fn spec6(&self) -> DeviceSpec<Ipv6Network> {
        DeviceSpec {
            vni: 1,
            port: 8472,
            local: LOCAL6,
            ext_index: self.ifindex("eth0"),
            mtu: 1430,
            mac: MAC6,
            gbp: false,
            learning: false,
        }
    }

    /// IPv4 neighbours on `dev`: "IP LLADDR STATE" per entry, sorted.
    pub fn neighbours(&self, dev: &str) -> Vec<String> {
        self.neighbours_af("-4", dev)
    }

    /// Neighbours of family `af` ("-4", "-6") on `dev`.
    pub fn neighbours_af(&self, af: &str, dev: &str) -> Vec<String> {
        let v = self.ip_json(&[af, "neigh", "show", "dev", dev]);
        sorted(v.as_array().into_iter().flatten().map(|n| {
            format!(
                "{} {} {}",
                s(&n["dst"]),
                s(&n["lladdr"]),
                n["state"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }))
    }

    /// FDB entries on `dev`: "MAC DST STATE", sorted.
    pub fn fdb(&self, dev: &str) -> Vec<String> {
        let v = self.bridge_json(&["fdb", "show", "dev", dev]);
        sorted(
            v.as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{} {} {}", s(&f["mac"]), s(&f["dst"]), s(&f["state"]))),
        )
    }

    /// Main-table IPv4 routes with a gateway: "DST via GW dev DEV [onlink]", sorted.
    pub fn gw_routes(&self) -> Vec<String> {
        self.gw_routes_af("-4")
    }

    /// Main-table routes of family `af` ("-4", "-6") with a gateway.
    pub fn gw_routes_af(&self, af: &str) -> Vec<String> {
        let v = self.ip_json(&[af, "route", "show", "table", "main"]);
        sorted(
            v.as_array()
                .into_iter()
                .flatten()
                .filter(|r| r.get("gateway").is_some())
                .map(|r| {
                    let onlink = r["flags"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|x| x == "onlink"));
                    format!(
                        "{} via {} dev {}{}",
                        s(&r["dst"]),
                        s(&r["gateway"]),
                        s(&r["dev"]),
                        if onlink { " onlink" } else { "" }
                    )
                }),
        )
    }
}

fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn sorted(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = it.collect();
    v.sort();
    v
}

/// A peer: subnet 10.244.N.0/24, the given public IP, MAC 0e:00:00:00:00:N.
pub(super) fn peer(n: u8, public_ip: [u8; 4]) -> Peer {
    Peer {
        subnet: net(&format!("10.244.{n}.0/24")),
        public_ip: Ipv4Addr::from(public_ip),
        vtep_mac: [0x0e, 0, 0, 0, 0, n],
    }
}

pub(super) fn net(text: &str) -> Ipv4Network {
    text.parse().expect("a valid network")
}

/// The VtepMAC of the IPv6 device.
pub(super) const MAC6: [u8; 6] = [0x0e, 0x00, 0x00, 0x00, 0x06, 0x11];

/// An IPv6 peer: subnet fd00:10:244:N::/64, public IP fd00:64::P, MAC
/// 0e:00:00:00:06:N.
pub(super) fn peer6(n: u8, public: u16) -> Peer<Ipv6Network> {
    Peer {
        subnet: format!("fd00:10:244:{n:x}::/64")
            .parse()
            .expect("a network"),
        public_ip: Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, public),
        vtep_mac: [0x0e, 0, 0, 0, 6, n],
    }
}

/// What the three entries of an overlay peer look like in our dumps.
pub(super) fn expected(peers: &[&Peer]) -> (Vec<String>, Vec<String>, Vec<String>) {
    expected_on(peers, "flannel.1")
}

/// The same for peers of either family on device `dev`.
pub(super) fn expected_on<A: VxlanFamily>(
    peers: &[&Peer<A>],
    dev: &str,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mac = |p: &Peer<A>| crate::mac::format(&p.vtep_mac);
    let neigh = sorted(
        peers
            .iter()
            .map(|p| format!("{} {} PERMANENT", p.gateway(), mac(p))),
    );
    let fdb = sorted(
        peers
            .iter()
            .map(|p| format!("{} {} permanent", mac(p), p.public_ip)),
    );
    let routes = sorted(
        peers
            .iter()
            .map(|p| format!("{} via {} dev {dev} onlink", p.subnet, p.gateway())),
    );
    (neigh, fdb, routes)
}
