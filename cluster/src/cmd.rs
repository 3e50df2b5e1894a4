//! Running external commands (iproute2, nft, plugins) with captured output,
//! optional stdin and a hard timeout. A command that overruns is killed by
//! its own PID (never by name).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command left: exit code (`None` if killed by a signal),
/// stdout and stderr as text.
#[derive(Debug, Clone)]
pub struct Output {
    pub desc: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the full output unless the command exited 0; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.success(), "command failed: {self}");
        &self.stdout
    }

    /// Parses stdout as JSON (panics with the output when it is not).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exit={:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.desc, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Default timeout for one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with `stdin` fed to it, waiting at most `timeout`.
pub fn run_with(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let desc = describe(cmd);
    let start = Instant::now();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{desc}`: {e}"));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let data = data.to_vec();
        std::thread::spawn(move || {
            // A plugin may exit without reading stdin (e.g. bad env): ignore EPIPE.
            let _ = pipe.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                // Child::kill signals this child's PID only.
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{desc}` did not finish within {timeout:?}; killed pid {}",
                    child.id()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("wait `{desc}`: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Output {
        desc,
        code: status.code(),
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

/// Runs `cmd` (no stdin) with the default timeout.
pub fn run(cmd: &mut Command) -> Output {
    run_with(cmd, None, DEFAULT_TIMEOUT)
}

/// Runs `prog args...` and returns its output.
pub fn run_args(prog: &str, args: &[&str]) -> Output {
    run(Command::new(prog).args(args))
}
