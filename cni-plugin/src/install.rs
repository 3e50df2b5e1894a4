//! Install mode: what the image's init containers run, so the image needs
//! no shell and no `cp`.
//!
//! ```text
//! flannel install-plugin DEST            copy this executable to DEST
//! flannel install-conflist SRC DEST      check the CNI conflist SRC, copy it to DEST
//! ```
//!
//! A runtime executes CNI plugins without arguments (the CNI spec passes
//! everything in the environment and on stdin), so a first argument can
//! only mean this mode. Both writes are atomic (temp file in DEST's
//! directory, fsync, rename over DEST, through `common::files`): a node's
//! runtime never executes a half-written plugin or reads a half-written
//! conflist, and replacing a plugin that is running does not fail with
//! "Text file busy" as `cp -f` does. A conflist that would not work is
//! refused and DEST is left as it was, so a malformed ConfigMap fails the
//! init container instead of every pod on the node.
//!
//! Owns DEST (creating its directory if needed); touches no kernel object
//! and no IPAM store, and writes its messages to stderr.

use std::ffi::OsString;
use std::path::Path;

use serde_json::Value;

use crate::spec::NetConf;

const USAGE: &str =
    "usage: flannel install-plugin DEST | flannel install-conflist SRC DEST (without arguments: the CNI plugin)";

/// Runs the install command in `args` (the arguments after the program
/// name) and returns the process's exit status. Messages go to stderr.
pub fn main(args: &[OsString]) -> i32 {
    let args: Vec<&Path> = args.iter().map(Path::new).collect();
    let outcome = match args.as_slice() {
        [cmd, dest] if *cmd == Path::new("install-plugin") => install_plugin(dest),
        [cmd, src, dest] if *cmd == Path::new("install-conflist") => install_conflist(src, dest),
        _ => {
            eprintln!("flannel: {USAGE}");
            return 2;
        }
    };
    match outcome {
        Ok(done) => {
            eprintln!("flannel: {done}");
            0
        }
        Err(e) => {
            eprintln!("flannel: error: {e}");
            1
        }
    }
}

/// Copies the running executable to `dest`.
fn install_plugin(dest: &Path) -> Result<String, String> {
    let fail = |e: String| format!("install plugin to {}: {e}", dest.display());
    // /proc/self/exe is the file this process runs, even if it was renamed
    // or replaced since: the copy is always of a complete binary.
    let exe = Path::new("/proc/self/exe");
    let bytes = std::fs::read(exe).map_err(|e| fail(format!("read {}: {e}", exe.display())))?;
    write_atomic(dest, &bytes, 0o755).map_err(fail)?;
    Ok(format!(
        "installed the CNI plugin ({} bytes) to {}",
        bytes.len(),
        dest.display()
    ))
}

/// Checks the conflist at `src` and copies it, byte for byte, to `dest`.
fn install_conflist(src: &Path, dest: &Path) -> Result<String, String> {
    let fail = |e: String| {
        format!(
            "install CNI conflist {} to {}: {e}",
            src.display(),
            dest.display()
        )
    };
    let bytes = std::fs::read(src).map_err(|e| fail(format!("read {}: {e}", src.display())))?;
    let name = validate_conflist(&bytes).map_err(fail)?;
    write_atomic(dest, &bytes, 0o644).map_err(fail)?;
    Ok(format!(
        "installed the CNI conflist {name:?} from {} to {}",
        src.display(),
        dest.display()
    ))
}

fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("create directory {}: {e}", dir.display()))?;
    }
    let opts = common::files::WriteOpts { mode, sync: true };
    common::files::write_atomic(dest, bytes, opts).map_err(|e| e.to_string())
}

/// Checks a conflist as a runtime (libcni) would use it and returns its
/// name: a JSON object with `name`, `cniVersion` and a `plugins` array of
/// objects with a `type`, among them a `flannel` entry that this plugin's
/// own parser accepts once the list's `name` and `cniVersion` are put into
/// it, as libcni does before it calls a plugin.
pub fn validate_conflist(bytes: &[u8]) -> Result<String, String> {
    let list: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let list = list
        .as_object()
        .ok_or("not a JSON object (a conflist is {\"name\":…,\"cniVersion\":…,\"plugins\":[…]})")?;
    let name = match list.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err("\"name\" is not a non-empty string".into()),
        None => return Err("no \"name\"".into()),
    };
    let version = match list.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("\"cniVersion\" is not a string".into()),
        None => return Err("no \"cniVersion\"".into()),
    };
    let plugins = match list.get("plugins") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        Some(Value::Array(_)) => return Err("\"plugins\" is empty".into()),
        Some(_) => return Err("\"plugins\" is not an array".into()),
        None => {
            return Err("no \"plugins\" array (a single plugin's config is not a conflist)".into())
        }
    };
    let mut flannel = 0;
    for (i, plugin) in plugins.iter().enumerate() {
        let obj = plugin
            .as_object()
            .ok_or_else(|| format!("plugins[{i}] is not a JSON object"))?;
        match obj.get("type") {
            Some(Value::String(t)) if !t.is_empty() => {
                if t == "flannel" {
                    let mut conf = obj.clone();
                    conf.insert("name".into(), Value::String(name.clone()));
                    conf.insert("cniVersion".into(), Value::String(version.clone()));
                    let conf = serde_json::to_vec(&conf)
                        .map_err(|e| format!("plugins[{i}] (flannel): encode: {e}"))?;
                    NetConf::parse(&conf).map_err(|e| format!("plugins[{i}] (flannel): {e}"))?;
                    flannel += 1;
                }
            }
            _ => return Err(format!("plugins[{i}] has no \"type\" string")),
        }
    }
    match flannel {
        0 => Err("no plugin of \"type\":\"flannel\" in \"plugins\"".into()),
        1 => Ok(name),
        n => Err(format!(
            "{n} plugins of \"type\":\"flannel\"; one is expected"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::validate_conflist;

    /// kube-flannel.yml's cni-conf.json.
    const UPSTREAM: &str = r#"{
      "name": "cbr0",
      "cniVersion": "0.3.1",
      "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
      ]
    }"#;

    #[test]
    fn accepts_the_upstream_conflist() {
        assert_eq!(validate_conflist(UPSTREAM.as_bytes()), Ok("cbr0".into()));
    }

    #[test]
    fn refuses_broken_conflists_naming_the_problem() {
        let cases = [
            ("{", "not JSON"),
            ("[]", "not a JSON object"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"flannel"}]}"#,
                "no \"name\"",
            ),
            (
                r#"{"name":"x","plugins":[{"type":"flannel"}]}"#,
                "no \"cniVersion\"",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","type":"flannel"}"#,
                "no \"plugins\"",
            ),
            (r#"{"name":"x","cniVersion":"1.0.0","plugins":[]}"#, "empty"),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":{}}"#,
                "not an array",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[3]}"#,
                "plugins[0]",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"portmap"}]}"#,
                "no plugin of",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"flannel"},{}]}"#,
                "plugins[1] has no",
            ),
            (
                r#"{"name":"x","cniVersion":"0.2.0","plugins":[{"type":"flannel"}]}"#,
                "cniVersion \"0.2.0\"",
            ),
            (
                r#"{"name":"bad name","cniVersion":"1.0.0","plugins":[{"type":"flannel"}]}"#,
                "network name",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"flannel","subnetFile":"run/x"}]}"#,
                "subnetFile",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"flannel","delegate":{"ipam":{}}}]}"#,
                "plugins[0] (flannel)",
            ),
            (
                r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"flannel"},{"type":"flannel"}]}"#,
                "2 plugins",
            ),
        ];
        for (conflist, expected) in cases {
            let err =
                validate_conflist(conflist.as_bytes()).expect_err(&format!("accepted {conflist}"));
            assert!(
                err.contains(expected),
                "{conflist}: {err:?} lacks {expected:?}"
            );
        }
    }
}
