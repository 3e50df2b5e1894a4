//! Connecting to etcd: endpoints, TLS, credentials, timeouts; sorting
//! failures into "etcd is unreachable, retry" and "this will never work";
//! back-off that logs once per state change.
//!
//! Owns the client's options and the sorting of failures; it makes no lease
//! decision and names no key.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::error::EtcdError;
use crate::lease::LeaseError;

/// How long one request may take before etcd counts as unreachable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on idle connections, so a silently dead etcd (no RST)
/// breaks the watch stream within seconds.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(5));

/// Where and how to reach etcd (flannel's `--etcd-*` flags).
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// `http://127.0.0.1:2379`, ...; `https://` for TLS.
    pub endpoints: Vec<String>,
    /// `/coreos.com/network`
    pub prefix: String,
    pub keyfile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub cafile: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl EtcdConfig {
    /// `--etcd-endpoints` as flannel reads it: comma-separated URLs.
    pub fn parse_endpoints(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The client options, reading the TLS files now so a wrong path fails
    /// at start-up with its name.
    pub(super) fn connect_options(&self) -> Result<ConnectOptions, LeaseError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoint.into());
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEPALIVE.0, KEEPALIVE.1)
            .with_keep_alive_while_idle(true);
        match (&self.username, &self.password) {
            (Some(u), p) => {
                opts = opts
                    .with_user(u.clone(), p.clone().unwrap_or_default())
                    .with_auto_token_refresh(true)
            }
            (None, Some(_)) => return Err(EtcdError::PasswordWithoutUsername.into()),
            (None, None) => {}
        }
        if let Some(tls) = self.tls()? {
            if let Some(plain) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
                let endpoint = plain.clone();
                return Err(EtcdError::PlainEndpointWithTls { endpoint }.into());
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }

    fn tls(&self) -> Result<Option<TlsOptions>, LeaseError> {
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if !https && self.keyfile.is_none() && self.certfile.is_none() && self.cafile.is_none() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.cafile {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem("--etcd-cafile", ca)?));
        }
        match (&self.certfile, &self.keyfile) {
            (Some(cert), Some(key)) => {
                let cert = read_pem("--etcd-certfile", cert)?;
                let key = read_pem("--etcd-keyfile", key)?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(_), None) => return Err(EtcdError::CertWithoutKey.into()),
            (None, Some(_)) => return Err(EtcdError::KeyWithoutCert.into()),
        }
        Ok(Some(tls))
    }
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, LeaseError> {
    let path = path.to_path_buf();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(source) => return Err(EtcdError::ReadPem { flag, path, source }.into()),
    };
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(EtcdError::NotPem { flag, path }.into());
    }
    Ok(bytes)
}

/// Why an etcd request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// etcd did not answer (down, partitioned, no leader, timed out):
    /// worth retrying.
    Unreachable(String),
    /// etcd answered no, or the connection cannot be set up (TLS, auth):
    /// retrying will not help.
    Refused(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Unreachable(m) | Failure::Refused(m) => m,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl From<Failure> for LeaseError {
    fn from(f: Failure) -> Self {
        LeaseError::Etcd(f.into())
    }
}

/// Sorts an etcd-client error, naming the operation (and its object).
pub fn classify(op: &str, e: &etcd_client::Error) -> Failure {
    let chain = error_chain(e);
    let msg = format!("etcd {op}: {chain}");
    let lower = chain.to_ascii_lowercase();
    let tls = [
        "certificate",
        "tls",
        "handshake",
        "alert",
        "unknownissuer",
        "x509",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if tls {
        return Failure::Refused(format!(
            "{msg} (check --etcd-cafile, --etcd-certfile and --etcd-keyfile)"
        ));
    }
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            use tonic::Code;
            let auth = ["user", "password", "authentication", "token", "permission"]
                .iter()
                .any(|w| lower.contains(w));
            let hint = || format!("{msg} (check --etcd-username and --etcd-password)");
            match s.code() {
                Code::Unauthenticated | Code::PermissionDenied => Failure::Refused(hint()),
                Code::InvalidArgument | Code::FailedPrecondition if auth => {
                    Failure::Refused(hint())
                }
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented => Failure::Refused(msg),
                _ => Failure::Unreachable(msg),
            }
        }
        etcd_client::Error::InvalidArgs(_)
        | etcd_client::Error::InvalidUri(_)
        | etcd_client::Error::InvalidMetadataValue(_)
        | etcd_client::Error::Utf8Error(_) => Failure::Refused(msg),
        _ => Failure::Unreachable(msg),
    }
}

/// An operation that did not answer within `OP_TIMEOUT`.
pub fn timed_out(op: &str) -> Failure {
    Failure::Unreachable(format!("etcd {op}: no answer within {OP_TIMEOUT:?}"))
}

/// Runs one request with `OP_TIMEOUT`, sorting its failure.
pub async fn call<T, F>(op: &str, fut: F) -> Result<T, Failure>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(op, &e)),
        Err(_) => Err(timed_out(op)),
    }
}

/// The error and its sources, `a: b: c`, without repeating a source whose
/// text its parent already contains.
fn error_chain(e: &etcd_client::Error) -> String {
    // A gRPC status prints its source with Debug: use its message instead
    // and walk the sources by hand.
    let (mut out, mut cur) = match e {
        etcd_client::Error::GRpcStatus(s) => (
            format!("{} ({:?})", s.message(), s.code()),
            std::error::Error::source(s),
        ),
        other => (other.to_string(), other.source()),
    };
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
