//! etcd going away and coming back; compaction.
//!
//! Each test runs its own etcd on loopback; no kernel state is touched.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use tokio::time::timeout;

use super::{backing, flannel_value, next_event, put_flannel_lease, PREFIX};
use crate::lease::contract_tests::{attrs, config, net};
use crate::lease::etcd::watch;
use crate::lease::{LeaseEvent, LeaseStore};

/// etcd stopped for a while, then restarted; meanwhile one node joins,
/// one leaves and one changes its VtepMAC. The watch (whose channel stays
/// open) delivers each change exactly once.
#[tokio::test]
async fn watch_resumes_after_an_outage_without_loss_or_duplicates() {
    // The store's own log lines (state changes) show in a failure's output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut b = backing().await;
    let cfg = config(r#"{"Network":"10.244.0.0/16"}"#);
    let store = b.store();
    let stays = store
        .acquire(&cfg, &attrs(1, 0), Some(net("10.244.1.0/24")))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    put_flannel_lease(
        &b,
        "10.244.2.0-24",
        &flannel_value("192.168.64.2", "0a:00:00:00:00:02"),
        600,
    );
    put_flannel_lease(
        &b,
        "10.244.3.0-24",
        &flannel_value("192.168.64.3", "0a:00:00:00:00:03"),
        600,
    );
    let mut w = crate::lease::listed(&store).await;
    assert_eq!(w.snapshot.len(), 3);

    b.server.stop();
    // Requests fail (renew: one attempt) while etcd is away...
    let started = Instant::now();
    match store.renew(&stays).await {
        Err(e) => assert!(e.to_string().contains("unreachable"), "{e}"),
        Ok(l) => panic!("renew succeeded with etcd stopped: {l:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "renew gave up after {:?}",
        started.elapsed()
    );
    assert!(!store.is_reachable());
    // ... acquire waits for etcd rather than failing ...
    let joining = {
        let (store, cfg) = (b.store(), cfg.clone());
        tokio::spawn(async move {
            store
                .acquire(&cfg, &attrs(4, 0), Some(net("10.244.4.0/24")))
                .await
        })
    };
    // ... and the watch sends nothing, not even errors.
    match timeout(Duration::from_secs(2), w.events.recv()).await {
        Err(_) => {}
        Ok(ev) => panic!("no event while etcd is down, got {ev:?}"),
    }
    b.server.restart();
    // Changes right after the restart, most likely before the watch is back.
    b.ctl(&["del", &format!("{PREFIX}/subnets/10.244.2.0-24")]);
    put_flannel_lease(
        &b,
        "10.244.3.0-24",
        &flannel_value("192.168.64.3", "0a:00:00:00:00:33"),
        600,
    );
    let joined = timeout(Duration::from_secs(20), joining)
        .await
        .unwrap_or_else(|_| panic!("acquire did not resume after etcd came back"))
        .unwrap_or_else(|e| panic!("task: {e}"))
        .unwrap_or_else(|e| panic!("acquire after the outage: {e}"));
    assert_eq!(joined.subnet, net("10.244.4.0/24"));

    let mut want: BTreeMap<Ipv4Network, &str> = [
        (net("10.244.2.0/24"), "removed"),
        (net("10.244.3.0/24"), "0a:00:00:00:00:33"),
        (net("10.244.4.0/24"), "0a:58:0a:00:00:04"),
    ]
    .into();
    while !want.is_empty() {
        let ev = next_event(&mut w.events, Duration::from_secs(20)).await;
        let (subnet, got) = match &ev {
            LeaseEvent::Removed(l) => (l.subnet, "removed".to_string()),
            LeaseEvent::Added(l) => (
                l.subnet,
                l.attrs.vxlan_data().map(|d| d.vtep_mac).unwrap_or_default(),
            ),
        };
        match want.remove(&subnet) {
            Some(expected) => assert_eq!(got, expected, "{ev:?}"),
            None => panic!("unexpected or duplicate event {ev:?}"),
        }
    }
    super::expect_quiet(&mut w, Duration::from_millis(1500)).await;
    store
        .renew(&stays)
        .await
        .unwrap_or_else(|e| panic!("renew after the outage: {e}"));
    assert!(store.is_reachable());
}

/// A watch whose revision was compacted away re-lists and diffs.
#[tokio::test]
async fn compacted_revision_is_relisted_and_diffed() {
    let b = backing().await;
    let cfg = config(r#"{"Network":"10.244.0.0/16"}"#);
    let store = b.store();
    let gone = store
        .acquire(&cfg, &attrs(1, 0), Some(net("10.244.1.0/24")))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    // What the watch believes: `gone` and a stale version of 10.244.8.0/24.
    let stale = crate::lease::Lease {
        subnet: net("10.244.8.0/24"),
        ipv6_subnet: None,
        attrs: attrs(8, 0),
        expiration: gone.expiration,
    };
    let believed = vec![gone.clone(), stale];
    let (_, old_revision) = store.list().await.unwrap_or_else(|e| panic!("list: {e}"));
    // Then history moves on and is compacted.
    store
        .release(&gone)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let eight = crate::lease::LeaseAttrs::vxlan(
        "192.168.64.8".parse().expect("ip"),
        1,
        "0a:58:0a:00:09:08",
    );
    put_flannel_lease(
        &b,
        "10.244.8.0-24",
        &serde_json::to_string(&eight).expect("json"),
        600,
    );
    put_flannel_lease(
        &b,
        "10.244.9.0-24",
        &flannel_value("192.168.64.9", "0a:00:00:00:00:09"),
        600,
    );
    let (_, now) = store.list().await.unwrap_or_else(|e| panic!("list: {e}"));
    b.ctl(&["compact", &now.to_string()]);

    let mut events = watch::start_from(store.clone(), believed, old_revision);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_event(&mut events, Duration::from_secs(10)).await);
    }
    got.sort_by_key(|e| match e {
        LeaseEvent::Added(l) | LeaseEvent::Removed(l) => l.subnet,
    });
    match &got[..] {
        [LeaseEvent::Removed(a), LeaseEvent::Added(b8), LeaseEvent::Added(b9)] => {
            assert_eq!(a.subnet, gone.subnet);
            assert_eq!((b8.subnet, &b8.attrs), (net("10.244.8.0/24"), &eight));
            assert_eq!(b9.subnet, net("10.244.9.0/24"));
        }
        other => panic!("expected Removed(gone), Added(8 changed), Added(9): {other:?}"),
    }
    if let Ok(ev) = timeout(Duration::from_millis(500), events.recv()).await {
        panic!("duplicate after the re-list: {ev:?}");
    }
}
