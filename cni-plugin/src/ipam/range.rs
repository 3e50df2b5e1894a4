//! The addresses a range hands out, as integers, for either family.
//!
//! host-local's default range is network+1 ..= the last address (IPv4: the
//! broadcast address minus one; IPv6 has no broadcast address), minus the
//! gateway. flannel's gateway is always network+1, and this store never
//! hands out network+1 whatever the gateway: network+2 ..= last.
//!
//! Pure arithmetic: no files, no lock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `n` of `subnet`'s family; `None` when out of that family's width.
pub fn from_int(subnet: IpNetwork, n: u128) -> Option<IpAddr> {
    match subnet {
        IpNetwork::V4(_) => u32::try_from(n).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        IpNetwork::V6(_) => Some(IpAddr::V6(Ipv6Addr::from(n))),
    }
}

/// `subnet` with the host bits cleared.
pub fn canonical(subnet: IpNetwork) -> IpNetwork {
    IpNetwork::new(subnet.network(), subnet.prefix()).unwrap_or(subnet)
}

/// The usable range network+2 ..= last as integers, or `None` when empty
/// (IPv4 /31 and /32, IPv6 /127 and /128).
pub fn usable(subnet: IpNetwork) -> Option<(u128, u128)> {
    let network = to_int(subnet.network());
    let (bits, ipv4) = match subnet {
        IpNetwork::V4(_) => (32u32, true),
        IpNetwork::V6(_) => (128u32, false),
    };
    let host_bits = bits - u32::from(subnet.prefix());
    let last = network | u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
    let start = network.checked_add(2)?;
    let end = if ipv4 { last.checked_sub(1)? } else { last };
    (start <= end).then_some((start, end))
}

/// Whether `ip` is of `subnet`'s family.
pub fn same_family(subnet: IpNetwork, ip: IpAddr) -> bool {
    subnet.is_ipv4() == ip.is_ipv4()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_ranges() {
        let r = |s: &str| usable(s.parse().unwrap()).map(|(a, b)| (b - a + 1, a));
        assert_eq!(r("10.0.0.0/24").map(|p| p.0), Some(253));
        assert_eq!(r("10.0.0.0/31"), None);
        assert_eq!(r("fd00::/126").map(|p| p.0), Some(2), "::2 and ::3");
        assert_eq!(r("fd00::/127"), None);
        assert_eq!(r("fd00::/64").map(|p| p.0), Some((1u128 << 64) - 2));
        assert_eq!(r("::/0").map(|p| p.0), Some(u128::MAX - 1));
    }
}
