//! flanneld's HTTP server (/healthz, /readyz, /metrics) against slow,
//! split, oversized and malformed requests, and a flood of idle
//! connections beyond its bound: each is answered with a 4xx or closed,
//! and /healthz keeps answering meanwhile.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use flannel_cluster::cluster::Cluster;
use flannel_cluster::eventually;
use flannel_cluster::metrics::{self, exchange, split_reply, PORT};
use flannel_cluster::netns::NetNs;

const CONVERGE: Duration = Duration::from_secs(20);
/// How long a client waits for a reply; flanneld's own header timeout is 5 s.
const WAIT: Duration = Duration::from_secs(15);

fn healthz_ok(ns: &NetNs) {
    assert_eq!(
        metrics::get(ns, "/healthz").map(|(s, _)| s),
        Ok(200),
        "/healthz"
    );
}

fn status_of(ns: &NetNs, parts: Vec<Vec<u8>>) -> Option<u16> {
    let reply = exchange(ns, PORT, parts, WAIT).expect("connect");
    split_reply(&reply).ok().map(|(s, _)| s)
}

fn node() -> Cluster {
    let c = Cluster::new(1);
    c.wait_all_converged(CONVERGE);
    eventually(CONVERGE, "/readyz 200", || {
        match metrics::get(&c.node(0).ns, "/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    c
}

#[test]
fn split_oversized_and_malformed_requests_get_4xx_or_closed() {
    let c = node();
    let ns = &c.node(0).ns;

    // Split across segments, even inside the request line: served.
    let split = ["GET /hea", "lthz HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"]
        .map(|p| p.as_bytes().to_vec())
        .to_vec();
    assert_eq!(status_of(ns, split), Some(200));
    let (status, body) = metrics::get(ns, "/readyz").expect("readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(metrics::get(ns, "/nothing").map(|(s, _)| s), Ok(404));

    // Huge headers: 431, or closed; never a 2xx.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let s = status_of(ns, vec![big.into_bytes()]);
    assert!(matches!(s, None | Some(400..=499)), "huge headers: {s:?}");
    healthz_ok(ns);

    // A body announced, huge or chunked: 413/405 without reading it.
    let post =
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nxxxx".to_vec();
    let s = status_of(ns, vec![post]);
    assert!(
        matches!(s, None | Some(400..=499)),
        "POST with a body: {s:?}"
    );
    let get_body =
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\nxxxx".to_vec();
    assert_eq!(status_of(ns, vec![get_body]), Some(413));
    let chunked =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\nxx"
            .to_vec();
    assert_eq!(status_of(ns, vec![chunked]), Some(413));
    healthz_ok(ns);

    // Malformed: 400, or closed.
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"\r\n\r\n\r\n",
    ] {
        let s = status_of(ns, vec![junk.to_vec()]);
        assert!(
            matches!(s, None | Some(400..=499) | Some(505)),
            "{:?}: {s:?}",
            String::from_utf8_lossy(junk)
        );
    }
    healthz_ok(ns);
}

#[test]
fn slow_and_idle_clients_do_not_stall_healthz() {
    let c = node();
    let ns = &c.node(0).ns;

    // Slowloris: a header line a second, never ending the head.
    let slow = ns.spawn(move || {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n");
        let mut reply = Vec::new();
        for i in 0..30 {
            if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .is_err()
            {
                break; // closed by the server
            }
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(_) => {} // nothing yet
            }
        }
        let _ = s.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    });

    // More idle connections than the server's bound (64), held open.
    let idle = ns.run(|| {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
        (0..100)
            .map(|_| TcpStream::connect(addr).expect("connect an idle client"))
            .collect::<Vec<_>>()
    });
    for _ in 0..5 {
        healthz_ok(ns);
        let (status, body) = metrics::get(ns, "/metrics").expect("metrics");
        assert_eq!(status, 200);
        assert!(body.contains("flanneld_peers"), "{body}");
    }

    let reply = slow.join().expect("the slow client");
    assert!(
        !reply.starts_with("HTTP/1.1 2"),
        "a request whose headers never ended was answered: {reply:?}"
    );
    drop(idle);
    healthz_ok(ns);
}
