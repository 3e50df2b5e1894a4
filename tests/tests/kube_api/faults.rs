//! Injected faults (500s, an API that is down or unavailable, a delay) and
//! the node IPAM controller.

use crate::{api_status, nodes, small_node, until};
use flannel_cluster::kube_api::{DownMode, KubeApiOptions, KubeApiServer, NodeFixture, NodeIpam};
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn failures_downtime_and_delay() {
    let api = KubeApiServer::start();
    api.create_node(small_node("n1", &[])).expect("create");
    let nodes = nodes(&api).await;
    let lp = ListParams::default();

    api.fail_next(2);
    for _ in 0..2 {
        let e = nodes.list(&lp).await.expect_err("injected 500");
        let s = api_status(&e);
        assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    }
    nodes
        .list(&lp)
        .await
        .expect("the third request is answered");
    api.fail_all(true);
    assert!(nodes.get("n1").await.is_err() && nodes.list(&lp).await.is_err());
    api.clear_faults();
    nodes.get("n1").await.expect("after clear");

    // Down: connections closed without an answer, open watches included.
    let mut w = crate::spawn_watcher(nodes.clone(), watcher::Config::default());
    while !matches!(
        crate::next(&mut w, "InitDone").await,
        Ok(watcher::Event::InitDone)
    ) {}
    until("the watch to be open", || api.open_watches() == 1).await;
    let before = api.request_count();
    api.set_down(Some(DownMode::CloseConnections));
    let e = nodes.list(&lp).await.expect_err("down");
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "no HTTP answer while down: {e}"
    );
    until("the watch to be cut", || api.open_watches() == 0).await;
    assert_eq!(api.request_count(), before, "nothing reached the API");
    api.set_down(None);
    nodes.list(&lp).await.expect("up again");

    // Unavailable: 503 with Retry-After, which kube's client retries by
    // itself; once the API is back the call succeeds.
    api.set_down(Some(DownMode::Unavailable));
    let api = std::sync::Arc::new(api);
    let a = api.clone();
    let back = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        a.set_down(None);
    });
    let l = nodes.list(&lp).await.expect("retried until available");
    back.join().expect("thread");
    assert_eq!(l.items.len(), 1);
    assert!(api.requests().iter().any(|r| r.status == 503));

    api.set_delay(Duration::from_millis(300));
    let t0 = Instant::now();
    nodes.get("n1").await.expect("slow get");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    api.set_delay(Duration::ZERO);
    drop(w);
}

#[tokio::test]
async fn node_ipam_assigns_distinct_pod_cidrs() {
    let ipam = NodeIpam::new("10.244.0.0/16", 24)
        .expect("ipam")
        .delay(Duration::from_millis(50));
    let api =
        KubeApiServer::start_with(KubeApiOptions::new().node_ipam(ipam.clone())).expect("start");
    assert!(api.enable_node_ipam(ipam).is_err(), "one controller only");
    // A node that has its range already keeps it; nobody else gets it.
    api.create_node(NodeFixture::new("pre", 0).pod_cidr("10.244.0.0/24").build())
        .expect("create");
    let nodes = nodes(&api).await;
    let mut w = crate::spawn_watcher(nodes.clone(), watcher::Config::default());
    while !matches!(
        crate::next(&mut w, "InitDone").await,
        Ok(watcher::Event::InitDone)
    ) {}
    for i in 0..6 {
        api.create_node(small_node(&format!("n{i}"), &[]))
            .expect("create");
    }
    // The watcher sees each node first without, then with a podCIDR.
    let mut with_cidr = BTreeSet::new();
    while with_cidr.len() < 6 {
        if let Ok(watcher::Event::Apply(n)) = crate::next(&mut w, "podCIDRs").await {
            if let Some(c) = n.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
                let cidrs = n.spec.as_ref().and_then(|s| s.pod_cidrs.clone());
                assert_eq!(cidrs, Some(vec![c.clone()]), "podCIDRs = [podCIDR]");
                with_cidr.insert((n.name_any(), c));
            }
        }
    }
    let cidrs: BTreeSet<&String> = with_cidr.iter().map(|(_, c)| c).collect();
    assert_eq!(cidrs.len(), 6, "distinct: {with_cidr:?}");
    for c in &cidrs {
        assert!(c.starts_with("10.244.") && c.ends_with(".0/24"), "{c}");
        assert_ne!(c.as_str(), "10.244.0.0/24", "taken by pre");
    }
    let pre = nodes.get("pre").await.expect("get");
    assert_eq!(
        pre.spec.and_then(|s| s.pod_cidr).as_deref(),
        Some("10.244.0.0/24")
    );
    // Delete one: its range goes back to the pool (after the others).
    api.delete_node("n0").expect("delete");
    api.create_node(small_node("late", &[])).expect("create");
    until("late to get a range", || {
        api.node("late")
            .is_some_and(|n| n["spec"]["podCIDR"].is_string())
    })
    .await;
    let late = api.node("late").expect("late");
    let late = late["spec"]["podCIDR"].as_str().unwrap_or("");
    assert!(!cidrs.iter().any(|c| c.as_str() == late), "{late} was free");
}
