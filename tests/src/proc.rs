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
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(std::time::Duration::from_secs(2));
    }
}
