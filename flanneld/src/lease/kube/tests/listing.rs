//! How the nodes are listed: as flannel's informer lists them, one
//! request from the API server's cache (`resourceVersion=0`, no `limit`),
//! however many nodes there are; the watch then starts from that
//! listing's version.

use super::{upstream, KubeBacking};
use crate::lease::LeaseStore;

#[tokio::test]
async fn twelve_hundred_nodes_are_listed_in_one_request_from_the_cache() {
    let b = KubeBacking::start(false);
    let nodes = (0..1200u32)
        .map(|i| {
            let cidr = format!("10.244.{}.{}/28", 100 + i / 16, (i % 16) * 16);
            upstream(&format!("peer-{i:04}"), 100 + i, &cidr).build()
        })
        .collect();
    b.api.create_nodes(nodes).expect("create the nodes");
    let me = b.register(super::NodeFixture::new("me", 1).pod_cidr("10.244.1.0/24"));
    b.api.clear_requests();
    let w = b.store(&me).await.watch().await.expect("watch");
    assert_eq!(w.snapshot.len(), 1200, "every peer listed");
    let lists: Vec<String> = b
        .api
        .requests_to("GET", "/api/v1/nodes")
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.starts_with("/api/v1/nodes?") && !p.contains("watch=true"))
        .collect();
    assert_eq!(lists.len(), 1, "one list request: {lists:?}");
    assert!(
        lists[0].contains("resourceVersion=0") && !lists[0].contains("limit="),
        "from the cache, unpaged: {}",
        lists[0]
    );
}
