//! The embedded store's paths for many leases: the watch that starts from
//! acquire's read, coalesced batches of inotify events, and one rescan
//! diffed against the known set after an overflow.

use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use futures::channel::mpsc::{unbounded, UnboundedSender};
use inotify::EventMask;

use super::format::{encode, file_name, lease_path};
use super::watch::{spawn, Item};
use super::FileStore;
use crate::lease::contract_tests::{attrs, expect_quiet, net, next_event, TempDir, LONG};
use crate::lease::{Lease, LeaseAttrs, LeaseEvent, LeaseStore, Listed};
use crate::netconf::NetConfig;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

/// Lease `10.244.<third>.0/24` of node `n`, expiring `secs` from now
/// (negative: expired), whole milliseconds as the store writes them.
fn lease(third: u8, n: u8, mac: u8, secs: i64) -> Lease {
    let now = super::format::expiry_after(Duration::ZERO);
    let expiration = if secs >= 0 {
        now + Duration::from_secs(secs as u64)
    } else {
        now - Duration::from_secs(secs.unsigned_abs())
    };
    Lease {
        subnet: net(&format!("10.244.{third}.0/24")),
        ipv6_subnet: None,
        attrs: attrs(n, mac),
        expiration,
    }
}

/// Writes `l` the way another writer would: straight into its file.
fn put(dir: &std::path::Path, l: &Lease) {
    let path = lease_path(dir, l.id());
    let bytes = encode(l).unwrap_or_else(|e| panic!("encode {}: {e}", l.key()));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn del(dir: &std::path::Path, l: &Lease) {
    let path = lease_path(dir, l.id());
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
}

fn lease_dir(t: &TempDir) -> std::path::PathBuf {
    let dir = t.path().join("leases");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A watch on `dir` knowing `known`, fed batches by hand.
async fn fed_watch(
    dir: &std::path::Path,
    known: Vec<Lease>,
) -> (Listed, UnboundedSender<Vec<Item>>) {
    let (tx, rx) = unbounded();
    (spawn(dir, known, rx).listed().await, tx)
}

fn event(mask: EventMask, l: &Lease) -> Item {
    Ok((mask, Some(OsString::from(file_name(l.id())))))
}

async fn events(w: &mut Listed, n: usize) -> Vec<LeaseEvent> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(next_event(w, WAIT).await);
    }
    expect_quiet(w, QUIET).await;
    v
}

#[tokio::test]
async fn an_overflow_is_one_rescan_reporting_only_the_difference() {
    let t = TempDir::new("leases-overflow");
    let dir = lease_dir(&t);
    let (a, b, c) = (
        lease(1, 1, 0, 300),
        lease(2, 2, 0, 300),
        lease(3, 3, 0, 300),
    );
    for l in [&a, &b, &c] {
        put(&dir, l);
    }
    let (mut w, tx) = fed_watch(&dir, vec![a.clone(), b.clone(), c.clone()]).await;
    assert_eq!(w.snapshot, vec![a.clone(), b.clone(), c.clone()]);

    // Changes whose events were lost: A gone, B's attributes changed, C
    // renewed (expiry only), D new, E new but already expired.
    del(&dir, &a);
    let b2 = lease(2, 2, 7, 300);
    put(&dir, &b2);
    put(&dir, &lease(3, 3, 0, 600));
    let d = lease(4, 4, 0, 300);
    put(&dir, &d);
    put(&dir, &lease(5, 5, 0, -10));
    let overflow: Item = Ok((EventMask::Q_OVERFLOW, None));
    // Two overflows and an event in one batch: still one rescan.
    let batch = vec![
        overflow,
        event(EventMask::MOVED_TO, &d),
        Ok((EventMask::Q_OVERFLOW, None)),
    ];
    tx.unbounded_send(batch)
        .unwrap_or_else(|e| panic!("feed: {e}"));
    assert_eq!(
        events(&mut w, 3).await,
        vec![
            LeaseEvent::Removed(a),
            LeaseEvent::Added(b2),
            LeaseEvent::Added(d)
        ]
    );
}

#[tokio::test]
async fn a_batch_reads_each_lease_once_and_reports_its_last_state() {
    let t = TempDir::new("leases-batch");
    let dir = lease_dir(&t);
    let (a, b) = (lease(1, 1, 0, 300), lease(2, 2, 0, 300));
    put(&dir, &a);
    put(&dir, &b);
    let (mut w, tx) = fed_watch(&dir, vec![a.clone(), b.clone()]).await;

    // C came, went and came again; A went; B was renewed; a temp file and
    // a stray name were written.
    let c = lease(3, 3, 0, 300);
    put(&dir, &c);
    del(&dir, &a);
    put(&dir, &lease(2, 2, 0, 900));
    let stray = |name: &str| Ok((EventMask::CLOSE_WRITE, Some(OsString::from(name))));
    let batch = vec![
        event(EventMask::MOVED_TO, &c),
        event(EventMask::DELETE, &c),
        stray(".10.244.3.0-24.1.tmp"),
        event(EventMask::DELETE, &a),
        event(EventMask::MOVED_TO, &c),
        event(EventMask::CLOSE_WRITE, &b),
        stray("README"),
    ];
    tx.unbounded_send(batch)
        .unwrap_or_else(|e| panic!("feed: {e}"));
    assert_eq!(
        events(&mut w, 2).await,
        vec![LeaseEvent::Added(c), LeaseEvent::Removed(a)]
    );
}

#[tokio::test]
async fn the_watch_after_acquire_starts_from_its_read_and_misses_nothing() {
    let t = TempDir::new("leases-primed");
    let dir = lease_dir(&t);
    // 200 other nodes, one expired, and this node's lease from before a
    // restart that lost subnet.env (no `previous`).
    let mut others: Vec<Lease> = (10..210u16)
        .map(|i| lease(i as u8, (i % 250) as u8 + 1, 1, 300))
        .collect();
    others[0].expiration = SystemTime::now() - Duration::from_secs(5);
    for l in &others {
        put(&dir, l);
    }
    let ours_before = lease(5, 250, 0, 100);
    put(&dir, &ours_before);
    let s = FileStore::new(dir.clone(), t.path().join("net-conf.json"), LONG);
    let cfg = NetConfig::default_config();
    let mine = s
        .acquire(&cfg, &ours_before.attrs, None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(
        mine.subnet, ours_before.subnet,
        "own lease found by public IP"
    );
    assert!(mine.expiration > ours_before.expiration, "and renewed");

    // Between acquire and watch: one lease added, one removed.
    let late = lease(220, 251, 1, 300);
    put(&dir, &late);
    del(&dir, &others[1]);
    let mut w = crate::lease::listed(&s).await;
    let mut want: Vec<Lease> = others[1..].to_vec();
    want.push(mine.clone());
    want.sort_by_key(Lease::id);
    // The snapshot is what acquire read (expired left out, our renewed
    // lease in); the two changes since come as events.
    assert_eq!(w.snapshot, want);
    let mut got = events(&mut w, 2).await;
    got.sort_by_key(|e| match e {
        LeaseEvent::Added(l) | LeaseEvent::Removed(l) => l.id(),
    });
    assert_eq!(
        got,
        vec![
            LeaseEvent::Removed(others[1].clone()),
            LeaseEvent::Added(late.clone())
        ]
    );

    // A second watch reads the directory itself.
    let w2 = crate::lease::listed(&s).await;
    want.retain(|l| l.id() != others[1].id());
    want.push(late);
    want.sort_by_key(Lease::id);
    assert_eq!(w2.snapshot, want);
}

#[tokio::test]
async fn expired_leases_are_taken_when_no_name_is_free() {
    let t = TempDir::new("leases-expired");
    let dir = lease_dir(&t);
    // 10.1.0.0/28 in /30s: three leasable subnets, all with files, two
    // of them expired.
    let cfg = crate::lease::contract_tests::config(r#"{"Network":"10.1.0.0/28","SubnetLen":30}"#);
    let file = |s: &str, n: u8, secs: i64| {
        let mut l = lease(1, n, 0, secs);
        l.subnet = net(s);
        put(&dir, &l);
        l
    };
    file("10.1.0.4/30", 1, 300);
    file("10.1.0.8/30", 2, -5);
    file("10.1.0.12/30", 3, -5);
    let s = FileStore::new(dir.clone(), t.path().join("net-conf.json"), LONG);
    let a: LeaseAttrs = attrs(9, 0);
    let got = s
        .acquire(&cfg, &a, None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert!(
        [net("10.1.0.8/30"), net("10.1.0.12/30")].contains(&got.subnet),
        "took {}",
        got.subnet
    );
    let b = s
        .acquire(&cfg, &attrs(10, 0), None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_ne!(b.subnet, got.subnet);
    assert_ne!(b.subnet, net("10.1.0.4/30"));
    assert!(
        s.acquire(&cfg, &attrs(11, 0), None).await.is_err(),
        "all taken"
    );
}
