//! How long a new node's lease takes to be programmed on its peers: from the
//! moment its lease file appears in the shared lease directory (inotify) to
//! the moment its route is added on each peer (an rtnetlink multicast socket
//! in each peer's namespace). Needs root; builds its own netns cluster.
//!
//! `lease-propagation [--nodes 3,10] [--trials 20]`
//!
//! Per cluster size N: N−1 nodes run; then, `trials` times, node N−1 starts
//! with no subnet.env (a fresh lease), every peer's route latency is recorded,
//! and the node is stopped and its lease removed again.

use flannel_cluster::cluster::monitor::{DirWatch, RouteMonitor};
use flannel_cluster::cluster::Cluster;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: lease-propagation [--nodes 3,10] [--trials 20]");
    std::process::exit(2)
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn measure(n: usize, trials: usize) -> (Vec<Duration>, Vec<Duration>) {
    assert!(n >= 2, "need at least 2 nodes");
    let mut c = Cluster::builder().nodes(n).start(false).build();
    let new = n - 1;
    for i in 0..new {
        c.start(i);
    }
    for i in 0..new {
        c.wait_ready(i);
    }
    let peers: Vec<usize> = (0..new).collect();
    c.wait_converged(&peers, Duration::from_secs(20));
    let monitors: Vec<RouteMonitor> = peers
        .iter()
        .map(|&i| RouteMonitor::start(&c.node(i).ns))
        .collect();
    let watch = DirWatch::start(&c.lease_dir());
    let (mut all, mut slowest) = (Vec::new(), Vec::new());
    for t in 0..trials {
        let _ = std::fs::remove_file(c.node(new).subnet_file());
        let since = Instant::now();
        c.start(new);
        c.wait_ready(new);
        let subnet = c.node(new).subnet();
        let name = subnet.replace('/', "-");
        let deadline = Instant::now() + Duration::from_secs(20);
        let routes = loop {
            let got: Vec<Option<Instant>> = monitors
                .iter()
                .map(|m| m.added_since(&subnet, since))
                .collect();
            if got.iter().all(Option::is_some) {
                break got.into_iter().flatten().collect::<Vec<_>>();
            }
            assert!(
                Instant::now() < deadline,
                "trial {t}: routes to {subnet} missing on some peers: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let appeared = watch.first_since(&name, since).unwrap_or_else(|| {
            panic!(
                "trial {t}: no inotify event for {name}: {:?}",
                watch.events()
            )
        });
        let lat: Vec<Duration> = routes
            .iter()
            .map(|r| r.saturating_duration_since(appeared))
            .collect();
        slowest.push(*lat.iter().max().unwrap());
        all.extend(lat);
        c.stop(new);
        c.remove_lease(new);
        c.wait_converged(&peers, Duration::from_secs(20));
    }
    (all, slowest)
}

fn main() {
    let mut nodes = vec![3usize, 10];
    let mut trials = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                let v = args.next().unwrap_or_else(|| usage());
                nodes = v
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            "--trials" => {
                trials = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("lease-propagation builds network namespaces: run it as root");
        std::process::exit(1);
    }
    println!("lease file appears → route present on a peer (per peer, and slowest peer per join)");
    println!(
        "{:>5} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "nodes", "trials", "samples", "median", "p90", "p99", "max", "slowest p50"
    );
    for &n in &nodes {
        let (mut all, mut slowest) = measure(n, trials);
        all.sort();
        slowest.sort();
        println!(
            "{:>5} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>14}",
            n,
            trials,
            all.len(),
            ms(pct(&all, 0.5)),
            ms(pct(&all, 0.9)),
            ms(pct(&all, 0.99)),
            ms(*all.last().unwrap()),
            ms(pct(&slowest, 0.5)),
        );
    }
}
