//! LIST: pagination over a consistent snapshot, resourceVersion rules,
//! selectors, GET of a Node and a Pod.

use crate::{api_code, api_status, client, nodes, raw, small_node};
use flannel_cluster::kube_api::{realistic_nodes, KubeApiServer};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, VersionMatch};
use kube::{Api, ResourceExt};
use serde_json::Value;
use std::collections::BTreeSet;

#[tokio::test]
async fn pages_of_500_return_every_node_once_from_one_snapshot() {
    let api = KubeApiServer::start();
    api.create_nodes(realistic_nodes("node-", 1200))
        .expect("create 1200 nodes");
    let all: BTreeSet<String> = (0..1200).map(|i| format!("node-{i}")).collect();
    let nodes = nodes(&api).await;

    let first = nodes
        .list(&ListParams::default().limit(500))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 500);
    let rv = first
        .metadata
        .resource_version
        .clone()
        .expect("list resourceVersion");
    assert_eq!(rv, api.resource_version().to_string());
    assert_eq!(first.metadata.remaining_item_count, Some(700));
    let mut token = first.metadata.continue_.clone().expect("a continue token");
    let mut seen: Vec<String> = first.items.iter().map(|n| n.name_any()).collect();

    // Changes after page 1 do not show in later pages: "node-999" (on page
    // 3 in key order) is deleted, "node-new" and "zzz" are created.
    api.delete_node("node-999").expect("node-999 existed");
    api.create_node(small_node("node-new", &[]))
        .expect("create");
    api.create_node(small_node("zzz", &[])).expect("create");

    let mut pages = 1;
    loop {
        let page = nodes
            .list(&ListParams::default().limit(500).continue_token(&token))
            .await
            .expect("next page");
        pages += 1;
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(rv.as_str()),
            "same snapshot"
        );
        seen.extend(page.items.iter().map(|n| n.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => token = c,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 1200, "each node once");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), all);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "in key order");

    // A new list sees the changes.
    let now = nodes.list(&ListParams::default()).await.expect("list");
    let names: BTreeSet<String> = now.items.iter().map(|n| n.name_any()).collect();
    assert!(names.contains("node-new") && names.contains("zzz") && !names.contains("node-999"));
    assert_eq!(names.len(), 1201);

    // Once compacted, the old snapshot is gone: 410 Expired, with a fresh
    // token to go on inconsistently.
    api.expire_resource_versions();
    let e = nodes
        .list(&ListParams::default().limit(500).continue_token(&token))
        .await
        .expect_err("the continue token is too old");
    let s = api_status(&e);
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    assert!(s
        .metadata
        .as_ref()
        .and_then(|m| m.continue_.as_ref())
        .is_some());
}

#[tokio::test]
async fn resource_version_rules() {
    let api = KubeApiServer::start();
    let nodes = nodes(&api).await;
    for i in 0..5 {
        api.create_node(small_node(&format!("n{i}"), &[]))
            .expect("create");
    }
    let at = api.resource_version();
    api.delete_node("n0").expect("delete");
    api.set_node_annotation("n1", "a", Some("1"))
        .expect("annotate");

    // resourceVersion=0: everything at once, limit ignored (watch cache).
    let any = nodes
        .list(&ListParams::default().match_any())
        .await
        .expect("rv=0");
    assert_eq!(any.items.len(), 4);
    let q = crate::raw(
        &client(&api).await,
        "GET",
        "/api/v1/nodes?limit=2&resourceVersion=0",
        None,
        "",
    )
    .await
    .expect("rv=0 with limit");
    let v: Value = serde_json::from_str(&q).expect("json");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(4));
    assert!(v["metadata"].get("continue").is_none());

    // Exact: the state then (n0 there, n1 without the annotation).
    let then = nodes
        .list(
            &ListParams::default()
                .at(&at.to_string())
                .matching(VersionMatch::Exact),
        )
        .await
        .expect("exact list");
    assert_eq!(then.metadata.resource_version, Some(at.to_string()));
    let names: Vec<String> = then.items.iter().map(|n| n.name_any()).collect();
    assert_eq!(names, ["n0", "n1", "n2", "n3", "n4"]);
    assert!(then.items[1].annotations().get("a").is_none());

    // Newer than the server: 504 Timeout (ResourceVersionTooLarge), with
    // Retry-After (which kube's client would retry for minutes).
    let once: Api<Node> = Api::all(crate::client_without_retries(&api).await);
    let e = once
        .list(
            &ListParams::default()
                .at("999999")
                .matching(VersionMatch::NotOlderThan),
        )
        .await
        .expect_err("too large");
    let s = api_status(&e);
    assert_eq!((s.code, s.reason.as_str()), (504, "Timeout"));
    assert_eq!(s.details.as_ref().map(|d| d.retry_after_seconds), Some(1));
    // Compacted: 410.
    api.expire_resource_versions();
    let e = nodes
        .list(
            &ListParams::default()
                .at(&at.to_string())
                .matching(VersionMatch::Exact),
        )
        .await
        .expect_err("compacted");
    assert_eq!(api_code(&e), Some(410));
    // Malformed options are refused, not guessed at.
    let c = client(&api).await;
    for (path, code) in [
        ("/api/v1/nodes?resourceVersionMatch=Exact", 422),
        (
            "/api/v1/nodes?resourceVersion=1&resourceVersionMatch=Bogus",
            422,
        ),
        ("/api/v1/nodes?continue=e30&resourceVersion=5", 400),
        ("/api/v1/nodes?continue=%21%21", 400),
        ("/api/v1/nodes?limit=x", 400),
        ("/api/v1/nodes?labelSelector=a%20in%20(b", 400),
        ("/api/v1/nodes?fieldSelector=spec.podCIDR%3Dx", 400),
        ("/api/v1/nodes?watch=maybe", 400),
    ] {
        let e = raw(&c, "GET", path, None, "").await.expect_err(path);
        assert_eq!(api_code(&e), Some(code), "{path}: {e}");
    }
}

#[tokio::test]
async fn label_and_field_selectors() {
    let api = KubeApiServer::start();
    api.create_node(small_node("edge-1", &[("role", "edge"), ("zone", "a")]))
        .expect("create");
    api.create_node(small_node("edge-2", &[("role", "edge"), ("zone", "b")]))
        .expect("create");
    api.create_node(small_node("core-1", &[("role", "core")]))
        .expect("create");
    api.create_node(small_node("bare", &[])).expect("create");
    let nodes = nodes(&api).await;
    let names = |sel: &'static str, fields: bool| {
        let nodes = nodes.clone();
        async move {
            let lp = if fields {
                ListParams::default().fields(sel)
            } else {
                ListParams::default().labels(sel)
            };
            let l = nodes
                .list(&lp)
                .await
                .unwrap_or_else(|e| panic!("list {sel}: {e}"));
            l.items.iter().map(|n| n.name_any()).collect::<Vec<_>>()
        }
    };
    assert_eq!(names("role=edge", false).await, ["edge-1", "edge-2"]);
    assert_eq!(names("role!=edge", false).await, ["bare", "core-1"]);
    assert_eq!(names("role", false).await, ["core-1", "edge-1", "edge-2"]);
    assert_eq!(names("!role", false).await, ["bare"]);
    assert_eq!(names("role=edge,zone=b", false).await, ["edge-2"]);
    assert_eq!(names("zone in (a,c)", false).await, ["edge-1"]);
    assert_eq!(names("metadata.name=core-1", true).await, ["core-1"]);
    assert_eq!(names("metadata.name!=core-1", true).await.len(), 3);
    // Selectors with pagination: a full page of matches, then the rest.
    let l = nodes
        .list(&ListParams::default().labels("role").limit(2))
        .await
        .expect("list");
    assert_eq!(l.items.len(), 2);
    let token = l.metadata.continue_.expect("more to come");
    assert_eq!(
        l.metadata.remaining_item_count, None,
        "not counted with a selector"
    );
    let rest = nodes
        .list(
            &ListParams::default()
                .labels("role")
                .limit(2)
                .continue_token(&token),
        )
        .await
        .expect("page 2");
    assert_eq!(
        rest.items.iter().map(|n| n.name_any()).collect::<Vec<_>>(),
        ["edge-2"]
    );
}

#[tokio::test]
async fn get_node_and_pod_or_a_not_found_status() {
    let api = KubeApiServer::start();
    api.create_node(small_node("n1", &[])).expect("create");
    api.create_pod("kube-flannel", "kube-flannel-ds-abcde", "n1")
        .expect("pod");
    let c = client(&api).await;
    let node = Api::<Node>::all(c.clone())
        .get("n1")
        .await
        .expect("get node");
    assert_eq!(node.metadata.uid.as_ref().map(String::len), Some(36));
    assert!(node.metadata.creation_timestamp.is_some());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "kube-flannel");
    let pod = pods.get("kube-flannel-ds-abcde").await.expect("get pod");
    assert_eq!(pod.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));
    let e = pods.get("missing").await.expect_err("no such pod");
    let s = api_status(&e);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "pods \"missing\" not found");
    let e = Api::<Node>::all(c.clone())
        .get("missing")
        .await
        .expect_err("no such node");
    assert_eq!(api_code(&e), Some(404));
    let e = Api::<Pod>::namespaced(c.clone(), "other")
        .get("kube-flannel-ds-abcde")
        .await;
    assert_eq!(
        e.as_ref().err().and_then(api_code),
        Some(404),
        "pods are per namespace"
    );
    let on_n1 = Api::<Pod>::all(c)
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .expect("pods on n1");
    assert_eq!(on_n1.items.len(), 1);
}
