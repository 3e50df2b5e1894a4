//! Calling a CNI plugin the way a runtime does (env + config on stdin, run in
//! the node's namespace) and reading its answer.
//!
//! It runs the plugin binary and reads its stdout;
//! it never calls the plugin's code.

use crate::cmd::{self, Output};
use crate::netns::NetNs;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every result version the plugin must speak.
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const REFERENCE_CNI_PATH: &str = "/usr/lib/cni";

/// The plugin binary the tests call: `$FLANNEL_CNI_PLUGIN` when set, else
/// `default` (the test's own build, `CARGO_BIN_EXE_flannel`). `ci/test.sh`
/// sets it to the binary that gets installed (`ci/build-plugin.sh`: release,
/// static), so the suites test what ships.
pub fn plugin_under_test(default: &str) -> PathBuf {
    plugin_override().unwrap_or_else(|| PathBuf::from(default))
}

/// `$FLANNEL_CNI_PLUGIN`, when set and not empty. Said once per test
/// binary on stderr (shown with a failing test's output), so a stale
/// binary named there does not go unnoticed.
pub fn plugin_override() -> Option<PathBuf> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let path = std::env::var_os("FLANNEL_CNI_PLUGIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)?;
    SAID.call_once(|| {
        eprintln!(
            "CNI plugin under test (FLANNEL_CNI_PLUGIN): {}",
            path.display()
        )
    });
    Some(path)
}

/// Timeout for one plugin call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One plugin invocation, built up and then [`run`](CniCall::run).
#[derive(Clone, Debug)]
pub struct CniCall {
    bin: PathBuf,
    node: Option<String>,
    env: BTreeMap<String, String>,
    stdin: Vec<u8>,
    timeout: Duration,
    cwd: Option<PathBuf>,
}

impl CniCall {
    /// `bin` will be run inside `node` (via `ip netns exec`), or in the test's
    /// own namespace when `node` is `None` (only for calls that touch no
    /// network state, e.g. VERSION).
    pub fn new(bin: impl AsRef<Path>, node: Option<&NetNs>) -> CniCall {
        CniCall {
            bin: bin.as_ref().to_owned(),
            node: node.map(|n| n.name().to_owned()),
            env: BTreeMap::new(),
            stdin: Vec::new(),
            timeout: CALL_TIMEOUT,
            cwd: None,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.to_owned(), v.to_owned());
        self
    }

    pub fn unset(mut self, k: &str) -> Self {
        self.env.remove(k);
        self
    }

    pub fn command(self, verb: &str) -> Self {
        self.env("CNI_COMMAND", verb)
    }

    pub fn container_id(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    pub fn netns(self, path: &str) -> Self {
        self.env("CNI_NETNS", path)
    }

    pub fn ifname(self, name: &str) -> Self {
        self.env("CNI_IFNAME", name)
    }

    /// Sets CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME for `pod`.
    pub fn pod(self, pod: &Pod) -> Self {
        self.container_id(&pod.cid)
            .netns(&pod.ns.path_str())
            .ifname(&pod.ifname)
    }

    pub fn config(mut self, conf: &Value) -> Self {
        self.stdin = serde_json::to_vec(conf).expect("serialize config");
        self
    }

    /// What the call writes on the plugin's stdin.
    pub fn stdin_bytes(&self) -> &[u8] {
        &self.stdin
    }

    pub fn stdin_raw(mut self, data: &[u8]) -> Self {
        self.stdin = data.to_vec();
        self
    }

    /// The plugin's working directory (so a relative path it wrongly uses lands
    /// somewhere the test owns, not in the source tree).
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The `Command` this call runs (a clean environment: PATH + the CNI vars,
    /// plus RUST_LOG/RUST_BACKTRACE when the test runner has them).
    pub fn to_command(&self) -> Command {
        let mut c = match &self.node {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        c.env_clear().env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        for k in ["RUST_LOG", "RUST_BACKTRACE"] {
            if let Ok(v) = std::env::var(k) {
                c.env(k, v);
            }
        }
        c.envs(&self.env);
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    pub fn run(&self) -> CniOutput {
        let mut out = cmd::run_with(&mut self.to_command(), Some(&self.stdin), self.timeout);
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.desc = format!("{} {}", env.join(" "), out.desc);
        CniOutput {
            out,
            stdin: String::from_utf8_lossy(&self.stdin).into_owned(),
        }
    }
}

/// A plugin's answer.
#[derive(Debug, Clone)]
pub struct CniOutput {
    pub out: Output,
    pub stdin: String,
}

impl std::fmt::Display for CniOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n--- stdin ---\n{}", self.out, self.stdin)
    }
}

impl CniOutput {
    pub fn code(&self) -> Option<i32> {
        self.out.code
    }

    pub fn stdout(&self) -> &str {
        &self.out.stdout
    }

    pub fn stderr(&self) -> &str {
        &self.out.stderr
    }

    /// Exit 0 with a JSON document on stdout; returns it.
    #[track_caller]
    pub fn success_json(&self) -> Value {
        assert_eq!(self.out.code, Some(0), "plugin call failed: {self}");
        serde_json::from_str(&self.out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }

    /// Exit 0 and nothing on stdout (DEL, CHECK, GC, STATUS success).
    #[track_caller]
    pub fn success_empty(&self) {
        assert_eq!(self.out.code, Some(0), "plugin call failed: {self}");
        assert!(
            self.out.stdout.trim().is_empty(),
            "expected empty stdout: {self}"
        );
    }

    /// A CNI error: exit 1, stdout `{cniVersion, code, msg, ...}` with `code`.
    /// Returns the error object.
    #[track_caller]
    pub fn error(&self, code: u64) -> Value {
        assert!(
            !self.out.stderr.contains("panicked"),
            "plugin panicked: {self}"
        );
        assert_eq!(
            self.out.code,
            Some(1),
            "expected a CNI error (exit 1) with code {code}: {self}"
        );
        let v: Value = serde_json::from_str(&self.out.stdout)
            .unwrap_or_else(|e| panic!("error stdout is not JSON ({e}): {self}"));
        assert_eq!(v["code"].as_u64(), Some(code), "wrong error code: {self}");
        assert!(
            v["cniVersion"].is_string(),
            "error without cniVersion: {self}"
        );
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {self}"
        );
        v
    }

    /// Like [`error`](Self::error), and msg + details mention `needle`.
    #[track_caller]
    pub fn error_mentioning(&self, code: u64, needle: &str) -> Value {
        let v = self.error(code);
        let text = format!(
            "{} {}",
            v["msg"].as_str().unwrap_or(""),
            v["details"].as_str().unwrap_or("")
        );
        assert!(
            text.contains(needle),
            "error should mention {needle:?}: {self}"
        );
        v
    }
}

/// A `subnet.env` as a test writes it for the plugin (the product's parser
/// is `common::SubnetEnv`). An empty `network` leaves the IPv4 keys out
/// (what flanneld writes on an IPv6-only node).
#[derive(Clone, Debug)]
pub struct SubnetFile {
    pub network: String,
    pub subnet: String,
    pub mtu: u32,
    pub ipmasq: bool,
    /// `FLANNEL_IPV6_NETWORK` and `FLANNEL_IPV6_SUBNET`, when set.
    pub ipv6: Option<(String, String)>,
}

impl Default for SubnetFile {
    fn default() -> Self {
        SubnetFile {
            network: "10.244.0.0/16".into(),
            subnet: "10.244.1.1/24".into(),
            mtu: 1450,
            ipmasq: true,
            ipv6: None,
        }
    }
}

/// The IPv6 network and node subnet (gateway ::1) the dual-stack suites use.
pub const IPV6_NETWORK: &str = "fd00:10:244::/56";
pub const IPV6_SUBNET: &str = "fd00:10:244:1::1/64";

impl SubnetFile {
    /// The default IPv4 keys plus [`IPV6_NETWORK`] / [`IPV6_SUBNET`].
    pub fn dual_stack() -> SubnetFile {
        SubnetFile {
            ipv6: Some((IPV6_NETWORK.into(), IPV6_SUBNET.into())),
            ..SubnetFile::default()
        }
    }

    /// Only the IPv6 keys, as flanneld writes them with EnableIPv4=false.
    pub fn ipv6_only() -> SubnetFile {
        SubnetFile {
            network: String::new(),
            subnet: String::new(),
            ..SubnetFile::dual_stack()
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.network.is_empty() {
            out += &format!(
                "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}\n",
                self.network, self.subnet
            );
        }
        if let Some((net, sub)) = &self.ipv6 {
            out += &format!("FLANNEL_IPV6_NETWORK={net}\nFLANNEL_IPV6_SUBNET={sub}\n");
        }
        out + &format!("FLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n", self.mtu, self.ipmasq)
    }

    /// The IPv6 gateway (first host) address, e.g. "fd00:10:244:1::1".
    pub fn gateway6(&self) -> &str {
        self.ipv6
            .as_ref()
            .and_then(|(_, s)| s.split('/').next())
            .unwrap_or("")
    }

    /// The gateway (first host) address, e.g. "10.244.1.1".
    pub fn gateway(&self) -> &str {
        self.subnet.split('/').next().unwrap_or("")
    }
}

/// A pod: its own namespace, a container ID and the interface name to use.
#[derive(Debug)]
pub struct Pod {
    pub ns: NetNs,
    pub cid: String,
    pub ifname: String,
}

impl Pod {
    pub fn new() -> Pod {
        Pod {
            ns: NetNs::new("p"),
            cid: crate::names::unique("cid"),
            ifname: "eth0".into(),
        }
    }

    pub fn with_ifname(mut self, ifname: &str) -> Pod {
        self.ifname = ifname.into();
        self
    }

    /// The pod interface's IPv4 addresses.
    pub fn ipv4_addrs(&self) -> Vec<String> {
        self.ns.ipv4_addrs(&self.ifname)
    }

    /// The pod interface's global IPv6 addresses.
    pub fn ipv6_addrs(&self) -> Vec<String> {
        self.ns.ipv6_addrs(&self.ifname)
    }
}

impl Default for Pod {
    fn default() -> Self {
        Pod::new()
    }
}

/// `conf` with `prevResult` set (for DEL, CHECK and chained plugins).
pub fn with_prev_result(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// A node namespace with a temp dir holding its `subnet.env` and IPAM store,
/// and the flannel plugin binary to call inside it.
pub struct CniNode {
    pub ns: NetNs,
    pub dir: crate::tempdir::TempDir,
    pub bin: PathBuf,
    /// The network name in the config (`name`), "cbr0" as in kube-flannel.yml.
    pub net_name: String,
    pub subnet: SubnetFile,
}

impl CniNode {
    /// A node with the default `subnet.env` (10.244.1.1/24 of 10.244.0.0/16,
    /// MTU 1450, FLANNEL_IPMASQ=true).
    pub fn new(bin: impl AsRef<Path>) -> CniNode {
        Self::with_subnet(bin, SubnetFile::default())
    }

    pub fn with_subnet(bin: impl AsRef<Path>, subnet: SubnetFile) -> CniNode {
        let node = Self::without_subnet_env(bin);
        node.write_subnet_env(&subnet);
        CniNode { subnet, ..node }
    }

    /// A node whose subnet.env says flanneld does not masquerade
    /// (`FLANNEL_IPMASQ=false`), so the plugin's ipMasq defaults to true.
    pub fn masquerading(bin: impl AsRef<Path>) -> CniNode {
        let subnet = SubnetFile {
            ipmasq: false,
            ..SubnetFile::default()
        };
        Self::with_subnet(bin, subnet)
    }

    /// A node where flanneld has not written `subnet.env` yet.
    pub fn without_subnet_env(bin: impl AsRef<Path>) -> CniNode {
        CniNode {
            ns: NetNs::new("n"),
            dir: crate::tempdir::TempDir::new("d"),
            bin: bin.as_ref().to_owned(),
            net_name: "cbr0".into(),
            subnet: SubnetFile::default(),
        }
    }

    pub fn write_subnet_env(&self, s: &SubnetFile) {
        self.write_subnet_env_raw(&s.render());
    }

    pub fn write_subnet_env_raw(&self, text: &str) {
        std::fs::write(self.subnet_file(), text).expect("write subnet.env");
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// `<dataDir>/<name>`: host-local's per-network directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir().join(&self.net_name)
    }

    /// kube-flannel.yml's config in `version`, pointed at this node's files.
    pub fn config(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": self.net_name,
            "type": "flannel",
            "delegate": {"hairpinMode": true, "isDefaultGateway": true},
            "subnetFile": self.subnet_file(),
            "dataDir": self.data_dir(),
        })
    }

    /// A call of the flannel plugin inside this node, with `CNI_COMMAND=verb`
    /// and `CNI_PATH` set, run with the node's temp dir as working directory.
    pub fn call(&self, verb: &str) -> CniCall {
        CniCall::new(&self.bin, Some(&self.ns))
            .command(verb)
            .env("CNI_PATH", REFERENCE_CNI_PATH)
            .cwd(self.dir.path())
    }

    /// Files the plugin created in its working directory (the node's temp dir)
    /// other than the node's own `subnet.env` and `ipam/`.
    pub fn stray_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "subnet.env" && n != "ipam")
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn add(&self, pod: &Pod, conf: &Value) -> CniOutput {
        self.call("ADD").pod(pod).config(conf).run()
    }

    pub fn del(&self, pod: &Pod, conf: &Value) -> CniOutput {
        self.call("DEL").pod(pod).config(conf).run()
    }

    pub fn check(&self, pod: &Pod, conf: &Value) -> CniOutput {
        self.call("CHECK").pod(pod).config(conf).run()
    }

    /// ADD that must succeed; returns the result.
    #[track_caller]
    pub fn add_ok(&self, pod: &Pod, conf: &Value) -> Value {
        self.add(pod, conf).success_json()
    }

    /// The IPAM store's allocations: IP file name → content.
    pub fn ipam_allocations(&self) -> BTreeMap<std::net::IpAddr, String> {
        let mut m = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(self.ipam_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(ip) = name.parse() {
                    m.insert(ip, std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        m
    }

    /// The allocated addresses, in order, as strings.
    pub fn allocated_ips(&self) -> Vec<String> {
        self.ipam_allocations()
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// Names of the veths in the node namespace.
    pub fn host_veths(&self) -> Vec<String> {
        self.ns.links_of_kind("veth")
    }
}

/// `ips[0].address` of a result, e.g. "10.244.1.2/24".
#[track_caller]
pub fn result_address(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"))
        .to_owned()
}

/// `ips[0].address` without the prefix length, e.g. "10.244.1.2".
#[track_caller]
pub fn result_ip(result: &Value) -> String {
    result_address(result)
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The host-side veth in a bridge-style result (`interfaces[1].name`).
#[track_caller]
pub fn result_host_veth(result: &Value) -> String {
    result["interfaces"][1]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no interfaces[1].name in {result}"))
        .to_owned()
}

/// Is `name` `veth` + 8 lowercase hex digits?
pub fn is_host_veth_name(name: &str) -> bool {
    name.strip_prefix("veth").is_some_and(|h| {
        h.len() == 8
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Compares two JSON values, printing both pretty on a mismatch.
#[track_caller]
pub fn assert_json_eq(left: &Value, right: &Value, what: &str) {
    if left != right {
        panic!(
            "{what} differ\n--- left ---\n{}\n--- right ---\n{}",
            serde_json::to_string_pretty(left).unwrap_or_default(),
            serde_json::to_string_pretty(right).unwrap_or_default()
        );
    }
}
