//! The daemon's own contract: health endpoints, and what happens when its
//! lease is taken by another node.

use flannel_cluster::cluster::Cluster;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const HEALTH_PORT: u16 = 10256;

/// GET `path` on the node's own health port, from inside its namespace.
fn get(c: &Cluster, i: usize, path: &'static str) -> Result<String, String> {
    c.node(i).ns.run(move || {
        let mut s = TcpStream::connect(("127.0.0.1", HEALTH_PORT)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        // The request in two segments, as a slow client sends it: the
        // server must wait for the whole request line and headers.
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.write_all(b"GET ").map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(format!("{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        Ok(reply)
    })
}

#[test]
fn healthz_and_readyz_answer_once_subnet_env_is_written() {
    let port = HEALTH_PORT.to_string();
    let c = Cluster::builder()
        .nodes(1)
        .flanneld_args(&["--healthz-ip", "127.0.0.1", "--healthz-port", &port])
        .build();
    let health =
        flannel_cluster::eventually(Duration::from_secs(5), "healthz", || get(&c, 0, "/healthz"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = get(&c, 0, "/readyz").expect("readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let other = get(&c, 0, "/nope").expect("404");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[test]
fn a_lease_taken_by_another_node_makes_the_daemon_exit_non_zero() {
    let mut c = Cluster::new(1);
    let lease = c.lease_of_ok(0);
    // Another node (192.168.64.99) now holds our subnet.
    let text = std::fs::read_to_string(&lease.path).expect("lease file");
    let stolen = text.replace(&format!("\"{}\"", lease.public_ip), "\"192.168.64.99\"");
    assert_ne!(text, stolen, "the lease names our public IP");
    let tmp = lease.path.with_file_name(".stolen.tmp");
    std::fs::write(&tmp, stolen).expect("write");
    std::fs::rename(&tmp, &lease.path).expect("rename");

    flannel_cluster::eventually(Duration::from_secs(10), "flanneld exits", || {
        if c.node(0).is_running() {
            Err("still running".into())
        } else {
            Ok(())
        }
    });
    let status = c.stop(0);
    assert_eq!(status.code(), Some(1), "{status:?}\n{}", c.log(0));
    let log = c.log(0);
    assert!(
        log.contains("was taken over by 192.168.64.99"),
        "the log says why:\n{log}"
    );
}

#[test]
fn a_lease_outside_the_network_never_becomes_a_route() {
    let c = Cluster::new(1);
    // A stray key naming the node LAN, and one naming everything.
    let expires = "2099-01-01T00:00:00Z";
    for name in ["192.168.64.0-24", "0.0.0.0-0"] {
        let value = format!(
            r#"{{"PublicIP":"192.168.64.99","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0e:00:00:00:00:99"}},"Expiration":"{expires}"}}"#
        );
        let tmp = c.lease_dir().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, value).expect("write lease");
        std::fs::rename(&tmp, c.lease_dir().join(name)).expect("rename lease");
    }
    flannel_cluster::eventually(Duration::from_secs(5), "both ignored", || {
        let log = c.log(0);
        if log.matches("outside 10.244.0.0/16").count() >= 2 {
            Ok(())
        } else {
            Err(log)
        }
    });
    let routes = c.node(0).ns.exec("ip", &["route", "show"]);
    assert!(routes.success(), "{routes}");
    assert!(!routes.stdout.contains("flannel.1"), "{}", routes.stdout);
    assert!(
        routes.stdout.contains("default via 192.168.64.1 dev eth0"),
        "{}",
        routes.stdout
    );
    assert!(
        routes.stdout.contains("192.168.64.0/24 dev eth0"),
        "{}",
        routes.stdout
    );
}

/// One bad entry in the lease store never stops a node, and a lease whose
/// PublicIP cannot be a node's unicast underlay address never reaches the
/// kernel: a directory named like a lease, and leases naming a multicast,
/// broadcast, loopback, reserved or link-local address. Both nodes start,
/// program each other and nothing else, and say once what they skipped.
#[test]
fn bad_entries_in_the_lease_store_are_skipped_not_fatal() {
    let mut c = Cluster::builder().nodes(2).start(false).build();
    std::fs::create_dir_all(c.lease_dir().join("10.244.8.0-24")).expect("mkdir");
    let expires = "2099-01-01T00:00:00Z";
    let bad = [
        ("10.244.9.0-24", "224.0.0.1"),
        ("10.244.10.0-24", "255.255.255.255"),
        ("10.244.11.0-24", "127.0.0.1"),
        ("10.244.12.0-24", "240.0.0.1"),
        ("10.244.13.0-24", "169.254.1.1"),
        ("10.244.14.0-24", "0.0.0.0"),
    ];
    for (name, ip) in bad {
        let value = format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0e:00:00:00:00:99"}},"Expiration":"{expires}"}}"#
        );
        std::fs::write(c.lease_dir().join(name), value).expect("write lease");
    }
    c.start(0);
    c.start(1);
    c.wait_ready(0);
    c.wait_ready(1);
    let bad_ips: Vec<&str> = bad.iter().map(|(_, ip)| *ip).collect();
    flannel_cluster::eventually(Duration::from_secs(10), "only real peers", || {
        for i in 0..2 {
            let mut want = c.expected_peers(i);
            want.retain(|p| !bad_ips.contains(&p.public_ip.as_str()));
            if want.len() != 1 {
                return Err(format!("node {i}: peers {want:?}"));
            }
            c.check_entries(i, &want)?;
        }
        Ok(())
    });
    for i in 0..2 {
        assert!(c.node(i).is_running(), "node {i} stopped:\n{}", c.log(i));
        let log = c.log(i);
        assert_eq!(
            log.matches("10.244.8.0-24: not a regular file").count(),
            1,
            "the directory is logged once:\n{log}"
        );
        for (_, ip) in bad {
            assert!(
                log.contains(&format!("PublicIP {ip} is")),
                "{ip} not logged:\n{log}"
            );
        }
    }
    let fdb = c
        .node(0)
        .ns
        .exec("bridge", &["fdb", "show", "dev", "flannel.1"]);
    for ip in bad_ips {
        assert!(!fdb.stdout.contains(ip), "{ip} in the FDB:\n{}", fdb.stdout);
    }
}
