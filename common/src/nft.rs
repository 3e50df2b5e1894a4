//! Running the `nft` program: how it is started, and what its exit means.
//! Both programs use it only off their hot paths (flanneld's table, the
//! plugin's one-time masquerade setup); per-pod changes go through netlink.
//!
//! Owns the command line and the reading of the result; blocking or async
//! waiting is the caller's (flanneld waits on tokio, with a timeout). It
//! knows no table, chain or rule: the script is the caller's.

use std::io::{self, Write};
use std::process::{Command, Output, Stdio};

/// `nft` could not be run, or said no.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("run nft: not found (install the nftables package)")]
    NotInstalled,
    #[error("run nft: {0}")]
    Spawn(#[source] io::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// nft's own first line of complaint.
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
}

/// `nft <args>` with stdout and stderr captured, stdin piped when a script
/// is to be written to it.
pub fn command(args: &[&str], script: bool) -> Command {
    let mut cmd = Command::new("nft");
    cmd.args(args)
        .stdin(if script {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// How a run is named in messages: `nft -f -`.
pub fn describe(args: &[&str]) -> String {
    format!("nft {}", args.join(" "))
}

/// A failure to start nft, as the error to report.
pub fn spawn_error(e: io::Error) -> NftError {
    match e.kind() {
        io::ErrorKind::NotFound => NftError::NotInstalled,
        _ => NftError::Spawn(e),
    }
}

/// nft's stdout on success; otherwise the first line it wrote to stderr.
pub fn outcome(what: &str, out: Output) -> Result<String, NftError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr.lines().next().unwrap_or("").trim();
    Err(NftError::Failed {
        what: what.to_string(),
        message: if message.is_empty() {
            format!("failed ({})", out.status)
        } else {
            message.to_string()
        },
    })
}

/// Runs `nft <args>` (with `script` on its stdin) and waits for it.
pub fn run(args: &[&str], script: Option<&str>) -> Result<String, NftError> {
    let what = describe(args);
    let mut child = command(args, script.is_some())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut stdin)) = (script, child.stdin.take()) {
        // A short write shows up as nft's own complaint; a closed pipe too.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NftError::Io {
        what: what.clone(),
        source,
    })?;
    outcome(&what, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn success_is_stdout_failure_is_the_first_stderr_line() {
        assert_eq!(
            outcome("nft list ruleset", output(0, "table ip x {}\n", "")).ok(),
            Some("table ip x {}\n".into())
        );
        let err =
            outcome("nft -f -", output(1, "", "Error: syntax error\nmore\n")).expect_err("failed");
        assert_eq!(err.to_string(), "nft -f -: Error: syntax error");
        let err = outcome("nft -f -", output(1, "", "")).expect_err("failed");
        assert!(err.to_string().starts_with("nft -f -: failed ("), "{err}");
    }

    #[test]
    fn a_missing_nft_says_which_package() {
        let err = spawn_error(io::Error::from(io::ErrorKind::NotFound));
        assert!(err.to_string().contains("install the nftables package"));
    }
}
