//! Catching a daemon's netlink writes: Debian's `strace`, attached by PID
//! from inside the node's namespace (there it can tell a NETLINK_ROUTE
//! socket and decode its messages), recording every `RTM_NEW*`/`RTM_DEL*`
//! request the daemon sends on one. Netlink notifications (see
//! `entry_monitor`) come only for changes; this also sees an entry
//! rewritten as it was, so a test can assert that a daemon wrote nothing
//! at all. strace is stopped by its PID on drop.
//!
//! It observes a daemon it did not start; it stops only its own strace, by
//! PID, and never the daemon.

use crate::netns::NetNs;
use crate::proc::ChildGuard;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian puts strace.
pub const STRACE_BIN: &str = "/usr/bin/strace";

/// See the module doc.
pub struct NetlinkWrites {
    guard: Option<ChildGuard>,
    out: PathBuf,
    err: PathBuf,
}

/// Is `line` (strace's) a write request on a NETLINK_ROUTE socket?
pub fn is_route_write(line: &str) -> bool {
    const WRITES: [&str; 8] = [
        "RTM_NEWLINK",
        "RTM_DELLINK",
        "RTM_NEWADDR",
        "RTM_DELADDR",
        "RTM_NEWROUTE",
        "RTM_DELROUTE",
        "RTM_NEWNEIGH",
        "RTM_DELNEIGH",
    ];
    line.contains("<NETLINK:[ROUTE:")
        && WRITES
            .iter()
            .any(|w| line.contains(&format!("nlmsg_type={w},")))
}

impl NetlinkWrites {
    /// Attaches to process `pid` (and the threads and children it has or
    /// makes), which runs in `ns`; its output goes to files in `dir`.
    /// Returns once strace is attached.
    pub fn attach(ns: &NetNs, pid: u32, dir: &Path) -> NetlinkWrites {
        assert!(
            Path::new(STRACE_BIN).is_file(),
            "{STRACE_BIN} not found: `apt-get install strace` (or run ci/deps.sh)"
        );
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let out = dir.join(format!("strace-{pid}-{n}.out"));
        let err = dir.join(format!("strace-{pid}-{n}.err"));
        let err_file =
            std::fs::File::create(&err).unwrap_or_else(|e| panic!("create {}: {e}", err.display()));
        let mut c = ns.command(STRACE_BIN);
        c.args(["-f", "-yy", "-s", "64", "-e", "trace=sendto,sendmsg", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file));
        let mut guard = ChildGuard::spawn(&mut c);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let said = std::fs::read_to_string(&err).unwrap_or_default();
            if said.contains("attached") {
                break;
            }
            if let Some(st) = guard.try_wait() {
                panic!("strace -p {pid} exited ({st}): {said}");
            }
            assert!(
                Instant::now() < deadline,
                "strace did not attach to {pid} within 10 s: {said}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        NetlinkWrites {
            guard: Some(guard),
            out,
            err,
        }
    }

    /// The write requests seen so far (strace's lines).
    pub fn writes(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| is_route_write(l))
            .map(str::to_owned)
            .collect()
    }

    /// How many requests of any kind it saw on NETLINK_ROUTE sockets (the
    /// reads too: proof that it was watching).
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("<NETLINK:[ROUTE:") && l.contains("nlmsg_type=RTM_"))
            .count()
    }

    /// Detaches strace and returns the write requests it saw.
    pub fn finish(mut self) -> Vec<String> {
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(5));
        }
        let w = self.writes();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
        w
    }
}

impl Drop for NetlinkWrites {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(5));
        }
    }
}

impl super::Cluster {
    /// Starts catching the netlink writes of node `i`'s flanneld.
    #[track_caller]
    pub fn trace_netlink_writes(&self, i: usize) -> NetlinkWrites {
        let n = self.node(i);
        let pid = n
            .pid()
            .unwrap_or_else(|| panic!("{}: flanneld is not running", n.name));
        NetlinkWrites::attach(&n.ns, pid, &n.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::is_route_write;

    #[test]
    fn only_route_writes_count() {
        let new_route =
            "12 sendto(9<NETLINK:[ROUTE:12]>, [{nlmsg_len=60, nlmsg_type=RTM_NEWROUTE, \
                         nlmsg_flags=NLM_F_REQUEST|NLM_F_ACK}, {rtm_family=AF_INET}], 60, 0) = 60";
        let dump = "12 sendto(9<NETLINK:[ROUTE:12]>, [{nlmsg_len=28, nlmsg_type=RTM_GETROUTE, \
                    nlmsg_flags=NLM_F_REQUEST|NLM_F_DUMP}], 28, 0) = 28";
        let nft = "13 sendmsg(3<NETLINK:[NETFILTER:13]>, {msg_iov=[{nlmsg_type=RTM_NEWLINK, x}]})";
        assert!(is_route_write(new_route));
        assert!(!is_route_write(dump));
        assert!(!is_route_write(nft));
    }
}
