//! The Kubernetes store at scale: one flanneld (release build) in a node
//! namespace, against the API stand-in in the underlay namespace holding
//! N realistic Node objects (about 10 KiB each: images, conditions) that
//! are flannel peers. Prints, beside the targets:
//!
//! - cold start: flanneld started → every peer's route, neighbour and FDB
//!   entry on flannel.1;
//! - RSS once settled;
//! - one node event → its route programmed (a Node added), p50/p99;
//! - a relist of N unchanged nodes (a forced 410): flanneld's CPU time, and
//!   the route changes it made (must be none).
//!
//! Figures, not assertions. Needs root; builds its own namespaces and
//! removes them. `kube-scale [--nodes 5000] [--events 100]`

use std::process::Stdio;
use std::time::{Duration, Instant};

use flannel_cluster::cluster::monitor::RouteMonitor;
use flannel_cluster::cluster::Cluster;
use flannel_cluster::kube_api::{realistic_nodes, KubeApiServer, NodeFixture};
use flannel_cluster::proc::ChildGuard;
use flannel_tools::bench::scale_flanneld::{cpu, flanneld_command, status_mib};
use serde_json::json;

fn usage() -> ! {
    eprintln!("usage: kube-scale [--nodes 5000] [--events 100]");
    std::process::exit(2)
}

fn main() {
    let (mut nodes, mut events) = (5000u32, 100u32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage());
        match a.as_str() {
            "--nodes" => nodes = v,
            "--events" => events = v,
            _ => usage(),
        }
    }
    flannel_cluster::netns::require_root();
    run(nodes, events);
}

/// Entries on flannel.1: (routes, permanent neighbours, FDB entries).
fn entries(ns: &str) -> (usize, usize, usize) {
    let count = |prog: &str, args: &[&str], needle: &str| {
        let out = std::process::Command::new(prog)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines().filter(|l| l.contains(needle)).count()
    };
    (
        count(
            "ip",
            &["-n", ns, "route", "show", "dev", "flannel.1"],
            "onlink",
        ),
        count(
            "ip",
            &[
                "-n",
                ns,
                "neigh",
                "show",
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
            "lladdr",
        ),
        count(
            "bridge",
            &["-n", ns, "fdb", "show", "dev", "flannel.1"],
            " dst ",
        ),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(n: u32, events: u32) {
    let net_conf = json!({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}});
    let c = Cluster::builder()
        .nodes(1)
        .start(false)
        .net_conf(net_conf)
        .build();
    let (api, kubeconfig) = c.kube_api_in_process();
    let t = Instant::now();
    api.create_nodes(realistic_nodes("peer-", n))
        .expect("peers");
    let me = c.node(0).name.clone();
    let mine = NodeFixture::new(&me, 1 << 22)
        .pod_cidr("10.127.0.0/24")
        .build();
    api.create_node(mine).expect("our node");
    eprintln!("{n} Node objects in the stand-in ({:?})", t.elapsed());

    let log_path = std::env::temp_dir().join(format!("kube-scale-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("log");
    eprintln!("flanneld log: {}", log_path.display());
    let mut cmd = flanneld_command(&c, &me, Some(&kubeconfig), log);
    let ns = c.node(0).ns.name().to_owned();
    let start = Instant::now();
    let mut flanneld = ChildGuard::spawn(&mut cmd);
    let pid = flanneld.pid();
    let want = n as usize;
    wait("every peer programmed", Duration::from_secs(120), || {
        entries(&ns) == (want, want, want)
    });
    let cold = start.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss = status_mib(pid, "VmRSS");

    let monitor = RouteMonitor::start(&c.node(0).ns);
    let mut lat = Vec::new();
    for k in 0..events {
        let name = format!("extra-{k}");
        let cidr = format!("10.126.{}.0/24", k % 256);
        let node = NodeFixture::new(&name, (1 << 21) + k)
            .pod_cidr(&cidr)
            .flannel()
            .build();
        let since = Instant::now();
        api.create_node(node).expect("create");
        wait("the new node's route", Duration::from_secs(10), || {
            monitor.added_since(&cidr, since).is_some()
        });
        lat.push(monitor.added_since(&cidr, since).expect("seen") - since);
        api.delete_node(&name).expect("delete");
        wait("the node's route removed", Duration::from_secs(10), || {
            entries(&ns).0 == want
        });
    }
    lat.sort();
    let pct = |q: usize| lat[(lat.len().max(1) - 1) * q / 100];

    let lists = |api: &KubeApiServer| {
        api.requests_to("GET", "/api/v1/nodes")
            .iter()
            .filter(|r| r.query_param("watch").is_none())
            .count()
    };
    std::thread::sleep(Duration::from_secs(1));
    let (lists0, route_events0, cpu0) = (lists(&api), monitor.events().len(), cpu(pid));
    api.expire_resource_versions();
    api.drop_watches();
    wait("a relist and a new watch", Duration::from_secs(30), || {
        lists(&api) > lists0 && api.open_watches() > 0
    });
    std::thread::sleep(Duration::from_secs(1));
    let relist_cpu = cpu(pid) - cpu0;
    let relist_writes = monitor.events().len() - route_events0;
    // The peak over the whole run (cold start, events, the relist): what a
    // container memory limit must cover.
    let peak = status_mib(pid, "VmHWM");
    let stopped = flanneld.stop(Duration::from_secs(5));
    let _ = std::fs::remove_file(&log_path);

    println!();
    println!("kube store, {n} realistic nodes (~10 KiB each), flanneld release build");
    println!("| metric | flannel-rs | target |");
    println!("|---|---|---|");
    println!(
        "| cold start → all {} entries programmed | {} | ≤ 2 s |",
        3 * n,
        ms(cold)
    );
    println!("| RSS once settled | {rss:.1} MiB | ≤ 30 MiB |");
    println!(
        "| peak RSS (start, events, relist) | {peak:.1} MiB | under the manifest's 128 MiB limit |"
    );
    println!(
        "| one node event → route programmed ({} events) | p50 {}, p99 {} | p99 ≤ 100 ms |",
        lat.len(),
        ms(pct(50)),
        ms(pct(99))
    );
    println!(
        "| relist of {n} unchanged nodes after a 410 | {} CPU, {relist_writes} route writes | ≤ 50 ms, 0 writes |",
        ms(relist_cpu)
    );
    eprintln!("flanneld stopped: {stopped:?}");
}
