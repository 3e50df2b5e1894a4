//! Writes: strategic merge and merge patches of `nodes/NAME` and
//! `nodes/NAME/status`, JSON patch, create/replace/delete, and the Status
//! answers to malformed requests.

use crate::{api_code, api_status, client, nodes, raw, small_node};
use flannel_cluster::kube_api::{KubeApiServer, NodeFixture};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

fn conditions(n: &Node) -> Vec<(String, String, Option<String>)> {
    let s = n.status.as_ref().expect("status");
    s.conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

#[tokio::test]
async fn strategic_status_patch_adds_annotations_and_merges_conditions_by_type() {
    let api = KubeApiServer::start();
    api.create_node(NodeFixture::new("n1", 1).pod_cidr("10.244.1.0/24").build())
        .expect("create");
    let nodes = nodes(&api).await;
    let before = nodes.get("n1").await.expect("get");
    assert_eq!(conditions(&before).len(), 5);
    let rv0 = api.resource_version();
    let patch = json!({
        "metadata": {"annotations": {
            "flannel.alpha.coreos.com/public-ip": "10.0.0.2",
            "flannel.alpha.coreos.com/backend-type": "vxlan",
        }},
        "spec": {"podCIDR": "10.99.0.0/24"},
        "status": {"conditions": [{
            "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
            "message": "Flannel is running on this node",
            "lastTransitionTime": "2025-02-02T00:00:00Z", "lastHeartbeatTime": "2025-02-02T00:00:00Z",
        }]},
    });
    let after = nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Strategic(patch.clone()),
        )
        .await
        .expect("patch nodes/n1/status");
    assert_eq!(
        after
            .annotations()
            .get("flannel.alpha.coreos.com/public-ip")
            .map(String::as_str),
        Some("10.0.0.2")
    );
    assert!(
        after
            .annotations()
            .contains_key("node.alpha.kubernetes.io/ttl"),
        "others kept"
    );
    let conds = conditions(&after);
    assert_eq!(conds.len(), 5, "merged by type, none dropped: {conds:?}");
    assert!(conds.contains(&(
        "NetworkUnavailable".into(),
        "False".into(),
        Some("FlannelIsUp".into())
    )));
    assert!(conds.contains(&("Ready".into(), "True".into(), Some("KubeletReady".into()))));
    assert_eq!(
        after.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.244.1.0/24"),
        "the status subresource does not change spec"
    );
    assert_eq!(api.resource_version(), rv0 + 1, "one change, one version");
    assert_eq!(after.resource_version(), Some((rv0 + 1).to_string()));
    assert_eq!(
        api.node("n1").map(|n| n["metadata"]["annotations"].clone()),
        Some(serde_json::to_value(after.annotations()).expect("json"))
    );

    let sent = api.requests_to("PATCH", "/api/v1/nodes/n1/status");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&sent[0].body).expect("json body"),
        patch
    );
    assert_eq!(sent[0].status, 200);

    // The same patch again changes nothing: no new version.
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("patch again");
    assert_eq!(
        api.resource_version(),
        rv0 + 1,
        "a no-op write is not a change"
    );
}

#[tokio::test]
async fn merge_patch_null_deletes_and_each_endpoint_keeps_the_other_part() {
    let api = KubeApiServer::start();
    let mut n = NodeFixture::new("n1", 1).build();
    n["metadata"]["annotations"] = json!({"a": "1", "b": "2"});
    api.create_node(n).expect("create");
    let nodes = nodes(&api).await;
    let p = json!({
        "metadata": {"annotations": {"a": null}},
        "spec": {"unschedulable": true},
        "status": {"conditions": []},
    });
    let after = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(p))
        .await
        .expect("merge patch nodes/n1");
    assert_eq!(after.annotations().len(), 1);
    assert_eq!(after.annotations().get("b").map(String::as_str), Some("2"));
    assert_eq!(
        after.spec.as_ref().and_then(|s| s.unschedulable),
        Some(true)
    );
    assert_eq!(
        conditions(&after).len(),
        5,
        "nodes/NAME does not change status"
    );
    let sent = &api.requests_to("PATCH", "/api/v1/nodes/n1")[0];
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/merge-patch+json")
    );

    // A merge patch replaces lists whole (no merge keys).
    let one = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let after = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(one))
        .await
        .expect("merge patch nodes/n1/status");
    assert_eq!(conditions(&after), [("Ready".into(), "False".into(), None)]);

    // JSON patch (RFC 6902), and a failing `test` op is a 422.
    let c = client(&api).await;
    let ops = r#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#;
    let out = raw(
        &c,
        "PATCH",
        "/api/v1/nodes/n1",
        Some("application/json-patch+json"),
        ops,
    )
    .await
    .expect("json patch");
    assert!(out.contains(r#""x":"y""#));
    let ops = r#"[{"op":"test","path":"/metadata/name","value":"other"}]"#;
    let e = raw(
        &c,
        "PATCH",
        "/api/v1/nodes/n1",
        Some("application/json-patch+json"),
        ops,
    )
    .await
    .expect_err("test op fails");
    assert_eq!(api_code(&e), Some(422));
}

#[tokio::test]
async fn create_replace_delete_through_the_api() {
    let api = KubeApiServer::start();
    let nodes = nodes(&api).await;
    let n: Node = serde_json::from_value(small_node("x1", &[("role", "a")])).expect("node");
    let created = nodes
        .create(&PostParams::default(), &n)
        .await
        .expect("create");
    assert_eq!(created.uid().map(|u| u.len()), Some(36));
    let e = nodes
        .create(&PostParams::default(), &n)
        .await
        .expect_err("exists");
    assert_eq!(api_status(&e).reason, "AlreadyExists");

    let mut stale = created.clone();
    api.set_node_annotation("x1", "touched", Some("yes"))
        .expect("annotate");
    stale.labels_mut().insert("role".into(), "b".into());
    let e = nodes
        .replace("x1", &PostParams::default(), &stale)
        .await
        .expect_err("stale");
    let s = api_status(&e);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    let mut fresh = nodes.get("x1").await.expect("get");
    fresh.labels_mut().insert("role".into(), "b".into());
    let replaced = nodes
        .replace("x1", &PostParams::default(), &fresh)
        .await
        .expect("replace");
    assert_eq!(replaced.labels().get("role").map(String::as_str), Some("b"));
    assert_eq!(replaced.uid(), created.uid(), "the server keeps uid");

    let gone = nodes
        .delete("x1", &DeleteParams::default())
        .await
        .expect("delete");
    let last = gone.left().expect("the deleted object");
    assert_eq!(
        last.resource_version(),
        Some(api.resource_version().to_string())
    );
    assert_eq!(
        api_code(&nodes.get("x1").await.expect_err("deleted")),
        Some(404)
    );
    let e = nodes
        .delete("x1", &DeleteParams::default())
        .await
        .expect_err("twice");
    assert_eq!(api_code(&e), Some(404));
    assert!(api.node("x1").is_none());
}

#[tokio::test]
async fn malformed_requests_get_a_status_not_a_crash() {
    let api = KubeApiServer::start();
    api.create_node(small_node("n1", &[])).expect("create");
    let c = client(&api).await;
    let smp = Some("application/strategic-merge-patch+json");
    let cases: &[(&str, &str, Option<&str>, &str, u16)] = &[
        ("PATCH", "/api/v1/nodes/n1", smp, "{", 400),
        ("PATCH", "/api/v1/nodes/n1", smp, "[1]", 400),
        (
            "PATCH",
            "/api/v1/nodes/n1",
            smp,
            r#"{"metadata":{"name":"other"}}"#,
            400,
        ),
        ("PATCH", "/api/v1/nodes/n1", smp, r#"{"kind":"Pod"}"#, 400),
        (
            "PATCH",
            "/api/v1/nodes/n1",
            Some("application/apply-patch+yaml"),
            "{}",
            415,
        ),
        ("PATCH", "/api/v1/nodes/n1", None, "{}", 415),
        ("PATCH", "/api/v1/nodes/missing/status", smp, "{}", 404),
        (
            "PATCH",
            "/api/v1/nodes/n1",
            smp,
            r#"{"metadata":{"resourceVersion":"1"}}"#,
            409,
        ),
        ("POST", "/api/v1/nodes", Some("application/json"), "[]", 400),
        (
            "POST",
            "/api/v1/nodes",
            Some("application/json"),
            "\u{0}",
            400,
        ),
        (
            "POST",
            "/api/v1/nodes",
            Some("application/json"),
            r#"{"metadata":{"name":"Bad_Name"}}"#,
            422,
        ),
        (
            "POST",
            "/api/v1/nodes",
            Some("application/json"),
            r#"{"metadata":{}}"#,
            422,
        ),
        (
            "PUT",
            "/api/v1/nodes/n1",
            Some("application/json"),
            r#"{"metadata":{"name":"n2"}}"#,
            400,
        ),
        (
            "PUT",
            "/api/v1/nodes/none",
            Some("application/json"),
            r#"{"metadata":{"name":"none"}}"#,
            404,
        ),
        ("DELETE", "/api/v1/nodes/n1/status", None, "", 405),
        ("POST", "/api/v1/pods", Some("application/json"), "{}", 405),
        ("GET", "/api/v1/nodes/n1/proxy", None, "", 404),
        ("GET", "/apis/apps/v1/deployments", None, "", 404),
        (
            "GET",
            "/api/v1/nodes?timeoutSeconds=x&watch=1",
            None,
            "",
            400,
        ),
    ];
    for (method, path, ct, body, code) in cases {
        let e = raw(&c, method, path, *ct, body)
            .await
            .expect_err(&format!("{method} {path} {body}"));
        let s = api_status(&e);
        assert_eq!(s.code, *code, "{method} {path} {body}: {s:?}");
        assert!(!s.message.is_empty() && !s.reason.is_empty(), "{s:?}");
    }
    assert!(api.node("n1").is_some(), "nothing broke");
    let generated = raw(
        &c,
        "POST",
        "/api/v1/nodes",
        Some("application/json"),
        r#"{"metadata":{"generateName":"gen-"}}"#,
    )
    .await
    .expect("generateName");
    let v: Value = serde_json::from_str(&generated).expect("json");
    let name = v["metadata"]["name"].as_str().expect("a name");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}
