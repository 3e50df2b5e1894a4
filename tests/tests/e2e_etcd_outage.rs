//! End to end on the etcd lease store, two points of issue 5:
//!
//! 1. etcd stopped for 20 s while a node joins and another leaves, then
//!    restarted: every node ends with exactly the right entries, the new
//!    node is reachable from all, the one that left is gone everywhere, the
//!    pods of the nodes that stayed never lost connectivity, and each daemon
//!    logged the outage once per state change (while retrying many times).
//! 2. two flanneld racing for the last free subnet: one wins, the other
//!    exits non-zero with one clear "no free subnet" line naming the
//!    network — on etcd and on the embedded file store.
//!
//! What "leaves" means during an outage: the node's flanneld is stopped
//! (SIGTERM; flanneld, like flannel, never releases its lease on the way
//! out, so that a restart keeps the subnet) and the node drops off the
//! underlay. Nobody can delete its key while etcd is down, and nobody has
//! to afterwards: the leaving node ran with a short `--lease-ttl`, so its
//! key goes when its etcd lease runs out after etcd is back (etcd restarts
//! every lease's countdown when it comes back) — the way a departed node
//! disappears from a flannel cluster on etcd, with no operator action.

use flannel_cluster::cluster::traffic::{PingStats, Pinger};
use flannel_cluster::cluster::{Cluster, StoreKind, NODE_IP_BASE};
use flannel_cluster::{eventually, NetNs};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(10);
const REACH: Duration = Duration::from_secs(10);
const INTERVAL: Duration = Duration::from_millis(50);
/// How long etcd stays down.
const OUTAGE: Duration = Duration::from_secs(20);
/// `--lease-ttl` of the node that leaves (the others keep 24 h).
const LEAVER_TTL: u64 = 6;
/// After etcd is back: the daemons' back-off (at most 10 s) plus the
/// leaver's TTL plus etcd's election, with room to spare.
const CATCH_UP: Duration = Duration::from_secs(40);

/// The line a store's back-off logs when etcd stops answering (once per
/// state change), and the one it logs when etcd answers again.
const DOWN_LINE: &str = "retrying with back-off";
const UP_LINE: &str = "etcd answers again";

fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 64, NODE_IP_BASE + i as u8)
}

/// Counts, in the underlay (where etcd listens), the TCP SYNs each of
/// `nodes` sends to etcd's client port: one per connection attempt.
struct SynCounter {
    ips: Vec<Ipv4Addr>,
}

const SYN_TABLE: &str = "ft_etcd_syns";

impl SynCounter {
    fn install(underlay: &NetNs, ips: Vec<Ipv4Addr>) -> Self {
        let ok = |args: &[&str]| {
            let out = underlay.nft(args);
            assert!(out.success(), "nft {args:?}: {out}");
        };
        ok(&["add", "table", "ip", SYN_TABLE]);
        ok(&[
            "add",
            "chain",
            "ip",
            SYN_TABLE,
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ]);
        for ip in &ips {
            ok(&[
                "add",
                "rule",
                "ip",
                SYN_TABLE,
                "input",
                "ip",
                "saddr",
                &ip.to_string(),
                "tcp",
                "dport",
                "2379",
                "tcp",
                "flags",
                "&",
                "(syn|ack)",
                "==",
                "syn",
                "counter",
            ]);
        }
        SynCounter { ips }
    }

    /// SYNs counted so far, per IP (in `ips` order).
    fn read(&self, underlay: &NetNs) -> Vec<u64> {
        let out = underlay.nft(&["list", "chain", "ip", SYN_TABLE, "input"]);
        assert!(out.success(), "nft list: {out}");
        self.ips
            .iter()
            .map(|ip| {
                let needle = format!("ip saddr {ip} ");
                let line = out
                    .stdout
                    .lines()
                    .find(|l| l.contains(&needle))
                    .unwrap_or_else(|| panic!("no counter rule for {ip}:\n{}", out.stdout));
                line.split_whitespace()
                    .skip_while(|w| *w != "packets")
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no packet count in {line:?}"))
            })
            .collect()
    }
}

/// The lines of `log` containing `what`.
fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

#[test]
fn etcd_outage_while_a_node_joins_and_one_leaves_converges_without_loss() {
    let t0 = Instant::now();
    let mut c = Cluster::builder()
        .nodes(3)
        .store(StoreKind::Etcd)
        .start(false)
        .build();
    c.start(0);
    c.start(1);
    c.start_with(2, &["--lease-ttl", &LEAVER_TTL.to_string()]);
    for i in 0..3 {
        c.wait_ready(i);
    }
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    let gone = c.lease_of_ok(2);
    // The joining node's namespace is wired now; its flanneld starts
    // during the outage.
    let new = c.add_node();
    let syns = SynCounter::install(c.underlay(), vec![node_ip(0), node_ip(1), node_ip(new)]);

    // Between the pods of the nodes that stay, both ways, throughout.
    let pingers = [
        Pinger::start(&pods[0], pods[1].ip, INTERVAL),
        Pinger::start(&pods[1], pods[0].ip, INTERVAL),
    ];
    c.wait_ping(&pods[0], pods[1].ip, REACH);
    c.wait_ping(&pods[1], pods[0].ip, REACH);
    let marks: Vec<usize> = (0..3).map(|i| c.log(i).len()).collect();
    let syns_before = syns.read(c.underlay());

    // --- etcd goes down ---
    let down = Instant::now();
    c.stop_etcd();
    // A node joins: its flanneld must wait for etcd, not exit.
    c.start(new);
    // A node leaves: flanneld stopped, the node off the underlay.
    let st = c.stop(2);
    assert_eq!(st.code(), Some(0), "SIGTERM should exit 0: {st:?}");
    c.node(2).ns.ip_ok(&["link", "set", "eth0", "down"]);
    eventually(
        Duration::from_secs(10),
        "the joining node to report etcd unreachable and keep waiting",
        || {
            assert!(
                c.node(new).is_running(),
                "the joining node's flanneld exited while etcd was down:\n{}",
                c.log(new)
            );
            if c.log(new).contains(DOWN_LINE) {
                Ok(())
            } else {
                Err(c.log(new))
            }
        },
    );
    // The deliberate outage: etcd stays down for OUTAGE in total.
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    for i in [0, 1, new] {
        assert!(
            c.node(i).is_running(),
            "{}: flanneld exited during the outage:\n{}",
            c.node(i).name,
            c.log(i)
        );
    }
    assert!(
        c.node(new).subnet_env().is_none(),
        "the joining node wrote a subnet.env without etcd"
    );
    let syns_outage: Vec<u64> = syns
        .read(c.underlay())
        .iter()
        .zip(&syns_before)
        .map(|(a, b)| a - b)
        .collect();
    let outage = down.elapsed();

    // --- etcd comes back (same data, same address) ---
    c.restart_etcd();
    let back = Instant::now();
    c.wait_ready(new);
    let joined_after = back.elapsed();
    let stayed = [0, 1, new];
    // Everyone caught up with the join (the departed lease is still there).
    eventually(
        CATCH_UP,
        "every node to hold the joining node's entries",
        || {
            for &i in &stayed {
                let peers = c.expected_peers(i);
                if peers.len() != 3 {
                    return Err(format!("{}: peers {peers:?}", c.node(i).name));
                }
                c.check_entries(i, &peers)?;
            }
            Ok(())
        },
    );
    let join_seen_after = back.elapsed();
    eventually(CATCH_UP, "the departed node's lease to expire", || match c
        .leases()
        .iter()
        .find(|l| l.subnet == gone.subnet)
    {
        Some(l) => Err(format!("{} still leased: {l:?}", gone.subnet)),
        None => Ok(()),
    });
    let expired_after = back.elapsed();
    eventually(
        CATCH_UP,
        "every node to hold exactly its peers' entries",
        || {
            for &i in &stayed {
                c.no_trace_of(i, &gone)?;
                c.check_entries(i, &c.expected_peers(i))?;
            }
            Ok(())
        },
    );
    let converged_after = back.elapsed();

    // Exactly the right entries: the two other stayers', on every stayer.
    let leases = c.leases();
    let mut holders: Vec<String> = leases.iter().map(|l| l.public_ip.clone()).collect();
    holders.sort();
    let mut want: Vec<String> = stayed.iter().map(|&i| node_ip(i).to_string()).collect();
    want.sort();
    assert_eq!(holders, want, "leases after the outage: {leases:#?}");
    for &i in &stayed {
        let peers = c.expected_peers(i);
        assert_eq!(peers.len(), 2, "{}: {peers:?}", c.node(i).name);
        c.check_entries(i, &peers).unwrap();
    }
    assert_eq!(
        c.lease_of_ok(0).subnet,
        c.node(0).subnet(),
        "node0's subnet changed"
    );
    // The new node is reachable from every stayer, and reaches them.
    let joined = c.add_pod(new);
    let after = [&pods[0], &pods[1], &joined];
    c.ping_matrix(&after, REACH).assert_all_ok();

    // A short measurement window after convergence, not an assertion.
    std::thread::sleep(Duration::from_millis(500));
    let stats: Vec<PingStats> = pingers.into_iter().map(Pinger::finish).collect();
    for (s, what) in stats.iter().zip(["node0→node1", "node1→node0"]) {
        eprintln!(
            "pod ping {what}: {} of {} echoes lost ({:?} of traffic)",
            s.transmitted - s.received,
            s.transmitted,
            s.lost_time()
        );
        assert!(
            s.transmitted as u64 * INTERVAL.as_millis() as u64 >= 20_000,
            "the pinger did not span the outage: {s:?}"
        );
        assert!(
            s.lost_time() <= Duration::from_secs(1),
            "{what}: {:?} of traffic lost across the outage ({} of {} echoes):\n{}",
            s.lost_time(),
            s.transmitted - s.received,
            s.transmitted,
            s.output
        );
    }

    // The outage, logged once per state change (down, then up again) on
    // each daemon, although each retried many times.
    for (k, &i) in stayed.iter().enumerate() {
        let log = c.log(i);
        let log = &log[marks.get(i).copied().unwrap_or(0).min(log.len())..];
        let down_lines = lines_with(log, DOWN_LINE);
        let up_lines = lines_with(log, UP_LINE);
        eprintln!(
            "{}: {} connection attempts to etcd during the outage; {} 'down' line(s), {} 'up' line(s)",
            c.node(i).name,
            syns_outage[k],
            down_lines.len(),
            up_lines.len()
        );
        assert!(
            syns_outage[k] >= 3,
            "{}: only {} connection attempts while etcd was down: not retrying?",
            c.node(i).name,
            syns_outage[k]
        );
        assert_eq!(
            (down_lines.len(), up_lines.len()),
            (1, 1),
            "{}: the outage should be logged once going down and once coming back:\n{log}",
            c.node(i).name
        );
    }
    eprintln!(
        "etcd down {outage:?}; after it was back: joining node ready in {joined_after:?}, \
         its entries on every node in {join_seen_after:?}, departed lease expired in {expired_after:?}, all converged in {converged_after:?}; \
         test took {:?}",
        t0.elapsed()
    );
}

/// Two nodes' flanneld started together on a network with exactly one
/// leasable subnet: one gets it, the other exits non-zero saying so.
fn race_for_the_last_subnet(store: StoreKind) {
    let t0 = Instant::now();
    let network = "10.244.0.0/16";
    let last = "10.244.9.0/24";
    let conf = json!({
        "Network": network,
        "SubnetLen": 24,
        "SubnetMin": "10.244.9.0",
        "SubnetMax": "10.244.9.0",
        "Backend": {"Type": "vxlan"},
    });
    let mut c = Cluster::builder()
        .nodes(2)
        .store(store)
        .net_conf(conf)
        .start(false)
        .build();
    c.start(0);
    c.start(1);
    let (winner, loser) = eventually(
        Duration::from_secs(20),
        "one flanneld to take the subnet and the other to exit",
        || {
            let ready: Vec<usize> = (0..2)
                .filter(|&i| c.node(i).subnet_env().is_some())
                .collect();
            let exited: Vec<usize> = (0..2).filter(|&i| !c.node(i).is_running()).collect();
            match (ready.as_slice(), exited.as_slice()) {
                (&[w], &[l]) if w != l => Ok((w, l)),
                _ => Err(format!("ready {ready:?}, exited {exited:?}")),
            }
        },
    );
    let st = c.stop(loser);
    let log = c.log(loser);
    assert_eq!(st.code(), Some(1), "the loser should exit 1: {st:?}\n{log}");
    assert!(
        c.node(loser).subnet_env().is_none(),
        "the loser wrote a subnet.env"
    );
    let said = lines_with(&log, "no free subnet");
    assert_eq!(said.len(), 1, "one 'no free subnet' line wanted:\n{log}");
    assert!(
        said[0].contains("ERROR") && said[0].contains(network),
        "the line should be an error naming {network}: {:?}",
        said[0]
    );
    assert_eq!(
        lines_with(&log, "ERROR").len(),
        1,
        "nothing else should be reported as an error:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    assert!(c.node(winner).is_running(), "{}", c.log(winner));
    assert_eq!(c.node(winner).subnet(), last);
    let leases = c.leases();
    assert_eq!(leases.len(), 1, "{leases:#?}");
    assert_eq!(leases[0].subnet, last);
    assert_eq!(leases[0].public_ip, node_ip(winner).to_string());
    let collided =
        c.log(winner).contains("first; picking again") || log.contains("first; picking again");
    eprintln!(
        "{} store: {} won {last}; {} exited 1 with: {}\n(a write conflict was {}seen; took {:?})",
        store.as_str(),
        c.node(winner).name,
        c.node(loser).name,
        said[0].trim(),
        if collided { "" } else { "not " },
        t0.elapsed()
    );
}

#[test]
fn etcd_two_flanneld_race_for_the_last_subnet_one_wins_one_says_no_free_subnet() {
    race_for_the_last_subnet(StoreKind::Etcd);
}

#[test]
fn file_store_two_flanneld_race_for_the_last_subnet_one_wins_one_says_no_free_subnet() {
    race_for_the_last_subnet(StoreKind::File);
}
