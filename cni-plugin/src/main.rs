//! `flannel`: the CNI plugin. Reads the CNI environment and the network
//! configuration, runs one verb, prints the result (or the CNI error JSON)
//! on stdout. Logs go to stderr only (`log.rs`: warnings and errors, or the
//! level in `RUST_LOG`).
//!
//! Owns stdout: this is the one place that writes to it, once, at the end.
//! Every other module returns a value or a `CniError` and never prints.
//! Which verb runs is decided here; what a verb does is `cmd/<verb>.rs`'s.
//!
//! With arguments (a runtime never passes any), the install mode the
//! image's init containers use: see `install.rs`.

mod bridge;
mod cmd;
mod env;
mod error;
mod install;
mod ipam;
mod log;
mod masq;
mod netlink;
mod random;
mod scratch;
mod spec;
mod sysctl;

use std::io::{Read, Write};

/// On musl, dlmalloc instead of the libc allocator (see Cargo.toml).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

use env::{CniEnv, Command};
use error::{CniError, Code};
use serde_json::{json, Value};
use spec::{NetConf, SUPPORTED_VERSIONS};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.is_empty() {
        std::process::exit(install::main(&args));
    }
    log::init();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = spec::peek_version(&stdin).unwrap_or_else(|| "1.1.0".to_string());
    let outcome = match read {
        Ok(_) => run(&stdin, &version),
        Err(e) => Err(CniError::new(Code::Io, format!("read stdin: {e}"))),
    };
    let (out, code) = match outcome {
        Ok(Some(value)) => (Some(value), 0),
        Ok(None) => (None, 0),
        Err(e) => {
            tracing::error!("{e}");
            (Some(e.to_json(&version)), 1)
        }
    };
    if let Some(value) = out {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{value}");
        let _ = stdout.flush();
    }
    std::process::exit(code);
}

/// Runs the verb; `Some(json)` is printed on stdout.
fn run(stdin: &[u8], version: &str) -> Result<Option<Value>, CniError> {
    let env = CniEnv::from_env()?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": version,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    tracing::debug!(command = ?env.command, container = %env.container_id, ifname = %env.ifname, args = ?env.args, "start");
    match env.command {
        Command::Status => cmd::status::run(&conf).map(|()| None),
        Command::Gc => cmd::gc::run(&conf).map(|()| None),
        Command::Add => cmd::add::run(&env, &conf).map(Some),
        Command::Del => cmd::del::run(&env, &conf).map(|()| None),
        Command::Check => cmd::check::run(&env, &conf).map(|()| None),
        // Answered above, before the configuration is parsed.
        Command::Version => Ok(None),
    }
}
