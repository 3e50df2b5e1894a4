//! The CNI environment variables (`CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`), validated: which verb, and the
//! container ID and interface name checked against the spec's rules before
//! any of them names a file or a link.
//!
//! Owns the reading and the rules only; it opens no namespace and touches
//! no file (the network configuration on stdin is `spec.rs`'s).

use std::path::PathBuf;

use crate::cni_err;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: Vec<(String, String)>,
}

impl CniEnv {
    /// Reads the variables the verb needs; an error names the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(cni_err!(
                    InvalidEnv,
                    "CNI_COMMAND={other:?} is not a CNI verb"
                ))
            }
            None => return Err(cni_err!(InvalidEnv, "CNI_COMMAND is not set")),
        };
        // What each verb reads, to the letter of the spec: VERSION, STATUS
        // and GC read nothing but CNI_COMMAND (and CNI_PATH, which this
        // plugin does not need). Runtimes probe plugins with VERSION and
        // placeholder values (CNI_NETNS=dummy); those must not matter.
        if !matches!(command, Command::Add | Command::Del | Command::Check) {
            return Ok(Self {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: Vec::new(),
            });
        }
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let container_id = nonempty("CNI_CONTAINERID")
            .ok_or_else(|| cni_err!(InvalidEnv, "CNI_CONTAINERID is not set"))?;
        validate_container_id(&container_id)?;
        let ifname =
            nonempty("CNI_IFNAME").ok_or_else(|| cni_err!(InvalidEnv, "CNI_IFNAME is not set"))?;
        validate_ifname(&ifname)?;
        let netns = nonempty("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && command != Command::Del {
            return Err(cni_err!(InvalidEnv, "CNI_NETNS is not set"));
        }
        if let Some(path) = &netns {
            if !path.is_absolute() {
                return Err(cni_err!(
                    InvalidEnv,
                    "CNI_NETNS={} is not an absolute path",
                    path.display()
                ));
            }
        }
        let args = parse_args(get("CNI_ARGS").as_deref().unwrap_or(""))?;
        Ok(Self {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: the ID ends up in file contents and
/// rule comments, so nothing else may pass.
pub fn validate_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(cni_err!(
            InvalidEnv,
            "CNI_CONTAINERID={id:?} is invalid: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
        ))
    }
}

/// A Linux interface name, by the rules of the kernel's `dev_valid_name`:
/// 1..=15 bytes, not `.` or `..`, no `/`, `:` or byte the kernel's
/// `isspace` accepts (which includes 0xa0, a byte inside many UTF-8
/// characters). Stricter than the kernel in three ways: no `%`, which the
/// kernel would expand as a template (`e%d` becomes `e0`, so the name we
/// were given would not be the name the pod got), no control byte, and no
/// Unicode whitespace (U+0085, U+2003, ...): the IPAM record
/// `<cid>\r\n<ifname>` is read back whitespace-trimmed, as host-local
/// does, so a name ending in one would not own its address any more.
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad_byte = |b: u8| {
        matches!(b, b'/' | b':' | b'%' | b' ' | 0xa0) || b.is_ascii_control() // 0x00-0x1f (\t..\r too), 0x7f
    };
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("not a valid name")
    } else if name.bytes().any(bad_byte) || name.chars().any(char::is_whitespace) {
        Some("contains '/', ':', '%', whitespace or a control character")
    } else {
        None
    };
    match reason {
        Some(r) => Err(cni_err!(InvalidEnv, "CNI_IFNAME={name:?} is invalid: {r}")),
        None => Ok(()),
    }
}

/// `K=V;K2=V2`.
fn parse_args(raw: &str) -> Result<Vec<(String, String)>> {
    raw.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(cni_err!(InvalidEnv, "CNI_ARGS: {pair:?} is not KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_everything() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc")]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert!(e.msg.contains("CNI_IFNAME"), "{e}");
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_ARGS", "K8S_POD_NAME=a;IgnoreUnknown=1"),
        ])
        .expect("valid");
        assert_eq!(ok.args.len(), 2);
    }

    /// Runtimes probe plugins with VERSION and placeholders; the spec says
    /// VERSION reads only CNI_COMMAND, and STATUS and GC read no more.
    #[test]
    fn version_status_gc_ignore_the_container_variables() {
        for verb in ["VERSION", "STATUS", "GC"] {
            let ok = env(&[
                ("CNI_COMMAND", verb),
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy/%d"),
                ("CNI_CONTAINERID", "-bad id"),
                ("CNI_ARGS", "no-equals-sign"),
                ("CNI_PATH", "dummy"),
            ])
            .unwrap_or_else(|e| panic!("{verb}: {e}"));
            assert!(ok.netns.is_none() && ok.ifname.is_empty() && ok.args.is_empty());
        }
    }

    #[test]
    fn del_tolerates_missing_netns() {
        let ok = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .expect("valid");
        assert!(ok.netns.is_none());
    }

    #[test]
    fn rejects_bad_ids_and_names() {
        for id in ["-abc", "a/b", "a b", "a;b", "ä"] {
            assert!(validate_container_id(id).is_err(), "{id}");
        }
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "eth:0",
            "a b",
            "abcdefghijklmnop",
            "e%d",
            "%d",
            "a\tb",
            "a\u{b}b",
            "eth\u{a0}",
            "à",        // C3 A0: the kernel's isspace(0xa0)
            "ééééééé√", // 17 bytes
            "A\u{85}",  // NEL: read back trimmed from the IPAM record
            "eth\u{2003}",
        ] {
            assert!(validate_ifname(name).is_err(), "{name:?}");
        }
        for name in ["eth0", "net1", "a.b", "veth-x_y", "é", "123456789012345"] {
            assert!(validate_ifname(name).is_ok(), "{name:?}");
        }
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_container_id("a1_b.c-d").is_ok());
    }
}
