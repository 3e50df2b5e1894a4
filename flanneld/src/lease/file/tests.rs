//! The embedded store: the shared contract, then what is specific to files.
//!
//! Writes only in its own temp directories.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use super::format::{decode, encode, parse_name};
use super::{FileError, FileStore};
use crate::lease::contract_tests::{attrs, config, net, Backing, TempDir, LONG};
use crate::lease::{LeaseError, LeaseEvent, LeaseStore, LeaseTiming};
use crate::netconf::NetConfig;

/// A temp directory holding `leases/` and (maybe) `net-conf.json`.
struct FileBacking {
    dir: TempDir,
    timing: LeaseTiming,
}

impl FileBacking {
    fn store(&self) -> FileStore {
        let d = self.dir.path();
        FileStore::new(d.join("leases"), d.join("net-conf.json"), self.timing)
    }
    /// The lease directory, created for tests that write files by hand.
    fn leases(&self) -> std::path::PathBuf {
        let dir = self.dir.path().join("leases");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir
    }
}

#[async_trait::async_trait]
impl Backing for FileBacking {
    async fn new(timing: LeaseTiming) -> Self {
        Self {
            dir: TempDir::new("leases"),
            timing,
        }
    }
    async fn node(&self) -> Arc<dyn LeaseStore> {
        Arc::new(self.store())
    }
}

mod contract {
    crate::lease::contract_tests::lease_store_contract!(super::FileBacking);
    crate::lease::contract_tests::choosing_store_contract!(super::FileBacking);
    crate::lease::contract_tests::dual_stack_contract!(super::FileBacking);
}

async fn backing() -> FileBacking {
    FileBacking::new(LONG).await
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn file_is_flannels_value_plus_expiration() {
    let b = backing().await;
    let l = b
        .store()
        .acquire(
            &NetConfig::default_config(),
            &attrs(3, 0),
            Some(net("10.244.1.0/24")),
        )
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    let path = b.leases().join("10.244.1.0-24");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let prefix = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:00:00:03"},"Expiration":""#;
    assert!(text.starts_with(prefix), "{text}");
    assert!(text.ends_with("Z\"}\n"), "{text}");
    assert_eq!(
        decode((l.subnet, l.ipv6_subnet), text.as_bytes()).ok(),
        Some(l.clone()),
        "read back exactly"
    );
    assert_eq!(
        listing(&b.leases()),
        [".lock", "10.244.1.0-24"],
        "no temp file left behind"
    );
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o644);
    assert_eq!(encode(&l).ok().map(|b| b.ends_with(b"\n")), Some(true));
}

#[tokio::test]
async fn ipv6_only_file_is_named_and_valued_as_flannels_key() {
    let b = backing().await;
    let cfg = NetConfig::parse(
        r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#,
    )
    .expect("config");
    let a = crate::lease::LeaseAttrs::vxlan_v6_only(
        "2001:db8::3".parse().expect("ip6"),
        1,
        "0a:58:0a:00:00:03",
    );
    let previous = crate::lease::Previous {
        ipv4: None,
        ipv6: Some("fd00:10:244:7::1/64".parse().expect("net")),
    };
    let l = b
        .store()
        .acquire_with(&cfg, &a, previous)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(l.key(), "0.0.0.0-0&fd00:10:244:7::-64");
    let path = b.leases().join("0.0.0.0-0&fd00:10:244:7::-64");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let prefix = r#"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:00:00:03"},"Expiration":""#;
    assert!(text.starts_with(prefix), "{text}");
    assert_eq!(
        decode(l.id(), text.as_bytes()).ok(),
        Some(l.clone()),
        "read back exactly"
    );
    assert_eq!(
        parse_name("0.0.0.0-0&fd00:10:244:7::-64"),
        Some((crate::lease::NO_IPV4, l.ipv6_subnet))
    );
}

#[test]
fn names_are_etcd_keys() {
    assert_eq!(
        parse_name("10.244.1.0-24"),
        Some((net("10.244.1.0/24"), None))
    );
    assert_eq!(
        parse_name("10.244.1.0-24&fc00::-64"),
        Some((
            net("10.244.1.0/24"),
            Some("fc00::/64".parse().expect("net"))
        ))
    );
    for bad in [
        "10.244.1.1-24",
        "10.244.1.0/24",
        "10.244.1.0-33",
        "x-24",
        "10.244.1.0",
        "10.244.1.0-24&fc00::1-64",
        "10.244.1.0-24&FC00::-64",
        "10.244.1.0-24&fc00:0::-64",
        "10.244.1.0-24&",
    ] {
        assert_eq!(parse_name(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn hand_written_and_malformed_files() {
    let b = backing().await;
    let s = b.store();
    let dir = b.leases();
    // Second-precision expiry, as a human would write it.
    write(
        &dir.join("10.244.9.0-24"),
        r#"{"PublicIP":"192.168.64.9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:00:00:09"},"Expiration":"2999-01-01T00:00:00Z"}"#,
    );
    write(&dir.join("10.244.5.0-24"), "{not json");
    write(
        &dir.join("10.244.6.0-24"),
        r#"{"PublicIP":"192.168.64.6","BackendType":"vxlan","Expiration":"tomorrow"}"#,
    );
    write(&dir.join("10.244.7.1-24"), "host bits in the name");
    write(&dir.join("README"), "not a lease");
    write(&dir.join(".10.244.8.0-24.tmp"), "a temp file");
    let mut w = crate::lease::listed(&s).await;
    let held: Vec<_> = w
        .snapshot
        .iter()
        .map(|l| (l.subnet, l.attrs.public_ip))
        .collect();
    assert_eq!(
        held,
        [(net("10.244.9.0/24"), Ipv4Addr::new(192, 168, 64, 9))]
    );

    // A malformed file is free for acquire.
    let cfg = NetConfig::default_config();
    let l = s
        .acquire(&cfg, &attrs(1, 0), Some(net("10.244.5.0/24")))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(l.subnet, net("10.244.5.0/24"));
    assert!(matches!(w.events.recv().await, Some(Ok(LeaseEvent::Added(a))) if a == l));
    // Dot files never wake a watcher; a lease corrupted in place is removed,
    // and added again once fixed.
    write(&dir.join(".scratch"), "x");
    write(&dir.join("10.244.5.0-24"), "garbage");
    assert!(
        matches!(w.events.recv().await, Some(Ok(LeaseEvent::Removed(r))) if r.subnet == l.subnet)
    );
    s.renew(&l)
        .await
        .unwrap_or_else(|e| panic!("renew over a malformed file: {e}"));
    assert!(
        matches!(w.events.recv().await, Some(Ok(LeaseEvent::Added(a))) if a.subnet == l.subnet)
    );
    // The hand-written lease is reused by its public IP.
    let mine = s
        .acquire(&cfg, &attrs(9, 1), None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(mine.subnet, net("10.244.9.0/24"));
}

#[tokio::test]
async fn network_config_from_file() {
    let b = backing().await;
    let s = b.store();
    let path = b.dir.path().join("net-conf.json");
    let got = s
        .network_config()
        .await
        .unwrap_or_else(|e| panic!("missing file: {e}"));
    assert_eq!(
        got,
        NetConfig::default_config(),
        "a missing file gives the default"
    );
    write(
        &path,
        r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}"#,
    );
    let got = s
        .network_config()
        .await
        .unwrap_or_else(|e| panic!("valid file: {e}"));
    assert_eq!(got.v4().expect("ipv4").network, net("10.50.0.0/16"));
    write(&path, r#"{"Network":"10.50.0.0/16","SubnetLen":31}"#);
    let msg = s
        .network_config()
        .await
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("SubnetLen 31"),
        "{msg}"
    );
}

#[tokio::test]
async fn renew_recreates_a_vanished_lease() {
    let b = backing().await;
    let s = b.store();
    let l = s
        .acquire(&NetConfig::default_config(), &attrs(1, 0), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let path = b
        .leases()
        .join(super::format::file_name((l.subnet, l.ipv6_subnet)));
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    let r = s.renew(&l).await.unwrap_or_else(|e| panic!("renew: {e}"));
    assert_eq!((r.subnet, &r.attrs), (l.subnet, &l.attrs));
    assert!(path.exists(), "recreated");
}

#[tokio::test]
async fn one_lease_per_public_ip() {
    let b = backing().await;
    let s = b.store();
    let dir = b.leases();
    let cfg = config(r#"{"Network":"10.244.0.0/16","SubnetMax":"10.244.100.0"}"#);
    let body = r#"{"PublicIP":"192.168.64.1","BackendType":"vxlan","BackendData":{},"Expiration":"2999-01-01T00:00:00Z"}"#;
    for name in [
        "10.244.10.0-24",
        "10.244.20.0-24",
        "10.244.30.0-24",
        "10.244.200.0-24",
    ] {
        write(&dir.join(name), body);
    }
    // `previous` may carry host bits, as FLANNEL_SUBNET does.
    let l = s
        .acquire(&cfg, &attrs(1, 0), Some(net("10.244.20.1/24")))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(
        l.subnet,
        net("10.244.20.0/24"),
        "previous wins among our own leases"
    );
    assert_eq!(
        listing(&dir),
        [".lock", "10.244.20.0-24", "10.244.200.0-24"],
        "other in-range copies removed"
    );
}

#[tokio::test]
async fn directory_is_created_on_first_use_and_its_removal_ends_the_watch() {
    let t = TempDir::new("leases-nested");
    let dir = t.path().join("a/b/leases");
    let s = FileStore::new(dir.clone(), t.path().join("none.json"), LONG);
    let mut w = crate::lease::listed(&s).await;
    assert!(dir.is_dir(), "created by watch");
    std::fs::remove_dir_all(t.path().join("a")).unwrap_or_else(|e| panic!("remove: {e}"));
    match tokio::time::timeout(Duration::from_secs(5), w.events.recv()).await {
        Ok(Some(Err(e @ LeaseError::File(FileError::DirGone { .. })))) => {
            assert!(e.to_string().contains("removed"), "{e}")
        }
        other => panic!("expected a watch error, got {other:?}"),
    }
    let cfg = NetConfig::default_config();
    s.acquire(&cfg, &attrs(1, 0), None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert!(dir.is_dir(), "created again by acquire");
}

#[tokio::test]
async fn errors_name_the_operation_and_the_path() {
    let t = TempDir::new("leases-file");
    let blocker = t.path().join("file");
    write(&blocker, "");
    let s = FileStore::new(blocker.join("leases"), t.path().join("n.json"), LONG);
    let cfg = NetConfig::default_config();
    let e = s.acquire(&cfg, &attrs(1, 0), None).await.map(|_| ()).err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("create lease directory") && msg.contains(&blocker.display().to_string()),
        "{msg}"
    );
    let e = s.watch().await.map(|_| ()).err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains(&blocker.display().to_string()), "{msg}");
}
