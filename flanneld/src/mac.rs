//! The VTEP MAC: derived from the node's public IP and the VNI, so it is
//! the same after every restart and reboot without being stored anywhere —
//! a changing VtepMAC leaves stale FDB and neighbour entries on every peer.
//! (When the lease store already records this node's VtepMAC, as the kube
//! store's node annotation does, the daemon uses that one instead.)
//!
//! Owns the derivation only: pure functions, no kernel, no store. MAC text
//! is `common::mac`'s, re-exported here.

use std::net::{Ipv4Addr, Ipv6Addr};

/// FNV-1a, fixed here so the MAC never depends on a library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A locally administered unicast MAC, stable for (public IP, VNI).
pub fn vtep_mac(public_ip: Ipv4Addr, vni: u32) -> [u8; 6] {
    derive(b"flannel-rs vtep ", &public_ip.octets(), vni)
}

/// The same for `flannel-v6.<VNI>`, from the public IPv6.
pub fn vtep_mac_v6(public_ipv6: Ipv6Addr, vni: u32) -> [u8; 6] {
    derive(b"flannel-rs vtep6 ", &public_ipv6.octets(), vni)
}

fn derive(domain: &[u8], ip: &[u8], vni: u32) -> [u8; 6] {
    let mut input = domain.to_vec();
    input.extend_from_slice(ip);
    input.extend_from_slice(&vni.to_be_bytes());
    let h = fnv1a(&input).to_be_bytes();
    let mut mac = [h[0], h[1], h[2], h[3], h[4], h[5]];
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// MAC text is `common`'s, shared with the CNI plugin.
pub use common::mac::{format, parse};

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_distinct_and_local_unicast() {
        let a = vtep_mac(Ipv4Addr::new(192, 168, 64, 3), 1);
        assert_eq!(a, vtep_mac(Ipv4Addr::new(192, 168, 64, 3), 1));
        assert_ne!(a, vtep_mac(Ipv4Addr::new(192, 168, 64, 4), 1));
        assert_ne!(a, vtep_mac(Ipv4Addr::new(192, 168, 64, 3), 2));
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
        assert_eq!(parse(&format(&a)), Some(a));
        assert_eq!(parse("c6:d2:32:6f:8f"), None);
        assert_eq!(parse("c6:d2:32:6f:8f:44:00"), None);
        assert_eq!(parse("zz:d2:32:6f:8f:44"), None);
    }
}
