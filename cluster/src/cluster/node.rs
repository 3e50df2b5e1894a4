//! One node of a [`super::Cluster`]: its namespace, its files, its flanneld
//! process; and the lease files of the shared store.
//!
//! A node's flanneld is stopped by its own PID; nothing here enters the
//! host's own namespace or another cluster's.

use crate::netns::NetNs;
use crate::proc::{ChildGuard, RecordedProcess};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A node namespace with `eth0` on the underlay and (maybe) a running flanneld.
pub struct Node {
    /// "node0", "node1", ... (also its directory's name under the cluster's dir).
    pub name: String,
    /// Its underlay IPv4 address (configured nowhere on an underlay
    /// without IPv4: see `ClusterBuilder::underlay_ipv4`).
    pub ip: Ipv4Addr,
    /// Its underlay IPv6 address, when the cluster runs IPv6.
    pub ip6: Option<Ipv6Addr>,
    pub dir: PathBuf,
    daemon: Option<ChildGuard>,
    /// A flanneld another process started (a cluster attached from its
    /// saved state): looked at, never stopped by this handle.
    recorded: Option<RecordedProcess>,
    /// Start flanneld in its own session, to outlive this process.
    pub(super) detached: bool,
    pods_made: std::sync::atomic::AtomicU32,
    starts: usize,
    /// subnet.env's identity when the daemon was last started: ready means
    /// a fresh subnet.env (flanneld writes it by rename: a new inode).
    env_before: Option<(u64, SystemTime)>,
    // Last: the namespace goes after the daemon is stopped.
    pub ns: NetNs,
}

/// What a one-shot flanneld run did.
#[derive(Debug, Clone)]
pub struct DaemonRun {
    /// Did it exit by itself before the timeout?
    pub exited: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl DaemonRun {
    /// The non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

impl std::fmt::Display for DaemonRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exited={} code={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.exited, self.code, self.stdout, self.stderr
        )
    }
}

impl Node {
    pub(super) fn new(name: String, ns: NetNs, ip: Ipv4Addr, dir: PathBuf) -> Node {
        Node {
            name,
            ip,
            ip6: None,
            dir,
            daemon: None,
            recorded: None,
            detached: false,
            pods_made: Default::default(),
            starts: 0,
            env_before: None,
            ns,
        }
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("flanneld.log")
    }

    /// flanneld's stderr so far (all runs on this node, each under a marker).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The PID of the running flanneld, if any.
    pub fn pid(&self) -> Option<u32> {
        self.daemon
            .as_ref()
            .map(ChildGuard::pid)
            .or(self.recorded.as_ref().map(|r| r.pid))
    }

    /// Lets flanneld outlive this handle; returns it as a recorded process
    /// (its command line names this node's subnet file).
    pub(super) fn detach_daemon(&mut self) -> Option<RecordedProcess> {
        if let Some(g) = self.daemon.take() {
            self.recorded = Some(RecordedProcess {
                pid: g.detach(),
                cmdline_contains: self.subnet_file().to_string_lossy().into_owned(),
            });
        }
        self.recorded.clone()
    }

    /// Adopts a flanneld started by another process (for looking at it).
    pub(super) fn set_recorded(&mut self, r: Option<RecordedProcess>) {
        self.recorded = r;
    }

    /// The next pod number on this node (0, 1, ...).
    pub(super) fn next_pod_seq(&self) -> u32 {
        self.pods_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn set_pods_made(&self, n: u32) {
        self.pods_made
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Is flanneld running (started and not exited)?
    pub fn is_running(&self) -> bool {
        if self.daemon.is_none() {
            return self.recorded.as_ref().is_some_and(RecordedProcess::is_ours);
        }
        let Some(pid) = self.pid() else { return false };
        // Not reaped yet: a zombie still counts as exited.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    /// Has the started flanneld exited? Returns its status (and reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.daemon.as_mut().and_then(ChildGuard::try_wait)
    }

    /// `subnet.env` as key → value, if it exists.
    pub fn subnet_env(&self) -> Option<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(self.subnet_file()).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    /// The leased subnet from subnet.env, e.g. "10.244.3.0/24".
    #[track_caller]
    pub fn subnet(&self) -> String {
        let env = self
            .subnet_env()
            .unwrap_or_else(|| panic!("{}: no subnet.env", self.name));
        let s = env
            .get("FLANNEL_SUBNET")
            .unwrap_or_else(|| panic!("{}: no FLANNEL_SUBNET in {env:?}", self.name));
        network_of(s).unwrap_or_else(|| panic!("{}: bad FLANNEL_SUBNET {s}", self.name))
    }

    /// The leased IPv6 subnet from subnet.env (`FLANNEL_IPV6_SUBNET`), e.g.
    /// "fd00:10:244:3::/64", if it names one.
    pub fn subnet6(&self) -> Option<String> {
        let env = self.subnet_env()?;
        super::family::network_of6(env.get("FLANNEL_IPV6_SUBNET")?)
    }

    /// The leased subnets of both families from subnet.env (IPv4 first).
    pub fn subnets(&self) -> Vec<String> {
        let env = self.subnet_env().unwrap_or_default();
        let v4 = env.get("FLANNEL_SUBNET").and_then(|s| network_of(s));
        v4.into_iter().chain(self.subnet6()).collect()
    }

    pub(super) fn command(&self, bin: &Path, args: &[String]) -> Command {
        let mut c = self.ns.command(bin);
        c.args(args)
            .env_clear()
            .env("PATH", PATH)
            .env("RUST_BACKTRACE", "1");
        if let Ok(v) = std::env::var("RUST_LOG") {
            c.env("RUST_LOG", v);
        }
        c.stdin(Stdio::null());
        c
    }

    pub(super) fn spawn_daemon(&mut self, bin: &Path, args: &[String], env: &[(String, String)]) {
        assert!(
            !self.is_running(),
            "{}: flanneld is already running",
            self.name
        );
        self.daemon = None;
        self.starts += 1;
        self.env_before = self.env_identity();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open flanneld.log");
        use std::io::Write;
        let _ = writeln!(
            log,
            "----- start #{}: flanneld {} -----",
            self.starts,
            args.join(" ")
        );
        let err = log.try_clone().expect("dup log fd");
        let mut c = self.command(bin, args);
        c.envs(env.iter().map(|(k, v)| (k, v)));
        c.stdout(Stdio::from(log)).stderr(Stdio::from(err));
        if self.detached {
            crate::proc::new_session(&mut c);
        }
        self.daemon = Some(ChildGuard::spawn(&mut c));
    }

    fn env_identity(&self) -> Option<(u64, SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.subnet_file()).ok()?;
        Some((m.ino(), m.modified().ok()?))
    }

    pub(super) fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let fresh = self.env_before.is_none() || self.env_identity() != self.env_before;
            if fresh && self.subnet_env().is_some_and(|e| env_is_ready(&e)) {
                return;
            }
            if !self.is_running() {
                panic!(
                    "{}: flanneld is not running and wrote no (fresh) subnet.env; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: no fresh subnet.env after {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig` to flanneld (by its PID) and waits up to `timeout` for the
    /// exit; SIGKILLs it after that. Panics when it was not started.
    pub(super) fn signal_and_wait(
        &mut self,
        sig: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> ExitStatus {
        let mut guard = self
            .daemon
            .take()
            .unwrap_or_else(|| panic!("{}: flanneld not started", self.name));
        if let Some(st) = guard.try_wait() {
            return st;
        }
        let pid = nix::unistd::Pid::from_raw(guard.pid() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = guard.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = guard.stop(Duration::ZERO);
        panic!(
            "{}: flanneld did not exit within {timeout:?} of {sig} (then killed: {st:?}); log:\n{}",
            self.name,
            self.log()
        );
    }

    pub(super) fn stop_daemon(&mut self) {
        if let Some(mut g) = self.daemon.take() {
            g.stop(Duration::from_secs(5));
        }
    }

    pub(super) fn run_once(&self, bin: &Path, args: &[&str], timeout: Duration) -> DaemonRun {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut c = self.command(bin, &args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut g = ChildGuard::spawn(&mut c);
        let mut out = g.child_mut().stdout.take().expect("stdout");
        let mut err = g.child_mut().stderr.take().expect("stderr");
        let ot = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let et = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let (exited, status) = loop {
            if let Some(st) = g.try_wait() {
                break (true, Some(st));
            }
            if Instant::now() >= deadline {
                break (false, g.stop(Duration::from_secs(5)));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        DaemonRun {
            exited,
            code: status.and_then(|s| s.code()),
            stdout: ot.join().unwrap_or_default(),
            stderr: et.join().unwrap_or_default(),
        }
    }
}

/// Does subnet.env (as key → value) name a leased subnet, IPv4
/// (`FLANNEL_SUBNET`) or IPv6 (`FLANNEL_IPV6_SUBNET`, IPv6 only)?
pub fn env_is_ready(env: &BTreeMap<String, String>) -> bool {
    env.get("FLANNEL_SUBNET")
        .is_some_and(|s| network_of(s).is_some())
        || env
            .get("FLANNEL_IPV6_SUBNET")
            .is_some_and(|s| super::family::network_of6(s).is_some())
}

/// "10.244.3.1/24" → "10.244.3.0/24".
pub fn network_of(cidr: &str) -> Option<String> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some(format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & mask)))
}
