//! WATCH through kube-runtime's watcher and raw `Api::watch`: the initial
//! list, changes, 410 recovery, dropped streams, bookmarks, timeouts,
//! selectors, streaming lists.

use crate::{next, nodes, small_node, spawn_watcher, until};
use flannel_cluster::kube_api::{KubeApiOptions, KubeApiServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use std::time::{Duration, Instant};

/// A short description of a watcher item, for assertions.
fn desc(e: &Result<Event<Node>, watcher::Error>) -> String {
    match e {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(n)) => format!("InitApply({})", n.name_any()),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(n)) => format!("Apply({})", n.name_any()),
        Ok(Event::Delete(n)) => format!("Delete({})", n.name_any()),
        Err(watcher::Error::WatchError(s)) => format!("WatchError({})", s.code),
        Err(e) => format!("Err({e})"),
    }
}

/// Items until one equal to `want`; returns everything seen, in order.
async fn until_item<S>(s: &mut S, want: &str) -> Vec<String>
where
    S: futures::Stream<Item = Result<Event<Node>, watcher::Error>> + Unpin,
{
    let mut seen = Vec::new();
    loop {
        let d = desc(&next(s, want).await);
        seen.push(d.clone());
        if d == want {
            return seen;
        }
    }
}

fn fast_bookmarks() -> KubeApiServer {
    KubeApiServer::start_with(KubeApiOptions::new().bookmark_interval(Duration::from_millis(100)))
        .expect("start the stand-in")
}

#[tokio::test]
async fn watcher_lists_then_follows_changes() {
    let api = fast_bookmarks();
    for n in ["a", "b", "c"] {
        api.create_node(small_node(n, &[])).expect("create");
    }
    let mut w = spawn_watcher(nodes(&api).await, watcher::Config::default());
    let init: Vec<String> = until_item(&mut w, "InitDone").await;
    assert_eq!(
        init,
        [
            "Init",
            "InitApply(a)",
            "InitApply(b)",
            "InitApply(c)",
            "InitDone"
        ]
    );
    api.create_node(small_node("d", &[])).expect("create");
    assert_eq!(desc(&next(&mut w, "Apply(d)").await), "Apply(d)");
    api.set_node_annotation("a", "k", Some("v"))
        .expect("annotate");
    match next(&mut w, "Apply(a)").await {
        Ok(Event::Apply(n)) => {
            assert_eq!(n.name_any(), "a");
            assert_eq!(n.annotations().get("k").map(String::as_str), Some("v"));
            assert_eq!(
                n.resource_version(),
                Some(api.resource_version().to_string())
            );
        }
        other => panic!("expected Apply(a), got {}", desc(&other)),
    }
    api.delete_node("b").expect("delete");
    assert_eq!(desc(&next(&mut w, "Delete(b)").await), "Delete(b)");
    // What the watcher sent: one paginated list, then a watch from its
    // resourceVersion with bookmarks.
    let lists = api.requests_to("GET", "/api/v1/nodes");
    let first = &lists[0];
    assert_eq!(first.query_param("limit").as_deref(), Some("500"));
    assert_eq!(first.query_param("watch"), None);
    let watch = &lists[1];
    assert_eq!(watch.query_param("watch").as_deref(), Some("true"));
    assert_eq!(
        watch.query_param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(watch.query_param("timeoutSeconds").as_deref(), Some("290"));
    assert_eq!(watch.query_param("resourceVersion"), Some("4".to_owned()));
}

#[tokio::test]
async fn expired_version_makes_the_watcher_relist_and_go_on() {
    let api = fast_bookmarks();
    api.create_node(small_node("a", &[])).expect("create");
    let mut w = spawn_watcher(nodes(&api).await, watcher::Config::default());
    until_item(&mut w, "InitDone").await;
    until("the watch to be open", || api.open_watches() == 1).await;
    // A change, then everything handed out so far is too old, then the
    // stream is cut: the watcher resumes from its version, gets the 410
    // ERROR event, and lists again.
    api.create_node(small_node("b", &[])).expect("create");
    api.expire_resource_versions();
    api.drop_watches();
    let seen = until_item(&mut w, "InitDone").await;
    let pos = |s: &str| seen.iter().position(|x| x == s);
    let gone = pos("WatchError(410)").unwrap_or_else(|| panic!("no 410 in {seen:?}"));
    assert!(
        pos("Init").is_some_and(|i| i > gone),
        "relist after the 410: {seen:?}"
    );
    assert!(seen.contains(&"InitApply(b)".to_owned()), "{seen:?}");
    api.create_node(small_node("c", &[])).expect("create");
    assert_eq!(desc(&next(&mut w, "Apply(c)").await), "Apply(c)");
    let lists = api
        .requests_to("GET", "/api/v1/nodes")
        .iter()
        .filter(|r| r.query_param("watch").is_none())
        .count();
    assert_eq!(lists, 2, "one list at start, one after the 410");
}

#[tokio::test]
async fn dropped_watch_resumes_from_its_version_without_relisting() {
    let api = KubeApiServer::start();
    api.create_node(small_node("a", &[])).expect("create");
    let mut w = spawn_watcher(nodes(&api).await, watcher::Config::default());
    until_item(&mut w, "InitDone").await;
    until("the watch to be open", || api.open_watches() == 1).await;
    let rv_before = api.resource_version();
    let watches = || {
        api.requests_to("GET", "/api/v1/nodes")
            .iter()
            .filter(|r| r.query_param("watch").is_some())
            .count()
    };
    api.drop_watches();
    until("the watcher to watch again", || watches() == 2).await;
    api.create_node(small_node("b", &[])).expect("create");
    // Apply(b) arrives (maybe after a WatchFailed error): no Init.
    let seen = until_item(&mut w, "Apply(b)").await;
    assert!(!seen.contains(&"Init".to_owned()), "no relist: {seen:?}");
    let reqs = api.requests_to("GET", "/api/v1/nodes");
    let watches: Vec<_> = reqs
        .iter()
        .filter(|r| r.query_param("watch").is_some())
        .collect();
    assert!(watches.len() >= 2, "reconnected");
    assert_eq!(
        watches[1].query_param("resourceVersion"),
        Some(rv_before.to_string()),
        "resumed from the last version it had"
    );
    assert_eq!(reqs.len() - watches.len(), 1, "listed once");
}

#[tokio::test]
async fn raw_watch_bookmarks_timeout_and_too_old() {
    let api = fast_bookmarks();
    api.create_node(small_node("a", &[])).expect("create");
    api.create_node(small_node("b", &[])).expect("create");
    let nodes = nodes(&api).await;
    let t0 = Instant::now();
    let mut s = nodes
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("watch")
        .boxed();
    let (mut added, mut bookmarks) = (Vec::new(), 0);
    while let Some(ev) = s.next().await {
        match ev.expect("watch event") {
            WatchEvent::Added(n) => added.push(n.name_any()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata.resource_version,
                    api.resource_version().to_string()
                );
                assert_eq!(b.types.kind, "Node");
                bookmarks += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let took = t0.elapsed();
    assert_eq!(
        added,
        ["a", "b"],
        "rv=0 starts with the current state as ADDED"
    );
    assert!(bookmarks >= 3, "bookmarks every 100 ms: {bookmarks}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // From a compacted version: 200, one ERROR event with a 410 Status, end.
    api.expire_resource_versions();
    let mut s = nodes
        .watch(&WatchParams::default(), "2")
        .await
        .expect("watch")
        .boxed();
    match next(&mut s, "the ERROR event").await.expect("event") {
        WatchEvent::Error(st) => {
            assert_eq!((st.code, st.reason.as_str()), (410, "Expired"));
            assert!(
                st.message.starts_with("too old resource version: 2 ("),
                "{}",
                st.message
            );
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert!(s.next().await.is_none(), "the stream ends after the 410");
}

#[tokio::test]
async fn selector_watch_turns_label_changes_into_added_and_deleted() {
    let api = KubeApiServer::start();
    api.create_node(small_node("n1", &[("role", "core")]))
        .expect("create");
    let nodes = nodes(&api).await;
    let rv = api.resource_version().to_string();
    let wp = WatchParams::default()
        .labels("role=edge")
        .fields("metadata.name=n1");
    let mut s = nodes.watch(&wp, &rv).await.expect("watch").boxed();
    api.create_node(small_node("n2", &[("role", "edge")]))
        .expect("create");
    api.patch_node(
        "n1",
        &serde_json::json!({"metadata": {"labels": {"role": "edge"}}}),
    )
    .expect("label");
    api.patch_node(
        "n1",
        &serde_json::json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .expect("label");
    api.patch_node(
        "n1",
        &serde_json::json!({"metadata": {"labels": {"role": "core"}}}),
    )
    .expect("label");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(match next(&mut s, "an event").await.expect("event") {
            WatchEvent::Added(n) => ("ADDED", n),
            WatchEvent::Modified(n) => ("MODIFIED", n),
            WatchEvent::Deleted(n) => ("DELETED", n),
            other => panic!("unexpected {other:?}"),
        });
    }
    let kinds: Vec<String> = got
        .iter()
        .map(|(t, n)| format!("{t} {}", n.name_any()))
        .collect();
    assert_eq!(kinds, ["ADDED n1", "MODIFIED n1", "DELETED n1"]);
    // The DELETED event carries the last matching content, at the version
    // of the change that made it stop matching.
    let gone = &got[2].1;
    assert_eq!(gone.labels().get("role").map(String::as_str), Some("edge"));
    assert_eq!(
        gone.resource_version(),
        Some(api.resource_version().to_string())
    );
    let lp = ListParams::default().labels("role=edge");
    assert_eq!(nodes.list(&lp).await.expect("list").items.len(), 1);
}

#[tokio::test]
async fn streaming_list_ends_its_initial_events_with_a_bookmark() {
    let api = fast_bookmarks();
    for n in ["a", "b"] {
        api.create_node(small_node(n, &[])).expect("create");
    }
    let cfg = watcher::Config::default().streaming_lists();
    let mut w = spawn_watcher(nodes(&api).await, cfg);
    let init = until_item(&mut w, "InitDone").await;
    assert_eq!(init, ["Init", "InitApply(a)", "InitApply(b)", "InitDone"]);
    api.delete_node("a").expect("delete");
    assert_eq!(desc(&next(&mut w, "Delete(a)").await), "Delete(a)");
    let r = &api.requests_to("GET", "/api/v1/nodes")[0];
    assert_eq!(r.query_param("sendInitialEvents").as_deref(), Some("true"));
    assert_eq!(
        r.query_param("resourceVersionMatch").as_deref(),
        Some("NotOlderThan")
    );
}
