//! TLS with client certificates (made here with openssl) and passwords.
//!
//! Each test runs its own etcd on loopback and writes only in its temp
//! directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flannel_cluster::etcd::{EtcdServer, TlsFiles};
use flannel_cluster::TempDir;
use tokio::time::timeout;

use super::{backing, PREFIX};
use crate::lease::contract_tests::{attrs, LONG};
use crate::lease::etcd::{EtcdConfig, EtcdStore};
use crate::lease::LeaseStore;

const NET: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

fn tls_config(
    server: &EtcdServer,
    ca: &Path,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![server.endpoint()],
        prefix: PREFIX.to_string(),
        cafile: Some(ca.to_path_buf()),
        certfile: cert.cloned(),
        keyfile: key.cloned(),
        ..EtcdConfig::default()
    }
}

/// `network_config` must give up (not wait) and say why.
async fn refused(config: EtcdConfig, case: &str) -> String {
    let store = EtcdStore::new(config, LONG).unwrap_or_else(|e| panic!("{case}: store: {e}"));
    match timeout(Duration::from_secs(20), store.network_config()).await {
        Ok(Err(e)) => {
            println!("{case}: {e}");
            e.to_string()
        }
        Ok(Ok(c)) => panic!("{case}: connected and read {c:?}"),
        Err(_) => panic!("{case}: still retrying after 20 s instead of failing clearly"),
    }
}

#[tokio::test]
async fn tls_client_certificates() {
    let dir = TempDir::new("tls");
    let good = TlsFiles::generate(&dir.join("good"));
    let other = TlsFiles::generate(&dir.join("other"));
    let server = EtcdServer::start_tls(&good);
    let put = server.etcdctl(&["put", &format!("{PREFIX}/config"), NET]);
    assert!(put.success(), "{put}");

    // The right CA and client certificate.
    let store = EtcdStore::new(
        tls_config(
            &server,
            &good.ca,
            Some(&good.client_cert),
            Some(&good.client_key),
        ),
        LONG,
    )
    .unwrap_or_else(|e| panic!("store: {e}"));
    let cfg = timeout(Duration::from_secs(15), store.network_config())
        .await
        .unwrap_or_else(|_| panic!("no answer over TLS"))
        .unwrap_or_else(|e| panic!("network_config over TLS: {e}"));
    let lease = store
        .acquire(&cfg, &attrs(1, 0), None)
        .await
        .unwrap_or_else(|e| panic!("acquire over TLS: {e}"));
    let w = crate::lease::listed(&store).await;
    assert_eq!(w.snapshot.len(), 1);
    assert_eq!(w.snapshot[0].subnet, lease.subnet);

    // A client certificate from another CA.
    let msg = refused(
        tls_config(
            &server,
            &good.ca,
            Some(&other.client_cert),
            Some(&other.client_key),
        ),
        "foreign client certificate",
    )
    .await;
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(
        msg.contains("--etcd-certfile"),
        "the message points at the flags: {msg}"
    );
    // A server certificate we do not trust.
    let msg = refused(
        tls_config(
            &server,
            &other.ca,
            Some(&good.client_cert),
            Some(&good.client_key),
        ),
        "untrusted server",
    )
    .await;
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    // No client certificate at all.
    let msg = refused(
        tls_config(&server, &good.ca, None, None),
        "no client certificate",
    )
    .await;
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");

    // Files that are wrong before any connection.
    let missing = dir.join("nope.pem");
    let e = EtcdStore::new(tls_config(&server, &missing, None, None), LONG)
        .err()
        .unwrap_or_else(|| panic!("a missing CA file is an error"));
    assert!(
        e.to_string().contains("--etcd-cafile") && e.to_string().contains("nope.pem"),
        "{e}"
    );
    let e = EtcdStore::new(
        tls_config(&server, &good.ca, Some(&good.client_cert), None),
        LONG,
    )
    .err()
    .unwrap_or_else(|| panic!("a certificate without its key is an error"));
    assert!(e.to_string().contains("--etcd-keyfile"), "{e}");
}

#[tokio::test]
async fn username_and_password() {
    let b = backing().await;
    b.ctl(&["user", "add", "root:rootpw"]);
    b.ctl(&["auth", "enable"]);
    let put = b
        .server
        .etcdctl_as("root:rootpw", &["put", &format!("{PREFIX}/config"), NET]);
    assert!(put.success(), "{put}");
    let with = |user: &str, password: &str| EtcdConfig {
        username: Some(user.to_string()),
        password: Some(password.to_string()),
        ..b.config()
    };
    let store =
        EtcdStore::new(with("root", "rootpw"), LONG).unwrap_or_else(|e| panic!("store: {e}"));
    let cfg = timeout(Duration::from_secs(15), store.network_config())
        .await
        .unwrap_or_else(|_| panic!("no answer with a password"))
        .unwrap_or_else(|e| panic!("network_config with a password: {e}"));
    store
        .acquire(&cfg, &attrs(1, 0), None)
        .await
        .unwrap_or_else(|e| panic!("acquire with a password: {e}"));
    let msg = refused(with("root", "wrong"), "wrong password").await;
    assert!(msg.contains("--etcd-password"), "{msg}");
    // Without credentials, etcd refuses too.
    let msg = refused(b.config(), "no credentials").await;
    assert!(msg.contains("etcd"), "{msg}");
}
