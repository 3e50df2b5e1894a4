//! The first listing programmed page by page, in a namespace: each page's
//! peers reach the kernel while the next is awaited; what no lease
//! explains (a previous run's peer, or a peer of a listing that broke off
//! and was read again) goes only once the listing is complete, and never
//! when the watch ends before that.

use std::time::Duration;

use tokio::sync::mpsc;

use super::fixture::{adopted, lease, v4_specs};
use super::{Datapath, Specs};
use crate::lease::Lease;
use crate::lease::{LeaseError, ListingPart};
use crate::vxlan::tests::TestNs;

/// The peer subnets routed through flannel.1 ("10.244.N.0/24"), sorted.
fn routed(ns: &TestNs) -> Vec<String> {
    ns.gw_routes()
        .iter()
        .filter(|r| r.contains("dev flannel.1"))
        .filter_map(|r| r.split_whitespace().next().map(String::from))
        .collect()
}

/// Waits (up to 5 s) until `subnet` is routed.
async fn until_routed(ns: &TestNs, subnet: &str) {
    for _ in 0..500 {
        if routed(ns).iter().any(|r| r == subnet) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{subnet} never routed: {:?}", routed(ns));
}

/// A datapath that adopted `own` after a previous run programmed `before`.
async fn after_a_run_of(
    handle: rtnetlink::Handle,
    specs: Specs,
    own: &Lease,
    before: &[Lease],
) -> Datapath {
    let mut previous = adopted(handle.clone(), specs.clone(), own).await;
    previous.program(before).await;
    drop(previous);
    adopted(handle, specs, own).await
}

#[test]
fn pages_are_programmed_as_they_come_and_strays_go_once_the_listing_is_complete() {
    let ns = TestNs::new();
    let specs = v4_specs(&ns);
    let own = lease(2, 2, 0);
    let ns_ref = &ns;
    ns.within(|handle| async move {
        // A previous run programmed peers 4 and 9; 9 has left since.
        let before = [own.clone(), lease(4, 4, 0), lease(9, 9, 0)];
        let mut dp = after_a_run_of(handle, specs, &own, &before).await;
        let (tx, mut rx) = mpsc::channel(4);
        let drive = async {
            let send = |part| {
                let tx = tx.clone();
                async move { tx.send(part).await.expect("the datapath listens") }
            };
            send(ListingPart::Page(vec![own.clone(), lease(3, 3, 0)])).await;
            until_routed(ns_ref, "10.244.3.0/24").await;
            assert_eq!(
                routed(ns_ref),
                ["10.244.3.0/24", "10.244.4.0/24", "10.244.9.0/24"],
                "a page removes nothing: a later one may explain it"
            );
            // The listing broke off; read again, peer 3 is gone and 5 came.
            send(ListingPart::Restart).await;
            send(ListingPart::Page(vec![own.clone(), lease(5, 5, 0)])).await;
            until_routed(ns_ref, "10.244.5.0/24").await;
            send(ListingPart::Page(vec![lease(4, 4, 1)])).await;
            send(ListingPart::Complete).await;
        };
        let (listed, ()) = tokio::join!(dp.program_listing(&mut rx), drive);
        assert_eq!(
            listed.expect("complete"),
            3,
            "the leases of the listing read again"
        );
        assert_eq!(routed(ns_ref), ["10.244.4.0/24", "10.244.5.0/24"]);
        let neighbours = ns_ref.neighbours("flannel.1");
        assert_eq!(
            neighbours,
            [
                "10.244.4.0 0e:00:00:00:01:04 PERMANENT",
                "10.244.5.0 0e:00:00:00:00:05 PERMANENT"
            ],
            "peer 4's new MAC replaced its old one"
        );
        let fdb = ns_ref.fdb("flannel.1");
        assert!(
            fdb.len() == 2
                && fdb
                    .iter()
                    .any(|f| f.starts_with("0e:00:00:00:01:04 192.168.64.4"))
                && fdb
                    .iter()
                    .any(|f| f.starts_with("0e:00:00:00:00:05 192.168.64.5")),
            "{fdb:?}"
        );
        assert_eq!(dp.resync("check").await, 0, "nothing left to repair");
    });
}

#[test]
fn a_listing_the_watch_cut_short_removes_nothing() {
    let ns = TestNs::new();
    let specs = v4_specs(&ns);
    let own = lease(2, 2, 0);
    let ns_ref = &ns;
    ns.within(|handle| async move {
        let before = [own.clone(), lease(9, 9, 0)];
        let mut dp = after_a_run_of(handle, specs, &own, &before).await;
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(ListingPart::Page(vec![own.clone(), lease(3, 3, 0)]))
            .await
            .expect("send");
        drop(tx);
        let listed = dp.program_listing(&mut rx).await;
        assert!(matches!(listed, Err(LeaseError::ListingCut)), "{listed:?}");
        assert_eq!(
            routed(ns_ref),
            ["10.244.3.0/24", "10.244.9.0/24"],
            "the page is programmed; peer 9 may be on the pages never read"
        );
    });
}

#[test]
fn a_page_the_kernel_could_not_take_is_programmed_once_the_device_is_back() {
    let ns = TestNs::new();
    let specs = v4_specs(&ns);
    let own = lease(2, 2, 0);
    let ns_ref = &ns;
    ns.within(|handle| async move {
        let mut dp = adopted(handle, specs, &own).await;
        ns_ref.ip(&["link", "del", "flannel.1"]);
        let (tx, mut rx) = mpsc::channel(4);
        for part in [
            ListingPart::Page(vec![own.clone(), lease(3, 3, 0)]),
            ListingPart::Complete,
        ] {
            tx.send(part).await.expect("send");
        }
        let listed = dp.program_listing(&mut rx).await;
        assert_eq!(listed.expect("complete"), 2);
        // The periodic check recreates the device; the resync programs
        // the page's peer, which was kept.
        dp.check_device().await;
        dp.resync("periodic").await;
        assert_eq!(routed(ns_ref), ["10.244.3.0/24"]);
    });
}
