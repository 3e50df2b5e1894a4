//! The IPv6-only cases of the stores that choose subnets (file, etcd):
//! a lease takes only an IPv6 subnet, named as flannel names a lease whose
//! IPv4 subnet is empty (`0.0.0.0-0&fd00:10:244:1::-64`), its value has
//! `PublicIP` `0.0.0.0`; nodes are told apart by their public IPv6 (a node
//! gets its own lease back, another node never takes it), the old
//! subnet.env's IPv6 subnet is honoured, and release and renewal work on
//! that key.
//!
//! Owns these cases only; the backing and helpers are the parent's.

use std::collections::HashSet;

use super::*;
use crate::lease::{Previous, NO_IPV4};

pub fn v6_only_net() -> NetConfig {
    config(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#)
}

/// Node `n` of an IPv6-only cluster: public IPv6 2001:db8::n.
pub fn v6_only_attrs(n: u8) -> LeaseAttrs {
    LeaseAttrs::vxlan_v6_only(
        format!("2001:db8::{n:x}").parse().expect("ipv6"),
        1,
        &format!("0a:58:0a:06:00:{n:02x}"),
    )
}

async fn acquire6(s: &dyn LeaseStore, n: u8, previous: Previous) -> Lease {
    let cfg = v6_only_net();
    let l = s
        .acquire_with(&cfg, &v6_only_attrs(n), previous)
        .await
        .unwrap_or_else(|e| panic!("acquire IPv6-only for node {n}: {e}"));
    assert_eq!(l.attrs, v6_only_attrs(n));
    assert_eq!(l.subnet, NO_IPV4, "{l:?}");
    assert_eq!(l.ipv4(), None);
    let six = cfg.ipv6.expect("ipv6");
    let v6 = l
        .ipv6_subnet
        .unwrap_or_else(|| panic!("an IPv6-only lease has an IPv6 subnet: {l:?}"));
    assert!(six.is_leasable(v6), "{l:?}");
    l
}

pub async fn ipv6_only_leases_are_named_by_their_ipv6_subnet<B: Backing>() {
    let b = B::new(LONG).await;
    let mut seen = HashSet::new();
    let mut leases = Vec::new();
    for n in 1..=4u8 {
        let l = acquire6(b.node().await.as_ref(), n, Previous::default()).await;
        let v6 = l.ipv6_subnet.expect("v6");
        assert!(seen.insert(v6), "distinct IPv6 subnets: {l:?}");
        assert_eq!(l.key(), format!("0.0.0.0-0&{}-64", v6.ip()));
        leases.push(l);
    }
    let w = watch(b.node().await.as_ref()).await;
    let mut got: Vec<(String, LeaseAttrs)> = w
        .snapshot
        .iter()
        .map(|l| (l.key(), l.attrs.clone()))
        .collect();
    let mut want: Vec<(String, LeaseAttrs)> =
        leases.iter().map(|l| (l.key(), l.attrs.clone())).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got, want,
        "every IPv6-only lease in the snapshot, none merged"
    );
    // The same node (by its public IPv6) gets its lease back.
    let again = acquire6(b.node().await.as_ref(), 2, Previous::default()).await;
    assert_eq!(again.key(), leases[1].key());
}

pub async fn ipv6_only_previous_is_honoured_and_release_removes<B: Backing>() {
    let b = B::new(LONG).await;
    // As subnet.env holds it: the gateway, host bits set.
    let previous = Previous {
        ipv4: None,
        ipv6: Some("fd00:10:244:4d::1/64".parse().expect("net")),
    };
    let node = b.node().await;
    let l = acquire6(node.as_ref(), 1, previous).await;
    assert_eq!(
        l.ipv6_subnet,
        Some("fd00:10:244:4d::/64".parse().expect("net"))
    );
    // Taken: another node gets another subnet.
    let other = acquire6(b.node().await.as_ref(), 2, previous).await;
    assert_ne!(other.ipv6_subnet, l.ipv6_subnet);
    let mut w = watch(b.node().await.as_ref()).await;
    let renewed = node
        .renew(&l)
        .await
        .unwrap_or_else(|e| panic!("renew: {e}"));
    assert_eq!(renewed.key(), l.key());
    // Another node releasing our lease leaves it alone; we release it.
    let foreign = Lease {
        attrs: v6_only_attrs(2),
        ..l.clone()
    };
    b.node()
        .await
        .release(&foreign)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    node.release(&renewed)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    match next_event(&mut w, EVENT_WAIT).await {
        LeaseEvent::Removed(gone) => assert_eq!(gone.key(), l.key()),
        ev => panic!("expected our lease Removed, got {ev:?}"),
    }
    let left: Vec<String> = watch(b.node().await.as_ref())
        .await
        .snapshot
        .iter()
        .map(Lease::key)
        .collect();
    assert_eq!(left, vec![other.key()]);
}
