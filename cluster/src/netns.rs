//! Network namespaces owned by the test: created with `ip netns add`,
//! deleted with `ip netns del` when the [`NetNs`] drops (also on panic).
//!
//! It deletes only namespaces it created, those
//! `sweep_stale` finds named for dead processes of this harness, or those a
//! caller names (the tool's `down`); it never configures the host's own
//! namespace.

use crate::cmd::{self, Output};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, removed on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    deleted: bool,
}

/// Panics with a clear message when not running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests build network namespaces and must run as root"
    );
}

impl NetNs {
    /// Creates `ft<pid>-<n><tag>` and brings its loopback up.
    pub fn new(tag: &str) -> NetNs {
        require_root();
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let name = crate::names::unique(tag);
        let out = cmd::run_args("ip", &["netns", "add", &name]);
        assert!(out.success(), "ip netns add {name}: {out}");
        let ns = NetNs {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            deleted: false,
        };
        ns.ip_ok(&["link", "set", "lo", "up"]);
        ns
    }

    /// Creates the namespace `name` exactly (no per-process prefix; the
    /// caller makes it unique) and brings its loopback up. Deleted on drop
    /// unless [`disarm`](Self::disarm)ed. Errors (e.g. the name exists) are
    /// returned, not panicked.
    pub fn with_name(name: &str) -> Result<NetNs, String> {
        require_root();
        let out = cmd::run_args("ip", &["netns", "add", name]);
        if !out.success() {
            return Err(format!(
                "ip netns add {name}: {}",
                out.stderr.trim().lines().last().unwrap_or("failed")
            ));
        }
        let ns = NetNs {
            path: Path::new(NETNS_DIR).join(name),
            name: name.to_owned(),
            deleted: false,
        };
        let out = ns.ip(&["link", "set", "lo", "up"]);
        if !out.success() {
            return Err(format!("lo up in {name}: {}", out.stderr.trim()));
        }
        Ok(ns)
    }

    /// A handle on an existing namespace made by someone else (e.g. another
    /// process of the `netns-cluster` tool): never deleted on drop.
    pub fn existing(name: &str) -> NetNs {
        NetNs {
            path: Path::new(NETNS_DIR).join(name),
            name: name.to_owned(),
            deleted: true,
        }
    }

    /// Leaves the namespace in place when this handle drops (it outlives the
    /// process; whoever recorded its name deletes it).
    pub fn disarm(&mut self) {
        self.deleted = true;
    }

    /// Does the namespace exist (its bind mount is there)?
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mount path, e.g. `/run/netns/ft123-4p` (what `CNI_NETNS` gets).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Output {
        cmd::run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip -n <ns> <args>`, panicking on failure; returns stdout.
    #[track_caller]
    pub fn ip_ok(&self, args: &[&str]) -> String {
        let out = self.ip(args);
        out.ok().to_owned()
    }

    /// `ip -j -n <ns> <args>` parsed as JSON (an empty output is `[]`).
    #[track_caller]
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = cmd::run(
            Command::new("ip")
                .arg("-j")
                .arg("-n")
                .arg(&self.name)
                .args(args),
        );
        let text = out.ok();
        if text.trim().is_empty() {
            return serde_json::Value::Array(vec![]);
        }
        serde_json::from_str(text).unwrap_or_else(|e| panic!("ip -j output not JSON ({e}): {out}"))
    }

    /// A `Command` that runs `prog` inside this namespace via `ip netns exec`.
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.name).arg(prog);
        c
    }

    /// Runs `prog args...` inside this namespace.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Output {
        cmd::run(self.command(prog).args(args))
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its
    /// result. The calling thread never changes namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Spawns a thread that enters this namespace and then runs `f`.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = self.open();
        let name = self.name.clone();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns into {name}: {e}"));
            drop(file);
            f()
        })
    }

    /// An open handle on the namespace (keeps it alive while held).
    pub fn open(&self) -> File {
        File::open(&self.path).unwrap_or_else(|e| panic!("open {}: {e}", self.path.display()))
    }

    /// Deletes the namespace now (e.g. to test a CNI DEL after the pod's netns is
    /// gone). Waits until the bind mount is gone.
    pub fn delete(mut self) {
        self.delete_inner();
    }

    fn delete_inner(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        let out = cmd::run_args("ip", &["netns", "del", &self.name]);
        if !out.success() && self.path.exists() {
            // Never panic in drop; report so a leak is visible in the test log.
            eprintln!("warning: could not delete netns {}: {out}", self.name);
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.delete_inner();
    }
}

/// Removes namespaces and temp dirs named `ft<pid>-...` whose process is gone
/// (left by a test run that was killed before its guards could drop). Only
/// names in this harness's format are touched, and only for dead PIDs.
pub fn sweep_stale() {
    let dead = |name: &str| {
        crate::names::owner_pid(name)
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(rd) = std::fs::read_dir(NETNS_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                let _ = cmd::run_args("ip", &["netns", "del", &name]);
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) && e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Deletes the named namespace if it exists (`ip netns del`); `Ok` when it
/// is gone afterwards.
pub fn delete_by_name(name: &str) -> Result<(), String> {
    let path = Path::new(NETNS_DIR).join(name);
    if !path.exists() {
        return Ok(());
    }
    let out = cmd::run_args("ip", &["netns", "del", name]);
    if out.success() || !path.exists() {
        Ok(())
    } else {
        Err(format!("ip netns del {name}: {}", out.stderr.trim()))
    }
}

/// Names of all namespaces starting with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Names of all namespaces this process has made and not yet deleted.
pub fn own_namespaces() -> Vec<String> {
    let prefix = crate::names::prefix();
    std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}
