//! Child processes the tests start (daemons, helpers), stopped by their own
//! PID on drop — never by name.

use std::process::{Child, Command};

pub struct ChildGuard {
    child: Option<Child>,
    desc: String,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let desc = format!("{cmd:?}");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
        ChildGuard {
            child: Some(child),
            desc,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Has it exited already? (Returns its status when it has.)
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already reaped")
    }

    /// SIGTERM, then SIGKILL after `grace` if it is still running; reaps it.
    pub fn stop(&mut self, grace: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn desc(&self) -> &str {
        &self.desc
    }

    /// Lets the process outlive this guard (and this process): returns its
    /// PID for whoever stops it later (see [`RecordedProcess`]).
    pub fn detach(mut self) -> u32 {
        self.child.take().map(|c| c.id()).unwrap_or(0)
    }
}

/// Makes `cmd` start in a session of its own (setsid), so it survives the
/// terminal and process group of whoever started it.
pub fn new_session(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A process another run of a tool started and recorded by PID, with a
/// string its command line must contain (so a reused PID is never signalled).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedProcess {
    pub pid: u32,
    /// A substring of `/proc/<pid>/cmdline` (NULs read as spaces), e.g. the
    /// cluster's own directory.
    pub cmdline_contains: String,
}

impl RecordedProcess {
    /// The command line of `pid` (arguments joined by spaces), if it exists
    /// and is not a zombie.
    pub fn cmdline_of(pid: u32) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(')').next()?.trim_start().chars().next()?;
        if state == 'Z' || state == 'X' {
            return None;
        }
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let s: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(s.join(" "))
    }

    /// Is it still running, and still the process we recorded?
    pub fn is_ours(&self) -> bool {
        self.pid > 1
            && Self::cmdline_of(self.pid).is_some_and(|c| c.contains(&self.cmdline_contains))
    }

    /// SIGTERM, then SIGKILL once `grace` passes, each only after checking
    /// the command line; `Ok` once it is gone (or was never ours).
    pub fn stop(&self, grace: std::time::Duration) -> Result<(), String> {
        use nix::sys::signal::{kill, Signal};
        use std::time::{Duration, Instant};
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        if !self.is_ours() {
            return Ok(());
        }
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_ours() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.is_ours() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.is_ours() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("pid {} survived SIGKILL", self.pid))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(std::time::Duration::from_secs(2));
    }
}

/// A server of the harness (etcd, the kube API stand-in): started by this
/// process (stopped when the guard drops) or recorded by another run of a
/// tool (left alone).
#[derive(Default)]
pub struct ServerProcess {
    pub child: Option<ChildGuard>,
    pub recorded: Option<RecordedProcess>,
}

impl ServerProcess {
    pub fn recorded(r: RecordedProcess) -> ServerProcess {
        ServerProcess {
            child: None,
            recorded: Some(r),
        }
    }

    /// Lets the server outlive this handle; returns it as a recorded
    /// process whose command line must contain `marker` (a path it was
    /// started with).
    pub fn detach(&mut self, marker: &std::path::Path) -> Option<RecordedProcess> {
        if let Some(g) = self.child.take() {
            self.recorded = Some(RecordedProcess {
                pid: g.detach(),
                cmdline_contains: marker.to_string_lossy().into_owned(),
            });
        }
        self.recorded.clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .map(ChildGuard::pid)
            .or(self.recorded.as_ref().map(|r| r.pid))
    }
}
