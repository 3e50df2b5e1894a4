//! The dual-stack cases of the stores that choose subnets (file, etcd):
//! a lease takes an IPv4 and an IPv6 subnet, named as flannel names it
//! (`10.244.1.0-24&fd00:10:244:1::-64`), its value carries `PublicIPv6`
//! and `BackendV6Data`, a change to only the IPv6 half is an update, and
//! switching IPv6 on replaces a node's IPv4-only lease (same IPv4 subnet).
//! The IPv6-only cases live in [`super::ipv6_only`] and run with these.
//!
//! Owns these cases only; the backing and helpers are the parent's.

use std::collections::HashSet;

use ipnetwork::Ipv6Network;

use super::*;

/// One `#[tokio::test]` per dual-stack case of the choosing stores.
macro_rules! dual_stack_contract {
    ($backing:ty) => {
        $crate::lease::contract_tests::lease_store_contract!(@cases $backing;
            dual_stack_leases_carry_both_families, dual_stack_v6_only_change_is_an_update,
            enabling_ipv6_replaces_the_ipv4_only_lease,
            previous_subnets_of_both_families_are_honoured,
            ipv6_only_leases_are_named_by_their_ipv6_subnet,
            ipv6_only_previous_is_honoured_and_release_removes);
    };
}
pub(crate) use dual_stack_contract;

pub fn dual_net() -> NetConfig {
    config(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#)
}

/// Node `n` of a dual-stack cluster: public IPv6 2001:db8::n, IPv6 VTEP
/// MAC `0a:58:0a:06:<mac>:<n>`.
pub fn dual_attrs(n: u8, mac: u8) -> LeaseAttrs {
    attrs(n, 0).with_ipv6(
        format!("2001:db8::{n:x}").parse().expect("ipv6"),
        1,
        &format!("0a:58:0a:06:{mac:02x}:{n:02x}"),
    )
}

fn v6_of(l: &Lease) -> Ipv6Network {
    l.ipv6_subnet
        .unwrap_or_else(|| panic!("a dual-stack lease has an IPv6 subnet: {l:?}"))
}

pub async fn dual_stack_leases_carry_both_families<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = dual_net();
    let six = cfg.ipv6.expect("ipv6");
    let mut seen = HashSet::new();
    let mut leases = Vec::new();
    for n in 1..=4u8 {
        let l = acquire(b.node().await.as_ref(), &cfg, &dual_attrs(n, 0), None).await;
        assert!(six.is_leasable(v6_of(&l)), "{l:?}");
        assert!(seen.insert(v6_of(&l)), "distinct IPv6 subnets: {l:?}");
        leases.push(l);
    }
    let w = watch(b.node().await.as_ref()).await;
    for l in &leases {
        let got = w
            .snapshot
            .iter()
            .find(|s| s.subnet == l.subnet)
            .unwrap_or_else(|| panic!("{} in the snapshot", l.key()));
        assert_eq!((got.ipv6_subnet, &got.attrs), (l.ipv6_subnet, &l.attrs));
        assert_eq!(
            got.key(),
            format!("{}-24&{}-64", l.subnet.ip(), v6_of(l).ip())
        );
    }
    // The same node gets both subnets back.
    let again = acquire(b.node().await.as_ref(), &cfg, &dual_attrs(2, 0), None).await;
    assert_eq!(
        (again.subnet, again.ipv6_subnet),
        (leases[1].subnet, leases[1].ipv6_subnet)
    );
}

pub async fn dual_stack_v6_only_change_is_an_update<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = dual_net();
    let node = b.node().await;
    let lease = acquire(node.as_ref(), &cfg, &dual_attrs(1, 0), None).await;
    let mut w = watch(b.node().await.as_ref()).await;
    // Only BackendV6Data (the IPv6 VtepMAC) changes.
    let changed = Lease {
        attrs: dual_attrs(1, 9),
        ..lease.clone()
    };
    assert_eq!(changed.attrs.backend_data, lease.attrs.backend_data);
    node.renew(&changed)
        .await
        .unwrap_or_else(|e| panic!("renew: {e}"));
    match next_event(&mut w, EVENT_WAIT).await {
        LeaseEvent::Added(l) => {
            assert_eq!((l.subnet, l.ipv6_subnet), (lease.subnet, lease.ipv6_subnet));
            assert_eq!(l.attrs, dual_attrs(1, 9));
        }
        ev => panic!("expected Added with the new IPv6 MAC, got {ev:?}"),
    }
}

pub async fn enabling_ipv6_replaces_the_ipv4_only_lease<B: Backing>() {
    let b = B::new(LONG).await;
    let old = acquire(b.node().await.as_ref(), &default_net(), &attrs(1, 0), None).await;
    assert_eq!(old.ipv6_subnet, None);
    let new = acquire(
        b.restart(&b.node().await).await.as_ref(),
        &dual_net(),
        &dual_attrs(1, 0),
        Some(old.subnet),
    )
    .await;
    assert_eq!(new.subnet, old.subnet, "the IPv4 subnet stays");
    assert!(new.ipv6_subnet.is_some());
    let w = watch(b.node().await.as_ref()).await;
    let ours: Vec<String> = w
        .snapshot
        .iter()
        .filter(|l| l.attrs.public_ip == old.attrs.public_ip)
        .map(Lease::key)
        .collect();
    assert_eq!(ours, vec![new.key()], "the IPv4-only lease is gone");
    // And back: switching IPv6 off again keeps the IPv4 subnet too.
    let back = acquire(
        b.node().await.as_ref(),
        &default_net(),
        &attrs(1, 0),
        Some(old.subnet),
    )
    .await;
    assert_eq!((back.subnet, back.ipv6_subnet), (old.subnet, None));
}

pub async fn previous_subnets_of_both_families_are_honoured<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = dual_net();
    // As subnet.env holds them: the gateways, host bits set.
    let previous = crate::lease::Previous {
        ipv4: Some(net("10.244.77.1/24")),
        ipv6: Some("fd00:10:244:4d::1/64".parse().expect("net")),
    };
    let l = b
        .node()
        .await
        .acquire_with(&cfg, &dual_attrs(1, 0), previous)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(l.subnet, net("10.244.77.0/24"));
    assert_eq!(
        l.ipv6_subnet,
        Some("fd00:10:244:4d::/64".parse().expect("net"))
    );
    // Taken by node 1: node 2 gets others.
    let other = b
        .node()
        .await
        .acquire_with(&cfg, &dual_attrs(2, 0), previous)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_ne!(other.subnet, l.subnet);
    assert_ne!(other.ipv6_subnet, l.ipv6_subnet);
}
