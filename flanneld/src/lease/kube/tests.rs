//! The Kubernetes store against the API stand-in of the cluster library
//! (`flannel_cluster::kube_api`: TLS, a bearer token, kube-controller-
//! manager's node IPAM): the contract every store passes, then what is
//! specific to Kubernetes — waiting for a podCIDR, flannel's annotations
//! byte for byte, the VtepMAC kept, NetworkUnavailable, watch breaks.
//!
//! Talks only to its own API stand-in on loopback; touches no kernel state.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flannel_cluster::kube_api::{DownMode, KubeApiOptions, KubeApiServer, NodeFixture, NodeIpam};
use serde_json::{json, Value};
use tokio::time::timeout;

use super::{KubeConfig, KubeStore};
use crate::lease::contract_tests::{
    attrs, config, expect_quiet, net, next_event, Backing, TempDir,
};
use crate::lease::{Lease, LeaseAttrs, LeaseEvent, LeaseStore, LeaseTiming};

const PREFIX: &str = "flannel.alpha.coreos.com/";
const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// A stand-in API server (HTTPS, token, node IPAM for 10.244.0.0/16) and a
/// directory with its kubeconfig and net-conf.json.
struct KubeBacking {
    api: KubeApiServer,
    dir: TempDir,
    next: AtomicU32,
    /// Which node each store instance is (by the Arc's address).
    names: Mutex<HashMap<usize, String>>,
}

fn key(store: &Arc<dyn LeaseStore>) -> usize {
    Arc::as_ptr(store) as *const () as usize
}

impl KubeBacking {
    fn start(ipam: bool) -> KubeBacking {
        let mut opts = KubeApiOptions::new().tls();
        if ipam {
            let ipam = NodeIpam::new("10.244.0.0/16", 24).expect("ipam settings");
            opts = opts.node_ipam(ipam);
        }
        let api = KubeApiServer::start_with(opts).expect("start the stand-in");
        let dir = TempDir::new("kube");
        api.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("write kubeconfig");
        std::fs::write(dir.path().join("net-conf.json"), NET_CONF).expect("write net-conf");
        KubeBacking {
            api,
            dir,
            next: AtomicU32::new(1),
            names: Mutex::new(HashMap::new()),
        }
    }

    fn config(&self, node: &str) -> KubeConfig {
        KubeConfig {
            api_url: None,
            kubeconfig: Some(self.dir.path().join("kubeconfig")),
            annotation_prefix: "flannel.alpha.coreos.com".into(),
            set_network_unavailable: true,
            net_config_path: self.dir.path().join("net-conf.json"),
            node_name: Some(node.into()),
            pod_name: None,
            pod_namespace: None,
        }
    }

    async fn store(&self, node: &str) -> KubeStore {
        KubeStore::connect(self.config(node))
            .await
            .unwrap_or_else(|e| panic!("connect as {node}: {e}"))
    }

    /// Registers a Node as a kubelet would (the IPAM controller then gives
    /// it a podCIDR).
    fn register(&self, fixture: NodeFixture) -> String {
        self.api
            .create_node(fixture.build())
            .unwrap_or_else(|e| panic!("create node {}: {e}", fixture.name));
        fixture.name
    }

    fn fresh_name(&self) -> (String, u32) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (format!("node-{n}"), n)
    }

    fn annotation(&self, node: &str, short: &str) -> Option<String> {
        let n = self.api.node(node)?;
        n["metadata"]["annotations"][format!("{PREFIX}{short}")]
            .as_str()
            .map(str::to_owned)
    }

    /// Starts `store`'s acquire on node `name`, which has no podCIDR yet,
    /// checks that it waits, assigns `cidr` as node IPAM would, and
    /// returns the lease the acquire then ends with.
    async fn acquire_after_pod_cidr(
        &self,
        store: &Arc<KubeStore>,
        name: &str,
        (cfg, attrs): (crate::netconf::NetConfig, LeaseAttrs),
        cidr: &str,
    ) -> Lease {
        let s = Arc::clone(store);
        let task = tokio::spawn(async move { s.acquire(&cfg, &attrs, None).await });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!task.is_finished(), "acquire must wait for the podCIDR");
        self.api
            .patch_node(
                name,
                &json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
            )
            .expect("assign the podCIDR");
        timeout(Duration::from_secs(10), task)
            .await
            .expect("acquire returns once the podCIDR is set")
            .expect("task")
            .expect("acquire")
    }
}

#[async_trait::async_trait]
impl Backing for KubeBacking {
    async fn new(_timing: LeaseTiming) -> Self {
        KubeBacking::start(true)
    }
    async fn node(&self) -> Arc<dyn LeaseStore> {
        let (name, n) = self.fresh_name();
        self.register(NodeFixture::new(&name, n));
        let store: Arc<dyn LeaseStore> = Arc::new(self.store(&name).await);
        self.names.lock().expect("names").insert(key(&store), name);
        store
    }
    async fn restart(&self, store: &Arc<dyn LeaseStore>) -> Arc<dyn LeaseStore> {
        let name = self.names.lock().expect("names")[&key(store)].clone();
        let again: Arc<dyn LeaseStore> = Arc::new(self.store(&name).await);
        self.names.lock().expect("names").insert(key(&again), name);
        again
    }
    async fn remove(&self, store: &dyn LeaseStore, _lease: &Lease) {
        let addr = store as *const dyn LeaseStore as *const () as usize;
        let name = self.names.lock().expect("names")[&addr].clone();
        self.api.delete_node(&name).expect("the node existed");
    }
}

mod paging;
mod v6;

mod contract {
    crate::lease::contract_tests::lease_store_contract!(super::KubeBacking);
}

fn net_conf() -> crate::netconf::NetConfig {
    config(NET_CONF)
}

/// Node `name` annotated exactly as upstream flannel annotates it.
fn upstream(name: &str, n: u32, cidr: &str) -> NodeFixture {
    NodeFixture::new(name, n).pod_cidr(cidr).flannel()
}

#[tokio::test]
async fn a_node_without_a_pod_cidr_waits_then_proceeds() {
    let b = KubeBacking::start(false);
    let name = b.register(NodeFixture::new("late", 1));
    let store = Arc::new(b.store(&name).await);
    let lease = b
        .acquire_after_pod_cidr(&store, &name, (net_conf(), attrs(1, 0)), "10.244.7.0/24")
        .await;
    assert_eq!(lease.subnet, net("10.244.7.0/24"));
}

#[tokio::test]
async fn a_pod_cidr_outside_the_network_is_one_clear_error() {
    let b = KubeBacking::start(false);
    let name = b.register(NodeFixture::new("odd", 1).pod_cidr("10.99.3.0/24"));
    let err = b
        .store(&name)
        .await
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .expect_err("outside Network");
    let msg = err.to_string();
    assert!(
        msg.contains("10.99.3.0/24") && msg.contains("10.244.0.0/16") && msg.contains("odd"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

/// The annotations are upstream flannel's, byte for byte, written once as a
/// strategic-merge patch of the status subresource, and not again when
/// nothing changed.
#[tokio::test]
async fn annotations_are_flannels_and_written_only_when_they_differ() {
    let b = KubeBacking::start(true);
    let name = b.register(NodeFixture::new("n1", 1));
    let lease = b
        .store(&name)
        .await
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .expect("acquire");
    let node = b.api.node(&name).expect("node");
    let a = &node["metadata"]["annotations"];
    assert_eq!(
        a[format!("{PREFIX}backend-data")],
        r#"{"VNI":1,"VtepMAC":"0a:58:0a:00:00:01"}"#
    );
    assert_eq!(a[format!("{PREFIX}backend-type")], "vxlan");
    assert_eq!(a[format!("{PREFIX}kube-subnet-manager")], "true");
    assert_eq!(a[format!("{PREFIX}public-ip")], "192.168.64.1");
    assert_eq!(
        a["kubeadm.alpha.kubernetes.io/cri-socket"], "unix:///run/containerd/containerd.sock",
        "other annotations are kept"
    );
    assert_eq!(
        node["spec"]["podCIDR"].as_str(),
        Some(lease.subnet.to_string().as_str())
    );
    let patches = b.api.requests_to("PATCH", "/api/v1/nodes/");
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(
        patches[0].path_only(),
        format!("/api/v1/nodes/{name}/status")
    );
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    // A restart with the same attributes writes nothing.
    b.store(&name)
        .await
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .expect("acquire again");
    assert_eq!(b.api.requests_to("PATCH", "/api/v1/nodes/").len(), 1);
}

/// The VtepMAC in the node's own backend-data (upstream flannel's, or
/// ours) is kept, and node-public-ip replaces --public-ip.
#[tokio::test]
async fn the_nodes_vtep_mac_and_public_ip_are_kept() {
    let b = KubeBacking::start(false);
    let name = b.register(upstream("switched", 7, "10.244.7.0/24"));
    b.api
        .set_node_annotation(
            &name,
            &format!("{PREFIX}node-public-ip"),
            Some("203.0.113.7"),
        )
        .expect("annotate");
    let hints = b.store(&name).await.node_hints().await.expect("hints");
    assert_eq!(hints.public_ip, Some(Ipv4Addr::new(203, 0, 113, 7)));
    let mac = b.annotation(&name, "backend-data").expect("backend-data");
    let mac: Value = serde_json::from_str(&mac).expect("json");
    assert_eq!(
        hints.vtep_mac.map(|m| crate::mac::format(&m)),
        mac["VtepMAC"].as_str().map(str::to_owned)
    );
    // Ours survives a restart the same way.
    let store = b.store(&name).await;
    store
        .acquire(&net_conf(), &attrs(1, 5), None)
        .await
        .expect("acquire");
    let hints = b.store(&name).await.node_hints().await.expect("hints");
    assert_eq!(
        hints.vtep_mac.map(|m| crate::mac::format(&m)).as_deref(),
        Some("0a:58:0a:00:05:01")
    );
}

#[tokio::test]
async fn a_custom_prefix_with_a_slash_finds_its_own_mac_again() {
    let b = KubeBacking::start(false);
    let name = b.register(NodeFixture::new("custom", 1).pod_cidr("10.244.1.0/24"));
    let mut cfg = b.config(&name);
    cfg.annotation_prefix = "example.com/team".into();
    let store = KubeStore::connect(cfg.clone()).await.expect("connect");
    store
        .acquire(&net_conf(), &attrs(1, 9), None)
        .await
        .expect("acquire");
    let node = b.api.node(&name).expect("node");
    assert_eq!(
        node["metadata"]["annotations"]["example.com/team-backend-data"],
        r#"{"VNI":1,"VtepMAC":"0a:58:0a:00:09:01"}"#
    );
    let again = KubeStore::connect(cfg).await.expect("connect");
    let hints = again.node_hints().await.expect("hints");
    assert_eq!(hints.vtep_mac, Some([0x0a, 0x58, 0x0a, 0, 9, 1]));
}

#[tokio::test]
async fn public_ip_overwrite_is_what_peers_see() {
    let b = KubeBacking::start(false);
    let name = b.register(NodeFixture::new("natted", 1).pod_cidr("10.244.1.0/24"));
    b.api
        .set_node_annotation(
            &name,
            &format!("{PREFIX}public-ip-overwrite"),
            Some("198.51.100.1"),
        )
        .expect("annotate");
    let lease = b
        .store(&name)
        .await
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .expect("acquire");
    assert_eq!(lease.attrs.public_ip, Ipv4Addr::new(198, 51, 100, 1));
    assert_eq!(
        b.annotation(&name, "public-ip").as_deref(),
        Some("198.51.100.1")
    );
}

#[tokio::test]
async fn network_unavailable_is_set_false_unless_told_not_to() {
    let b = KubeBacking::start(true);
    let name = b.register(NodeFixture::new("ready", 1));
    let store = b.store(&name).await;
    let lease = store
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .expect("acquire");
    let before = b.api.node(&name).expect("node")["status"]["conditions"]
        .as_array()
        .map_or(0, Vec::len);
    store.datapath_ready(&lease).await.expect("ready");
    let node = b.api.node(&name).expect("node");
    let conditions = node["status"]["conditions"].as_array().expect("conditions");
    let nu: Vec<&Value> = conditions
        .iter()
        .filter(|c| c["type"] == "NetworkUnavailable")
        .collect();
    assert_eq!(nu.len(), 1, "{conditions:#?}");
    assert_eq!(
        (&nu[0]["status"], &nu[0]["reason"]),
        (&json!("False"), &json!("FlannelIsUp"))
    );
    let others = conditions
        .iter()
        .filter(|c| c["type"] != "NetworkUnavailable")
        .count();
    assert!(
        others >= before.saturating_sub(1) && others > 0,
        "other conditions kept"
    );

    let name = b.register(NodeFixture::new("quiet", 2));
    let mut cfg = b.config(&name);
    cfg.set_network_unavailable = false;
    let store = KubeStore::connect(cfg).await.expect("connect");
    let lease = store
        .acquire(&net_conf(), &attrs(2, 0), None)
        .await
        .expect("acquire");
    b.api.clear_requests();
    store.datapath_ready(&lease).await.expect("ready");
    assert!(b.api.requests_to("PATCH", "/api/v1/nodes/").is_empty());
}

#[tokio::test]
async fn the_node_name_comes_from_the_pod_when_node_name_is_unset() {
    let b = KubeBacking::start(true);
    let name = b.register(NodeFixture::new("from-pod", 1));
    b.api
        .create_pod("kube-flannel", "kube-flannel-ds-abcde", &name)
        .expect("pod");
    let mut cfg = b.config("ignored");
    cfg.node_name = None;
    cfg.pod_name = Some("kube-flannel-ds-abcde".into());
    cfg.pod_namespace = Some("kube-flannel".into());
    let store = KubeStore::connect(cfg).await.expect("connect");
    store
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .expect("acquire");
    assert_eq!(
        b.annotation(&name, "public-ip").as_deref(),
        Some("192.168.64.1")
    );
}

#[tokio::test]
async fn a_refused_token_is_an_error_naming_the_permissions() {
    let b = KubeBacking::start(true);
    let name = b.register(NodeFixture::new("n1", 1));
    let path = b.dir.path().join("kubeconfig");
    let text = std::fs::read_to_string(&path).expect("kubeconfig");
    let token = b.api.token().expect("token").to_owned();
    std::fs::write(&path, text.replace(&token, "wrong-token")).expect("write");
    let store = b.store(&name).await;
    let err = timeout(Duration::from_secs(20), store.node_hints())
        .await
        .expect("fails at once")
        .expect_err("401");
    assert!(err.to_string().contains("RBAC"), "{err}");
}

/// Peers: an upstream-annotated node is one; a changed podCIDR is an
/// update (old subnet removed, new one added); a deleted node goes.
#[tokio::test]
async fn peers_follow_their_nodes() {
    let b = KubeBacking::start(false);
    b.register(upstream("up1", 11, "10.244.11.0/24"));
    b.register(NodeFixture::new("bare", 12).pod_cidr("10.244.12.0/24"));
    let me = b.register(NodeFixture::new("me", 1).pod_cidr("10.244.1.0/24"));
    let mut w = b
        .store(&me)
        .await
        .watch()
        .await
        .expect("watch")
        .listed()
        .await;
    let snap: Vec<(String, String)> = w
        .snapshot
        .iter()
        .map(|l| {
            (
                l.subnet.to_string(),
                l.attrs.vxlan_data().expect("vxlan").vtep_mac,
            )
        })
        .collect();
    assert_eq!(
        snap,
        vec![("10.244.11.0/24".into(), "0e:6a:0a:00:00:0c".into())]
    );
    b.api
        .patch_node(
            "up1",
            &json!({"spec": {"podCIDR": "10.244.21.0/24", "podCIDRs": ["10.244.21.0/24"]}}),
        )
        .expect("move");
    let mut got = vec![
        next_event(&mut w, Duration::from_secs(5)).await,
        next_event(&mut w, Duration::from_secs(5)).await,
    ];
    got.sort_by_key(|e| matches!(e, LeaseEvent::Added(_)));
    assert!(
        matches!(&got[0], LeaseEvent::Removed(l) if l.subnet == net("10.244.11.0/24")),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], LeaseEvent::Added(l) if l.subnet == net("10.244.21.0/24")),
        "{got:?}"
    );
    b.api.delete_node("up1").expect("delete");
    match next_event(&mut w, Duration::from_secs(5)).await {
        LeaseEvent::Removed(l) => assert_eq!(l.subnet, net("10.244.21.0/24")),
        ev => panic!("expected Removed, got {ev:?}"),
    }
    expect_quiet(&mut w, Duration::from_millis(300)).await;
}

/// A dropped watch and a forced 410 relist report nothing when nothing
/// changed; changes made while the API was down arrive once it is back,
/// and nothing else does.
#[tokio::test]
async fn watch_breaks_end_in_the_right_state() {
    let b = KubeBacking::start(false);
    for (i, name) in ["p1", "p2", "p3"].iter().enumerate() {
        let n = i as u32 + 2;
        b.register(upstream(name, n, &format!("10.244.{n}.0/24")));
    }
    let me = b.register(NodeFixture::new("me", 1).pod_cidr("10.244.1.0/24"));
    let store = b.store(&me).await;
    let mut w = store.watch().await.expect("watch").listed().await;
    assert_eq!(w.snapshot.len(), 3);

    b.api.drop_watches();
    expect_quiet(&mut w, Duration::from_millis(1500)).await;
    b.api.expire_resource_versions();
    b.api.drop_watches();
    expect_quiet(&mut w, Duration::from_millis(2500)).await;
    let relists = b
        .api
        .requests_to("GET", "/api/v1/nodes")
        .iter()
        .filter(|r| r.query_param("watch").is_none())
        .count();
    assert!(
        relists >= 2,
        "the 410 made the watcher list again ({relists} lists)"
    );

    b.api.set_down(Some(DownMode::CloseConnections));
    b.api.drop_watches();
    let down_at = Instant::now();
    // An async wait: the watch task runs on this test's runtime.
    let noticed = timeout(Duration::from_secs(10), async {
        while store.is_reachable() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    noticed.await.expect("the store notices the API is down");
    b.api.delete_node("p1").expect("delete");
    b.register(upstream("p4", 4, "10.244.5.0/24"));
    b.api
        .set_node_annotation(
            "p2",
            &format!("{PREFIX}backend-data"),
            Some(r#"{"VNI":1,"VtepMAC":"0e:00:00:00:00:22"}"#),
        )
        .expect("new MAC");
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(down_at.elapsed())).await;
    b.api.set_down(None);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_event(&mut w, Duration::from_secs(30)).await);
    }
    let mut summary: Vec<String> = got
        .iter()
        .map(|e| match e {
            LeaseEvent::Added(l) => format!("+{} {}", l.subnet, l.attrs.backend_data["VtepMAC"]),
            LeaseEvent::Removed(l) => format!("-{}", l.subnet),
        })
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        vec![
            "+10.244.3.0/24 \"0e:00:00:00:00:22\"".to_owned(),
            "+10.244.5.0/24 \"0e:6a:0a:00:00:05\"".to_owned(),
            "-10.244.2.0/24".to_owned(),
        ]
    );
    expect_quiet(&mut w, Duration::from_millis(500)).await;
    assert!(store.is_reachable());
}

/// The daemon renews only when its lease vanished from the watch: a Node
/// registered again without annotations gets them back; a Node that now
/// has another podCIDR has lost the old subnet.
#[tokio::test]
async fn renew_restores_annotations_or_reports_the_subnet_lost() {
    let b = KubeBacking::start(false);
    let name = b.register(NodeFixture::new("again", 1).pod_cidr("10.244.1.0/24"));
    let store = b.store(&name).await;
    let lease = store
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .expect("acquire");
    b.api.delete_node(&name).expect("delete");
    b.register(NodeFixture::new("again", 1).pod_cidr("10.244.1.0/24"));
    assert_eq!(b.annotation(&name, "public-ip"), None);
    store.renew(&lease).await.expect("renew");
    assert_eq!(
        b.annotation(&name, "public-ip").as_deref(),
        Some("192.168.64.1")
    );

    b.api.delete_node(&name).expect("delete");
    b.register(NodeFixture::new("again", 1).pod_cidr("10.244.9.0/24"));
    match store.renew(&lease).await {
        Err(crate::lease::LeaseError::Lost { subnet, holder }) => {
            assert_eq!(subnet, "10.244.1.0-24");
            assert!(holder.contains("10.244.9.0/24"), "{holder}");
        }
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[tokio::test]
async fn an_ipv6_only_node_waits_for_its_ipv6_pod_cidr_and_gets_flannels_v6_annotations() {
    let b = KubeBacking::start(false);
    let name = b.register(NodeFixture::new("six", 1));
    let store = Arc::new(b.store(&name).await);
    let cfg = config(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#);
    let a = LeaseAttrs::vxlan_v6_only("2001:db8::1".parse().expect("ip6"), 1, "0a:58:0a:00:00:61");
    let lease = b
        .acquire_after_pod_cidr(&store, &name, (cfg, a.clone()), "fd00:10:244:5::/64")
        .await;
    assert_eq!(lease.key(), "0.0.0.0-0&fd00:10:244:5::-64");
    assert_eq!(lease.attrs, a);
    assert_eq!(
        b.annotation(&name, "public-ipv6").as_deref(),
        Some("2001:db8::1")
    );
    assert_eq!(
        b.annotation(&name, "backend-v6-data").as_deref(),
        Some(r#"{"VNI":1,"VtepMAC":"0a:58:0a:00:00:61"}"#)
    );
    assert_eq!(
        b.annotation(&name, "kube-subnet-manager").as_deref(),
        Some("true")
    );
    // As flannel: no IPv4 half on an IPv6-only node.
    assert_eq!(b.annotation(&name, "public-ip"), None);
    assert_eq!(b.annotation(&name, "backend-data"), None);
    // Renewal reads the node again: same IPv6 podCIDR, still ours.
    let renewed = store.renew(&lease).await.expect("renew");
    assert_eq!(renewed.key(), lease.key());
}
