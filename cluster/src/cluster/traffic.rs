//! Real traffic between pods: the full reachability matrix by ping or by a
//! TCP echo (every pod to every other, in parallel), over one IP family or
//! each the cluster runs, and a continuous ping that measures how much
//! traffic a disruption cost.
//!
//! Probes run only between the cluster's pod namespaces; no traffic leaves
//! them, and nothing here changes a route or an address.

use super::family::IpFamily;
use super::{Cluster, ClusterPod};
use crate::proc::ChildGuard;
use crate::tcp::{tcp_fetch, TcpServer};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many probes run at once.
const PARALLEL: usize = 8;

/// One ordered pair's outcome.
#[derive(Debug, Clone)]
pub struct PairResult {
    pub from: usize,
    pub to: usize,
    pub ok: bool,
    /// The last error, when it failed.
    pub detail: String,
    /// Until the first success (or the timeout).
    pub took: Duration,
}

/// Every ordered pair of a set of pods, probed one way (`how`).
#[derive(Debug, Clone)]
pub struct Matrix {
    pub how: &'static str,
    pub labels: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub results: Vec<PairResult>,
}

impl Matrix {
    pub fn pairs(&self) -> usize {
        self.results.len()
    }

    pub fn reachable(&self) -> usize {
        self.results.iter().filter(|r| r.ok).count()
    }

    pub fn all_ok(&self) -> bool {
        self.reachable() == self.pairs()
    }

    /// "from → to: why" for each failed pair.
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|r| !r.ok)
            .map(|r| {
                format!(
                    "{} → {} ({}): {}",
                    self.labels[r.from], self.labels[r.to], self.ips[r.to], r.detail
                )
            })
            .collect()
    }

    #[track_caller]
    pub fn assert_all_ok(&self) {
        assert!(
            self.all_ok(),
            "{} of {} pairs unreachable by {}:\n{}\n{}",
            self.pairs() - self.reachable(),
            self.pairs(),
            self.how,
            self.failures().join("\n"),
            self.render()
        );
    }

    /// A grid: one row per source, one column per destination; `ok`, `--`
    /// for the pod itself, `FAIL` for an unreachable pair.
    pub fn render(&self) -> String {
        let n = self.labels.len();
        let lw = self
            .labels
            .iter()
            .zip(&self.ips)
            .map(|(l, ip)| l.len() + ip.to_string().len() + 3)
            .max()
            .unwrap_or(4)
            .max(12);
        let cw = self
            .labels
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(4)
            .max(4)
            + 2;
        let mut s = format!("{:<lw$}", format!("{} from \\ to", self.how));
        for l in &self.labels {
            s.push_str(&format!("{l:>cw$}"));
        }
        s.push('\n');
        for from in 0..n {
            let row = format!("{} ({})", self.labels[from], self.ips[from]);
            s.push_str(&format!("{row:<lw$}"));
            for to in 0..n {
                let cell = if from == to {
                    "--"
                } else {
                    match self.results.iter().find(|r| r.from == from && r.to == to) {
                        Some(r) if r.ok => "ok",
                        _ => "FAIL",
                    }
                };
                s.push_str(&format!("{cell:>cw$}"));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "{}/{} pairs reachable by {}\n",
            self.reachable(),
            self.pairs(),
            self.how
        ));
        s
    }
}

/// A pod's label in a matrix: its name after the cluster prefix, or
/// `node<i>` and its position otherwise.
fn label(c: &Cluster, p: &ClusterPod, k: usize) -> String {
    match c.name_prefix() {
        Some(pre) => p
            .ns()
            .name()
            .strip_prefix(pre)
            .unwrap_or(p.ns().name())
            .into(),
        None => format!("n{}p{k}", p.node),
    }
}

/// Every ordered pair of `n` pods.
fn all_pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
        .collect()
}

/// Runs `probe(from, to)` for each of `pairs` (indexes into `pods`) until
/// it succeeds or `timeout` passes, `PARALLEL` at a time.
fn run_matrix(
    c: &Cluster,
    how: &'static str,
    pods: &[&ClusterPod],
    ips: Vec<IpAddr>,
    pairs: &[(usize, usize)],
    timeout: Duration,
    probe: &(dyn Fn(usize, usize) -> Result<(), String> + Sync),
) -> Matrix {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(pairs.len()) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(from, to)) = pairs.get(k) else {
                    break;
                };
                let start = Instant::now();
                let (ok, detail) = loop {
                    match probe(from, to) {
                        Ok(()) => break (true, String::new()),
                        Err(e) if start.elapsed() >= timeout => break (false, e),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                };
                let r = PairResult {
                    from,
                    to,
                    ok,
                    detail,
                    took: start.elapsed(),
                };
                results.lock().unwrap().push(r);
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| (r.from, r.to));
    let mut per_node = std::collections::HashMap::new();
    let labels = pods
        .iter()
        .map(|p| {
            let k = per_node.entry(p.node).or_insert(0usize);
            *k += 1;
            label(c, p, *k - 1)
        })
        .collect();
    Matrix {
        how,
        labels,
        ips,
        results,
    }
}

/// Each pod's address of single family `f` (panics when one has none).
#[track_caller]
fn ips_of(pods: &[&ClusterPod], f: IpFamily) -> Vec<IpAddr> {
    pods.iter().map(|p| p.ip_of_ok(f)).collect()
}

/// How a matrix probes a pair: one ping echo, or a TCP exchange with a
/// server in the destination pod that answers with the client address it
/// saw (which must be the client pod's own: no NAT inside the cluster
/// network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Ping,
    Tcp,
}

impl Probe {
    /// The matrix's `how` over the pods' first addresses, or over single
    /// family `f`.
    fn how(self, f: Option<IpFamily>) -> &'static str {
        match (self, f) {
            (Probe::Ping, None) => "ping",
            (Probe::Ping, Some(IpFamily::V6)) => "ping -6",
            (Probe::Ping, Some(_)) => "ping -4",
            (Probe::Tcp, None) => "tcp",
            (Probe::Tcp, Some(IpFamily::V6)) => "tcp6",
            (Probe::Tcp, Some(_)) => "tcp4",
        }
    }
}

impl Cluster {
    /// Pings every pod from every other at its first address (one echo
    /// each, retried until `timeout`).
    pub fn ping_matrix(&self, pods: &[&ClusterPod], timeout: Duration) -> Matrix {
        self.matrix(Probe::Ping, pods, None, timeout)
    }

    /// [`ping_matrix`](Self::ping_matrix) over single family `f` (`ping -6`
    /// to the IPv6 addresses).
    #[track_caller]
    pub fn ping_matrix_of(&self, pods: &[&ClusterPod], f: IpFamily, timeout: Duration) -> Matrix {
        self.matrix(Probe::Ping, pods, Some(f), timeout)
    }

    /// One ping matrix per family the cluster runs (IPv4 first).
    pub fn ping_matrices(&self, pods: &[&ClusterPod], timeout: Duration) -> Vec<Matrix> {
        self.matrices(Probe::Ping, pods, timeout)
    }

    /// A TCP connection from every pod to a server in every other, at
    /// their first addresses; the server answers with the client address
    /// it saw, which must be the client pod's own (no NAT inside the
    /// cluster network).
    pub fn tcp_matrix(&self, pods: &[&ClusterPod], timeout: Duration) -> Matrix {
        self.matrix(Probe::Tcp, pods, None, timeout)
    }

    /// [`tcp_matrix`](Self::tcp_matrix) over single family `f`.
    #[track_caller]
    pub fn tcp_matrix_of(&self, pods: &[&ClusterPod], f: IpFamily, timeout: Duration) -> Matrix {
        self.matrix(Probe::Tcp, pods, Some(f), timeout)
    }

    /// One TCP matrix per family the cluster runs (IPv4 first).
    pub fn tcp_matrices(&self, pods: &[&ClusterPod], timeout: Duration) -> Vec<Matrix> {
        self.matrices(Probe::Tcp, pods, timeout)
    }

    /// Pings every pod of `to` from `from` (one echo each, retried until
    /// `timeout`); `from` is index 0 of the matrix.
    pub fn ping_from(&self, from: &ClusterPod, to: &[&ClusterPod], timeout: Duration) -> Matrix {
        let mut pods = vec![from];
        pods.extend_from_slice(to);
        let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
        let pairs: Vec<(usize, usize)> = (1..pods.len()).map(|b| (0, b)).collect();
        let dst = ips.clone();
        run_matrix(self, "ping", &pods, ips, &pairs, timeout, &|a, b| {
            self.ping_once(pods[a], dst[b])
        })
    }

    /// One `probe` matrix per family the cluster runs (IPv4 first).
    fn matrices(&self, probe: Probe, pods: &[&ClusterPod], timeout: Duration) -> Vec<Matrix> {
        let fams = self.family().singles();
        fams.into_iter()
            .map(|f| self.matrix(probe, pods, Some(f), timeout))
            .collect()
    }

    /// Every ordered pair of `pods` by `probe`, at their addresses of
    /// single family `f` (each pod's first address for `None`).
    #[track_caller]
    fn matrix(
        &self,
        probe: Probe,
        pods: &[&ClusterPod],
        f: Option<IpFamily>,
        timeout: Duration,
    ) -> Matrix {
        let ips: Vec<IpAddr> = match f {
            Some(f) => ips_of(pods, f),
            None => pods.iter().map(|p| p.ip).collect(),
        };
        let how = probe.how(f);
        let pairs = all_pairs(pods.len());
        let addrs = ips.clone();
        match probe {
            Probe::Ping => run_matrix(self, how, pods, ips, &pairs, timeout, &|a, b| {
                self.ping_once(pods[a], addrs[b])
            }),
            Probe::Tcp => {
                let servers: Vec<TcpServer> = pods
                    .iter()
                    .zip(&ips)
                    .map(|(p, ip)| TcpServer::start(p.ns(), SocketAddr::new(*ip, 0), "from {peer}"))
                    .collect();
                run_matrix(self, how, pods, ips, &pairs, timeout, &|a, b| {
                    let got = tcp_fetch(pods[a].ns(), servers[b].addr(), Duration::from_secs(1))?;
                    let want = format!("from {}", addrs[a]);
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("server saw {got:?}, want {want:?}"))
                    }
                })
            }
        }
    }
}

/// `ping -i <interval>` from a pod, running until [`finish`](Pinger::finish).
/// Its output is read as it comes (a thread drains the pipe), so a long
/// run at a fine interval never blocks ping on a full pipe.
pub struct Pinger {
    guard: ChildGuard,
    reader: Option<std::thread::JoinHandle<String>>,
    interval: Duration,
    what: String,
}

/// What a [`Pinger`] counted.
#[derive(Debug, Clone)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    pub interval: Duration,
    pub output: String,
}

impl PingStats {
    /// How long traffic was lost: unanswered echoes × interval.
    pub fn lost_time(&self) -> Duration {
        self.interval * self.transmitted.saturating_sub(self.received)
    }

    /// The sequence numbers answered (`icmp_seq=N`), duplicates once.
    pub fn answered(&self) -> Vec<u32> {
        let mut seqs: Vec<u32> = self
            .output
            .lines()
            .filter_map(|l| {
                l.split_once("icmp_seq=")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }

    /// The longest run of consecutive unanswered echoes (before the first
    /// answer, between two, or after the last), as time: run × interval.
    pub fn longest_gap(&self) -> Duration {
        let seqs = self.answered();
        let mut prev = 0u32; // ping counts from icmp_seq=1
        let mut longest = 0u32;
        for &s in &seqs {
            longest = longest.max(s.saturating_sub(prev + 1));
            prev = s;
        }
        longest = longest.max(self.transmitted.saturating_sub(prev));
        self.interval * longest
    }
}

impl Pinger {
    pub fn start(from: &ClusterPod, to: impl Into<IpAddr>, interval: Duration) -> Pinger {
        let to: IpAddr = to.into();
        let fam = if to.is_ipv6() { "-6" } else { "-4" };
        let mut cmd = from.ns().command("ping");
        cmd.args([fam, "-n", "-W", "1", "-i"])
            .arg(format!("{:.3}", interval.as_secs_f64()))
            .arg(to.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut guard = ChildGuard::spawn(&mut cmd);
        let reader = guard.child_mut().stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            })
        });
        Pinger {
            guard,
            reader,
            interval,
            what: format!("ping {} → {to}", from.ip),
        }
    }

    /// Stops it (SIGINT: ping prints its statistics) and returns the counts.
    #[track_caller]
    pub fn finish(mut self) -> PingStats {
        let pid = nix::unistd::Pid::from_raw(self.guard.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.guard.child_mut().wait();
        let out = self
            .reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        let count = |suffix: &str| {
            out.lines()
                .find(|l| l.contains("packets transmitted"))
                .and_then(|l| {
                    l.split(", ")
                        .find_map(|p| p.strip_suffix(suffix))
                        .and_then(|n| n.trim().parse().ok())
                })
        };
        let transmitted = count(" packets transmitted")
            .unwrap_or_else(|| panic!("{}: no statistics in its output:\n{out}", self.what));
        PingStats {
            transmitted,
            received: count(" received").unwrap_or(0),
            interval: self.interval,
            output: out,
        }
    }
}
