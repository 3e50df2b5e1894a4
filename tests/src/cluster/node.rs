//! One node of a [`super::Cluster`]: its namespace, its files, its flanneld
//! process; and the lease files of the shared store.

use crate::netns::NetNs;
use crate::proc::ChildGuard;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A node namespace with `eth0` on the underlay and (maybe) a running flanneld.
pub struct Node {
    /// "node0", "node1", ... (also its directory's name under the cluster's dir).
    pub name: String,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    daemon: Option<ChildGuard>,
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
            dir,
            daemon: None,
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
        self.daemon.as_ref().map(ChildGuard::pid)
    }

    /// Is flanneld running (started and not exited)?
    pub fn is_running(&self) -> bool {
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

    pub(super) fn spawn_daemon(&mut self, bin: &Path, args: &[String]) {
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
        c.stdout(Stdio::from(log)).stderr(Stdio::from(err));
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
            if fresh
                && self.subnet_env().is_some_and(|e| {
                    e.get("FLANNEL_SUBNET")
                        .is_some_and(|s| network_of(s).is_some())
                })
            {
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

/// One file of the embedded lease store, e.g. `leases/10.244.1.0-24`.
#[derive(Debug, Clone)]
pub struct LeaseFile {
    pub path: PathBuf,
    /// "10.244.1.0/24", from the file name.
    pub subnet: String,
    pub public_ip: String,
    pub backend_type: String,
    pub vni: Option<u64>,
    pub vtep_mac: String,
    /// When the store says it expires (when the file carries it in a form we know).
    pub expires: Option<SystemTime>,
    pub raw: Value,
}

impl LeaseFile {
    pub fn is_expired(&self) -> bool {
        self.expires.is_some_and(|t| t <= SystemTime::now())
    }

    /// The subnet's network address ("10.244.1.0"): the peer's VTEP address.
    pub fn vtep_ip(&self) -> &str {
        self.subnet.split('/').next().unwrap_or("")
    }
}

/// Reads every `a.b.c.d-len` file of `dir` (other names, e.g. temp files and
/// locks, are skipped, as are files that do not parse).
pub fn read_leases(dir: &Path) -> Vec<LeaseFile> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return v;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((ip, len)) = name.split_once('-') else {
            continue;
        };
        if ip.parse::<Ipv4Addr>().is_err() || len.parse::<u8>().is_err() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(raw) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(attrs) = find_attrs(&raw) else {
            continue;
        };
        let bd = &attrs["BackendData"];
        v.push(LeaseFile {
            path: e.path(),
            subnet: format!("{ip}/{len}"),
            public_ip: attrs["PublicIP"].as_str().unwrap_or("").to_owned(),
            backend_type: attrs["BackendType"].as_str().unwrap_or("").to_owned(),
            vni: bd["VNI"].as_u64(),
            vtep_mac: bd["VtepMAC"].as_str().unwrap_or("").to_lowercase(),
            expires: find_expiry(&raw),
            raw,
        });
    }
    v.sort_by(|a, b| a.subnet.cmp(&b.subnet));
    v
}

/// The object holding `PublicIP` (the file itself or one level down).
fn find_attrs(v: &Value) -> Option<&Value> {
    if v.get("PublicIP").is_some() {
        return Some(v);
    }
    v.as_object()?
        .values()
        .find(|x| x.get("PublicIP").is_some())
}

/// An expiry field: unix seconds/milliseconds or an RFC 3339 time.
fn find_expiry(v: &Value) -> Option<SystemTime> {
    let obj = v.as_object()?;
    let (_, val) = obj.iter().find(|(k, _)| {
        let k = k.to_lowercase();
        k.starts_with("expir") || k == "expires" || k == "expires_at"
    })?;
    match val {
        Value::Number(n) => {
            let f = n.as_f64()?;
            let secs = if f > 1e12 { f / 1000.0 } else { f };
            Some(UNIX_EPOCH + Duration::from_secs_f64(secs))
        }
        Value::String(s) => parse_rfc3339(s),
        Value::Object(o) => {
            // serde's SystemTime: {"secs_since_epoch":..,"nanos_since_epoch":..}
            let secs = o.get("secs_since_epoch")?.as_u64()?;
            let nanos = o
                .get("nanos_since_epoch")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
        }
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i.min(start + 9)];
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        b'+' | b'-' => {
            let sign = if b[i] == b'-' { -1 } else { 1 };
            sign * (num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_networks_parse() {
        let t = parse_rfc3339("2024-01-02T03:04:05.5Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_704_164_645, 500_000_000)
        );
        let t2 = parse_rfc3339("2024-01-02T05:04:05+02:00").unwrap();
        assert_eq!(
            t2.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_704_164_645
        );
        assert_eq!(
            network_of("10.244.3.1/24").as_deref(),
            Some("10.244.3.0/24")
        );
        assert_eq!(network_of("x/24"), None);
    }
}
