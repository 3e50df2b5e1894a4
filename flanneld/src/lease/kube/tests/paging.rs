//! The first listing of Nodes handed on a page at a time, as the API
//! server answers (kube's watcher asks for 500 at a time), so the daemon
//! programs one page while the next is on its way; a listing that breaks
//! off after a page was handed on is sent again from the start, after a
//! `Restart`, and adds up to every node all the same.
//!
//! Talks only to its own API stand-in on loopback; touches no kernel state.

use super::*;
use crate::lease::ListingPart;

/// 1,100 upstream-annotated peers, p0000…p1099, each with a /28 of
/// 10.244.0.0/16 (three of the watcher's pages), and us.
fn many_nodes(b: &KubeBacking) -> (String, usize) {
    let nodes = (0..1100u32)
        .map(|i| {
            let cidr = format!("10.244.{}.{}/28", i / 16, (i % 16) * 16);
            upstream(&format!("p{i:04}"), i + 2, &cidr).build()
        })
        .collect();
    b.api.create_nodes(nodes).expect("create nodes");
    let me = b.register(NodeFixture::new("zz-me", 1).pod_cidr("10.244.200.0/24"));
    (me, 1100)
}

/// The listing's parts until it completes (or 20 s pass).
async fn parts(listing: &mut crate::lease::ListingRx) -> Vec<ListingPart> {
    let mut got = Vec::new();
    while !matches!(got.last(), Some(ListingPart::Complete)) {
        match timeout(Duration::from_secs(20), listing.recv()).await {
            Ok(Some(part)) => got.push(part),
            Ok(None) => panic!("the listing ended before it was complete: {got:?}"),
            Err(_) => panic!("no listing part in 20 s after {} parts", got.len()),
        }
    }
    got
}

fn subnets(pages: &[ListingPart]) -> Vec<String> {
    let mut all: Vec<String> = pages
        .iter()
        .flat_map(|p| match p {
            ListingPart::Page(leases) => leases.iter().map(|l| l.subnet.to_string()).collect(),
            _ => Vec::new(),
        })
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn the_first_listing_comes_a_page_at_a_time_and_adds_up_to_every_node() {
    let b = KubeBacking::start(false);
    let (me, peers) = many_nodes(&b);
    let mut w = b.store(&me).await.watch().await.expect("watch");
    let got = parts(&mut w.listing).await;
    let pages = got
        .iter()
        .filter(|p| matches!(p, ListingPart::Page(_)))
        .count();
    assert!(
        pages >= 3,
        "1,100 nodes in pages of at most 500: {pages} page(s)"
    );
    assert!(!got.contains(&ListingPart::Restart), "{got:?}");
    let all = subnets(&got);
    let mut distinct = all.clone();
    distinct.dedup();
    assert_eq!(
        (all.len(), distinct.len()),
        (peers, peers),
        "each node once"
    );
    // The watch follows on from the listing.
    b.api.delete_node("p0007").expect("delete");
    let mut listed = crate::lease::Listed {
        snapshot: Vec::new(),
        events: w.events,
    };
    match next_event(&mut listed, Duration::from_secs(5)).await {
        LeaseEvent::Removed(l) => assert_eq!(l.subnet.to_string(), "10.244.0.112/28"),
        ev => panic!("expected Removed, got {ev:?}"),
    }
}

#[tokio::test]
async fn a_listing_that_breaks_off_after_a_page_is_sent_again_after_a_restart() {
    let b = KubeBacking::start(false);
    let (me, peers) = many_nodes(&b);
    let store = b.store(&me).await;
    // Every answer waits 300 ms: the next page is still on its way when
    // the first has been handed on, and it is the one that fails.
    b.api.set_delay(Duration::from_millis(300));
    let mut w = store.watch().await.expect("watch");
    let first = timeout(Duration::from_secs(20), w.listing.recv())
        .await
        .expect("a first page in 20 s");
    assert!(matches!(first, Some(ListingPart::Page(_))), "{first:?}");
    b.api.fail_next(1);
    let rest = parts(&mut w.listing).await;
    let restart = rest
        .iter()
        .position(|p| *p == ListingPart::Restart)
        .unwrap_or_else(|| panic!("a Restart after the failed page: {rest:?}"));
    assert_eq!(
        subnets(&rest[restart..]).len(),
        peers,
        "after the Restart, every node again"
    );
    b.api.set_delay(Duration::ZERO);
}
