//! A blocking HTTPS client of a cluster's Kubernetes API stand-in, for the
//! harness: one thread that entered the underlay namespace (where the
//! stand-in listens, and only there) runs kube's client on a tokio runtime
//! of its own, with the kubeconfig's CA and token, and carries out the
//! requests sent to it one at a time over one kept-alive connection. Each
//! call blocks until the answer, or fails after [`REQUEST_TIMEOUT`]. The
//! thread ends when the client drops.
//!
//! It does not start or configure the stand-in (`kube.rs` does), and its
//! thread enters only the underlay namespace, never the host's.

use crate::netns::NetNs;
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one request may take, connecting included.
/// The `User-Agent` of the harness's own requests, so that a test can tell
/// them from flanneld's in the stand-in's request log.
pub const HARNESS_USER_AGENT: &str = "flannel-tests-harness";

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer: its HTTP status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, when the status is a success.
    pub fn json(&self) -> Result<Value, String> {
        if !self.is_success() {
            return Err(format!("HTTP {}: {}", self.status, self.text()));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("HTTP {} but not JSON ({e}): {}", self.status, self.text()))
    }
}

struct Job {
    req: hyper::http::Request<Vec<u8>>,
    reply: std::sync::mpsc::Sender<Result<Answer, String>>,
}

/// See the module doc.
pub struct KubeClient {
    tx: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
    url: String,
}

impl KubeClient {
    /// A client of `url` (e.g. the admin listener) with the CA and token of
    /// `kubeconfig_yaml`, from inside `ns`. Nothing connects until the
    /// first request; a kubeconfig that does not parse fails every request.
    pub fn start(ns: &NetNs, kubeconfig_yaml: String, url: &str) -> KubeClient {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let target = url.to_owned();
        let thread = ns.spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    while let Ok(job) = rx.try_recv() {
                        let _ = job.reply.send(Err(format!("tokio runtime: {e}")));
                    }
                    return;
                }
            };
            rt.block_on(async move {
                let client = make_client(&kubeconfig_yaml, &target).await;
                while let Some(job) = rx.recv().await {
                    let answer = match &client {
                        Err(e) => Err(e.clone()),
                        Ok(c) => {
                            match tokio::time::timeout(REQUEST_TIMEOUT, send(c, job.req)).await {
                                Ok(r) => r,
                                Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
                            }
                        }
                    };
                    let _ = job.reply.send(answer);
                }
            });
        });
        KubeClient {
            tx: Some(tx),
            thread: Some(thread),
            url: url.to_owned(),
        }
    }

    /// `method path` with a body of `content_type` (if any).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        let mut b = hyper::http::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::http::header::ACCEPT, "application/json")
            .header(hyper::http::header::USER_AGENT, HARNESS_USER_AGENT);
        let bytes = match body {
            Some((ct, bytes)) => {
                b = b.header(hyper::http::header::CONTENT_TYPE, ct);
                bytes
            }
            None => Vec::new(),
        };
        let req = b.body(bytes).map_err(|e| format!("{method} {path}: {e}"))?;
        let (reply, answer) = std::sync::mpsc::channel();
        self.tx
            .as_ref()
            .ok_or("the client is closed")?
            .send(Job { req, reply })
            .map_err(|_| format!("{method} {path}: the client's thread is gone"))?;
        answer
            .recv()
            .map_err(|_| format!("{method} {path}: the client's thread is gone"))?
            .map_err(|e| format!("{method} {} {path}: {e}", self.url))
    }

    pub fn get(&self, path: &str) -> Result<Answer, String> {
        self.request("GET", path, None)
    }

    /// `method path` with `body` as JSON of `content_type`.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Answer, String> {
        self.request(
            method,
            path,
            Some((content_type, body.to_string().into_bytes())),
        )
    }
}

impl Drop for KubeClient {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn make_client(yaml: &str, url: &str) -> Result<kube::Client, String> {
    let kc = Kubeconfig::from_yaml(yaml).map_err(|e| format!("kubeconfig: {e}"))?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    cfg.cluster_url = url.parse().map_err(|e| format!("URL {url:?}: {e}"))?;
    // The harness wants the answer, not kube's minutes of retries.
    cfg.default_retry = false;
    cfg.connect_timeout = Some(Duration::from_secs(3));
    cfg.read_timeout = Some(REQUEST_TIMEOUT);
    kube::Client::try_from(cfg).map_err(|e| format!("kube client: {e}"))
}

async fn send(client: &kube::Client, req: hyper::http::Request<Vec<u8>>) -> Result<Answer, String> {
    let resp = client
        .send(req.map(Body::from))
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| format!("HTTP {status}, reading the body: {e}"))?;
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}
