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

use super::{Lease, LeaseAttrs, LeaseEvent, LeaseKey};

#[derive(Debug, Default)]
pub struct Mirror {
    current: HashMap<LeaseKey, Lease>,
}

impl Mirror {
    /// A mirror of `leases` (the snapshot the consumer starts from), and
    /// that snapshot in subnet order.
    pub fn new(leases: impl IntoIterator<Item = Lease>) -> (Self, Vec<Lease>) {
        let current: HashMap<LeaseKey, Lease> = leases.into_iter().map(|l| (l.id(), l)).collect();
        let mut snapshot: Vec<Lease> = current.values().cloned().collect();
        snapshot.sort_by_key(Lease::id);
        (Self { current }, snapshot)
    }

    /// A mirror of `leases`, for a consumer that already has them.
    pub fn of(leases: impl IntoIterator<Item = Lease>) -> Self {
        Self {
            current: leases.into_iter().map(|l| (l.id(), l)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// The lease last reported under `key`.
    pub fn get(&self, key: &LeaseKey) -> Option<&Lease> {
        self.current.get(key)
    }

    /// Whether `key` is reported with exactly `attrs`: a store may then
    /// skip work (etcd's expiry lookup) for what would report nothing.
    pub fn unchanged(&self, key: &LeaseKey, attrs: &LeaseAttrs) -> bool {
        self.current.get(key).is_some_and(|l| &l.attrs == attrs)
    }

    /// One lease's new state (`None`: gone); the event to report, if any.
    pub fn update(&mut self, key: LeaseKey, new: Option<Lease>) -> Option<LeaseEvent> {
        match new {
            Some(lease) => match self.current.get_mut(&key) {
                Some(old) if old.attrs == lease.attrs => {
                    old.expiration = lease.expiration;
                    None
                }
                _ => {
                    self.current.insert(key, lease.clone());
                    Some(LeaseEvent::Added(lease))
                }
            },
            None => self.current.remove(&key).map(LeaseEvent::Removed),
        }
    }

    /// A fresh, complete listing; the events that turn the last reported
    /// state into it, removals first, each group in subnet order.
    pub fn replace_all(&mut self, fresh: impl IntoIterator<Item = Lease>) -> Vec<LeaseEvent> {
        let mut fresh: HashMap<LeaseKey, Lease> = fresh.into_iter().map(|l| (l.id(), l)).collect();
        let mut gone: Vec<LeaseKey> = self
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
        let mut subnets: Vec<LeaseKey> = fresh.keys().copied().collect();
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
        let mut gone: Vec<LeaseKey> = self
            .current
            .values()
            .filter(|l| l.is_expired(now))
            .map(Lease::id)
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
    use ipnetwork::{Ipv4Network, Ipv6Network};
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
            m.update(lease(1, 1, 200).id(), Some(lease(1, 1, 200))),
            None
        );
        assert_eq!(m.next_expiry(), Some(lease(1, 1, 200).expiration));
        let changed = lease(1, 2, 200);
        assert_eq!(
            m.update(changed.id(), Some(changed.clone())),
            Some(LeaseEvent::Added(changed.clone()))
        );
        assert_eq!(
            m.update(changed.id(), None),
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
    fn the_ipv6_subnet_is_part_of_the_identity() {
        let (mut m, _) = Mirror::new([lease(1, 1, 100)]);
        let mut v6 = lease(1, 1, 100);
        v6.attrs = v6
            .attrs
            .with_ipv6("2001:db8::1".parse().expect("ip6"), 1, "0e:00:00:00:00:02");
        v6.ipv6_subnet = Some("fd00:0:0:1::/64".parse().expect("net"));
        assert_eq!(
            m.update(v6.id(), Some(v6.clone())),
            Some(LeaseEvent::Added(v6.clone()))
        );
        // Only BackendV6Data changes: still an update.
        let mut mac = v6.clone();
        mac.attrs.backend_v6_data =
            Some(serde_json::json!({"VNI": 1, "VtepMAC": "0e:00:00:00:00:03"}));
        assert!(!m.unchanged(&mac.id(), &mac.attrs));
        assert_eq!(
            m.update(mac.id(), Some(mac.clone())),
            Some(LeaseEvent::Added(mac.clone()))
        );
        // Only the IPv6 subnet changes: another lease (another key in the
        // stores, whose old key is deleted).
        let mut moved = mac.clone();
        moved.ipv6_subnet = Some("fd00:0:0:2::/64".parse().expect("net"));
        assert_eq!(
            m.update(moved.id(), Some(moved.clone())),
            Some(LeaseEvent::Added(moved))
        );
        assert_eq!(m.len(), 3);
        assert_eq!(
            m.update(mac.id(), None),
            Some(LeaseEvent::Removed(mac.clone()))
        );
    }

    #[test]
    fn ipv6_only_leases_are_told_apart_by_their_ipv6_subnet() {
        let v6only = |n: u16, ip: &str| Lease {
            subnet: crate::lease::NO_IPV4,
            ipv6_subnet: Some(
                Ipv6Network::new(std::net::Ipv6Addr::new(0xfd00, 0, 0, n, 0, 0, 0, 0), 64)
                    .expect("net"),
            ),
            attrs: LeaseAttrs::vxlan_v6_only(ip.parse().expect("ip6"), 1, "0e:00:00:00:00:02"),
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
        };
        let (a, b) = (v6only(1, "2001:db8::1"), v6only(2, "2001:db8::2"));
        let (mut m, snapshot) = Mirror::new([b.clone(), a.clone()]);
        assert_eq!(snapshot, vec![a.clone(), b.clone()]);
        assert_eq!(m.update(b.id(), None), Some(LeaseEvent::Removed(b)));
        assert_eq!(m.get(&a.id()), Some(&a));
        assert_eq!(m.len(), 1);
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
