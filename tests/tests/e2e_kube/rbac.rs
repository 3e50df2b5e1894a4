//! The manifest's ClusterRole against what flanneld really asks of the API:
//! every request flanneld makes, across start-up (by `NODE_NAME` and by its
//! own Pod), a restart, dropped watches and a 410 relist, is one the
//! ClusterRole `flannel` of deploy/kube-flannel-rs.yml allows, and each of
//! the grants is used.

use super::*;
use flannel_cluster::cluster::kube_client::HARNESS_USER_AGENT;
use flannel_tests::deploy::{access_of, Access, Manifest};
use serde_json::json;
use std::collections::BTreeSet;

#[test]
fn every_request_flanneld_makes_is_one_the_manifests_cluster_role_allows() {
    let manifest = Manifest::load();
    let mut c = flannel_cluster::cluster::Cluster::builder()
        .nodes(2)
        .store(StoreKind::Kube)
        .start(false)
        .build();
    // Node 1's flanneld finds its node through its own Pod, as it does when
    // the DaemonSet sets only POD_NAME and POD_NAMESPACE.
    let node1 = c.node(1).name.clone();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kube-flannel-rs-ds-x7k2p", "namespace": "kube-flannel"},
        "spec": {"nodeName": node1, "containers": [{"name": "kube-flannel", "image": "flannel-rs"}]},
    });
    let created = c
        .kube()
        .client()
        .send_json(
            "POST",
            "/api/v1/namespaces/kube-flannel/pods",
            "application/json",
            &pod,
        )
        .expect("create the pod");
    assert!(created.is_success(), "create the pod: {}", created.text());
    c.kube().clear_requests();

    c.start(0);
    let env = [
        ("POD_NAME".to_owned(), "kube-flannel-rs-ds-x7k2p".to_owned()),
        ("POD_NAMESPACE".to_owned(), "kube-flannel".to_owned()),
    ];
    c.start_with_env(1, &[], &env);
    c.wait_ready(0);
    c.wait_ready(1);
    c.wait_all_converged(CONVERGE);
    c.stop(0);
    c.start(0);
    c.wait_ready(0);
    c.kube().drop_watches();
    wait_watches(&c, 2);
    c.kube().expire_resource_versions();
    c.kube().drop_watches();
    wait_watches(&c, 2);
    c.wait_all_converged(CONVERGE);

    let flanneld: Vec<_> = c
        .kube()
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.as_deref() != Some(HARNESS_USER_AGENT))
        .collect();
    let mut used = BTreeSet::new();
    for r in &flanneld {
        let Some(access) = access_of(r) else {
            continue;
        };
        assert!(
            manifest.allows(&access),
            "the ClusterRole does not allow {access:?}, which flanneld needs: {} {}",
            r.method,
            r.path
        );
        used.insert(access);
    }
    let core = |resource: &str, verb: &str| Access {
        api_group: String::new(),
        resource: resource.into(),
        verb: verb.into(),
    };
    let want: BTreeSet<Access> = [
        core("nodes", "get"),
        core("nodes", "list"),
        core("nodes", "watch"),
        core("nodes/status", "patch"),
        core("pods", "get"),
    ]
    .into();
    assert_eq!(
        used, want,
        "flanneld's requests should use every grant of the ClusterRole, and only those"
    );
}
