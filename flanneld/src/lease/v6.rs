//! The IPv6 half of a peer's lease, checked before anything of it may reach
//! the kernel (phase 2's `flannel-v6.<VNI>`): an IPv6 subnet the store could
//! have handed out, a global unicast `PublicIPv6`, a vxlan `BackendV6Data`
//! of our VNI with a unicast MAC. One function for every store: the kube
//! store checks its annotations when it reads them, but etcd values and
//! lease files arrive unchecked.
//!
//! Owns the check only: it does not log (the caller skips with
//! [`super::skip`]) and writes nothing to the kernel.

use std::net::Ipv6Addr;

use ipnetwork::Ipv6Network;

use super::Lease;
use crate::netconf::FamilyConfig;

/// A peer's IPv6 half, every part checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6Peer {
    pub subnet: Ipv6Network,
    pub public_ip: Ipv6Addr,
    pub vtep_mac: [u8; 6],
}

/// Go's `IsGlobalUnicast` for IPv6 (what flannel accepts as a public
/// IPv6): not unspecified, loopback, multicast or link-local; an
/// IPv4-mapped address is refused too (it is no IPv6 underlay).
pub fn is_global_unicast(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xffc0) == 0xfe80
        || ip.to_ipv4_mapped().is_some())
}

/// Why a lease's IPv6 half is not used (a reason for
/// [`super::skip::skipped`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadV6Half {
    #[error("IPv6 subnet {subnet} is outside {network} (IPv6SubnetLen {subnet_len}, IPv6SubnetMin..IPv6SubnetMax)")]
    Outside {
        subnet: Ipv6Network,
        network: Ipv6Network,
        subnet_len: u8,
    },
    #[error("IPv6 subnet {0} without a PublicIPv6")]
    NoPublicIp(Ipv6Network),
    #[error("PublicIPv6 {0} is not a global unicast address")]
    NotGlobalUnicast(Ipv6Addr),
    #[error("no vxlan BackendV6Data")]
    NoBackendData,
    #[error("BackendV6Data VNI {got} is not ours ({ours})")]
    OtherVni { got: u32, ours: u32 },
    #[error("BackendV6Data VtepMAC {0:?} is not a unicast MAC")]
    NotUnicastMac(String),
}

/// `lease`'s IPv6 half: `Ok(None)` when it has none, `Err` when a part is
/// bad. `store_chooses`: the
/// subnet must be leasable (file, etcd), else only inside the network
/// (kube's podCIDRs).
pub fn v6_peer(
    lease: &Lease,
    config: &FamilyConfig<Ipv6Network>,
    vni: u32,
    store_chooses: bool,
) -> Result<Option<V6Peer>, BadV6Half> {
    let Some(subnet) = lease.ipv6_subnet else {
        return Ok(None);
    };
    let trusted = if store_chooses {
        config.is_leasable(subnet)
    } else {
        config.contains(subnet)
    };
    if !trusted {
        return Err(BadV6Half::Outside {
            subnet,
            network: config.network,
            subnet_len: config.subnet_len,
        });
    }
    let public_ip = lease
        .attrs
        .public_ipv6
        .ok_or(BadV6Half::NoPublicIp(subnet))?;
    if !is_global_unicast(public_ip) {
        return Err(BadV6Half::NotGlobalUnicast(public_ip));
    }
    let data = lease
        .attrs
        .vxlan_v6_data()
        .ok_or(BadV6Half::NoBackendData)?;
    if data.vni != vni {
        let (got, ours) = (data.vni, vni);
        return Err(BadV6Half::OtherVni { got, ours });
    }
    match crate::mac::parse(&data.vtep_mac) {
        Some(m) if m[0] & 1 == 0 && m != [0; 6] => Ok(Some(V6Peer {
            subnet,
            public_ip,
            vtep_mac: m,
        })),
        _ => Err(BadV6Half::NotUnicastMac(data.vtep_mac)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;
    use crate::netconf::NetConfig;
    use std::time::SystemTime;

    fn config() -> FamilyConfig<Ipv6Network> {
        NetConfig::parse(
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#,
        )
        .expect("config")
        .ipv6
        .expect("ipv6")
    }

    fn lease(subnet: &str, ip: &str, data: serde_json::Value) -> Lease {
        let mut attrs =
            LeaseAttrs::vxlan("192.168.64.2".parse().expect("ip"), 1, "0e:00:00:00:00:02");
        attrs.public_ipv6 = ip.parse().ok();
        attrs.backend_v6_data = Some(data);
        Lease {
            subnet: "10.244.2.0/24".parse().expect("net"),
            ipv6_subnet: subnet.parse().ok(),
            attrs,
            expiration: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_good_half_and_each_bad_part() {
        let data = |mac: &str| serde_json::json!({"VNI": 1, "VtepMAC": mac});
        let good = lease(
            "fd00:10:244:2::/64",
            "2001:db8::2",
            data("0e:00:00:00:00:22"),
        );
        assert_eq!(
            v6_peer(&good, &config(), 1, true),
            Ok(Some(V6Peer {
                subnet: "fd00:10:244:2::/64".parse().expect("net"),
                public_ip: "2001:db8::2".parse().expect("ip"),
                vtep_mac: [0x0e, 0, 0, 0, 0, 0x22],
            }))
        );
        let mut none = good.clone();
        none.ipv6_subnet = None;
        assert_eq!(v6_peer(&none, &config(), 1, true), Ok(None));
        let cases = [
            (
                lease("fd00:10:244::/64", "2001:db8::2", data("0e:00:00:00:00:22")),
                "outside",
            ),
            (
                lease("fd00:99::/64", "2001:db8::2", data("0e:00:00:00:00:22")),
                "outside",
            ),
            (
                lease("fd00:10:244:2::/64", "fe80::2", data("0e:00:00:00:00:22")),
                "global unicast",
            ),
            (
                lease("fd00:10:244:2::/64", "none", data("0e:00:00:00:00:22")),
                "without a PublicIPv6",
            ),
            (
                lease(
                    "fd00:10:244:2::/64",
                    "2001:db8::2",
                    data("ff:ff:ff:ff:ff:ff"),
                ),
                "unicast MAC",
            ),
            (
                lease("fd00:10:244:2::/64", "2001:db8::2", serde_json::json!("x")),
                "BackendV6Data",
            ),
            (
                lease(
                    "fd00:10:244:2::/64",
                    "2001:db8::2",
                    serde_json::json!({"VNI": 2, "VtepMAC": "0e:00:00:00:00:22"}),
                ),
                "VNI 2",
            ),
        ];
        for (l, needle) in cases {
            let e = v6_peer(&l, &config(), 1, true).expect_err(needle);
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
        // A podCIDR handed out by Kubernetes: anywhere inside the network.
        let first = lease("fd00:10:244::/64", "2001:db8::2", data("0e:00:00:00:00:22"));
        assert!(v6_peer(&first, &config(), 1, false).is_ok_and(|p| p.is_some()));
    }
}
