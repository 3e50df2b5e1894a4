//! The admin listener: the same API plus the `/_standin/` controls, never
//! subject to the faults it injects, and left out of the request log.

use crate::{api_code, client_from_yaml, client_without_retries, raw, small_node, until};
use flannel_cluster::kube_api::{KubeApiOptions, KubeApiServer, NodeIpam};
use serde_json::Value;
use std::time::Duration;

async fn json(client: &kube::Client, method: &str, path: &str) -> Value {
    let text = raw(client, method, path, None, "")
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

#[tokio::test]
async fn the_admin_listener_injects_faults_it_is_immune_to_and_pauses_the_ipam() {
    let ipam = NodeIpam::new("10.244.0.0/16", 24).expect("ipam");
    let opts = KubeApiOptions::new()
        .tls()
        .admin_listen("127.0.0.1:0".parse().expect("addr"))
        .node_ipam(ipam);
    let api = KubeApiServer::start_with(opts).expect("start");
    let admin_url = api.admin_url().expect("an admin listener");
    assert_ne!(admin_url, api.url());
    let yaml = api.kubeconfig_yaml();
    let admin = client_from_yaml(&yaml.replace(&api.url(), &admin_url)).await;
    let main = client_without_retries(&api).await;

    // The controls: on the admin listener only, and with the token only.
    let e = raw(&main, "GET", "/_standin/status", None, "")
        .await
        .expect_err("not on the API listener");
    assert_eq!(api_code(&e), Some(404));
    let intruder = client_from_yaml(
        &yaml
            .replace(&api.url(), &admin_url)
            .replace(api.token().expect("token"), "wrong"),
    )
    .await;
    let e = raw(
        &intruder,
        "POST",
        "/_standin/faults/down?mode=close",
        None,
        "",
    )
    .await
    .expect_err("needs the token");
    assert_eq!(api_code(&e), Some(401));
    let st = json(&admin, "GET", "/_standin/status").await;
    assert_eq!(
        (st["down"].clone(), st["openWatches"].as_u64()),
        (Value::Null, Some(0))
    );

    // Down: the API listener closes everything; the admin listener still
    // answers, writes, and brings it back.
    json(&admin, "POST", "/_standin/faults/down?mode=close").await;
    let e = raw(&main, "GET", "/api/v1/nodes", None, "")
        .await
        .expect_err("down");
    assert_eq!(api_code(&e), None, "no HTTP answer while down: {e}");
    let node = small_node("n1", &[]).to_string();
    raw(
        &admin,
        "POST",
        "/api/v1/nodes",
        Some("application/json"),
        &node,
    )
    .await
    .expect("created through the admin listener");
    assert_eq!(
        json(&admin, "GET", "/_standin/status").await["down"],
        "close"
    );
    json(&admin, "POST", "/_standin/faults/up").await;
    let list: Value = serde_json::from_str(
        &raw(&main, "GET", "/api/v1/nodes", None, "")
            .await
            .expect("up again"),
    )
    .expect("a list");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    json(&admin, "POST", "/_standin/faults/fail-all?on=true").await;
    let e = raw(&main, "GET", "/api/v1/nodes/n1", None, "")
        .await
        .expect_err("500");
    assert_eq!(api_code(&e), Some(500));
    raw(&admin, "GET", "/api/v1/nodes/n1", None, "")
        .await
        .expect("the admin listener has no faults");
    json(&admin, "POST", "/_standin/faults/clear").await;

    // The log holds what came in on the API listener (GETs only, one of
    // them the 404 probe of a control), nothing of the admin's.
    let logged = api.requests();
    assert!(!logged.is_empty());
    assert!(
        logged
            .iter()
            .all(|r| r.method == "GET" && (!r.path.starts_with("/_standin") || r.status == 404)),
        "{logged:#?}"
    );
    let listed = json(&admin, "GET", "/_standin/requests").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(logged.len()));
    assert_eq!(listed["items"][0]["method"], "GET");

    // IPAM paused: a new node waits for its range until resumed.
    json(&admin, "POST", "/_standin/ipam/pause").await;
    assert_eq!(
        json(&admin, "GET", "/_standin/status").await["nodeIpamPaused"],
        true
    );
    api.create_node(small_node("late", &[])).expect("create");
    // A window to see nothing happen, not an assertion.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.node("late").expect("late")["spec"]["podCIDR"].is_null());
    json(&admin, "POST", "/_standin/ipam/resume").await;
    until("late to get a range", || {
        api.node("late")
            .is_some_and(|n| n["spec"]["podCIDR"].is_string())
    })
    .await;

    // Mistakes are answered as such.
    for (path, code) in [
        ("/_standin/faults/nope", 404),
        ("/_standin/faults/down?mode=sideways", 400),
        ("/_standin/faults/delay?ms=soon", 400),
    ] {
        let e = raw(&admin, "POST", path, None, "").await.expect_err(path);
        assert_eq!(api_code(&e), Some(code), "{path}: {e}");
    }
    let e = raw(&admin, "DELETE", "/_standin/status", None, "")
        .await
        .expect_err("method");
    assert_eq!(api_code(&e), Some(405));
}
