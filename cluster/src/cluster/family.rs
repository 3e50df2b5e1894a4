//! The IP families a cluster runs its overlay on (`ipv4`, `ipv6` or
//! `dual`), and what each one calls for: the underlay's IPv6 addresses
//! next to its IPv4 ones (a ULA /64 on the same bridge, `nodad` so they
//! are usable at once), the `net-conf.json` of each family, the CIDRs the
//! Kubernetes stand-in's node IPAM hands out, and IPv6 prefix arithmetic.
//!
//! The underlay keeps its IPv4 addresses in every family: it is also the
//! management network the stores (etcd, the API stand-in) listen on, as
//! a node's IPv4 address does on an IPv6-only Kubernetes node pool.
//!
//! Pure values and arithmetic: it starts nothing and touches no namespace.

use serde_json::{json, Value};
use std::net::{IpAddr, Ipv6Addr};

/// The underlay bridge's IPv6 address (every node's IPv6 default gateway).
pub const UNDERLAY_GATEWAY6: &str = "fd00:192:168:64::1";
/// The overlay's IPv6 network (each node leases a /64 of it: flannel's
/// default `IPv6SubnetLen`).
pub const IPV6_NETWORK: &str = "fd00:10:244::/56";
/// The IPv4 overlay network (flannel's default manifest's).
pub const IPV4_NETWORK: &str = "10.244.0.0/16";
/// The VXLAN device flanneld keeps for IPv6 (VNI 1).
pub const VXLAN_DEV6: &str = "flannel-v6.1";

/// Which families the overlay carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IpFamily {
    /// IPv4 only (flannel's default).
    #[default]
    V4,
    /// IPv6 only (`EnableIPv4: false`).
    V6,
    /// Both.
    Dual,
}

impl IpFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
            IpFamily::Dual => "dual",
        }
    }

    pub fn parse(s: &str) -> Option<IpFamily> {
        match s {
            "ipv4" => Some(IpFamily::V4),
            "ipv6" => Some(IpFamily::V6),
            "dual" => Some(IpFamily::Dual),
            _ => None,
        }
    }

    pub fn has_v4(self) -> bool {
        self != IpFamily::V6
    }

    pub fn has_v6(self) -> bool {
        self != IpFamily::V4
    }

    /// The single families it is made of: `[V4]`, `[V6]` or `[V4, V6]`.
    pub fn singles(self) -> Vec<IpFamily> {
        match self {
            IpFamily::Dual => vec![IpFamily::V4, IpFamily::V6],
            f => vec![f],
        }
    }

    /// Is `ip` of this single family?
    pub fn matches(self, ip: &IpAddr) -> bool {
        match self {
            IpFamily::V4 => ip.is_ipv4(),
            IpFamily::V6 => ip.is_ipv6(),
            IpFamily::Dual => true,
        }
    }

    /// The `net-conf.json` of this family: flannel's default manifest's
    /// (`10.244.0.0/16`, vxlan), plus `EnableIPv6` and `IPv6Network` (the
    /// subnet length left at its default, 64), and `EnableIPv4: false`
    /// for IPv6 only.
    pub fn net_conf(self) -> Value {
        match self {
            IpFamily::V4 => json!({"Network": IPV4_NETWORK, "Backend": {"Type": "vxlan"}}),
            IpFamily::Dual => json!({
                "Network": IPV4_NETWORK,
                "EnableIPv6": true,
                "IPv6Network": IPV6_NETWORK,
                "Backend": {"Type": "vxlan"},
            }),
            IpFamily::V6 => json!({
                "EnableIPv4": false,
                "EnableIPv6": true,
                "IPv6Network": IPV6_NETWORK,
                "Backend": {"Type": "vxlan"},
            }),
        }
    }
}

/// Node `i`'s underlay IPv6 address: `fd00:192:168:64::<10+i>` (hex).
pub fn node_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x192,
        0x168,
        0x64,
        0,
        0,
        0,
        u16::from(super::NODE_IP_BASE) + i as u16,
    )
}

/// `fd00:10:244:3::5/64` → `fd00:10:244:3::/64`; `None` unless an IPv6 CIDR.
pub fn network_of6(cidr: &str) -> Option<String> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 128)?;
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    Some(format!("{}/{len}", Ipv6Addr::from(u128::from(ip) & mask)))
}

/// The network of an IPv4 or IPv6 CIDR (see [`super::network_of`]).
pub fn network_of_any(cidr: &str) -> Option<String> {
    super::network_of(cidr).or_else(|| network_of6(cidr))
}

/// `fd00:10:244:3::/64` → `fd00:10:244:3::` (a peer's IPv6 VTEP address:
/// the subnet's network address, as flannel's `flannel-v6` device uses).
pub fn network_addr(subnet: &str) -> &str {
    subnet.split('/').next().unwrap_or(subnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_prefixes() {
        assert_eq!(node_ip6(0).to_string(), "fd00:192:168:64::a");
        assert_eq!(
            network_of6("fd00:10:244:3::5/64").as_deref(),
            Some("fd00:10:244:3::/64")
        );
        assert_eq!(network_of6("10.0.0.1/24"), None);
        assert_eq!(
            network_of_any("10.244.3.1/24").as_deref(),
            Some("10.244.3.0/24")
        );
        for f in ["ipv4", "ipv6", "dual"] {
            assert_eq!(IpFamily::parse(f).map(IpFamily::as_str), Some(f));
        }
        assert_eq!(IpFamily::V6.net_conf()["EnableIPv4"], false);
        assert!(IpFamily::Dual.net_conf().get("EnableIPv4").is_none());
        assert_eq!(IpFamily::Dual.singles(), vec![IpFamily::V4, IpFamily::V6]);
    }
}
