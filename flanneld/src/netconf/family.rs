//! One address family's part of `net-conf.json` (`Network`, `SubnetLen`,
//! `SubnetMin`, `SubnetMax`, or their `IPv6…` twins), written once for
//! both families: the arithmetic runs on `u128`, which holds either.
//!
//! Owns the rules of a family's part and the questions asked of it (which
//! subnets can be leased, which a network contains); choosing a subnet is
//! `lease::choose`'s.

use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::NetConfError;

/// An address family, named by its network type.
pub trait Family: Copy + Eq + Ord + Hash + Debug + Display + Send + Sync + 'static {
    type Addr: Copy + Eq + Ord + Hash + Debug + Display + Send + Sync + std::str::FromStr;
    /// Address width in bits.
    const BITS: u8;
    /// "IPv4" / "IPv6", for messages.
    const NAME: &'static str;
    /// The largest `SubnetLen` (room for a gateway and a pod).
    const MAX_SUBNET_LEN: u8;
    /// The default `SubnetLen` when the network allows it.
    const DEFAULT_SUBNET_LEN: u8;
    /// The config keys of this family, for messages:
    /// (Network, SubnetLen, SubnetMin, SubnetMax).
    const KEYS: [&'static str; 4];

    fn new(addr: Self::Addr, prefix: u8) -> Option<Self>;
    fn addr(&self) -> Self::Addr;
    fn prefix(&self) -> u8;
    fn to_bits(addr: Self::Addr) -> u128;
    fn from_bits(bits: u128) -> Self::Addr;

    /// The network address (host bits cleared).
    fn base(&self) -> Self::Addr {
        let shift = Self::BITS - self.prefix();
        let bits = Self::to_bits(self.addr());
        Self::from_bits(if shift >= 128 {
            0
        } else {
            (bits >> shift) << shift
        })
    }

    /// Whether `self` is a network address (no host bits).
    fn is_canonical(&self) -> bool {
        self.addr() == self.base()
    }

    /// Whether `addr` lies inside.
    fn contains_addr(&self, addr: Self::Addr) -> bool {
        let shift = Self::BITS - self.prefix();
        let (a, b) = (Self::to_bits(addr), Self::to_bits(self.base()));
        shift >= 128 || (a >> shift) == (b >> shift)
    }

    /// Whether `inner` (any spelling) lies wholly inside.
    fn contains_net(&self, inner: Self) -> bool {
        inner.prefix() >= self.prefix() && self.contains_addr(inner.addr())
    }
}

impl Family for Ipv4Network {
    type Addr = Ipv4Addr;
    const BITS: u8 = 32;
    const NAME: &'static str = "IPv4";
    const MAX_SUBNET_LEN: u8 = 30;
    const DEFAULT_SUBNET_LEN: u8 = 24;
    const KEYS: [&'static str; 4] = ["Network", "SubnetLen", "SubnetMin", "SubnetMax"];

    fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        Ipv4Network::new(addr, prefix).ok()
    }
    fn addr(&self) -> Ipv4Addr {
        self.ip()
    }
    fn prefix(&self) -> u8 {
        Ipv4Network::prefix(*self)
    }
    fn to_bits(addr: Ipv4Addr) -> u128 {
        u128::from(u32::from(addr))
    }
    fn from_bits(bits: u128) -> Ipv4Addr {
        Ipv4Addr::from(bits as u32)
    }
}

impl Family for Ipv6Network {
    type Addr = Ipv6Addr;
    const BITS: u8 = 128;
    const NAME: &'static str = "IPv6";
    const MAX_SUBNET_LEN: u8 = 126;
    const DEFAULT_SUBNET_LEN: u8 = 64;
    const KEYS: [&'static str; 4] = [
        "IPv6Network",
        "IPv6SubnetLen",
        "IPv6SubnetMin",
        "IPv6SubnetMax",
    ];

    fn new(addr: Ipv6Addr, prefix: u8) -> Option<Self> {
        Ipv6Network::new(addr, prefix).ok()
    }
    fn addr(&self) -> Ipv6Addr {
        self.ip()
    }
    fn prefix(&self) -> u8 {
        Ipv6Network::prefix(self)
    }
    fn to_bits(addr: Ipv6Addr) -> u128 {
        u128::from(addr)
    }
    fn from_bits(bits: u128) -> Ipv6Addr {
        Ipv6Addr::from(bits)
    }
}

/// One family's validated part of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyConfig<N: Family> {
    pub network: N,
    pub subnet_len: u8,
    /// First subnet that may be leased (its network address).
    pub subnet_min: N::Addr,
    /// Last subnet that may be leased (its network address).
    pub subnet_max: N::Addr,
}

/// The raw keys of one family, as read from the JSON.
pub(super) struct RawFamily<N: Family> {
    pub network: N,
    pub subnet_len: Option<u64>,
    pub subnet_min: Option<N::Addr>,
    pub subnet_max: Option<N::Addr>,
}

impl<N: Family> FamilyConfig<N> {
    /// flannel's rules (`CheckNetworkConfig`), for either family; the
    /// error names the key.
    pub(super) fn check(raw: RawFamily<N>) -> Result<Self, NetConfError> {
        let [k_net, k_len, k_min, k_max] = N::KEYS;
        let network = raw.network;
        if !network.is_canonical() {
            return Err(NetConfError::HostBits {
                key: k_net,
                network: network.to_string(),
                base: network.base().to_string(),
                prefix: network.prefix(),
            });
        }
        let prefix = network.prefix();
        let smallest = N::MAX_SUBNET_LEN - 2;
        if prefix > smallest {
            return Err(NetConfError::NetworkTooSmall {
                key: k_net,
                network: network.to_string(),
                smallest,
            });
        }
        let subnet_len = match raw.subnet_len {
            None if prefix + 2 <= N::DEFAULT_SUBNET_LEN => N::DEFAULT_SUBNET_LEN,
            None => prefix + 2,
            Some(n) => {
                let n = u8::try_from(n)
                    .ok()
                    .filter(|n| *n <= N::BITS)
                    .ok_or(NetConfError::NotPrefixLen { key: k_len, len: n })?;
                if n > N::MAX_SUBNET_LEN {
                    return Err(NetConfError::SubnetLenTooLong {
                        key: k_len,
                        len: n,
                        max: N::MAX_SUBNET_LEN,
                    });
                }
                if n < prefix + 2 {
                    return Err(NetConfError::SubnetLenTooShort {
                        key: k_len,
                        len: n,
                        network_key: k_net,
                        min: prefix + 2,
                    });
                }
                n
            }
        };
        let size = 1u128 << (N::BITS - subnet_len);
        let first = N::to_bits(network.base());
        // The last subnet: the network's last address less (size - 1).
        let span = if N::BITS - prefix >= 128 {
            u128::MAX
        } else {
            (1u128 << (N::BITS - prefix)) - 1
        };
        let last = first + span - (size - 1);
        let bound = |key: &'static str, a: N::Addr| -> Result<N::Addr, NetConfError> {
            if !network.contains_addr(a) {
                return Err(NetConfError::BoundOutside {
                    key,
                    addr: a.to_string(),
                    network_key: k_net,
                    network: network.to_string(),
                });
            }
            if N::to_bits(a) % size != 0 {
                return Err(NetConfError::BoundUnaligned {
                    key,
                    addr: a.to_string(),
                    subnet_len,
                });
            }
            Ok(a)
        };
        let subnet_min = match raw.subnet_min {
            None => N::from_bits(first + size),
            Some(a) => bound(k_min, a)?,
        };
        let subnet_max = match raw.subnet_max {
            None => N::from_bits(last),
            Some(a) => bound(k_max, a)?,
        };
        if subnet_min > subnet_max {
            return Err(NetConfError::MinAboveMax {
                min_key: k_min,
                min: subnet_min.to_string(),
                max_key: k_max,
                max: subnet_max.to_string(),
            });
        }
        Ok(Self {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
        })
    }

    fn size(&self) -> u128 {
        1u128 << (N::BITS - self.subnet_len)
    }

    /// Every subnet between SubnetMin and SubnetMax, in order (lazily: an
    /// IPv6 range may hold 2^62 of them).
    pub fn subnets(&self) -> impl Iterator<Item = N> + '_ {
        let size = self.size();
        let (lo, hi) = (N::to_bits(self.subnet_min), N::to_bits(self.subnet_max));
        let count = (hi - lo) / size;
        // `0..=count` cannot overflow: count < 2^128 / size.
        (0..=count).filter_map(move |i| N::new(N::from_bits(lo + i * size), self.subnet_len))
    }

    /// Whether `subnet` is one this configuration may lease.
    pub fn is_leasable(&self, subnet: N) -> bool {
        let start = N::to_bits(subnet.addr());
        subnet.prefix() == self.subnet_len
            && subnet.is_canonical()
            && (N::to_bits(self.subnet_min)..=N::to_bits(self.subnet_max)).contains(&start)
    }

    /// Whether `subnet` lies inside the network (a subnet handed out by
    /// someone else: kube-controller-manager's podCIDRs).
    pub fn contains(&self, subnet: N) -> bool {
        self.network.contains_net(subnet)
    }
}
