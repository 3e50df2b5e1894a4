//! The lifetime cases of the stores that choose subnets (file, etcd): an
//! expired lease is ignored and can be taken, renewal extends a lease, a
//! lease another node took is lost, release frees the subnet, and the
//! watch reports an expiry when it happens (without any write).
//!
//! Owns these cases only; the backing and helpers are the parent's.

use super::*;

pub async fn expired_lease_is_ignored_and_can_be_taken<B: Backing>() {
    let b = B::new(SHORT).await;
    let cfg = tiny_net();
    let mut w = watch(b.node().await.as_ref()).await;
    let subnets = acquire_nodes(&b, &cfg, 3).await;
    wait_removed(&mut w, &subnets, SHORT.ttl + EXPIRY_SLACK).await;
    assert!(
        watch(b.node().await.as_ref()).await.snapshot.is_empty(),
        "expired leases are not in a snapshot"
    );
    let l = acquire(
        b.node().await.as_ref(),
        &cfg,
        &attrs(4, 0),
        Some(subnets[0]),
    )
    .await;
    assert_eq!(l.subnet, subnets[0], "an expired lease is free");
    acquire(b.node().await.as_ref(), &cfg, &attrs(5, 0), None).await;
}

pub async fn renew_extends<B: Backing>() {
    let b = B::new(SHORT).await;
    let cfg = default_net();
    let node = b.node().await;
    let mut lease = acquire(node.as_ref(), &cfg, &attrs(1, 0), None).await;
    let mut w = watch(b.node().await.as_ref()).await;
    let start = Instant::now();
    while start.elapsed() < SHORT.ttl * 2 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let renewed = node
            .renew(&lease)
            .await
            .unwrap_or_else(|e| panic!("renew: {e}"));
        assert_eq!(renewed.subnet, lease.subnet);
        assert!(
            renewed.expiration > lease.expiration,
            "renew extends the expiry"
        );
        lease = renewed;
    }
    let other = acquire(
        b.node().await.as_ref(),
        &cfg,
        &attrs(2, 0),
        Some(lease.subnet),
    )
    .await;
    assert_ne!(
        other.subnet, lease.subnet,
        "a renewed lease outlives its first TTL"
    );
    assert!(
        matches!(next_event(&mut w, EVENT_WAIT).await, LeaseEvent::Added(l) if l.subnet == other.subnet),
        "renewals without changes send no event"
    );
    // A renewal with new attributes updates them.
    let changed = Lease {
        attrs: attrs(1, 7),
        ..lease
    };
    let renewed = node
        .renew(&changed)
        .await
        .unwrap_or_else(|e| panic!("renew: {e}"));
    assert_eq!(renewed.attrs, attrs(1, 7));
    match next_event(&mut w, EVENT_WAIT).await {
        LeaseEvent::Added(l) => assert_eq!((l.subnet, l.attrs), (renewed.subnet, attrs(1, 7))),
        ev => panic!("expected Added with the new MAC, got {ev:?}"),
    }
}

pub async fn stolen_lease_is_lost<B: Backing>() {
    let b = B::new(SHORT).await;
    let cfg = default_net();
    let a = b.node().await;
    let mut w = watch(b.node().await.as_ref()).await;
    let old = acquire(a.as_ref(), &cfg, &attrs(1, 0), None).await;
    wait_removed(&mut w, &[old.subnet], SHORT.ttl + EXPIRY_SLACK).await;
    let thief = b.node().await;
    let stolen = acquire(thief.as_ref(), &cfg, &attrs(2, 0), Some(old.subnet)).await;
    assert_eq!(stolen.subnet, old.subnet);
    match a.renew(&old).await {
        Err(LeaseError::Lost { subnet, holder }) => {
            assert_eq!(subnet, old.key());
            assert!(holder.contains("192.168.64.2"), "holder {holder}");
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    // Releasing a lease that is no longer ours leaves the new holder alone.
    a.release(&old)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let snap = watch(b.node().await.as_ref()).await.snapshot;
    assert_eq!(
        held(&snap),
        vec![(old.subnet, Ipv4Addr::new(192, 168, 64, 2))]
    );
    thief
        .renew(&stolen)
        .await
        .unwrap_or_else(|e| panic!("renew by the new holder: {e}"));
}

pub async fn release_removes<B: Backing>() {
    let b = B::new(LONG).await;
    let cfg = default_net();
    let a = b.node().await;
    let l = acquire(a.as_ref(), &cfg, &attrs(1, 0), None).await;
    let mut w = watch(b.node().await.as_ref()).await;
    assert_eq!(held(&w.snapshot), vec![(l.subnet, l.attrs.public_ip)]);
    a.release(&l)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    match next_event(&mut w, EVENT_WAIT).await {
        LeaseEvent::Removed(r) => assert_eq!(r.subnet, l.subnet),
        ev => panic!("expected Removed, got {ev:?}"),
    }
    assert!(watch(b.node().await.as_ref()).await.snapshot.is_empty());
    a.release(&l)
        .await
        .unwrap_or_else(|e| panic!("a second release is harmless: {e}"));
    let again = acquire(b.node().await.as_ref(), &cfg, &attrs(2, 0), Some(l.subnet)).await;
    assert_eq!(again.subnet, l.subnet, "a released subnet is free");
}

pub async fn watch_reports_expiry<B: Backing>() {
    let b = B::new(SHORT).await;
    let cfg = default_net();
    let l = acquire(b.node().await.as_ref(), &cfg, &attrs(1, 0), None).await;
    let mut w = watch(b.node().await.as_ref()).await;
    assert_eq!(w.snapshot.len(), 1);
    match next_event(&mut w, SHORT.ttl + EXPIRY_SLACK).await {
        LeaseEvent::Removed(r) => assert_eq!(r.subnet, l.subnet),
        ev => panic!("expected Removed on expiry, got {ev:?}"),
    }
    let early = l
        .expiration
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        early < Duration::from_millis(200),
        "expiry reported {early:?} before the lease expired"
    );
}
