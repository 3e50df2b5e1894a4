//! TLS and credentials: the server's rustls acceptor (ring, HTTP/2 and
//! HTTP/1.1 by ALPN) from PEM files made by `openssl` for the test
//! ([`TlsFiles::generate_for`]), the bearer-token check, and the kubeconfig
//! a client reads to reach the stand-in.
//!
//! Its keys and certificates live in the test's own directory; it never reads
//! or writes the host's trust store.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::{HeaderMap, AUTHORIZATION};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::etcd::TlsFiles;

/// A CA and a server certificate for `hosts` (IPs or DNS names) in `dir`.
pub fn generate(dir: &Path, hosts: &[&str]) -> TlsFiles {
    TlsFiles::generate_for(dir, "kube-apiserver", hosts)
}

/// The acceptor serving `files.server_cert` with `files.server_key`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
    let cert_pem = read(&files.server_cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("parse {}: {e}", files.server_cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.server_key)?)
        .map_err(|e| format!("parse {}: {e}", files.server_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server certificate {}: {e}", files.server_cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Does `headers` carry `Authorization: Bearer <token>`? (The scheme is
/// case-insensitive, as the apiserver's bearer authenticator reads it.)
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = v.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or("");
    let given = parts.next().unwrap_or("").trim();
    scheme.eq_ignore_ascii_case("bearer") && !given.is_empty() && given == token
}

/// True when the request carries no credentials at all (anonymous).
pub fn is_anonymous(headers: &HeaderMap) -> bool {
    !headers.contains_key(AUTHORIZATION)
}

/// A kubeconfig (YAML) for `server` with the CA PEM inline
/// (`certificate-authority-data`) when given, and the bearer token.
pub fn kubeconfig_yaml(server: &str, ca_pem: Option<&[u8]>, token: Option<&str>) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut cluster = format!("    server: {}\n", q(server));
    if let Some(ca) = ca_pem {
        cluster.push_str(&format!(
            "    certificate-authority-data: {}\n",
            q(&STANDARD.encode(ca))
        ));
    }
    let user = match token {
        Some(t) => format!("  user:\n    token: {}\n", q(t)),
        None => "  user: {}\n".to_owned(),
    };
    format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: flannel-test\n  cluster:\n{cluster}\
         users:\n- name: flanneld\n{user}\
         contexts:\n- name: flannel-test\n  context:\n    cluster: flannel-test\n    user: flanneld\n\
         current-context: flannel-test\npreferences: {{}}\n"
    )
}
