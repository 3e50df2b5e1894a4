//! The harness's own promises: namespaces and temp dirs vanish on drop and on
//! panic, threads enter namespaces, TCP helpers work across namespaces.

use flannel_cluster::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[test]
fn netns_and_tempdir_are_removed_on_drop_and_on_panic() {
    let ns = NetNs::new("h");
    let path = ns.path().to_owned();
    let dir = TempDir::new("h");
    let dpath = dir.path().to_owned();
    assert!(path.exists() && dpath.is_dir());
    drop((ns, dir));
    assert!(!path.exists(), "{} left", path.display());
    assert!(!dpath.exists());

    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let ns = NetNs::new("h");
        let dir = TempDir::new("h");
        tx.send((ns.path().to_owned(), dir.path().to_owned()))
            .unwrap();
        panic!("deliberate panic to test the guards");
    })
    .join();
    assert!(r.is_err());
    let (p, d) = rx.recv().unwrap();
    assert!(!p.exists(), "netns {} survived a panic", p.display());
    assert!(!d.exists(), "temp dir {} survived a panic", d.display());
}

#[test]
fn names_are_unique_and_owned_by_this_process() {
    let a = NetNs::new("h");
    let b = NetNs::new("h");
    assert_ne!(a.name(), b.name());
    let own = flannel_cluster::netns::own_namespaces();
    assert!(own.contains(&a.name().to_owned()) && own.contains(&b.name().to_owned()));
    assert!(a.name().len() <= 20, "keep names short: {}", a.name());
}

#[test]
fn threads_enter_the_namespace_and_tcp_crosses_a_veth() {
    let a = NetNs::new("h");
    let b = NetNs::new("h");
    a.add_veth_to("va", &b, "vb");
    a.add_addr("va", "192.168.201.1/24");
    b.add_addr("vb", "192.168.201.2/24");
    // A thread in `a` sees a's interfaces, not the host's.
    let seen = a.run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    assert!(seen.contains("va:") && !seen.contains("vb:"), "{seen}");
    assert!(a.has_link("va") && !a.has_link("vb"));
    assert_eq!(a.ipv4_addrs("va"), vec!["192.168.201.1/24".to_owned()]);
    let srv = TcpServer::start(&b, "192.168.201.2:0".parse().unwrap(), "hello");
    assert_eq!(
        tcp_fetch(&a, srv.addr(), Duration::from_secs(5)).as_deref(),
        Ok("hello")
    );
    assert_eq!(srv.accepted(), 1);
    // Nobody listens there: refused or timed out, never a hang.
    let nowhere: SocketAddr = "192.168.201.9:1".parse().unwrap();
    assert!(tcp_fetch(&a, nowhere, Duration::from_millis(300)).is_err());
}

#[test]
fn sysctl_and_routes_are_read_inside_the_namespace() {
    let ns = NetNs::new("h");
    ns.add_veth_pair("x0", "x1");
    ns.add_addr("x0", "10.99.0.1/24");
    let r = ns.route_v4("10.99.0.0/24").expect("connected route");
    assert_eq!(r["dev"], "x0");
    assert!(["0", "1"].contains(&ns.sysctl("net.ipv4.ip_forward").as_str()));
    assert!(Path::new(ns.path()).exists());
}

#[test]
fn eventually_returns_value_or_panics_with_reason() {
    let mut n = 0;
    let v = eventually(Duration::from_secs(1), "counter", || {
        n += 1;
        if n >= 3 {
            Ok(n)
        } else {
            Err(format!("n={n}"))
        }
    });
    assert_eq!(v, 3);
    let r = std::panic::catch_unwind(|| {
        eventually(Duration::from_millis(30), "never", || {
            Err::<(), _>("no".into())
        })
    });
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("never") && msg.contains("no"), "{msg}");
}

#[test]
fn cmd_timeout_kills_the_child() {
    let r = std::panic::catch_unwind(|| {
        flannel_cluster::cmd::run_with(
            std::process::Command::new("sleep").arg("5"),
            None,
            Duration::from_millis(100),
        )
    });
    assert!(r.is_err());
    let out = flannel_cluster::cmd::run_with(
        &mut std::process::Command::new("cat"),
        Some(b"abc"),
        Duration::from_secs(5),
    );
    assert_eq!(out.stdout, "abc");
}
