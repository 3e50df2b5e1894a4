//! The lease store contract: one suite every `LeaseStore` must pass.
//!
//! A store plugs in by implementing [`Backing`] (a fresh, empty shared
//! backing: a temp directory, an etcd prefix, ...; `node()` gives another
//! store instance on it, i.e. another flanneld) and invoking
//! [`lease_store_contract!`], which makes one `#[tokio::test]` per case:
//!
//! ```ignore
//! mod contract {
//!     crate::lease::contract_tests::lease_store_contract!(super::EtcdBacking);
//! }
//! ```
//!
//! Expiry cases use a TTL of 2 s (etcd's minimum) and allow a few seconds
//! for the store to notice. Concurrent cases make several `node()`s race.
//!
//! Owns the shared cases and their helpers; touches no network namespace
//! and no store of its own (each store's tests supply the backing).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnetwork::Ipv4Network;
use tokio::time::timeout;

use super::{Lease, LeaseAttrs, LeaseError, LeaseEvent, LeaseStore, LeaseTiming, Listed};
use crate::netconf::NetConfig;

/// A fresh, empty lease backing shared by every store `node()` returns.
#[async_trait::async_trait]
pub trait Backing: Sized + Send + Sync + 'static {
    async fn new(timing: LeaseTiming) -> Self;
    /// Another node: a new store instance on this backing.
    async fn node(&self) -> Arc<dyn LeaseStore>;
    /// The same node again, as after a restart of its flanneld. The file
    /// and etcd stores know a node by its public IP, so any new instance.
    async fn restart(&self, _store: &Arc<dyn LeaseStore>) -> Arc<dyn LeaseStore> {
        self.node().await
    }
    /// The node of `store` leaves the cluster for good, taking `lease`.
    async fn remove(&self, store: &dyn LeaseStore, lease: &Lease) {
        store
            .release(lease)
            .await
            .unwrap_or_else(|e| panic!("release: {e}"));
    }
}

/// One `#[tokio::test]` per case every store must pass (the watch, a
/// node getting its own lease back, distinct nodes distinct subnets).
macro_rules! lease_store_contract {
    ($backing:ty) => {
        $crate::lease::contract_tests::lease_store_contract!(@cases $backing;
            distinct_ips_get_distinct_subnets, same_ip_gets_its_lease_back,
            watch_snapshot_then_events);
    };
    (@cases $backing:ty; $($case:ident),*) => {$(
        #[tokio::test]
        async fn $case() {
            $crate::lease::contract_tests::$case::<$backing>().await
        }
    )*};
}
pub(crate) use lease_store_contract;

/// One `#[tokio::test]` per case of the stores that choose subnets
/// themselves and lease them for a time (file, etcd; not kube, where
/// Kubernetes hands out podCIDRs that never expire): `previous` honoured,
/// random pick within bounds, no free subnet, expiry, renewal, a stolen
/// lease, release, racing acquires.
macro_rules! choosing_store_contract {
    ($backing:ty) => {
        $crate::lease::contract_tests::lease_store_contract!(@cases $backing;
            previous_is_honoured_when_free, previous_is_ignored_when_taken_or_not_leasable,
            random_pick_stays_within_bounds, no_free_subnet_names_network_and_length,
            expired_lease_is_ignored_and_can_be_taken, renew_extends, stolen_lease_is_lost,
            release_removes, watch_reports_expiry, concurrent_acquires_get_distinct_subnets,
            watch_latency);
    };
}
pub(crate) use choosing_store_contract;

pub mod dual_stack;
pub mod ipv6_only;
pub mod lifetime;
pub(crate) use dual_stack::{
    dual_stack_contract, dual_stack_leases_carry_both_families,
    dual_stack_v6_only_change_is_an_update, enabling_ipv6_replaces_the_ipv4_only_lease,
    previous_subnets_of_both_families_are_honoured,
};
pub(crate) use ipv6_only::{
    ipv6_only_leases_are_named_by_their_ipv6_subnet,
    ipv6_only_previous_is_honoured_and_release_removes,
};
pub(crate) use lifetime::{
    expired_lease_is_ignored_and_can_be_taken, release_removes, renew_extends,
    stolen_lease_is_lost, watch_reports_expiry,
};

// ---- helpers -------------------------------------------------------------

/// Leases that live long enough never to expire during a test.
pub const LONG: LeaseTiming = LeaseTiming {
    ttl: Duration::from_secs(300),
    renew_margin: Duration::from_secs(60),
};
/// Leases that expire within the test (etcd's minimum TTL).
pub const SHORT: LeaseTiming = LeaseTiming {
    ttl: Duration::from_secs(2),
    renew_margin: Duration::from_secs(1),
};
/// How long a store may take to report an expiry after it happened.
const EXPIRY_SLACK: Duration = Duration::from_secs(8);
const EVENT_WAIT: Duration = Duration::from_secs(5);

pub use flannel_cluster::tempdir::TempDir;

pub fn config(json: &str) -> NetConfig {
    NetConfig::parse(json).unwrap_or_else(|e| panic!("test config {json}: {e}"))
}
fn default_net() -> NetConfig {
    config(r#"{"Network":"10.244.0.0/16"}"#)
}
/// 10.1.0.0/28 in /30s: SubnetMin 10.1.0.4 .. SubnetMax 10.1.0.12, 3 subnets.
fn tiny_net() -> NetConfig {
    config(r#"{"Network":"10.1.0.0/28","SubnetLen":30}"#)
}
pub fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap_or_else(|e| panic!("test subnet {s}: {e}"))
}
/// Node `n`: public IP 192.168.64.n, VTEP MAC `0a:58:0a:00:<mac>:<n>`.
pub fn attrs(n: u8, mac: u8) -> LeaseAttrs {
    LeaseAttrs::vxlan(
        Ipv4Addr::new(192, 168, 64, n),
        1,
        &format!("0a:58:0a:00:{mac:02x}:{n:02x}"),
    )
}

async fn nodes<B: Backing>(b: &B, n: usize) -> Vec<Arc<dyn LeaseStore>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(b.node().await);
    }
    v
}

async fn acquire(
    s: &dyn LeaseStore,
    cfg: &NetConfig,
    a: &LeaseAttrs,
    prev: Option<Ipv4Network>,
) -> Lease {
    match s.acquire(cfg, a, prev).await {
        Ok(l) => {
            assert_eq!(&l.attrs, a, "acquire returns our attributes");
            let v4 = cfg.v4().expect("ipv4");
            assert!(
                v4.network.contains(l.subnet.network()) && l.subnet.prefix() == v4.subnet_len,
                "acquired {} outside {}",
                l.subnet,
                v4.network
            );
            match (&cfg.ipv6, l.ipv6_subnet) {
                (None, None) => {}
                (Some(c), Some(s)) => {
                    assert!(c.contains(s), "acquired IPv6 {s} outside {}", c.network)
                }
                (c, s) => panic!(
                    "IPv6 enabled: {}, but the lease's IPv6 subnet is {s:?}",
                    c.is_some()
                ),
            }
            l
        }
        Err(e) => panic!("acquire for {} (previous {prev:?}): {e}", a.public_ip),
    }
}

/// The subnets nodes 1 to `n` (each a fresh `node()`) acquire under `cfg`.
async fn acquire_nodes<B: Backing>(b: &B, cfg: &NetConfig, n: u8) -> Vec<Ipv4Network> {
    let mut subnets = Vec::new();
    for i in 1..=n {
        let store = b.node().await;
        subnets.push(
            acquire(store.as_ref(), cfg, &attrs(i, 0), None)
                .await
                .subnet,
        );
    }
    subnets
}

async fn watch(s: &dyn LeaseStore) -> Listed {
    super::listed(s).await
}

pub async fn next_event(w: &mut Listed, within: Duration) -> LeaseEvent {
    match timeout(within, w.events.recv()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch error: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no lease event within {within:?}"),
    }
}

pub async fn expect_quiet(w: &mut Listed, for_: Duration) {
    if let Ok(ev) = timeout(for_, w.events.recv()).await {
        panic!("expected no lease event, got {ev:?}");
    }
}

fn held(snapshot: &[Lease]) -> Vec<(Ipv4Network, Ipv4Addr)> {
    let mut v: Vec<_> = snapshot
        .iter()
        .map(|l| (l.subnet, l.attrs.public_ip))
        .collect();
    v.sort();
    v
}

/// Waits until the watch reports every subnet in `subnets` removed.
async fn wait_removed(w: &mut Listed, subnets: &[Ipv4Network], within: Duration) {
    let mut left: HashSet<Ipv4Network> = subnets.iter().copied().collect();
    let deadline = Instant::now() + within;
    while !left.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        if let LeaseEvent::Removed(l) = next_event(w, wait).await {
            left.remove(&l.subnet);
        }
    }
}

// ---- cases ---------------------------------------------------------------

pub async fn distinct_ips_get_distinct_subnets<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = default_net();
    let mut seen = HashSet::new();
    for (i, node) in nodes(&b, 5).await.iter().enumerate() {
        let l = acquire(node.as_ref(), &cfg, &attrs(i as u8 + 1, 0), None).await;
        assert!(seen.insert(l.subnet), "{} handed out twice", l.subnet);
        assert!(
            l.expiration > SystemTime::now() + LONG.ttl / 2,
            "expiration is about now + TTL"
        );
    }
    let w = watch(b.node().await.as_ref()).await;
    assert_eq!(w.snapshot.len(), 5, "every lease visible to another node");
}

pub async fn same_ip_gets_its_lease_back<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = default_net();
    let first_node = b.node().await;
    let first = acquire(first_node.as_ref(), &cfg, &attrs(1, 0), None).await;
    acquire(b.node().await.as_ref(), &cfg, &attrs(2, 0), None).await;
    // A restart: a new store instance, a new MAC, another free `previous`.
    let other = if first.subnet == net("10.244.200.0/24") {
        "10.244.201.0/24"
    } else {
        "10.244.200.0/24"
    };
    let again = acquire(
        b.restart(&first_node).await.as_ref(),
        &cfg,
        &attrs(1, 1),
        Some(net(other)),
    )
    .await;
    assert_eq!(
        again.subnet, first.subnet,
        "the lease held by this public IP wins"
    );
    let w = watch(b.node().await.as_ref()).await;
    let mine: Vec<_> = w
        .snapshot
        .iter()
        .filter(|l| l.attrs.public_ip == attrs(1, 0).public_ip)
        .collect();
    assert_eq!(mine.len(), 1, "one lease per public IP: {mine:?}");
    assert_eq!(
        mine[0].attrs,
        attrs(1, 1),
        "attributes updated on re-acquire"
    );
}

pub async fn previous_is_honoured_when_free<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = default_net();
    let l = acquire(
        b.node().await.as_ref(),
        &cfg,
        &attrs(1, 0),
        Some(net("10.244.77.0/24")),
    )
    .await;
    assert_eq!(l.subnet, net("10.244.77.0/24"));
}

pub async fn previous_is_ignored_when_taken_or_not_leasable<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = default_net();
    let x = net("10.244.77.0/24");
    acquire(b.node().await.as_ref(), &cfg, &attrs(1, 0), Some(x)).await;
    let l = acquire(b.node().await.as_ref(), &cfg, &attrs(2, 0), Some(x)).await;
    assert_ne!(l.subnet, x, "a subnet another node holds is not handed out");
    for outside in ["10.244.0.0/24", "10.99.1.0/24", "10.244.78.0/25"] {
        // `acquire` asserts the result is leasable.
        let l = acquire(
            b.node().await.as_ref(),
            &cfg,
            &attrs(3, 0),
            Some(net(outside)),
        )
        .await;
        assert_ne!(l.subnet, net(outside));
        b.node()
            .await
            .release(&l)
            .await
            .unwrap_or_else(|e| panic!("release: {e}"));
    }
}

pub async fn random_pick_stays_within_bounds<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg =
        config(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.13.0"}"#);
    let got: HashSet<_> = acquire_nodes(&b, &cfg, 4).await.into_iter().collect();
    let want: HashSet<_> = [
        "10.5.10.0/24",
        "10.5.11.0/24",
        "10.5.12.0/24",
        "10.5.13.0/24",
    ]
    .map(net)
    .into();
    assert_eq!(got, want);
    let full = b.node().await.acquire(&cfg, &attrs(5, 0), None).await;
    assert!(
        matches!(full, Err(LeaseError::NoFreeSubnet { .. })),
        "{full:?}"
    );
}

pub async fn no_free_subnet_names_network_and_length<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = tiny_net();
    acquire_nodes(&b, &cfg, 3).await;
    match b.node().await.acquire(&cfg, &attrs(4, 0), None).await {
        Err(e @ LeaseError::NoFreeSubnet { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("10.1.0.0/28") && msg.contains("/30"), "{msg}");
        }
        other => panic!("expected NoFreeSubnet, got {other:?}"),
    }
    // A full network still gives a node its own lease back.
    acquire(b.node().await.as_ref(), &cfg, &attrs(2, 1), None).await;
}

pub async fn watch_snapshot_then_events<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = default_net();
    let a = acquire(b.node().await.as_ref(), &cfg, &attrs(1, 0), None).await;
    let mut w1 = watch(b.node().await.as_ref()).await;
    let mut w2 = watch(b.node().await.as_ref()).await;
    for w in [&w1, &w2] {
        assert_eq!(held(&w.snapshot), vec![(a.subnet, a.attrs.public_ip)]);
        assert_eq!(w.snapshot[0].attrs, a.attrs);
    }
    // Each change is awaited before the next: a store may coalesce changes
    // made faster than a watcher reads them (the last state wins).
    let c_node = b.node().await;
    let c = acquire(c_node.as_ref(), &cfg, &attrs(3, 0), None).await;
    for w in [&mut w1, &mut w2] {
        match next_event(w, EVENT_WAIT).await {
            LeaseEvent::Added(l) => assert_eq!((l.subnet, &l.attrs), (c.subnet, &c.attrs)),
            ev => panic!("expected Added, got {ev:?}"),
        }
    }
    let c2 = acquire(c_node.as_ref(), &cfg, &attrs(3, 1), None).await; // new MAC
    assert_eq!(c2.subnet, c.subnet);
    for w in [&mut w1, &mut w2] {
        match next_event(w, EVENT_WAIT).await {
            LeaseEvent::Added(l) => {
                assert_eq!((l.subnet, &l.attrs), (c.subnet, &c2.attrs), "changed MAC")
            }
            ev => panic!("expected Added with the new MAC, got {ev:?}"),
        }
    }
    c_node
        .renew(&c2)
        .await
        .unwrap_or_else(|e| panic!("renew: {e}"));
    for w in [&mut w1, &mut w2] {
        expect_quiet(w, Duration::from_millis(300)).await;
    }
    // The node goes away (a released lease; a deleted Node).
    b.remove(c_node.as_ref(), &c2).await;
    for w in [&mut w1, &mut w2] {
        match next_event(w, EVENT_WAIT).await {
            LeaseEvent::Removed(l) => assert_eq!(l.subnet, c.subnet),
            ev => panic!("expected Removed, got {ev:?}"),
        }
        expect_quiet(w, Duration::from_millis(100)).await;
    }
}

pub async fn concurrent_acquires_get_distinct_subnets<B: Backing>() {
    let b = B::new(LONG).await;
    let race = |cfg: NetConfig, stores: Vec<Arc<dyn LeaseStore>>| async move {
        let tasks: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let cfg = cfg.clone();
                tokio::spawn(async move { s.acquire(&cfg, &attrs(i as u8 + 1, 0), None).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap_or_else(|e| panic!("acquire task: {e}")));
        }
        results
    };
    let results = race(default_net(), nodes(&b, 32).await).await;
    let subnets: HashSet<_> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|l| l.subnet)
                .unwrap_or_else(|e| panic!("acquire: {e}"))
        })
        .collect();
    assert_eq!(subnets.len(), 32, "32 racing nodes, 32 distinct subnets");

    let b = B::new(LONG).await;
    let results = race(tiny_net(), nodes(&b, 8).await).await;
    let won: HashSet<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|l| l.subnet))
        .collect();
    let lost = results
        .iter()
        .filter(|r| matches!(r, Err(LeaseError::NoFreeSubnet { .. })))
        .count();
    assert_eq!(
        (won.len(), lost),
        (3, 5),
        "8 nodes race for 3 subnets: {results:?}"
    );
}

/// Not an assertion: prints how long a peer's change takes to reach every
/// watcher (from the start of the writer's `renew` to each `Added`).
pub async fn watch_latency<B: Backing>() {
    const WRITES: u8 = 50;
    let b = B::new(LONG).await;
    let cfg = default_net();
    let writer = b.node().await;
    let mut lease = acquire(writer.as_ref(), &cfg, &attrs(1, 0), None).await;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(watch(b.node().await.as_ref()).await);
    }
    let (mut samples, mut writes) = (Vec::new(), Vec::new());
    for mac in 1..=WRITES {
        let start = Instant::now();
        lease = writer
            .renew(&Lease {
                attrs: attrs(1, mac),
                ..lease
            })
            .await
            .unwrap_or_else(|e| panic!("renew: {e}"));
        writes.push(start.elapsed());
        for w in &mut watchers {
            match next_event(w, EVENT_WAIT).await {
                LeaseEvent::Added(l) if l.attrs == attrs(1, mac) => samples.push(start.elapsed()),
                ev => panic!("expected Added for write {mac}, got {ev:?}"),
            }
        }
    }
    samples.sort();
    writes.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() - 1) * p / 100];
    println!(
        "lease watch latency, {} samples ({WRITES} writes x 3 watchers): median {:?}, p99 {:?}, max {:?} \
         (the write alone, renew returning: median {:?}, p99 {:?})",
        samples.len(),
        pct(&samples, 50),
        pct(&samples, 99),
        pct(&samples, 100),
        pct(&writes, 50),
        pct(&writes, 99),
    );
}
