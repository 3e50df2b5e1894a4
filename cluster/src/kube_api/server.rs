//! The stand-in's lifecycle: options, binding the listener on the caller's
//! thread (so in the caller's network namespace), a tokio runtime on a
//! thread of its own created from there, the TLS material and kubeconfig,
//! and stopping (also on drop).
//!
//! It never enters a namespace itself: it serves in the one the caller's
//! thread is in.

use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

use super::faults::{Faults, RequestLog};
use super::http::{self, Listener, Shared};
use super::ipam::{self, NodeIpam};
use super::store::Store;
use super::tls;
use crate::etcd::TlsFiles;
use crate::tempdir::TempDir;

#[derive(Clone, Debug)]
enum TlsChoice {
    Plain,
    /// Generate a CA and server certificate, in this dir or a temp dir.
    Generate(Option<PathBuf>),
    Files(TlsFiles),
}

/// How to run a [`KubeApiServer`]. Defaults: `127.0.0.1:0`, plain HTTP,
/// token `flannel-test-token`, bookmarks every second, a history of
/// 10 000 changes, the last 10 000 requests logged, no node IPAM, no
/// admin listener.
#[derive(Clone, Debug)]
pub struct KubeApiOptions {
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    token: Option<String>,
    tls: TlsChoice,
    bookmark_every: Duration,
    history_limit: usize,
    request_log_limit: usize,
    ipam: Option<NodeIpam>,
}

impl Default for KubeApiOptions {
    fn default() -> KubeApiOptions {
        KubeApiOptions {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            admin_listen: None,
            token: Some("flannel-test-token".into()),
            tls: TlsChoice::Plain,
            bookmark_every: Duration::from_secs(1),
            history_limit: 10_000,
            request_log_limit: 10_000,
            ipam: None,
        }
    }
}

impl KubeApiOptions {
    pub fn new() -> KubeApiOptions {
        KubeApiOptions::default()
    }

    /// The address to listen on (port 0: one the OS picks).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// A second listener, for the test's own requests: the same API (and
    /// token, and TLS) plus the `/_standin/` admin endpoints, never subject
    /// to faults and left out of the request log (see `admin`).
    pub fn admin_listen(mut self, addr: SocketAddr) -> Self {
        self.admin_listen = Some(addr);
        self
    }

    /// The bearer token required of every request (`None`: no auth).
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_owned);
        self
    }

    /// HTTPS with a CA and certificate made for this server (in a temp dir
    /// removed with the server), valid for the listen IP, 127.0.0.1 and
    /// `localhost`.
    pub fn tls(mut self) -> Self {
        self.tls = TlsChoice::Generate(None);
        self
    }

    /// As [`tls`](Self::tls), the files made in `dir` (kept).
    pub fn tls_in(mut self, dir: &Path) -> Self {
        self.tls = TlsChoice::Generate(Some(dir.to_owned()));
        self
    }

    /// HTTPS with existing files (`server_cert`, `server_key`, `ca`).
    pub fn tls_files(mut self, files: TlsFiles) -> Self {
        self.tls = TlsChoice::Files(files);
        self
    }

    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_every = d.max(Duration::from_millis(10));
        self
    }

    /// How many changes watches can be resumed across (older: 410).
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n;
        self
    }

    pub fn request_log_limit(mut self, n: usize) -> Self {
        self.request_log_limit = n;
        self
    }

    /// Runs the node IPAM controller from the start.
    pub fn node_ipam(mut self, ipam: NodeIpam) -> Self {
        self.ipam = Some(ipam);
        self
    }
}

/// A running Kubernetes API stand-in. Stops on drop.
pub struct KubeApiServer {
    pub(crate) shared: Arc<Shared>,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    tls: Option<TlsFiles>,
    handle: tokio::runtime::Handle,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    _tls_dir: Option<TempDir>,
}

impl KubeApiServer {
    /// Starts with the default options; panics when it cannot.
    pub fn start() -> KubeApiServer {
        KubeApiServer::start_with(KubeApiOptions::new())
            .unwrap_or_else(|e| panic!("start the kube API stand-in: {e}"))
    }

    /// Binds `opts.listen` on this thread (this network namespace), then
    /// serves from a runtime on a new thread.
    pub fn start_with(opts: KubeApiOptions) -> Result<KubeApiServer, String> {
        let (listener, addr) = bind(opts.listen)?;
        let admin = opts.admin_listen.map(bind).transpose()?;
        let admin_addr = admin.as_ref().map(|(_, a)| *a);
        let (tls, tls_dir) = match &opts.tls {
            TlsChoice::Plain => (None, None),
            TlsChoice::Files(f) => (Some(f.clone()), None),
            TlsChoice::Generate(dir) => {
                let (dir, tmp) = match dir {
                    Some(d) => (d.clone(), None),
                    None => {
                        let t = TempDir::new("kapi");
                        (t.path().to_owned(), Some(t))
                    }
                };
                let mut hosts: Vec<String> = Vec::new();
                for a in std::iter::once(addr).chain(admin_addr) {
                    let ip = url_ip(a.ip()).to_string();
                    if !hosts.contains(&ip) && ip != "127.0.0.1" {
                        hosts.push(ip);
                    }
                }
                hosts.extend(["127.0.0.1".to_owned(), "localhost".to_owned()]);
                let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                (Some(tls::generate(&dir, &hosts)), tmp)
            }
        };
        let acceptor = tls.as_ref().map(tls::acceptor).transpose()?;
        let shared = Arc::new(Shared {
            store: Store::new(opts.history_limit),
            faults: Faults::default(),
            log: RequestLog::new(opts.request_log_limit),
            token: opts.token.clone(),
            bookmark_every: opts.bookmark_every,
            open_watches: AtomicUsize::new(0),
            ipam_running: AtomicBool::new(false),
            ipam_paused: watch::channel(false).0,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kube-api".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kube-api-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                let listeners = {
                    let _in_rt = rt.enter();
                    let main = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| format!("listen on {addr}: {e}"));
                    let admin = admin
                        .map(|(l, a)| {
                            tokio::net::TcpListener::from_std(l)
                                .map_err(|e| format!("listen on {a}: {e}"))
                        })
                        .transpose();
                    main.and_then(|m| Ok((m, admin?)))
                };
                let (listener, admin) = match listeners {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let admin_serve = async {
                        if let Some(l) = admin {
                            let (acc, sh, rx) = (acceptor.clone(), sh.clone(), shutdown_rx.clone());
                            http::serve(l, acc, sh, rx, Listener::Admin).await;
                        }
                    };
                    let main_serve = http::serve(
                        listener,
                        acceptor.clone(),
                        sh.clone(),
                        shutdown_rx.clone(),
                        Listener::Api,
                    );
                    tokio::join!(main_serve, admin_serve);
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("spawn the kube-api thread: {e}"))?;
        let handle = ready_rx
            .recv()
            .map_err(|_| "the kube-api thread ended at start".to_owned())??;
        let server = KubeApiServer {
            shared,
            addr,
            admin_addr,
            tls,
            handle,
            shutdown,
            thread: Some(thread),
            _tls_dir: tls_dir,
        };
        if let Some(cfg) = opts.ipam {
            server.enable_node_ipam(cfg)?;
        }
        Ok(server)
    }

    /// The address served (with the port the OS chose).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://IP:PORT` (127.0.0.1 when listening on 0.0.0.0).
    pub fn url(&self) -> String {
        self.url_of(self.addr)
    }

    /// The admin listener's address, if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The admin listener's `http(s)://IP:PORT`, if it has one.
    pub fn admin_url(&self) -> Option<String> {
        self.admin_addr.map(|a| self.url_of(a))
    }

    fn url_of(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!(
            "{scheme}://{}",
            SocketAddr::new(url_ip(addr.ip()), addr.port())
        )
    }

    pub fn token(&self) -> Option<&str> {
        self.shared.token.as_deref()
    }

    /// The CA and server certificate, when serving HTTPS.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A kubeconfig naming this server, its CA (inline) and the token.
    pub fn kubeconfig_yaml(&self) -> String {
        let ca = self.tls.as_ref().and_then(|t| std::fs::read(&t.ca).ok());
        tls::kubeconfig_yaml(&self.url(), ca.as_deref(), self.token())
    }

    /// Writes [`kubeconfig_yaml`](Self::kubeconfig_yaml) to `path` (mode 0600).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("write kubeconfig {}: {e}", path.display()))?;
        f.write_all(self.kubeconfig_yaml().as_bytes())
            .map_err(|e| format!("write kubeconfig {}: {e}", path.display()))
    }

    /// Starts the node IPAM controller (see [`NodeIpam`]); an error if it
    /// runs already (two would hand out the same ranges).
    pub fn enable_node_ipam(&self, cfg: NodeIpam) -> Result<(), String> {
        if self.shared.ipam_running.swap(true, Ordering::SeqCst) {
            return Err("the node IPAM controller runs already".into());
        }
        self.handle.spawn(ipam::run(self.shared.clone(), cfg));
        Ok(())
    }

    /// Stops serving: every connection closes; the state is dropped with
    /// the server.
    pub fn stop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub(crate) fn get_value(v: Option<Arc<Value>>) -> Option<Value> {
        v.map(|v| (*v).clone())
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A non-blocking listener on `addr` (in this thread's network namespace)
/// and the address it got.
fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set {addr} non-blocking: {e}"))?;
    let got = listener
        .local_addr()
        .map_err(|e| format!("address of {addr}: {e}"))?;
    Ok((listener, got))
}

/// The IP to put in URLs for a listen IP.
fn url_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    }
}
