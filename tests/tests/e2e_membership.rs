//! End to end, scenarios 2 and 4: nodes joining and leaving. A new node's
//! pods are reachable from every other node within a second of its flanneld
//! being spawned; a node that leaves (stopped, lease released) or dies (its
//! lease expires) vanishes from every peer's kernel, while the rest of the
//! cluster keeps talking.

use flannel_cluster::cluster::{Cluster, UNDERLAY_BRIDGE};
use flannel_cluster::{eventually, tcp_fetch, TcpServer};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

const CONVERGE: Duration = Duration::from_secs(10);
const REACH: Duration = Duration::from_secs(10);

#[test]
fn a_fourth_node_is_reachable_from_every_node_within_a_second_of_its_flanneld_starting() {
    let mut c = Cluster::new(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let gateway_mac = |c: &Cluster| {
        c.underlay()
            .link(UNDERLAY_BRIDGE)
            .map(|l| l["address"].clone())
    };
    let before = gateway_mac(&c);
    let new = c.add_node();
    // A port joining the underlay leaves the gateway's MAC alone: the other
    // nodes' ARP entries for it (their way to etcd and the kube API) hold.
    assert_eq!(
        gateway_mac(&c),
        before,
        "underlay bridge MAC after a node joined"
    );
    // The pod's namespace exists beforehand: on the clock are flanneld's
    // start, its lease reaching the peers, and the CNI ADD.
    let pod = c.new_pod(new);

    let spawned = Instant::now();
    c.start(new);
    c.wait_ready(new);
    let p = c
        .attach_pod(new, pod)
        .unwrap_or_else(|out| panic!("CNI ADD on the new node: {out}"));
    let ready = spawned.elapsed();
    let server = TcpServer::start(p.ns(), SocketAddr::new(p.ip, 0), "from {peer}");
    let backs: Vec<TcpServer> = pods
        .iter()
        .map(|q| TcpServer::start(q.ns(), SocketAddr::new(q.ip, 0), "from {peer}"))
        .collect();
    let took: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .zip(&backs)
            .map(|(q, back)| {
                let (server, p) = (&server, &p);
                s.spawn(move || {
                    let probe = Duration::from_millis(100);
                    eventually(REACH, &format!("{} ⇄ new pod {}", q.ip, p.ip), || {
                        let there = tcp_fetch(q.ns(), server.addr(), probe)?;
                        let back = tcp_fetch(p.ns(), back.addr(), probe)?;
                        if there == format!("from {}", q.ip) && back == format!("from {}", p.ip) {
                            Ok(spawned.elapsed())
                        } else {
                            Err(format!("banners {there:?} / {back:?}"))
                        }
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let worst = *took.iter().max().unwrap();
    eprintln!("new node: subnet.env + CNI ADD after {ready:?}; reachable from all after {took:?}");
    assert!(
        worst <= Duration::from_secs(1),
        "the new node's pod was reachable from every node only {worst:?} after its flanneld was \
         spawned (per node: {took:?})"
    );
    let mut all: Vec<_> = pods.iter().collect();
    all.push(&p);
    c.ping_matrix(&all, REACH).assert_all_ok();
    c.wait_all_converged(CONVERGE);
}

#[test]
fn a_node_that_leaves_and_releases_its_lease_vanishes_from_every_peer() {
    let mut c = Cluster::new(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();

    let gone = c.lease_of_ok(2);
    let st = c.stop(2);
    assert_eq!(st.code(), Some(0), "SIGTERM: {st:?}\n{}", c.log(2));
    c.remove_lease(2);
    eventually(
        CONVERGE,
        "the leaver's entries to go from every peer",
        || {
            for i in 0..2 {
                c.no_trace_of(i, &gone)?;
                c.check_entries(i, &c.expected_peers(i))?;
            }
            Ok(())
        },
    );
    for i in 0..2 {
        assert_eq!(c.expected_peers(i).len(), 1);
        assert_eq!(c.kernel(i).routes.len(), 1, "{:#?}", c.kernel(i));
    }
    // The others still talk; the leaver's pod is no longer routed.
    c.ping_matrix(&refs[..2], REACH).assert_all_ok();
    for q in &pods[..2] {
        assert!(
            c.ping_once(q, pods[2].ip).is_err(),
            "{} still reaches the leaver's pod {}",
            q.ip,
            pods[2].ip
        );
    }
}

#[test]
fn a_node_that_dies_without_releasing_vanishes_from_every_peer_once_its_lease_expires() {
    let ttl = 3;
    let mut c = Cluster::builder().nodes(3).lease_ttl(ttl).build();
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();

    c.kill(2);
    let gone = c.lease_of_ok(2);
    let expires = gone
        .expires
        .expect("the file store's leases carry their expiry");
    // Until the lease expires the dead node stays a peer, and its datapath
    // (left in its kernel) keeps carrying traffic.
    if SystemTime::now() + Duration::from_millis(500) < expires {
        for i in 0..2 {
            c.check_entries(i, &c.expected_peers(i)).unwrap();
            assert_eq!(c.expected_peers(i).len(), 2);
        }
        c.ping_once(&pods[0], pods[2].ip).unwrap();
    }
    eventually(
        Duration::from_secs(ttl + 10),
        "the dead node's entries to go once its lease expired",
        || {
            for i in 0..2 {
                c.no_trace_of(i, &gone)?;
            }
            Ok(())
        },
    );
    let now = SystemTime::now();
    assert!(
        now + Duration::from_millis(200) >= expires,
        "entries removed before the lease expired ({:?} early)",
        expires.duration_since(now).unwrap_or_default()
    );
    let late = now.duration_since(expires).unwrap_or_default();
    assert!(
        late <= Duration::from_secs(3),
        "entries removed {late:?} after expiry"
    );
    for i in 0..2 {
        c.check_entries(i, &c.expected_peers(i)).unwrap();
    }
    c.ping_matrix(&refs[..2], REACH).assert_all_ok();
    assert!(c.ping_once(&pods[0], pods[2].ip).is_err());
}
