//! Bearer-token authentication and TLS with the kubeconfig the stand-in
//! writes (the CA inline, or by path).

use crate::{api_status, client_from_yaml, raw, small_node};
use flannel_cluster::kube_api::{KubeApiOptions, KubeApiServer};
use flannel_cluster::TempDir;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client};

#[tokio::test]
async fn a_bearer_token_is_required() {
    let api = KubeApiServer::start();
    api.create_node(small_node("n1", &[])).expect("create");
    let token = api.token().expect("a token by default").to_owned();
    let yaml = api.kubeconfig_yaml();
    assert!(yaml.contains(&token));

    let no_token =
        Client::try_from(kube::Config::new(api.url().parse().expect("url"))).expect("client");
    let wrong = client_from_yaml(&yaml.replace(&token, "not-the-token")).await;
    let right = client_from_yaml(&yaml).await;
    for (who, c) in [("no token", &no_token), ("a wrong token", &wrong)] {
        let e = Api::<Node>::all(c.clone())
            .list(&ListParams::default())
            .await
            .expect_err(who);
        let s = api_status(&e);
        assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"), "{who}");
    }
    let l = Api::<Node>::all(right.clone())
        .list(&ListParams::default())
        .await
        .expect("list");
    assert_eq!(l.items.len(), 1);
    // Health and version are public without credentials (the anonymous
    // user), but a wrong token is refused everywhere.
    assert_eq!(
        raw(&no_token, "GET", "/healthz", None, "")
            .await
            .expect("healthz"),
        "ok"
    );
    let v = no_token.apiserver_version().await.expect("version");
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
    let e = raw(&wrong, "GET", "/healthz", None, "")
        .await
        .expect_err("wrong token");
    assert_eq!(api_status(&e).code, 401);
    let refused = api.requests().iter().filter(|r| r.status == 401).count();
    assert_eq!(refused, 3);
}

#[tokio::test]
async fn tls_with_the_kubeconfig_it_writes() {
    let api = KubeApiServer::start_with(KubeApiOptions::new().tls()).expect("start with TLS");
    api.create_node(small_node("n1", &[])).expect("create");
    assert!(api.url().starts_with("https://127.0.0.1:"), "{}", api.url());
    let dir = TempDir::new("kcfg");
    let path = dir.join("kubeconfig");
    api.write_kubeconfig(&path).expect("write kubeconfig");
    let kc = Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(cfg).expect("client");
    let nodes: Api<Node> = Api::all(client);
    assert_eq!(
        nodes
            .get("n1")
            .await
            .expect("get over TLS")
            .metadata
            .name
            .as_deref(),
        Some("n1")
    );
    // A watch streams over TLS too.
    let mut w = watcher::watcher(nodes.clone(), watcher::Config::default()).boxed();
    let mut init = Vec::new();
    while init.last().map(String::as_str) != Some("InitDone") {
        init.push(
            match crate::next(&mut w, "InitDone").await.expect("watcher") {
                watcher::Event::Init => "Init".to_owned(),
                watcher::Event::InitApply(_) => "InitApply".to_owned(),
                watcher::Event::InitDone => "InitDone".to_owned(),
                other => format!("{other:?}"),
            },
        );
    }
    assert_eq!(init, ["Init", "InitApply", "InitDone"]);

    // The CA by path works as well.
    let ca = api.tls_files().expect("TLS files").ca.clone();
    let yaml = api.kubeconfig_yaml();
    let by_path: String = yaml
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("certificate-authority-data:") {
                format!("    certificate-authority: {:?}", ca.display().to_string())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = client_from_yaml(&by_path).await;
    Api::<Node>::all(c)
        .get("n1")
        .await
        .expect("get with the CA by path");

    // Without the CA the server is not trusted; plain HTTP is not served.
    let untrusting: String = yaml
        .lines()
        .filter(|l| !l.contains("certificate-authority"))
        .collect::<Vec<_>>()
        .join("\n");
    let c = client_from_yaml(&untrusting).await;
    let e = Api::<Node>::all(c)
        .get("n1")
        .await
        .expect_err("untrusted server");
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "a TLS failure, not an answer: {e}"
    );
    let plain = client_from_yaml(&yaml.replace("https://", "http://")).await;
    assert!(Api::<Node>::all(plain).get("n1").await.is_err());
}
