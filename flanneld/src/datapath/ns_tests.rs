//! The datapath with both families, in a namespace: one lease programs a
//! peer on each device; a change to one family's half moves only that
//! family's entries; a removed lease takes both; a deleted IPv6 device is
//! recreated and replayed like the IPv4 one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{Datapath, Follow, Specs};
use crate::lease::{Lease, LeaseAttrs, LeaseEvent};
use crate::metrics::Metrics;
use crate::netconf::NetConfig;
use crate::vxlan::tests::TestNs;

const DUAL: &str = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;

/// Node `n`'s lease: 10.244.N.0/24 and fd00:10:244:N::/64 (`v6` overrides
/// the IPv6 subnet's N), public IPs 192.168.64.N / fd00:64::N.
fn lease(n: u8, v6: u8) -> Lease {
    let attrs = LeaseAttrs::vxlan(
        Ipv4Addr::new(192, 168, 64, n),
        1,
        &format!("0e:00:00:00:04:{n:02x}"),
    )
    .with_ipv6(
        Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, u16::from(n)),
        1,
        &format!("0e:00:00:00:06:{n:02x}"),
    );
    Lease {
        subnet: Ipv4Network::new(Ipv4Addr::new(10, 244, n, 0), 24).expect("net"),
        ipv6_subnet: Some(
            Ipv6Network::new(
                Ipv6Addr::new(0xfd00, 0x10, 0x244, u16::from(v6), 0, 0, 0, 0),
                64,
            )
            .expect("net"),
        ),
        attrs,
        expiration: SystemTime::now(),
    }
}

fn specs(ns: &TestNs) -> Specs {
    let mut v4 = ns.spec();
    v4.local = Ipv4Addr::new(192, 168, 64, 2);
    Specs {
        v4: Some(v4),
        v6: Some(ns.spec6()),
    }
}

/// "DST via GW dev DEV onlink" of the main table, both families.
fn routes(ns: &TestNs) -> (Vec<String>, Vec<String>) {
    (ns.gw_routes_af("-4"), ns.gw_routes_af("-6"))
}

#[test]
fn dual_stack_peers_follow_their_leases_per_family() {
    let ns = TestNs::new();
    let config = NetConfig::parse(DUAL).expect("config");
    let specs = specs(&ns);
    let own = lease(2, 2);
    ns.within(|handle| async move {
        let metrics = Arc::new(Metrics::new());
        let mut dp = Datapath::create(handle, config, specs, true, metrics)
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
        dp.adopt(&own)
            .await
            .unwrap_or_else(|e| panic!("adopt: {e}"));
        assert_eq!(dp.indexes().len(), 2);
        dp.program(&[own.clone(), lease(3, 3)]).await;
    });
    // The datapath above ran on a thread that has ended; what it wrote
    // stays in the namespace.
    assert_eq!(
        routes(&ns),
        (
            vec!["10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink".to_string()],
            vec!["fd00:10:244:3::/64 via fd00:10:244:3:: dev flannel-v6.1 onlink".to_string()]
        )
    );
    assert_eq!(
        ns.neighbours_af("-6", "flannel-v6.1"),
        ["fd00:10:244:3:: 0e:00:00:00:06:03 PERMANENT"]
    );
    assert_eq!(
        ns.fdb("flannel-v6.1"),
        ["0e:00:00:00:06:03 fd00:64::3 permanent"]
    );
    let addrs = ns.ip(&[
        "-6",
        "addr",
        "show",
        "dev",
        "flannel-v6.1",
        "scope",
        "global",
    ]);
    assert!(addrs.contains("fd00:10:244:2::/128"), "{addrs}");
}

#[test]
fn dual_stack_events_change_one_family_remove_both_and_repair_v6() {
    let ns = TestNs::new();
    let config = NetConfig::parse(DUAL).expect("config");
    let specs = specs(&ns);
    let own = lease(2, 2);
    let v6_route =
        |n: u8| format!("fd00:10:244:{n}::/64 via fd00:10:244:{n}:: dev flannel-v6.1 onlink");
    let v4_route = "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink".to_string();
    let ns_ref = &ns;
    let (v4_route2, v6_route2) = (v4_route.clone(), v6_route);
    ns.within(|handle| async move {
        let metrics = Arc::new(Metrics::new());
        let mut dp = Datapath::create(handle, config, specs, true, metrics)
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
        dp.adopt(&own)
            .await
            .unwrap_or_else(|e| panic!("adopt: {e}"));
        dp.program(&[own.clone(), lease(3, 3)]).await;

        // Node 3's IPv6 subnet changes (its IPv4 half does not): a new
        // store key, whose lease may be reported before the old key's
        // removal; the old IPv6 entries go, the new come, IPv4 stays.
        let f = dp.on_lease_event(LeaseEvent::Added(lease(3, 9))).await;
        assert_eq!(f.map_err(|e| e.to_string()), Ok(Follow::Nothing));
        let f = dp.on_lease_event(LeaseEvent::Removed(lease(3, 3))).await;
        assert_eq!(f.map_err(|e| e.to_string()), Ok(Follow::Nothing));
        assert_eq!(
            routes(ns_ref),
            (vec![v4_route2.clone()], vec![v6_route2(9)])
        );
        assert_eq!(
            ns_ref.neighbours_af("-6", "flannel-v6.1"),
            ["fd00:10:244:9:: 0e:00:00:00:06:03 PERMANENT"]
        );

        // A lease that loses its IPv6 half (a new key, the old removed)
        // keeps only its IPv4 peer.
        let mut v4_only = lease(3, 9);
        v4_only.ipv6_subnet = None;
        for ev in [
            LeaseEvent::Added(v4_only.clone()),
            LeaseEvent::Removed(lease(3, 9)),
        ] {
            dp.on_lease_event(ev).await.expect("event");
        }
        assert_eq!(routes(ns_ref), (vec![v4_route2.clone()], vec![]));
        assert!(ns_ref.fdb("flannel-v6.1").is_empty());
        for ev in [
            LeaseEvent::Added(lease(3, 9)),
            LeaseEvent::Removed(v4_only.clone()),
        ] {
            dp.on_lease_event(ev).await.expect("event");
        }

        // The IPv6 device deleted: recreated, replayed; IPv4 untouched.
        ns_ref.ip(&["link", "del", "flannel-v6.1"]);
        dp.check_device().await;
        assert!(dp.resync("periodic").await >= 3);
        assert_eq!(
            routes(ns_ref),
            (vec![v4_route2.clone()], vec![v6_route2(9)])
        );
        assert_eq!(
            ns_ref.fdb("flannel-v6.1"),
            ["0e:00:00:00:06:03 fd00:64::3 permanent"]
        );

        // Removed: both families' entries go.
        dp.on_lease_event(LeaseEvent::Removed(lease(3, 9)))
            .await
            .expect("event");
        assert_eq!(routes(ns_ref), (vec![], vec![]));
        assert!(ns_ref.neighbours_af("-6", "flannel-v6.1").is_empty());
        assert!(ns_ref.fdb("flannel.1").is_empty());
        // Our own lease removed from the store: renew, touch nothing.
        let f = dp.on_lease_event(LeaseEvent::Removed(own.clone())).await;
        assert_eq!(f.map_err(|e| e.to_string()), Ok(Follow::RenewNow));
    });
}
