//! A real etcd server for tests: Debian's `etcd` on loopback, with a
//! private data dir and free ports, stopped by its PID on drop (also on
//! panic). Optionally TLS with client certificates made here by `openssl`.
//!
//! ```no_run
//! use flannel_cluster::etcd::EtcdServer;
//! let etcd = EtcdServer::start();
//! etcd.etcdctl(&["put", "/coreos.com/network/config", r#"{"Network":"10.244.0.0/16"}"#]).ok();
//! // flanneld --etcd-endpoints <etcd.endpoint()> ...
//! ```
//!
//! It binds only to loopback (or the namespace it is started in) and deletes
//! only its own data dir; it knows nothing of flannel's keys.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{run_with, Output};
use crate::proc::ChildGuard;
use crate::tempdir::TempDir;

/// How long etcd may take to answer after start.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// PEM files of one certificate authority and what it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// A fresh CA in `dir`, a server certificate for 127.0.0.1/localhost
    /// and a client certificate, all signed by it (EC P-256, valid 1 day).
    pub fn generate(dir: &Path) -> TlsFiles {
        Self::generate_for(dir, "etcd", &["127.0.0.1", "localhost"])
    }

    /// As [`generate`](Self::generate), with the server certificate's
    /// common name `server_cn` and its names `hosts` (IP addresses or DNS
    /// names, each put in subjectAltName as such).
    pub fn generate_for(dir: &Path, server_cn: &str, hosts: &[&str]) -> TlsFiles {
        let sans: Vec<String> = hosts
            .iter()
            .map(|h| match h.parse::<std::net::IpAddr>() {
                Ok(ip) => format!("IP:{ip}"),
                Err(_) => format!("DNS:{h}"),
            })
            .collect();
        let sans = sans.join(",");
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let p = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| {
            let out = run_with(
                Command::new("openssl").args(args).current_dir(dir),
                None,
                Duration::from_secs(30),
            );
            assert!(
                out.success(),
                "openssl failed (is Debian's openssl installed?): {out}"
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca_args = vec!["req", "-x509"];
        ca_args.extend(ec);
        ca_args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=flannel-rs test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca_args);
        for (name, cn, usage) in [
            ("server", server_cn, "serverAuth,clientAuth"),
            ("client", "flanneld", "clientAuth"),
        ] {
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let mut req = vec!["req", "-new"];
            req.extend(ec);
            let subj = format!("/CN={cn}");
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(&req);
            let ext_text = format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage={usage}\nsubjectAltName={sans}\n"
            );
            std::fs::write(p(&ext), ext_text).unwrap_or_else(|e| panic!("write {ext}: {e}"));
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                &ext,
            ]);
        }
        TlsFiles {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }
}

/// One single-member etcd cluster on 127.0.0.1.
pub struct EtcdServer {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<TlsFiles>,
    child: Option<ChildGuard>,
}

impl EtcdServer {
    /// Plain HTTP on a free port.
    pub fn start() -> EtcdServer {
        Self::launch(None)
    }

    /// HTTPS with `--client-cert-auth`: clients need a certificate signed
    /// by `tls.ca` (the server presents `tls.server_cert`).
    pub fn start_tls(tls: &TlsFiles) -> EtcdServer {
        Self::launch(Some(tls.clone()))
    }

    fn launch(tls: Option<TlsFiles>) -> EtcdServer {
        let mut last = String::new();
        // A free port can be taken by someone else before etcd binds it:
        // try again with new ones.
        for _ in 0..3 {
            let mut s = EtcdServer {
                dir: TempDir::new("etcd"),
                client_port: free_port(),
                peer_port: free_port(),
                tls: tls.clone(),
                child: None,
            };
            match s.spawn_and_wait() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    /// `http://127.0.0.1:<port>` (or `https://`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops etcd (SIGTERM, then SIGKILL), keeping its data and ports.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(5));
        }
    }

    /// Starts it again on the same ports and data: the same cluster.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("restart etcd: {e}");
        }
    }

    /// Runs `etcdctl` (API v3) against this server, with its certificates.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_with_timeout(args, Duration::from_secs(20))
    }

    /// `etcdctl --user=<user:password> ...` once authentication is on.
    pub fn etcdctl_as(&self, user: &str, args: &[&str]) -> Output {
        let user = format!("--user={user}");
        let mut all = vec![user.as_str()];
        all.extend_from_slice(args);
        self.etcdctl(&all)
    }

    fn etcdctl_with_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client_cert.display()))
                .arg(format!("--key={}", t.client_key.display()));
        }
        cmd.args(args);
        run_with(&mut cmd, None, timeout)
    }

    /// etcd's log so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open {}: {e}", self.log_path().display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            // Fast election of the single member; min lease TTL stays ≤ 1 s.
            .arg("--heartbeat-interval=20")
            .arg("--election-timeout=200")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        self.child = Some(ChildGuard::spawn(&mut cmd));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(st) = self.child.as_mut().and_then(ChildGuard::try_wait) {
                self.child = None;
                return Err(format!(
                    "etcd exited with {st} at start; log:\n{}",
                    self.log()
                ));
            }
            let out = self.etcdctl_with_timeout(&["endpoint", "health"], Duration::from_secs(5));
            if out.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "etcd not healthy within {READY_WITHIN:?}: {out}\nlog:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("find a free port: {e}"))
}
