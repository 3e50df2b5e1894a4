//! The etcd store against a real etcd (one server per test, on loopback):
//! the shared contract, then what is specific to etcd. Outages and
//! compaction are in `tests/outage.rs`, TLS and passwords in `tests/auth.rs`.
//!
//! Each test runs its own etcd on loopback; no kernel state is touched.

mod auth;
mod outage;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flannel_cluster::etcd::EtcdServer;
use tokio::time::timeout;

use super::{ConfigProblem, EtcdConfig, EtcdStore};
use crate::lease::contract_tests::{attrs, config, net, Backing, LONG};
use crate::lease::{LeaseError, LeaseEvent, LeaseStore, LeaseTiming, Listed};

pub(super) const PREFIX: &str = "/coreos.com/network";

/// An etcd of its own; every `node()` is a new store (a new connection).
pub(super) struct EtcdBacking {
    pub server: EtcdServer,
    pub timing: LeaseTiming,
}

impl EtcdBacking {
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.server.endpoint()],
            prefix: PREFIX.to_string(),
            ..EtcdConfig::default()
        }
    }

    pub fn store(&self) -> EtcdStore {
        EtcdStore::new(self.config(), self.timing).unwrap_or_else(|e| panic!("etcd store: {e}"))
    }

    /// `etcdctl ...`, panicking with its output unless it succeeds.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.server.etcdctl(args);
        assert!(
            out.success(),
            "etcdctl failed: {out}\netcd log:\n{}",
            self.server.log()
        );
        out.stdout
    }
}

#[async_trait::async_trait]
impl Backing for EtcdBacking {
    async fn new(timing: LeaseTiming) -> Self {
        Self {
            server: EtcdServer::start(),
            timing,
        }
    }
    async fn node(&self) -> Arc<dyn LeaseStore> {
        Arc::new(self.store())
    }
}

mod contract {
    crate::lease::contract_tests::lease_store_contract!(super::EtcdBacking);
    crate::lease::contract_tests::choosing_store_contract!(super::EtcdBacking);
    crate::lease::contract_tests::dual_stack_contract!(super::EtcdBacking);
}

pub(super) async fn backing() -> EtcdBacking {
    EtcdBacking::new(LONG).await
}

pub(super) async fn next_event(
    w: &mut tokio::sync::mpsc::Receiver<Result<LeaseEvent, LeaseError>>,
    within: Duration,
) -> LeaseEvent {
    match timeout(within, w.recv()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch error: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no lease event within {within:?}"),
    }
}

pub(super) async fn expect_quiet(w: &mut Listed, for_: Duration) {
    if let Ok(ev) = timeout(for_, w.events.recv()).await {
        panic!("expected no lease event, got {ev:?}");
    }
}

/// A lease value exactly as upstream flanneld writes it.
pub(super) fn flannel_value(ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

/// Writes a lease as upstream flanneld would: an etcd lease of `ttl`
/// seconds, the value put on it. Returns the etcd lease ID (hex).
pub(super) fn put_flannel_lease(
    b: &EtcdBacking,
    subnet_key: &str,
    value: &str,
    ttl: u32,
) -> String {
    let granted = b.ctl(&["lease", "grant", &ttl.to_string()]);
    // "lease 694d7d1f3a7d0a0b granted with TTL(60s)"
    let id = granted
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected `etcdctl lease grant` output {granted:?}"))
        .to_string();
    let key = format!("{PREFIX}/subnets/{subnet_key}");
    b.ctl(&["put", &format!("--lease={id}"), &key, value]);
    id
}

#[tokio::test]
async fn a_lease_written_by_upstream_flannel_is_seen() {
    let b = backing().await;
    let value = flannel_value("192.168.64.9", "c6:d2:32:6f:8f:44");
    put_flannel_lease(&b, "10.244.9.0-24", &value, 600);
    let store = b.store();
    let mut w = crate::lease::listed(&store).await;
    assert_eq!(w.snapshot.len(), 1);
    let l = &w.snapshot[0];
    assert_eq!(l.subnet, net("10.244.9.0/24"));
    assert_eq!(
        l.attrs,
        crate::lease::LeaseAttrs::vxlan(
            "192.168.64.9".parse().expect("ip"),
            1,
            "c6:d2:32:6f:8f:44"
        )
    );
    let left = l
        .expiration
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    // Not asked of etcd (no round trip per key): a full TTL from now;
    // expiry is etcd deleting the key (watch_reports_expiry).
    assert!(
        left > b.timing.ttl - Duration::from_secs(10) && left <= b.timing.ttl,
        "expiry derived from the store's TTL: {left:?}"
    );

    // Another, written while we watch, arrives as Added.
    put_flannel_lease(
        &b,
        "10.244.10.0-24",
        &flannel_value("192.168.64.10", "0a:00:00:00:00:0a"),
        600,
    );
    match next_event(&mut w.events, Duration::from_secs(5)).await {
        LeaseEvent::Added(l) => {
            assert_eq!(l.subnet, net("10.244.10.0/24"));
            assert_eq!(l.attrs.public_ip.to_string(), "192.168.64.10");
        }
        ev => panic!("expected Added, got {ev:?}"),
    }
    // acquire sees both as taken.
    let cfg = config(r#"{"Network":"10.244.0.0/16"}"#);
    let mine = store
        .acquire(&cfg, &attrs(1, 0), Some(net("10.244.9.0/24")))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert!(![net("10.244.9.0/24"), net("10.244.10.0/24")].contains(&mine.subnet));
    // Deleting it by hand (a node leaving) is a Removed.
    b.ctl(&["del", &format!("{PREFIX}/subnets/10.244.9.0-24")]);
    loop {
        match next_event(&mut w.events, Duration::from_secs(5)).await {
            LeaseEvent::Removed(l) => {
                assert_eq!(l.subnet, net("10.244.9.0/24"));
                break;
            }
            LeaseEvent::Added(l) => assert_eq!(l.subnet, mine.subnet, "only our own lease"),
        }
    }
}

#[tokio::test]
async fn our_keys_and_values_are_flannels_bytes() {
    let b = EtcdBacking::new(LeaseTiming {
        ttl: Duration::from_secs(86_400),
        renew_margin: Duration::from_secs(3600),
    })
    .await;
    let store = b.store();
    let cfg = config(r#"{"Network":"10.244.0.0/16"}"#);
    let a = crate::lease::LeaseAttrs::vxlan(
        "192.168.64.3".parse().expect("ip"),
        1,
        "c6:d2:32:6f:8f:44",
    );
    let l = store
        .acquire(&cfg, &a, Some(net("10.244.1.0/24")))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(l.subnet, net("10.244.1.0/24"));
    let key = format!("{PREFIX}/subnets/10.244.1.0-24");
    let listed = b.ctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
    assert_eq!(
        listed,
        format!(
            "{key}\n{}\n",
            flannel_value("192.168.64.3", "c6:d2:32:6f:8f:44")
        ),
        "key and value byte for byte"
    );
    // Attached to an etcd lease of 24 h.
    let json: serde_json::Value = serde_json::from_str(&b.ctl(&["get", &key, "-w", "json"]))
        .unwrap_or_else(|e| panic!("etcdctl json: {e}"));
    let lease_id = json["kvs"][0]["lease"]
        .as_i64()
        .unwrap_or_else(|| panic!("no lease on the key: {json}"));
    let ttl = b.ctl(&["lease", "timetolive", &format!("{lease_id:x}")]);
    assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");
    // A renewal keeps the bytes and moves the key to a fresh etcd lease.
    store
        .renew(&l)
        .await
        .unwrap_or_else(|e| panic!("renew: {e}"));
    let after = b.ctl(&["get", &key, "--print-value-only"]);
    assert_eq!(
        after,
        format!("{}\n", flannel_value("192.168.64.3", "c6:d2:32:6f:8f:44"))
    );
    let leases = b.ctl(&["lease", "list"]);
    assert!(
        leases.starts_with("found 1 leases"),
        "the old etcd lease is revoked: {leases}"
    );
}

#[tokio::test]
async fn missing_config_is_waited_for_with_a_clear_message() {
    let b = backing().await;
    let store = b.store();
    match store.read_config().await {
        Err(ConfigProblem::Missing(m)) => {
            assert!(m.contains("/coreos.com/network/config"), "{m}");
            assert!(
                m.contains(r#"{"Network":"10.244.0.0/16""#),
                "an example value: {m}"
            );
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.network_config().await })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!waiting.is_finished(), "network_config waits for the key");
    b.ctl(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#,
    ]);
    let cfg = timeout(Duration::from_secs(15), waiting)
        .await
        .unwrap_or_else(|_| panic!("network_config did not see the key"))
        .unwrap_or_else(|e| panic!("task: {e}"))
        .unwrap_or_else(|e| panic!("network_config: {e}"));
    assert_eq!(cfg.v4().expect("ipv4").network, net("10.5.0.0/16"));

    b.ctl(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"banana"}"#,
    ]);
    match store.read_config().await {
        Err(ConfigProblem::Invalid(m)) => assert!(
            m.contains("/coreos.com/network/config") && m.contains("Network"),
            "{m}"
        ),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_values_are_skipped_and_never_overwritten() {
    let b = backing().await;
    let subnets = format!("{PREFIX}/subnets/");
    b.ctl(&["put", &format!("{subnets}10.244.5.0-24"), "not json"]);
    b.ctl(&[
        "put",
        &format!("{subnets}banana"),
        &flannel_value("192.168.64.7", "0a:00:00:00:00:07"),
    ]);
    let store = b.store();
    let mut w = crate::lease::listed(&store).await;
    assert!(w.snapshot.is_empty(), "{:?}", w.snapshot);
    b.ctl(&[
        "put",
        &format!("{subnets}10.244.6.0-24"),
        r#"{"PublicIP":12}"#,
    ]);
    expect_quiet(&mut w, Duration::from_millis(300)).await;
    put_flannel_lease(
        &b,
        "10.244.7.0-24",
        &flannel_value("192.168.64.7", "0a:00:00:00:00:07"),
        600,
    );
    match next_event(&mut w.events, Duration::from_secs(5)).await {
        LeaseEvent::Added(l) => assert_eq!(l.subnet, net("10.244.7.0/24")),
        ev => panic!("expected Added, got {ev:?}"),
    }
    // A key with a malformed value is still someone's: not handed out.
    let cfg = config(r#"{"Network":"10.244.0.0/16"}"#);
    let l = store
        .acquire(&cfg, &attrs(1, 0), Some(net("10.244.5.0/24")))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_ne!(l.subnet, net("10.244.5.0/24"));
    assert_eq!(
        b.ctl(&[
            "get",
            &format!("{subnets}10.244.5.0-24"),
            "--print-value-only"
        ]),
        "not json\n"
    );
}

#[tokio::test]
async fn two_stores_racing_for_the_last_subnet() {
    let b = backing().await;
    // One leasable subnet: 10.9.0.0/16 with SubnetMin = SubnetMax.
    let cfg = config(r#"{"Network":"10.9.0.0/16","SubnetMin":"10.9.3.0","SubnetMax":"10.9.3.0"}"#);
    for round in 0..5u8 {
        let (s1, s2) = (b.store(), b.store());
        let (c1, c2) = (cfg.clone(), cfg.clone());
        let (r1, r2) = tokio::join!(
            async move { s1.acquire(&c1, &attrs(2 * round + 1, 0), None).await },
            async move { s2.acquire(&c2, &attrs(2 * round + 2, 0), None).await },
        );
        let (won, lost) = match (r1, r2) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("round {round}: expected one winner and one loser, got {other:?}"),
        };
        assert_eq!(won.subnet, net("10.9.3.0/24"));
        let msg = lost.to_string();
        assert!(matches!(lost, LeaseError::NoFreeSubnet { .. }), "{msg}");
        assert!(
            msg.contains("no free subnet") && msg.contains("10.9.0.0/16") && msg.contains("/24"),
            "{msg}"
        );
        b.store()
            .release(&won)
            .await
            .unwrap_or_else(|e| panic!("release: {e}"));
    }
}

#[tokio::test]
async fn a_dead_endpoint_in_the_list_is_skipped() {
    let b = backing().await;
    b.ctl(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.7.0.0/16"}"#,
    ]);
    // flannel's default list starts with :4001, where usually nobody listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("free port: {e}"));
    let config = EtcdConfig {
        endpoints: EtcdConfig::parse_endpoints(&format!("http://{dead}, {}", b.server.endpoint())),
        ..b.config()
    };
    assert_eq!(config.endpoints.len(), 2);
    let store = EtcdStore::new(config, LONG).unwrap_or_else(|e| panic!("store: {e}"));
    for _ in 0..5 {
        let cfg = timeout(Duration::from_secs(10), store.network_config())
            .await
            .unwrap_or_else(|_| panic!("stuck on the dead endpoint"))
            .unwrap_or_else(|e| panic!("network_config: {e}"));
        assert_eq!(cfg.v4().expect("ipv4").network, net("10.7.0.0/16"));
    }
}

/// The etcd lease granted beside acquire's first listing is the one the
/// key goes on; one granted for an acquire that finds no free subnet is
/// revoked, not left to expire.
#[tokio::test]
async fn the_grant_made_with_the_first_listing_is_used_or_revoked() {
    let b = backing().await;
    let etcd_leases = || {
        let out = b.ctl(&["lease", "list"]);
        out.lines().skip(1).filter(|l| !l.trim().is_empty()).count()
    };
    let cfg = config(r#"{"Network":"10.9.0.0/16","SubnetMin":"10.9.3.0","SubnetMax":"10.9.3.0"}"#);
    let won = b
        .store()
        .acquire(&cfg, &attrs(1, 0), None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(etcd_leases(), 1, "one etcd lease, the key's");
    let key = format!("{PREFIX}/subnets/10.9.3.0-24");
    let listed = b.ctl(&["get", &key, "-w", "json"]);
    // etcd leaves the field out for a key on no lease.
    assert!(
        listed.contains("\"lease\":"),
        "the key is on an etcd lease: {listed}"
    );
    let lost = b.store().acquire(&cfg, &attrs(2, 0), None).await;
    assert!(
        matches!(lost, Err(LeaseError::NoFreeSubnet { .. })),
        "{lost:?}"
    );
    assert_eq!(etcd_leases(), 1, "the loser's grant was revoked");
    b.store()
        .release(&won)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    assert_eq!(etcd_leases(), 0);
}
