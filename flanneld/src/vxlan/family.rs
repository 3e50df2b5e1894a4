//! What the VXLAN datapath needs to know about an address family, and
//! nothing else: its netlink family, its device's name and encapsulation
//! overhead, and how its addresses appear in netlink attributes. Every
//! other line of the backend is written once, generic over
//! [`VxlanFamily`], and runs unchanged for `flannel.<VNI>` (IPv4) and
//! `flannel-v6.<VNI>` (IPv6).
//!
//! Owns constants and conversions only: no kernel access.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use rtnetlink::packet_route::neighbour::NeighbourAddress;
use rtnetlink::packet_route::route::RouteAddress;
use rtnetlink::packet_route::AddressFamily;

use crate::netconf::Family;

/// An address family the VXLAN backend can run, named (like
/// [`Family`]) by its network type: `Ipv4Network` or `Ipv6Network`.
pub trait VxlanFamily: Family {
    /// The netlink address family of its neighbours, routes and addresses.
    const AF: AddressFamily;
    /// The device is `<DEVICE_PREFIX><VNI>`: `flannel.1`, `flannel-v6.1`.
    const DEVICE_PREFIX: &'static str;
    /// Bytes the encapsulation adds (outer IP + UDP + VXLAN + inner
    /// Ethernet): the device's MTU is the interface's less this.
    const OVERHEAD: u32;
    /// The metric the kernel gives a route added without one (IPv6 routes
    /// get 1024): the routes we add carry it.
    const ROUTE_METRIC: u32;

    fn to_ip(addr: Self::Addr) -> IpAddr;
    fn from_ip(ip: IpAddr) -> Option<Self::Addr>;
    /// An address from its network-order bytes (an FDB entry's NDA_DST
    /// arrives as raw bytes in an AF_BRIDGE dump).
    fn from_octets(bytes: &[u8]) -> Option<Self::Addr>;

    fn neigh_address(addr: Self::Addr) -> NeighbourAddress;

    fn of_neigh_address(a: &NeighbourAddress) -> Option<Self::Addr> {
        match a {
            NeighbourAddress::Inet(ip) => Self::from_ip(IpAddr::V4(*ip)),
            NeighbourAddress::Inet6(ip) => Self::from_ip(IpAddr::V6(*ip)),
            NeighbourAddress::Other(bytes) => Self::from_octets(bytes),
            _ => None,
        }
    }

    fn of_route_address(a: &RouteAddress) -> Option<Self::Addr> {
        match a {
            RouteAddress::Inet(ip) => Self::from_ip(IpAddr::V4(*ip)),
            RouteAddress::Inet6(ip) => Self::from_ip(IpAddr::V6(*ip)),
            _ => None,
        }
    }

    /// `<DEVICE_PREFIX><vni>`.
    fn device_name(vni: u32) -> String {
        format!("{}{vni}", Self::DEVICE_PREFIX)
    }
}

impl VxlanFamily for Ipv4Network {
    const AF: AddressFamily = AddressFamily::Inet;
    const DEVICE_PREFIX: &'static str = "flannel.";
    const OVERHEAD: u32 = 50;
    const ROUTE_METRIC: u32 = 0;

    fn to_ip(addr: Ipv4Addr) -> IpAddr {
        IpAddr::V4(addr)
    }
    fn from_ip(ip: IpAddr) -> Option<Ipv4Addr> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn from_octets(bytes: &[u8]) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(bytes).ok().map(Ipv4Addr::from)
    }
    fn neigh_address(addr: Ipv4Addr) -> NeighbourAddress {
        NeighbourAddress::Inet(addr)
    }
}

impl VxlanFamily for Ipv6Network {
    const AF: AddressFamily = AddressFamily::Inet6;
    const DEVICE_PREFIX: &'static str = "flannel-v6.";
    const OVERHEAD: u32 = 70;
    const ROUTE_METRIC: u32 = 1024;

    fn to_ip(addr: Ipv6Addr) -> IpAddr {
        IpAddr::V6(addr)
    }
    fn from_ip(ip: IpAddr) -> Option<Ipv6Addr> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn from_octets(bytes: &[u8]) -> Option<Ipv6Addr> {
        <[u8; 16]>::try_from(bytes).ok().map(Ipv6Addr::from)
    }
    fn neigh_address(addr: Ipv6Addr) -> NeighbourAddress {
        NeighbourAddress::Inet6(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_overheads_as_flannel() {
        assert_eq!(Ipv4Network::device_name(1), "flannel.1");
        assert_eq!(Ipv6Network::device_name(1), "flannel-v6.1");
        assert_eq!(Ipv4Network::OVERHEAD, 50);
        assert_eq!(Ipv6Network::OVERHEAD, 70);
    }

    #[test]
    fn raw_fdb_destinations_parse_in_their_family_only() {
        let v4 = [192, 168, 64, 3];
        let v6: Ipv6Addr = "fd00::3".parse().expect("ip");
        assert_eq!(
            Ipv4Network::of_neigh_address(&NeighbourAddress::Other(v4.to_vec())),
            Some(Ipv4Addr::from(v4))
        );
        assert_eq!(
            Ipv6Network::of_neigh_address(&NeighbourAddress::Other(v4.to_vec())),
            None
        );
        assert_eq!(
            Ipv6Network::of_neigh_address(&NeighbourAddress::Other(v6.octets().to_vec())),
            Some(v6)
        );
        assert_eq!(
            Ipv4Network::of_neigh_address(&NeighbourAddress::Inet6(v6)),
            None
        );
    }
}
