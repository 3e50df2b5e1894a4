//! Masquerading of pod traffic that leaves the cluster network (`ipMasq`),
//! with nftables.
//!
//! One table `ip flannel-cni`; per network a set `pods-<name>` of the pod
//! addresses that masquerade (each element's comment is "<containerID>
//! <ifname>"), and a base chain `masq-<name>` holding the single rule
//! `ip saddr @pods-<name> ip daddr != <network> ip daddr != 224.0.0.0/4
//! masquerade`. ADD adds an element and (re)writes the rule in one atomic
//! transaction; DEL removes the element by address, which the IPAM store
//! still knows when the pod's namespace is long gone.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnetwork::Ipv4Network;

use crate::error::{CniError, Code};

const TABLE: &str = "flannel-cni";

/// The nftables script that makes `pod` masquerade.
pub fn add_script(
    net: &str,
    network: Ipv4Network,
    pod: Ipv4Addr,
    cid: &str,
    ifname: &str,
) -> String {
    let comment = element_comment(cid, ifname);
    format!(
        "add table ip {TABLE}\n\
         add set ip {TABLE} pods-{net} {{ type ipv4_addr; }}\n\
         add chain ip {TABLE} masq-{net} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip {TABLE} masq-{net}\n\
         add rule ip {TABLE} masq-{net} ip saddr @pods-{net} ip daddr != {network} ip daddr != 224.0.0.0/4 masquerade comment \"flannel-rs pod masquerade\"\n\
         add element ip {TABLE} pods-{net} {{ {pod} comment \"{comment}\" }}\n"
    )
}

/// nftables keeps at most 128 bytes of comment; the element is found by
/// address, so a long container ID is simply shortened (IDs are ASCII).
fn element_comment(cid: &str, ifname: &str) -> String {
    const MAX: usize = 128;
    let room = MAX.saturating_sub(ifname.len() + 1);
    let cid = if cid.len() > room { &cid[..room] } else { cid };
    format!("{cid} {ifname}")
}

/// Adds the pod's address to the masquerade set.
pub fn add(
    net: &str,
    network: Ipv4Network,
    pod: Ipv4Addr,
    cid: &str,
    ifname: &str,
) -> Result<(), CniError> {
    nft(&add_script(net, network, pod, cid, ifname))
        .map_err(|e| CniError::new(Code::Masquerade, format!("add masquerade for {pod}: {e}")))
}

/// Removes the pods' addresses from the set. An address, set or table that
/// is already gone is not an error.
pub fn remove(net: &str, pods: &[Ipv4Addr]) -> Result<(), CniError> {
    for pod in pods {
        let script = format!("delete element ip {TABLE} pods-{net} {{ {pod} }}\n");
        match nft(&script) {
            Ok(()) => {}
            // Never installed, or already gone.
            Err(NftError::NotInstalled) => {}
            Err(NftError::Failed(e)) if e.contains("No such file or directory") => {}
            Err(e) => {
                return Err(CniError::new(
                    Code::Masquerade,
                    format!("remove masquerade for {pod}: {e}"),
                ))
            }
        }
    }
    Ok(())
}

/// The addresses in the set, for GC.
pub fn members(net: &str) -> Result<Vec<Ipv4Addr>, CniError> {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "ip", TABLE, &format!("pods-{net}")])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CniError::new(Code::Masquerade, format!("run nft: {e}"))),
    };
    if !out.status.success() {
        // No table or set: nothing masquerades.
        return Ok(Vec::new());
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut found = Vec::new();
    let items = json["nftables"].as_array().cloned().unwrap_or_default();
    for item in items {
        for elem in item["set"]["elem"].as_array().cloned().unwrap_or_default() {
            let text = elem["elem"]["val"].as_str().or_else(|| elem.as_str());
            if let Some(ip) = text.and_then(|t| t.parse().ok()) {
                found.push(ip);
            }
        }
    }
    Ok(found)
}

#[derive(Debug)]
enum NftError {
    NotInstalled,
    Failed(String),
}

impl std::fmt::Display for NftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInstalled => write!(f, "nft not found (install the nftables package)"),
            Self::Failed(msg) => write!(f, "{msg}"),
        }
    }
}

/// Runs an nftables script as one transaction; the error carries nft's
/// own message.
fn nft(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::NotInstalled,
            _ => NftError::Failed(format!("run nft: {e}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NftError::Failed(format!("write nft script: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NftError::Failed(format!("wait for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("nft failed").trim();
        Err(NftError::Failed(first.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_one_transaction_with_the_rule_and_element() {
        let s = add_script(
            "cbr0",
            "10.244.0.0/16".parse().expect("cidr"),
            Ipv4Addr::new(10, 244, 1, 5),
            "abc",
            "eth0",
        );
        assert!(s.contains("ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade"));
        assert!(
            s.contains("add element ip flannel-cni pods-cbr0 { 10.244.1.5 comment \"abc eth0\" }")
        );
        assert!(s.contains("flush chain ip flannel-cni masq-cbr0"));
    }

    #[test]
    fn long_container_ids_fit_the_comment_limit() {
        let cid = "a".repeat(300);
        let c = element_comment(&cid, "eth0");
        assert_eq!(c.len(), 128);
        assert!(c.ends_with(" eth0"));
    }
}
