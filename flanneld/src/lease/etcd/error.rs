//! The etcd store's errors ([`EtcdError`]): its flags, its TLS files, a
//! request etcd did not answer or refused, a lease value it cannot write,
//! and writes that kept conflicting. Each names the flag, file or key.
//!
//! Owns the error type only: it does not decide what is retried (that is
//! `conn::Failure` and the store's loops) and does no I/O.

use std::path::PathBuf;

use super::conn::Failure;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("--etcd-endpoints: no endpoint given")]
    NoEndpoint,
    #[error("--etcd-password is set but --etcd-username is not")]
    PasswordWithoutUsername,
    #[error("--etcd-endpoints {endpoint}: TLS files are given (--etcd-keyfile/--etcd-certfile/--etcd-cafile), so every endpoint must be https://")]
    PlainEndpointWithTls { endpoint: String },
    #[error(
        "--etcd-certfile is set but --etcd-keyfile is not: a client certificate needs its key"
    )]
    CertWithoutKey,
    #[error(
        "--etcd-keyfile is set but --etcd-certfile is not: a client key needs its certificate"
    )]
    KeyWithoutCert,
    #[error("{flag}: read {}: {source}", path.display())]
    ReadPem {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag}: {} is not a PEM file", path.display())]
    NotPem { flag: &'static str, path: PathBuf },
    /// etcd did not answer ("etcd <op>: <why>"): worth retrying.
    #[error("{0} (etcd unreachable)")]
    Unreachable(String),
    /// etcd answered no, or the connection cannot be set up.
    #[error("{0}")]
    Refused(String),
    #[error("encode the lease value of node {node_ip}: {source}")]
    Encode {
        node_ip: std::net::IpAddr,
        source: serde_json::Error,
    },
    #[error(
        "acquire a subnet under {prefix}: gave up after {tries} conflicting writes by other nodes"
    )]
    AcquireConflicts { prefix: String, tries: usize },
    #[error("{op} {key}: gave up after {tries} conflicting writes")]
    Conflicts {
        op: &'static str,
        key: String,
        tries: usize,
    },
}

impl From<Failure> for EtcdError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unreachable(m) => EtcdError::Unreachable(m),
            Failure::Refused(m) => EtcdError::Refused(m),
        }
    }
}
