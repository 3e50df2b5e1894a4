//! Masquerading of pod traffic that leaves the cluster network (`ipMasq`),
//! with nftables, for both address families.
//!
//! Per family one table (`ip flannel-cni`, `ip6 flannel-cni`); in it, per
//! network, a set `pods-<name>` of the pod addresses that masquerade (each
//! element's comment is `"<containerID> <ifname>"`), and a base chain
//! `masq-<name>` holding the single rule `ip saddr @pods-<name> ip daddr !=
//! <network> ip daddr != 224.0.0.0/4 masquerade` (IPv6: `ip6 … ff00::/8`).
//!
//! The per-pod path starts no process: ADD writes one element through
//! nf_tables netlink (`nfnl.rs`); only when the kernel answers ENOENT (no
//! table or set yet, i.e. the node's first masquerading pod) does it run
//! `nft` once to create table, set, chain and rule, then retry. DEL removes
//! the element by address, which the IPAM store still knows when the pod's
//! namespace is long gone. This module owns the table; it must not touch
//! flanneld's own nftables table.

mod nfnl;
mod park;

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{CniError, Code};
use nfnl::{Family, Nfnl, SetRef};

const TABLE: &str = "flannel-cni";

fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

fn key_of(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// nft's name of a table family.
fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

/// The nftables script that creates (or repairs) the family's table, set,
/// chain and rule for `network`; one transaction, idempotent.
pub fn setup_script(net: &str, network: IpNetwork) -> String {
    let (fam, ty, proto, multicast) = match network {
        IpNetwork::V4(_) => ("ip", "ipv4_addr", "ip", "224.0.0.0/4"),
        IpNetwork::V6(_) => ("ip6", "ipv6_addr", "ip6", "ff00::/8"),
    };
    format!(
        "add table {fam} {TABLE}\n\
         add set {fam} {TABLE} pods-{net} {{ type {ty}; }}\n\
         add chain {fam} {TABLE} masq-{net} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain {fam} {TABLE} masq-{net}\n\
         add rule {fam} {TABLE} masq-{net} {proto} saddr @pods-{net} {proto} daddr != {network} {proto} daddr != {multicast} masquerade comment \"flannel-rs pod masquerade\"\n"
    )
}

/// nftables keeps at most 128 bytes of comment; the element is found by
/// address, so a long container ID is simply shortened (IDs are ASCII).
fn element_comment(cid: &str, ifname: &str) -> String {
    let room = nfnl::COMMENT_MAX.saturating_sub(ifname.len() + 1);
    let cid = if cid.len() > room { &cid[..room] } else { cid };
    format!("{cid} {ifname}")
}

fn set_name(net: &str) -> String {
    format!("pods-{net}")
}

fn open(op: impl FnOnce() -> String) -> Result<Nfnl, CniError> {
    Nfnl::open().map_err(|e| {
        CniError::new(
            Code::Masquerade,
            format!("{}: open netfilter netlink socket: {e}", op()),
        )
    })
}

/// Adds each pod address (with the cluster network of its family) to its
/// family's masquerade set, creating the table on first use.
pub fn add(
    net: &str,
    pods: &[(IpNetwork, IpAddr)],
    cid: &str,
    ifname: &str,
) -> Result<(), CniError> {
    if pods.is_empty() {
        return Ok(());
    }
    let comment = element_comment(cid, ifname);
    let set = set_name(net);
    let mut sock = open(|| format!("add masquerade for {}", pods[0].1))?;
    for &(network, pod) in pods {
        let family = family_of(pod);
        let at = SetRef {
            family,
            table: TABLE,
            set: &set,
        };
        let what = || {
            format!(
                "add masquerade element {pod} to set {} {TABLE} {set}",
                family_name(family)
            )
        };
        let key = key_of(pod);
        match sock.change_element(at, &key, Some(&comment)) {
            Ok(()) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(CniError::new(Code::Masquerade, format!("{}: {e}", what()))),
        }
        // No table or set yet: create them once, then write the element.
        tracing::info!(
            "creating masquerade table {} {TABLE} for network {network}",
            family_name(family)
        );
        nft(&setup_script(net, network)).map_err(|e| {
            CniError::new(
                Code::Masquerade,
                format!(
                    "create masquerade table {} {TABLE}: {e}",
                    family_name(family)
                ),
            )
        })?;
        sock.change_element(at, &key, Some(&comment))
            .map_err(|e| CniError::new(Code::Masquerade, format!("{}: {e}", what())))?;
    }
    // The release of a netfilter socket waits for frees still pending from
    // an earlier commit (a DEL's element just before): a child takes it.
    park::release(sock);
    Ok(())
}

/// A netfilter socket opened before DEL forks its link deleter: that
/// child inherits it and outlives the plugin, so the socket's last
/// reference, and the kernel's wait for freed elements (`park.rs`), go
/// with the child, and no second child is needed.
pub struct Early(Nfnl);

impl Early {
    /// None when it cannot be opened now (`remove_with` opens its own).
    pub fn open() -> Option<Early> {
        Nfnl::open().ok().map(Early)
    }
}

/// Removes the pods' addresses from their sets. An address, set or table
/// that is already gone is not an error, nor is a kernel without nftables.
pub fn remove(net: &str, pods: &[IpAddr]) -> Result<(), CniError> {
    remove_with(net, pods, None, false)
}

/// [`remove`] on `early`'s socket when given; `inherited`: a child that
/// outlives this process holds the socket too.
pub fn remove_with(
    net: &str,
    pods: &[IpAddr],
    early: Option<Early>,
    inherited: bool,
) -> Result<(), CniError> {
    if pods.is_empty() {
        return Ok(());
    }
    let set = set_name(net);
    let opened = match early {
        Some(Early(s)) => Ok(s),
        None => Nfnl::open(),
    };
    let mut sock = match opened {
        Ok(s) => s,
        // No nfnetlink at all: nothing was ever masqueraded here.
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(()),
        Err(e) => {
            return Err(CniError::new(
                Code::Masquerade,
                format!(
                    "remove masquerade for {}: open netfilter netlink socket: {e}",
                    pods[0]
                ),
            ))
        }
    };
    let mut removed = false;
    let result = remove_each(&mut sock, &set, pods, &mut removed);
    // A deleted element is freed after an RCU grace period, which the
    // socket's release waits for: let a child take that wait.
    if removed && !inherited {
        park::release(sock);
    }
    result
}

fn remove_each(
    sock: &mut Nfnl,
    set: &str,
    pods: &[IpAddr],
    removed: &mut bool,
) -> Result<(), CniError> {
    for &pod in pods {
        let family = family_of(pod);
        let at = SetRef {
            family,
            table: TABLE,
            set,
        };
        match sock.change_element(at, &key_of(pod), None) {
            Ok(()) => *removed = true,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EOPNOTSUPP)) => {}
            Err(e) => {
                return Err(CniError::new(
                    Code::Masquerade,
                    format!(
                        "remove masquerade element {pod} from set {} {TABLE} {set}: {e}",
                        family_name(family)
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// The addresses in both families' sets, for GC.
pub fn members(net: &str) -> Result<Vec<IpAddr>, CniError> {
    let set = set_name(net);
    let mut sock = match Nfnl::open() {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(Vec::new()),
        Err(e) => {
            return Err(CniError::new(
                Code::Masquerade,
                format!("list masquerade sets {set}: open netfilter netlink socket: {e}"),
            ))
        }
    };
    let mut found = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        let at = SetRef {
            family,
            table: TABLE,
            set: &set,
        };
        let keys = match sock.element_keys(at) {
            Ok(keys) => keys,
            // No table or set: nothing masquerades in this family.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EOPNOTSUPP)) => continue,
            Err(e) => {
                return Err(CniError::new(
                    Code::Masquerade,
                    format!("list set {} {TABLE} {set}: {e}", family_name(family)),
                ))
            }
        };
        for key in keys {
            if let Ok(a) = <[u8; 4]>::try_from(key.as_slice()) {
                found.push(IpAddr::from(a));
            } else if let Ok(a) = <[u8; 16]>::try_from(key.as_slice()) {
                found.push(IpAddr::from(a));
            }
        }
    }
    Ok(found)
}

/// Runs an nftables script as one transaction; the error carries nft's
/// own message. Only the one-time setup comes here.
fn nft(script: &str) -> Result<(), String> {
    common::nft::run(&["-f", "-"], Some(script))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_creates_table_set_chain_and_the_one_rule() {
        let s = setup_script("cbr0", "10.244.0.0/16".parse().expect("cidr"));
        assert!(s.contains("add set ip flannel-cni pods-cbr0 { type ipv4_addr; }"));
        assert!(s.contains("ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade"));
        assert!(s.contains("flush chain ip flannel-cni masq-cbr0"));
        let s = setup_script("cbr0", "fd00:10:244::/56".parse().expect("cidr"));
        assert!(s.contains("add set ip6 flannel-cni pods-cbr0 { type ipv6_addr; }"));
        assert!(s.contains(
            "ip6 saddr @pods-cbr0 ip6 daddr != fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade"
        ));
    }

    #[test]
    fn long_container_ids_fit_the_comment_limit() {
        let cid = "a".repeat(300);
        let c = element_comment(&cid, "eth0");
        assert_eq!(c.len(), 128);
        assert!(c.ends_with(" eth0"));
    }
}
