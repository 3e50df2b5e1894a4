//! Which subnet `acquire` takes: flannel's rule, shared by every store.
//!
//! The lease this public IP already holds (the one matching the old
//! subnet.env, else the latest; any others are extras to delete); else the
//! subnet of the old subnet.env if it is free; else a random free subnet
//! between SubnetMin and SubnetMax.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use rand::seq::IteratorRandom;

use super::LeaseError;
use crate::netconf::NetConfig;

/// One existing lease as the rule sees it.
pub struct Held<'a, T> {
    pub item: &'a T,
    pub subnet: Ipv4Network,
    /// Its public IP, when its value could be read.
    pub public_ip: Option<Ipv4Addr>,
    /// Later wins among leases of the same IP (an expiry, a revision).
    pub recency: u128,
}

/// The decision.
pub enum Choice<'a, T> {
    /// Renew our own lease; delete the extras.
    Keep { keep: &'a T, extras: Vec<&'a T> },
    /// Take this free subnet.
    Take(Ipv4Network),
}

/// Applies the rule. `taken` says whether a subnet is held by a live lease.
pub fn choose<'a, T>(
    config: &NetConfig,
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Network>,
    held: Vec<Held<'a, T>>,
    taken: impl Fn(Ipv4Network) -> bool,
) -> Result<Choice<'a, T>, LeaseError> {
    // `previous` may come from subnet.env with host bits set.
    let previous = previous
        .and_then(|p| Ipv4Network::new(p.network(), p.prefix()).ok())
        .filter(|p| config.is_leasable(*p));
    let mut mine: Vec<Held<'a, T>> = held
        .into_iter()
        .filter(|h| h.public_ip == Some(public_ip) && config.is_leasable(h.subnet))
        .collect();
    mine.sort_by_key(|h| (Some(h.subnet) == previous, h.recency));
    if let Some(keep) = mine.pop() {
        return Ok(Choice::Keep {
            keep: keep.item,
            extras: mine.into_iter().map(|h| h.item).collect(),
        });
    }
    if let Some(p) = previous.filter(|p| !taken(*p)) {
        return Ok(Choice::Take(p));
    }
    config
        .subnets()
        .filter(|s| !taken(*s))
        .choose(&mut rand::rng())
        .map(Choice::Take)
        .ok_or(LeaseError::NoFreeSubnet {
            network: config.network,
            subnet_len: config.subnet_len,
        })
}
