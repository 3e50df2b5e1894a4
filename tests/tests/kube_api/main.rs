//! The kube API stand-in (`flannel_cluster::kube_api`) driven by the real
//! kube-rs client and kube-runtime's watcher, over loopback only: lists and
//! pagination, watches and their recovery, patches, auth and TLS, faults,
//! the node IPAM controller, the admin listener, scale, and the
//! `kube-api-standin` binary.

mod admin;
mod auth_tls;
mod faults;
mod list;
mod patch;
mod scale;
mod standin;
mod watch;

use flannel_cluster::kube_api::KubeApiServer;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use hyper::http;
use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::{json, Value};
use std::time::Duration;

/// A client from a kubeconfig's text.
pub async fn client_from_yaml(yaml: &str) -> Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("parse the stand-in's kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config from the kubeconfig");
    Client::try_from(cfg).expect("kube client")
}

/// A client for `api` with its kubeconfig (token, CA).
pub async fn client(api: &KubeApiServer) -> Client {
    client_from_yaml(&api.kubeconfig_yaml()).await
}

/// As [`client`], without kube's own retries of 429/503/504 (which, with
/// `Retry-After: 1`, go on for minutes).
pub async fn client_without_retries(api: &KubeApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&api.kubeconfig_yaml()).expect("parse the kubeconfig");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config from the kubeconfig");
    cfg.default_retry = false;
    Client::try_from(cfg).expect("kube client")
}

pub async fn nodes(api: &KubeApiServer) -> Api<Node> {
    Api::all(client(api).await)
}

/// A small Node with `labels`.
pub fn small_node(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    json!({"metadata": {"name": name, "labels": labels}, "spec": {}, "status": {}})
}

/// Runs kube-runtime's watcher (with its default backoff) over `nodes` on a
/// task of its own, so it keeps watching while the test does other things;
/// its items arrive on the returned stream.
pub fn spawn_watcher(
    nodes: Api<Node>,
    cfg: watcher::Config,
) -> BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut w = watcher::watcher(nodes, cfg).default_backoff().boxed();
        while let Some(item) = w.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) }).boxed()
}

/// The next item of `s`, failing the test after 10 s.
pub async fn next<S: Stream + Unpin>(s: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 10 s"))
        .unwrap_or_else(|| panic!("the stream ended before {what}"))
}

/// The HTTP code of an API error (a `Status` answer).
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The `Status` of an API error.
pub fn api_status(e: &kube::Error) -> &kube::core::Status {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error (a Status), got {other:?}"),
    }
}

/// A raw request through `client` (auth and TLS as configured), answered
/// as text or as the `Status` error.
pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Result<String, kube::Error> {
    let mut b = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header(http::header::CONTENT_TYPE, ct);
    }
    let req = b.body(body.as_bytes().to_vec()).expect("build a request");
    client.request_text(req).await
}

/// Polls `f` every 20 ms until it is true; fails with `what` after 10 s.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
