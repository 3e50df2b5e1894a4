//! One plugin invocation, the way a container runtime makes it: a direct
//! exec of the plugin binary (no `ip netns exec`, no shell) from a thread that
//! is already inside the node's network namespace, with a clean CNI
//! environment and the network config on stdin. The child inherits the
//! spawning thread's namespace.
//!
//! The measured time runs from just before the spawn to the reaping of the
//! child, so it includes exactly what a runtime pays: fork/exec, writing the
//! config, reading the result, waiting for exit.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Hard limit for one call; a plugin that overruns is killed by its PID.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The PATH every plugin gets (host-local is found through CNI_PATH anyway).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a plugin does for one pod: which binary, its config and CNI_PATH.
#[derive(Clone, Debug)]
pub struct Plugin {
    pub bin: PathBuf,
    pub cni_path: String,
    pub config: Vec<u8>,
}

/// The CNI identity of one pod.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub cid: String,
    pub netns: String,
    pub ifname: String,
    pub name: String,
}

/// A finished call.
#[derive(Debug)]
pub struct Invocation {
    pub desc: String,
    pub stdin: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl std::fmt::Display for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nexit={:?} after {:?}\n--- stdin ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.desc, self.code, self.elapsed, self.stdin, self.stdout, self.stderr
        )
    }
}

impl Plugin {
    /// Runs `verb` for `pod` on the current thread (and so in its netns).
    /// `Err` carries everything needed to see why: env, stdin, exit status,
    /// stdout and stderr.
    pub fn call(&self, verb: &str, pod: &PodRef) -> Result<Invocation, String> {
        let env = [
            ("PATH", PATH.to_owned()),
            ("CNI_COMMAND", verb.to_owned()),
            ("CNI_CONTAINERID", pod.cid.clone()),
            ("CNI_NETNS", pod.netns.clone()),
            ("CNI_IFNAME", pod.ifname.clone()),
            (
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    pod.name, pod.cid
                ),
            ),
            ("CNI_PATH", self.cni_path.clone()),
        ];
        let inv = invoke(&self.bin, &env, &self.config, CALL_TIMEOUT)?;
        let ok = inv.code == Some(0)
            && match verb {
                "ADD" => has_address(&inv.stdout),
                _ => inv.stdout.trim().is_empty(),
            };
        if ok {
            Ok(inv)
        } else {
            Err(format!("{verb} for pod {} failed:\n{inv}", pod.name))
        }
    }
}

/// A result with addresses, every one of them a string (both families
/// in a dual-stack run).
fn has_address(stdout: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(stdout).is_ok_and(|v| {
        v["ips"]
            .as_array()
            .is_some_and(|ips| !ips.is_empty() && ips.iter().all(|ip| ip["address"].is_string()))
    })
}

/// Spawns `bin` with exactly `env`, feeds it `stdin`, collects stdout and
/// stderr until both close, and reaps it.
pub fn invoke(
    bin: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Invocation, String> {
    let mut desc: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    desc.push(bin.display().to_string());
    let desc = desc.join(" ");
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn `{desc}`: {e}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A config is far smaller than a pipe buffer, so this cannot block on
        // a child that writes before reading. EPIPE (a child that exits
        // without reading) shows up in its exit status instead.
        let _ = pipe.write_all(stdin);
    }
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("`{desc}`: no stdout/stderr pipes"));
    };
    let mut bufs = [Vec::new(), Vec::new()];
    let mut open = [true, true];
    let deadline = start + timeout;
    while open[0] || open[1] {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let pid = child.id();
            let _ = child.kill(); // this child's PID only
            let _ = child.wait();
            return Err(format!(
                "`{desc}` did not finish within {timeout:?}; killed pid {pid}"
            ));
        }
        let mut fds = [
            libc::pollfd {
                fd: if open[0] { out.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if open[1] { err.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of two pollfd for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll on `{desc}`: {e}"));
        }
        for (i, fd) in fds.iter().enumerate() {
            if !open[i] || fd.revents == 0 {
                continue;
            }
            let mut chunk = [0u8; 8192];
            let r = if i == 0 {
                out.read(&mut chunk)
            } else {
                err.read(&mut chunk)
            };
            match r {
                Ok(0) | Err(_) => open[i] = false,
                Ok(k) => bufs[i].extend_from_slice(&chunk[..k]),
            }
        }
    }
    let status = child.wait().map_err(|e| format!("wait `{desc}`: {e}"))?;
    let elapsed = start.elapsed();
    let [stdout, stderr] = bufs.map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(Invocation {
        desc,
        stdin: String::from_utf8_lossy(stdin).into_owned(),
        code: status.code(),
        stdout,
        stderr,
        elapsed,
    })
}
