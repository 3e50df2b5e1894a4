//! The node side of a pod's network: the `cni0` bridge (created with a MAC
//! of its own, up, with the gateway addresses) and the forwarding sysctls
//! its families need (and `accept_ra` off on a bridge it creates).
//!
//! The veth and its host end are ADD's (`cmd/add.rs`); this module neither
//! creates nor attaches ports, and never deletes the bridge.

use ipnetwork::IpNetwork;

use crate::cni_err;
use crate::error::Result;
use crate::netlink::{is_bridge, Link, Netlink};
use crate::{random, sysctl};

/// Finds or creates the bridge, up, with the gateway addresses (one per
/// family, IPv6 ones usable at once: no DAD) and forwarding for their
/// families.
/// A bridge created by a concurrent ADD (EEXIST) is adopted; a link of
/// the same name that is not a bridge is an error.
pub fn ensure_bridge(
    nl: &Netlink,
    name: &str,
    mtu: u32,
    gateways: &[IpNetwork],
    promisc: bool,
) -> Result<Link> {
    let link = match nl.link_by_name(name)? {
        Some(link) => link,
        None => {
            // A MAC of its own, set explicitly: otherwise the bridge takes
            // its lowest port's, which changes as pods come and go and
            // stalls every pod's ARP cache.
            match nl.create_bridge(name, random::mac(), mtu) {
                Ok(()) => {
                    // Router advertisements on the pod bridge would give
                    // the node addresses nobody asked for.
                    let _ = sysctl::ensure(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
                }
                Err(e) if e.is(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            nl.link_by_name(name)?
                .ok_or_else(|| cni_err!(Kernel, "bridge {name} vanished right after creation"))?
        }
    };
    if !is_bridge(&link) {
        return Err(cni_err!(
            InvalidConfig,
            "link {name} exists and is not a bridge (kind {:?}); remove it or set delegate.bridge",
            link.kind
        ));
    }
    if !link.up {
        nl.set_up(link.index, name)?;
    }
    if promisc {
        nl.set_promisc(link.index)?;
    }
    for &gw in gateways {
        nl.ensure_address(link.index, gw, name)?;
        match gw {
            IpNetwork::V4(_) => sysctl::ensure("net/ipv4/ip_forward", "1")?,
            IpNetwork::V6(_) => sysctl::ensure("net/ipv6/conf/all/forwarding", "1")?,
        }
    }
    Ok(link)
}
