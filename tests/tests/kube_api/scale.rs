//! Scale: realistic ~10 KiB Nodes, 5000 of them made and served fast.

use crate::nodes;
use flannel_cluster::kube_api::{realistic_node, realistic_nodes, KubeApiServer, NodeFixture};
use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::watcher;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[test]
fn a_realistic_node_is_about_10_kib() {
    let n = realistic_node("ip-10-0-0-1.eu-west-1.compute.internal", 1);
    let size = serde_json::to_vec(&n).expect("json").len();
    assert!((9 * 1024..=12 * 1024).contains(&size), "{size} bytes");
    assert_eq!(n["status"]["conditions"].as_array().map(Vec::len), Some(5));
    assert!(n["status"]["images"]
        .as_array()
        .is_some_and(|i| i.len() >= 30));
    assert_eq!(n["status"]["addresses"][0]["address"], "10.0.0.2");
    let f = NodeFixture::new("n", 0)
        .pod_cidr("10.244.0.0/24")
        .flannel()
        .build();
    assert_eq!(f["spec"]["podCIDRs"][0], "10.244.0.0/24");
    assert_eq!(
        f["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"],
        "10.0.0.1"
    );
    assert_eq!(
        f["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"],
        r#"{"VNI":1,"VtepMAC":"0e:6a:0a:00:00:01"}"#
    );
}

#[tokio::test]
async fn five_thousand_nodes_are_made_fast_and_listed_and_watched_whole() {
    let api = KubeApiServer::start();
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let all = realistic_nodes("node-", 5000);
    let built = t0.elapsed();
    api.create_nodes(all).expect("create 5000 nodes");
    let made = t0.elapsed();
    let grown = rss_kib().saturating_sub(rss0) / 1024;
    eprintln!("5000 nodes: built in {built:?}, built and stored in {made:?}, +{grown} MiB");
    assert!(grown < 400, "memory: +{grown} MiB for 5000 nodes");
    // Optimized builds: well under 2 s; debug builds are several times slower.
    let bound = if cfg!(debug_assertions) { 15 } else { 2 };
    assert!(made < Duration::from_secs(bound), "{made:?}");
    assert_eq!(api.node_count(), 5000);

    let nodes = nodes(&api).await;
    let (mut names, mut token, mut pages) = (BTreeSet::new(), None::<String>, 0);
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = nodes.list(&lp).await.expect("page");
        pages += 1;
        names.extend(page.items.into_iter().filter_map(|n| n.metadata.name));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!((pages, names.len()), (10, 5000));

    let mut w = watcher::watcher(nodes, watcher::Config::default()).boxed();
    let mut applied = 0;
    loop {
        match crate::next(&mut w, "InitDone").await.expect("watcher") {
            watcher::Event::InitApply(_) => applied += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(applied, 5000);
}

/// This process's resident memory (KiB).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
