//! The `kube-api-standin` binary, and the stand-in started inside a
//! network namespace (root).

use crate::client_from_yaml;
use flannel_cluster::kube_api::{KubeApiOptions, KubeApiServer};
use flannel_cluster::proc::ChildGuard;
use flannel_cluster::{NetNs, TempDir};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn the_binary_serves_nodes_made_through_the_api_and_stops_on_sigterm() {
    let dir = TempDir::new("kbin");
    let kubeconfig = dir.join("kubeconfig");
    // The binary is the tools crate's (`cargo build --workspace` builds it).
    let mut cmd = Command::new(flannel_cluster::cluster::workspace_binary(
        "kube-api-standin",
    ));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--token",
        "s3cret",
        "--cluster-cidr",
        "10.244.0.0/16",
    ])
    .arg("--tls-dir")
    .arg(dir.join("tls"))
    .arg("--kubeconfig")
    .arg(&kubeconfig)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut cmd);
    let stdout = child.child_mut().stdout.take().expect("stdout");
    let mut out = std::io::BufReader::new(stdout);
    let (mut line, mut admin) = (String::new(), String::new());
    out.read_line(&mut line).expect("read stdout");
    out.read_line(&mut admin).expect("read stdout");
    assert!(
        line.starts_with("listening on https://127.0.0.1:"),
        "{line:?}"
    );
    assert!(
        admin.starts_with("admin on https://127.0.0.1:"),
        "{admin:?}"
    );
    assert_ne!(line.rsplit(':').next(), admin.rsplit(':').next());

    let yaml = std::fs::read_to_string(&kubeconfig).expect("the kubeconfig it wrote");
    assert!(yaml.contains("s3cret") && yaml.contains("certificate-authority-data"));
    let nodes: Api<Node> = Api::all(client_from_yaml(&yaml).await);
    let n: Node = serde_json::from_value(crate::small_node("worker-0", &[])).expect("node");
    nodes
        .create(&PostParams::default(), &n)
        .await
        .expect("POST a node");
    let mut cidr = None;
    for _ in 0..250 {
        let got = nodes.get("worker-0").await.expect("get");
        cidr = got.spec.and_then(|s| s.pod_cidr);
        if cidr.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cidr.as_deref(),
        Some("10.244.0.0/24"),
        "the IPAM controller runs"
    );
    nodes
        .delete("worker-0", &DeleteParams::default())
        .await
        .expect("DELETE");
    assert!(nodes
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());

    let st = child.stop(Duration::from_secs(5)).expect("an exit status");
    assert!(st.success(), "exit on SIGTERM: {st}");
}

#[test]
fn it_serves_inside_the_network_namespace_it_was_started_in() {
    let ns = NetNs::new("kapi");
    let api =
        ns.run(|| KubeApiServer::start_with(KubeApiOptions::new()).expect("start in the netns"));
    let yaml = api.kubeconfig_yaml();
    api.create_node(crate::small_node("n1", &[]))
        .expect("create");
    // Inside the namespace, its loopback answers.
    let names = ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let nodes: Api<Node> = Api::all(client_from_yaml(&yaml).await);
            let l = nodes
                .list(&ListParams::default())
                .await
                .expect("list in the netns");
            l.items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(names, ["n1"]);
    // This namespace's loopback does not have it.
    assert!(
        std::net::TcpStream::connect_timeout(&api.addr(), Duration::from_millis(500)).is_err(),
        "the socket is in the namespace, not here"
    );
}
