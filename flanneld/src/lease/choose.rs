//! Which subnet `acquire` takes: flannel's rule, shared by every store.
//!
//! The lease this public IP already holds (the one matching the old
//! subnet.env, else the latest; any others are extras to delete), if it
//! fits the configuration (an IPv6 subnet exactly when IPv6 is enabled,
//! each leasable); else the subnets of the old subnet.env where free;
//! else a random free subnet between SubnetMin and SubnetMax. A dual-stack
//! configuration takes an IPv6 subnet too, at random among the first free
//! ones (an IPv6 range may hold 2^62 subnets: it is never listed whole).
//! Leases of this public IP whose IPv6 part no longer fits (IPv6 switched
//! on or off) are stale: flannel deletes them, and so does the store,
//! before taking their subnets again. An IPv6-only configuration takes
//! only an IPv6 subnet (the IPv4 part is [`NO_IPV4`]), and a node is known
//! by its public IPv6 ([`super::LeaseAttrs::node_ip`]).
//!
//! Owns the choice only: it reads no store and writes nothing; the store
//! calling it does the writes and their conditions.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use rand::seq::IteratorRandom;

use super::{LeaseError, Previous, NO_IPV4};
use crate::netconf::{Family, FamilyConfig, NetConfig};

/// How many IPv6 subnets past the taken ones are looked at for a free one.
const IPV6_SCAN: usize = 4096;

/// One existing lease as the rule sees it.
pub struct Held<'a, T> {
    pub item: &'a T,
    pub subnet: Ipv4Network,
    pub ipv6: Option<Ipv6Network>,
    /// Its node's IP ([`super::LeaseAttrs::node_ip`]), when its value
    /// could be read.
    pub node_ip: Option<IpAddr>,
    /// Later wins among leases of the same IP (an expiry, a revision).
    pub recency: u128,
}

/// The decision.
pub enum Choice<'a, T> {
    /// Renew our own lease; delete the extras.
    Keep { keep: &'a T, extras: Vec<&'a T> },
    /// Delete our stale leases, then take these free subnets.
    Take {
        subnet: Ipv4Network,
        ipv6: Option<Ipv6Network>,
        stale: Vec<&'a T>,
    },
}

/// Applies the rule for the node `node_ip` (its public IP; its public
/// IPv6 when IPv6-only). `taken` says whether an IPv4 subnet is held by a
/// live lease; the IPv6 subnets taken are those of `held`.
pub fn choose<'a, T>(
    config: &NetConfig,
    node_ip: IpAddr,
    previous: Previous,
    held: Vec<Held<'a, T>>,
    taken: impl Fn(Ipv4Network) -> bool,
) -> Result<Choice<'a, T>, LeaseError> {
    let v4 = config.ipv4.as_ref();
    // The family that decides whether a lease is this configuration's at
    // all: IPv4's range, or IPv6's when IPv6-only.
    let in_range = |h: &Held<'a, T>| match (v4, &config.ipv6) {
        (Some(v4), _) => v4.is_leasable(h.subnet),
        (None, Some(c)) => h.subnet == NO_IPV4 && h.ipv6.is_some_and(|s| c.is_leasable(s)),
        (None, None) => false,
    };
    let fits = |h: &Held<'a, T>| {
        in_range(h)
            && match (&config.ipv6, h.ipv6) {
                (None, None) => true,
                (Some(c), Some(s)) => c.is_leasable(s),
                _ => false,
            }
    };
    // `previous` may come from subnet.env with host bits set.
    let previous6 = previous
        .ipv6
        .and_then(|p| Ipv6Network::new(p.network(), p.prefix()).ok());
    let previous = previous
        .ipv4
        .and_then(|p| Ipv4Network::new(p.network(), p.prefix()).ok())
        .filter(|p| v4.is_some_and(|v4| v4.is_leasable(*p)));
    let taken6: HashSet<Ipv6Network> = held.iter().filter_map(|h| h.ipv6).collect();
    // Ours and leasable in IPv4, but not fitting IPv6 (IPv6 switched on or
    // off, its range changed): stale. Ours outside the IPv4 range stay
    // (another configuration's; they expire by themselves).
    let (mut mine, stale): (Vec<Held<'a, T>>, Vec<Held<'a, T>>) = held
        .into_iter()
        .filter(|h| h.node_ip == Some(node_ip) && in_range(h))
        .partition(|h| fits(h));
    let is_previous = |h: &Held<'a, T>| match v4 {
        Some(_) => Some(h.subnet) == previous,
        None => h.ipv6.is_some() && h.ipv6 == previous6,
    };
    mine.sort_by_key(|h| (is_previous(h), h.recency));
    if let Some(keep) = mine.pop() {
        return Ok(Choice::Keep {
            keep: keep.item,
            extras: mine.into_iter().chain(stale).map(|h| h.item).collect(),
        });
    }
    // Our stale leases' subnets are free once they are deleted.
    let ours: HashSet<Ipv4Network> = stale.iter().map(|h| h.subnet).collect();
    let ours6: HashSet<Ipv6Network> = stale.iter().filter_map(|h| h.ipv6).collect();
    let free = |s: Ipv4Network| ours.contains(&s) || !taken(s);
    let subnet = match (v4, previous.filter(|p| free(*p))) {
        (None, _) => NO_IPV4,
        (Some(_), Some(p)) => p,
        (Some(v4), None) => v4
            .subnets()
            .filter(|s| free(*s))
            .choose(&mut rand::rng())
            .ok_or_else(|| no_free(v4))?,
    };
    let free6 = |s: &Ipv6Network| ours6.contains(s) || !taken6.contains(s);
    let ipv6 = match &config.ipv6 {
        None => None,
        Some(c) => match previous6.filter(|p| c.is_leasable(*p) && free6(p)) {
            Some(p) => Some(p),
            None => Some(
                c.subnets()
                    .take(IPV6_SCAN + taken6.len())
                    .filter(free6)
                    .take(IPV6_SCAN)
                    .choose(&mut rand::rng())
                    .ok_or_else(|| no_free(c))?,
            ),
        },
    };
    Ok(Choice::Take {
        subnet,
        ipv6,
        stale: stale.into_iter().map(|h| h.item).collect(),
    })
}

fn no_free<N: Family + Into<IpNetwork>>(c: &FamilyConfig<N>) -> LeaseError {
    LeaseError::NoFreeSubnet {
        network: c.network.into(),
        subnet_len: c.subnet_len,
    }
}
