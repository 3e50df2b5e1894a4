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

/// The dual-stack datapath of node 2 in `ns` (its handle), with our lease
/// adopted and node 3's programmed.
async fn started(ns: &TestNs, handle: rtnetlink::Handle) -> Datapath {
    let config = NetConfig::parse(DUAL).expect("config");
    let metrics = Arc::new(Metrics::new());
    let mut dp = Datapath::create(handle, config, specs(ns), true, metrics)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    let own = lease(2, 2);
    dp.adopt(&own)
        .await
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    dp.program(&[own, lease(3, 3)]).await;
    dp
}

/// Hands `events` to the datapath in order; each must follow nothing.
async fn apply(dp: &mut Datapath, events: impl IntoIterator<Item = LeaseEvent>) {
    for ev in events {
        let f = dp.on_lease_event(ev).await;
        assert_eq!(f.map_err(|e| e.to_string()), Ok(Follow::Nothing));
    }
}

#[test]
fn dual_stack_peers_follow_their_leases_per_family() {
    let ns = TestNs::new();
    let ns_ref = &ns;
    ns.within(|handle| async move {
        let dp = started(ns_ref, handle).await;
        assert_eq!(dp.indexes().len(), 2);
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
    let own = lease(2, 2);
    let v6_route =
        |n: u8| format!("fd00:10:244:{n}::/64 via fd00:10:244:{n}:: dev flannel-v6.1 onlink");
    let v4_route = "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink".to_string();
    let ns_ref = &ns;
    let (v4_route2, v6_route2) = (v4_route.clone(), v6_route);
    ns.within(|handle| async move {
        let mut dp = started(ns_ref, handle).await;

        // Node 3's IPv6 subnet changes (its IPv4 half does not): a new
        // store key, whose lease may be reported before the old key's
        // removal; the old IPv6 entries go, the new come, IPv4 stays.
        let change = [
            LeaseEvent::Added(lease(3, 9)),
            LeaseEvent::Removed(lease(3, 3)),
        ];
        apply(&mut dp, change).await;
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
        let drop_v6 = [
            LeaseEvent::Added(v4_only.clone()),
            LeaseEvent::Removed(lease(3, 9)),
        ];
        apply(&mut dp, drop_v6).await;
        assert_eq!(routes(ns_ref), (vec![v4_route2.clone()], vec![]));
        assert!(ns_ref.fdb("flannel-v6.1").is_empty());
        let back = [LeaseEvent::Added(lease(3, 9)), LeaseEvent::Removed(v4_only)];
        apply(&mut dp, back).await;

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
        apply(&mut dp, [LeaseEvent::Removed(lease(3, 9))]).await;
        assert_eq!(routes(ns_ref), (vec![], vec![]));
        assert!(ns_ref.neighbours_af("-6", "flannel-v6.1").is_empty());
        assert!(ns_ref.fdb("flannel.1").is_empty());
        // Our own lease removed from the store: renew, touch nothing.
        let f = dp.on_lease_event(LeaseEvent::Removed(own)).await;
        assert_eq!(f.map_err(|e| e.to_string()), Ok(Follow::RenewNow));
    });
}
