//! A private `containerd` for running the flannel-rs image under a real
//! runtime (`ctr`, runc), with nothing of it on the host's defaults:
//! root, state, the gRPC socket, runc's root and the I/O FIFOs all live
//! under one directory of the test's, the CRI plugin is disabled (so it
//! never reads /etc/cni or starts pods of its own), and the containerd
//! namespace is unique to the test.
//!
//! Dropping it (also on panic) kills the containers' tasks, deletes the
//! containers, stops containerd by its PID, stops any shim it left (found
//! by this instance's socket path on its command line), unmounts whatever
//! is still mounted under the directory, and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flannel_cluster::cmd::Output;
use flannel_cluster::proc::ChildGuard;

/// How long containerd may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of one `ctr` call that does not run a container to its end.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Containerd {
    dir: PathBuf,
    sock: PathBuf,
    namespace: String,
    daemon: Option<ChildGuard>,
    /// Containers started with [`spawn`](Self::spawn): their `ctr run` clients.
    running: Vec<(String, ChildGuard)>,
}

/// One container's settings for `ctr run`.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// `--with-ns network:<path>`: the network namespace to join.
    pub netns: Option<PathBuf>,
    /// Capabilities added to the runtime's default set (`NET_ADMIN`, ...).
    pub cap_add: Vec<String>,
    /// Bind mounts: host path → container path.
    pub mounts: Vec<(PathBuf, String)>,
    pub env: Vec<(String, String)>,
}

impl Containerd {
    /// Starts containerd with everything under `dir` (created; must be
    /// short enough for a unix socket path) and waits until it answers.
    pub fn start(dir: &Path) -> Containerd {
        for sub in ["root", "state", "opt", "runc", "fifo"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        let sock = dir.join("c.sock");
        let config = dir.join("config.toml");
        let text = format!(
            "version = 2\n\
             root = {root:?}\n\
             state = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {sock:?}\n\
             [ttrpc]\n  address = {ttrpc:?}\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = dir.join("root"),
            state = dir.join("state"),
            sock = sock,
            ttrpc = dir.join("c.sock.ttrpc"),
            opt = dir.join("opt"),
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let log_path = dir.join("containerd.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let err = log.try_clone().expect("dup containerd's log fd");
        let daemon = ChildGuard::spawn(
            Command::new("containerd")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err)),
        );
        let namespace = flannel_cluster::names::unique("ctr");
        let mut c = Containerd {
            dir: dir.to_owned(),
            sock,
            namespace,
            daemon: Some(daemon),
            running: Vec::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(d) = c.daemon.as_mut() {
                if let Some(st) = d.try_wait() {
                    panic!("containerd exited at start ({st}); its log:\n{}", c.log());
                }
            }
            if c.sock.exists() && c.ctr(&["version"]).success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {START_TIMEOUT:?}; its log:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// containerd's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr_command(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.sock)
            .arg("--namespace")
            .arg(&self.namespace);
        c
    }

    /// `ctr ARGS` against this containerd, in its namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        flannel_cluster::cmd::run_with(self.ctr_command().args(args), None, CTR_TIMEOUT)
    }

    /// Imports an OCI archive; returns the image names it brought.
    pub fn import(&self, archive: &Path) -> Vec<String> {
        let path = archive.to_string_lossy();
        let out = self.ctr(&["images", "import", &path]);
        assert!(out.success(), "ctr images import {path}: {out:?}");
        let list = self.ctr(&["images", "list", "--quiet"]);
        list.ok().lines().map(str::to_owned).collect()
    }

    fn run_command(&self, id: &str, image: &str, spec: &RunSpec, argv: &[&str]) -> Command {
        let mut c = self.ctr_command();
        c.args(["run", "--rm"])
            .arg("--runc-root")
            .arg(self.dir.join("runc"))
            .arg("--fifo-dir")
            .arg(self.dir.join("fifo"));
        if let Some(ns) = &spec.netns {
            c.arg("--with-ns").arg(format!("network:{}", ns.display()));
        }
        for cap in &spec.cap_add {
            c.arg("--cap-add").arg(format!("CAP_{cap}"));
        }
        for (src, dst) in &spec.mounts {
            c.arg("--mount").arg(format!(
                "type=bind,src={},dst={dst},options=rbind:rw",
                src.display()
            ));
        }
        for (k, v) in &spec.env {
            c.arg("--env").arg(format!("{k}={v}"));
        }
        c.arg(image).arg(id).args(argv);
        c
    }

    /// Runs a container to its end (`ctr run --rm`); returns its output.
    pub fn run(&self, id: &str, image: &str, spec: &RunSpec, argv: &[&str]) -> Output {
        flannel_cluster::cmd::run_with(
            &mut self.run_command(id, image, spec, argv),
            None,
            CTR_TIMEOUT,
        )
    }

    /// Starts a long-running container; its output goes to `log` (a file).
    /// Stopped by [`stop`](Self::stop) or on drop.
    pub fn spawn(&mut self, id: &str, image: &str, spec: &RunSpec, argv: &[&str], log: &Path) {
        let out =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("dup the container's log fd");
        let mut c = self.run_command(id, image, spec, argv);
        c.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        self.running
            .push((id.to_owned(), ChildGuard::spawn(&mut c)));
    }

    /// Is the container's `ctr run` still attached (the task running)?
    pub fn is_running(&mut self, id: &str) -> bool {
        self.running
            .iter_mut()
            .find(|(i, _)| i == id)
            .is_some_and(|(_, g)| g.try_wait().is_none())
    }

    /// Signals the container's task and waits for its `ctr run` to end
    /// (which removes the container); SIGKILL after `grace`.
    pub fn stop(&mut self, id: &str, grace: Duration) {
        let Some(pos) = self.running.iter().position(|(i, _)| i == id) else {
            return;
        };
        let (_, mut guard) = self.running.remove(pos);
        let _ = self.ctr(&["tasks", "kill", "--signal", "SIGTERM", id]);
        let deadline = Instant::now() + grace;
        while guard.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if guard.try_wait().is_none() {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
        }
        guard.stop(Duration::from_secs(5));
    }

    /// Every task killed, every container deleted.
    fn remove_all_containers(&mut self) {
        let ids: Vec<String> = self.running.iter().map(|(i, _)| i.clone()).collect();
        for id in ids {
            self.stop(&id, Duration::from_secs(5));
        }
        let list = self.ctr(&["containers", "list", "--quiet"]);
        for id in list.stdout.lines().filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "delete", "--force", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
    }
}

/// PIDs of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== containerd log =====\n{}", self.log());
        }
        self.remove_all_containers();
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(10));
        }
        // Shims outlive containerd by design; ours name our socket.
        let sock = self.sock.to_string_lossy().into_owned();
        for pid in processes_mentioning(&sock) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in mounts_under(&self.dir) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
