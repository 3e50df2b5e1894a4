//! The leases as a watch last reported them, and the minimal events that
//! bring its consumer to a new state: one place for the diff every store's
//! watch needs (a single change from inotify, an etcd event or a Node
//! update; a full fresh listing after an overflow, a compaction or a 410).
//!
//! Owns only the map; reads no store and sends nothing. Two rules:
//! - a lease whose attributes did not change (a renewal) updates its expiry
//!   and reports nothing;
//! - a listing reports `Removed` for what is gone and `Added` for what is
//!   new or changed, in subnet order, and nothing for the rest, so a relist
//!   of thousands of unchanged leases costs a map walk and writes nothing.

use std::collections::HashMap;
use std::time::SystemTime;

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{Lease, LeaseAttrs, LeaseEvent};

#[derive(Debug, Default)]
pub struct Mirror {
    current: HashMap<Ipv4Network, Lease>,
}

impl Mirror {
    /// A mirror of `leases` (the snapshot the consumer starts from), and
    /// that snapshot in subnet order.
    pub fn new(leases: impl IntoIterator<Item = Lease>) -> (Self, Vec<Lease>) {
        let current: HashMap<Ipv4Network, Lease> =
            leases.into_iter().map(|l| (l.subnet, l)).collect();
        let mut snapshot: Vec<Lease> = current.values().cloned().collect();
        snapshot.sort_by_key(|l| l.subnet);
        (Self { current }, snapshot)
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// The lease last reported for `subnet`.
    pub fn get(&self, subnet: &Ipv4Network) -> Option<&Lease> {
        self.current.get(subnet)
    }

    /// Whether `subnet` is reported with exactly `ipv6` and `attrs`: a
    /// store may then skip work (etcd's expiry lookup) for what would
    /// report nothing.
    pub fn unchanged(
        &self,
        subnet: &Ipv4Network,
        ipv6: Option<Ipv6Network>,
        attrs: &LeaseAttrs,
    ) -> bool {
        self.current
            .get(subnet)
            .is_some_and(|l| &l.attrs == attrs && l.ipv6_subnet == ipv6)
    }

    /// One subnet's new state (`None`: gone); the event to report, if any.
    pub fn update(&mut self, subnet: Ipv4Network, new: Option<Lease>) -> Option<LeaseEvent> {
        match new {
            Some(lease) => match self.current.get_mut(&subnet) {
                // Either family's part changing is a change.
                Some(old) if old.attrs == lease.attrs && old.ipv6_subnet == lease.ipv6_subnet => {
                    old.expiration = lease.expiration;
                    None
                }
                _ => {
                    self.current.insert(subnet, lease.clone());
                    Some(LeaseEvent::Added(lease))
                }
            },
            None => self.current.remove(&subnet).map(LeaseEvent::Removed),
        }
    }

    /// A fresh, complete listing; the events that turn the last reported
    /// state into it, removals first, each group in subnet order.
    pub fn replace_all(&mut self, fresh: impl IntoIterator<Item = Lease>) -> Vec<LeaseEvent> {
        let mut fresh: HashMap<Ipv4Network, Lease> =
            fresh.into_iter().map(|l| (l.subnet, l)).collect();
        let mut gone: Vec<Ipv4Network> = self
            .current
            .keys()
            .filter(|s| !fresh.contains_key(s))
            .copied()
            .collect();
        gone.sort();
        let mut events: Vec<LeaseEvent> = gone
            .into_iter()
            .filter_map(|s| self.update(s, None))
            .collect();
        let mut subnets: Vec<Ipv4Network> = fresh.keys().copied().collect();
        subnets.sort();
        for subnet in subnets {
            let lease = fresh.remove(&subnet);
            events.extend(self.update(subnet, lease));
        }
        events
    }

    /// Removes every lease whose time is up at `now`; their `Removed`
    /// events, in subnet order.
    pub fn expire(&mut self, now: SystemTime) -> Vec<LeaseEvent> {
        let mut gone: Vec<Ipv4Network> = self
            .current
            .values()
            .filter(|l| l.is_expired(now))
            .map(|l| l.subnet)
            .collect();
        gone.sort();
        gone.into_iter()
            .filter_map(|s| self.update(s, None))
            .collect()
    }

    /// The earliest expiry of a reported lease.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.current.values().map(|l| l.expiration).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn lease(third: u8, ip: u8, secs: u64) -> Lease {
        let subnet = Ipv4Network::new(Ipv4Addr::new(10, 244, third, 0), 24).expect("net");
        Lease {
            subnet,
            ipv6_subnet: None,
            attrs: LeaseAttrs::vxlan(Ipv4Addr::new(192, 168, 64, ip), 1, "0e:00:00:00:00:01"),
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_renewal_reports_nothing_and_moves_the_expiry() {
        let (mut m, snap) = Mirror::new([lease(1, 1, 100)]);
        assert_eq!(snap, vec![lease(1, 1, 100)]);
        assert_eq!(
            m.update(lease(1, 1, 200).subnet, Some(lease(1, 1, 200))),
            None
        );
        assert_eq!(m.next_expiry(), Some(lease(1, 1, 200).expiration));
        let changed = lease(1, 2, 200);
        assert_eq!(
            m.update(changed.subnet, Some(changed.clone())),
            Some(LeaseEvent::Added(changed.clone()))
        );
        assert_eq!(
            m.update(changed.subnet, None),
            Some(LeaseEvent::Removed(changed))
        );
        assert!(m.is_empty());
    }

    #[test]
    fn a_listing_reports_only_the_difference() {
        let (mut m, _) = Mirror::new([lease(1, 1, 100), lease(2, 2, 100), lease(3, 3, 100)]);
        let events = m.replace_all([lease(1, 1, 300), lease(3, 9, 100), lease(4, 4, 100)]);
        assert_eq!(
            events,
            vec![
                LeaseEvent::Removed(lease(2, 2, 100)),
                LeaseEvent::Added(lease(3, 9, 100)),
                LeaseEvent::Added(lease(4, 4, 100)),
            ]
        );
        assert_eq!(m.len(), 3);
        assert!(m
            .replace_all([lease(1, 1, 300), lease(3, 9, 100), lease(4, 4, 100)])
            .is_empty());
    }

    #[test]
    fn a_change_to_either_family_alone_is_a_change() {
        let (mut m, _) = Mirror::new([lease(1, 1, 100)]);
        let mut v6 = lease(1, 1, 100);
        v6.attrs = v6
            .attrs
            .with_ipv6("2001:db8::1".parse().expect("ip6"), 1, "0e:00:00:00:00:02");
        v6.ipv6_subnet = Some("fd00:0:0:1::/64".parse().expect("net"));
        assert_eq!(
            m.update(v6.subnet, Some(v6.clone())),
            Some(LeaseEvent::Added(v6.clone()))
        );
        // Only BackendV6Data changes: still an update.
        let mut mac = v6.clone();
        mac.attrs.backend_v6_data =
            Some(serde_json::json!({"VNI": 1, "VtepMAC": "0e:00:00:00:00:03"}));
        assert!(!m.unchanged(&mac.subnet, mac.ipv6_subnet, &mac.attrs));
        assert_eq!(
            m.update(mac.subnet, Some(mac.clone())),
            Some(LeaseEvent::Added(mac.clone()))
        );
        // Only the IPv6 subnet changes: an update too.
        let mut moved = mac.clone();
        moved.ipv6_subnet = Some("fd00:0:0:2::/64".parse().expect("net"));
        assert_eq!(
            m.update(moved.subnet, Some(moved.clone())),
            Some(LeaseEvent::Added(moved))
        );
    }

    #[test]
    fn expiry_removes_in_order() {
        let (mut m, _) = Mirror::new([lease(2, 2, 50), lease(1, 1, 50), lease(3, 3, 500)]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        assert_eq!(
            m.expire(now),
            vec![
                LeaseEvent::Removed(lease(1, 1, 50)),
                LeaseEvent::Removed(lease(2, 2, 50))
            ]
        );
        assert_eq!(m.len(), 1);
    }
}
