//! `cni-bench`: flannel-rs's CNI plugin against the reference `bridge` +
//! `host-local` pair, in one run on the same machine.
//!
//! Both sides are invoked the way a container runtime does it: one direct
//! exec per call, from a thread of this process that has entered the node's
//! network namespace (no `ip netns exec`). Each side has its own node
//! namespace (bridge `cni0`, subnet 10.244.1.0/24) and its own pod
//! namespaces, all created before anything is measured and deleted at the
//! end (Drop guards, so also on error or panic).
//!
//! Measured: ADD and DEL latency (median, p99) over N sequential pods, the
//! sides alternating pod by pod (ABBA order); and the wall time of 64-pod
//! ADD and DEL bursts with 16 calls in flight, the sides alternating which
//! goes first. Before the next measured call, the pod namespace of a DEL
//! must be empty again — our DEL leaves the kernel unregister to a detached
//! helper, and that work must not land on the other side's clock. The time
//! until then is reported too.
//!
//! With `--ip-masq`, both sides masquerade every pod (ours: subnet.env's
//! FLANNEL_IPMASQ=false, flanneld's default; the reference: bridge's
//! `ipMasq: true`), and a last phase measures what masquerade adds to our
//! ADD and DEL with 10 and 250 pods on the node (`masq_cost.rs`).
//!
//! A ratio that misses its target is reported, never an error; any failed
//! invocation is (with the plugin's stdout and stderr).

use std::path::PathBuf;
use std::time::Duration;

use flannel_cluster::Pod;
use flannel_tools::bench::report::{median, percentile, Row};
use flannel_tools::bench::side::{
    burst, pod_ref, wait_links, wait_quiet, NsThread, Side, QUIET_TIMEOUT,
};
use flannel_tools::bench::{masq_cost, report};

const USAGE: &str =
    "usage: cni-bench [--dual-stack] [--ip-masq] [--pods N] [--bursts K] [--warmup W] [--flannel PATH] [--cni-path DIR]
  --dual-stack   both sides dual-stack: subnet.env with FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET
                 for ours, host-local with ranges [[10.244.1.0/24], [fd00:10:244:1::/64]] for the
                 reference; every pod gets an address of each family
  --ip-masq      both sides masquerade each pod: FLANNEL_IPMASQ=false for ours (the plugin
                 adds the pod to its nftables set), bridge's ipMasq:true for the reference;
                 then what masquerade adds to our ADD/DEL with 10 and 250 pods on the node
  --pods N       sequential pods per side for ADD/DEL latency (default 100, at most 240)
  --bursts K     64-pod bursts (16 at a time) per side; the median is reported (default 3)
  --warmup W     ADD+DEL warm-up calls per side before measuring (default 5)
  --flannel PATH our plugin (default: `flannel` next to this binary, i.e. target/release/flannel;
                 ci/bench.sh passes the installed build, ci/build-plugin.sh's)
  --cni-path DIR reference plugins: DIR/bridge delegating to DIR/host-local (default /usr/lib/cni)";

const BURST_PODS: usize = 64;
const BURST_WIDTH: usize = 16;

struct Opts {
    dual_stack: bool,
    ip_masq: bool,
    pods: usize,
    bursts: usize,
    warmup: usize,
    flannel: PathBuf,
    cni_path: String,
}

fn parse_opts() -> Result<Opts, String> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_owned()))
        .unwrap_or_default();
    let mut o = Opts {
        dual_stack: false,
        ip_masq: false,
        pods: 100,
        bursts: 3,
        warmup: 5,
        flannel: exe_dir.join("flannel"),
        cni_path: flannel_cluster::cni::REFERENCE_CNI_PATH.to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            return Err(String::new());
        }
        if a == "--dual-stack" {
            o.dual_stack = true;
            continue;
        }
        if a == "--ip-masq" {
            o.ip_masq = true;
            continue;
        }
        let val = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        let num = || {
            val.parse::<usize>()
                .map_err(|_| format!("{a}: not a number: {val}"))
        };
        match a.as_str() {
            "--pods" | "-n" => o.pods = num()?,
            "--bursts" => o.bursts = num()?,
            "--warmup" => o.warmup = num()?,
            "--flannel" => o.flannel = PathBuf::from(&val),
            "--cni-path" => o.cni_path = val,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    // 253 addresses in a /24; every phase frees what it took.
    if !(1..=240).contains(&o.pods) || o.bursts == 0 || !(1..=100).contains(&o.warmup) {
        return Err("need 1 <= N <= 240, K >= 1, 1 <= W <= 100".into());
    }
    Ok(o)
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("cni-bench: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cni-bench: must run as root (it creates network namespaces)");
        std::process::exit(2);
    }
    // `run` owns every namespace and temp dir, so they are gone before exit.
    let code = match run(&opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("\ncni-bench: FAILED — a plugin invocation did not succeed:\n{e}");
            1
        }
    };
    let left = flannel_cluster::netns::own_namespaces();
    if !left.is_empty() {
        eprintln!("cni-bench: warning: namespaces left behind: {left:?}");
    }
    std::process::exit(code);
}

/// Both sides and all their pods. Dropping it waits until no pod namespace
/// holds a link that DEL is still tearing down (our detached unregister
/// helpers are done) before the namespaces themselves are deleted. A pod
/// that was added but not deleted (a run that failed) keeps its interface,
/// which goes with its namespace.
struct World {
    sides: [Side; 2],
    pods: [Vec<Pod>; 2],
    /// `--ip-masq`'s resident pods and probe (our side only).
    masq_pods: Vec<Pod>,
}

impl Drop for World {
    fn drop(&mut self) {
        for pods in self.pods.iter().chain([&self.masq_pods]) {
            for p in pods {
                let keep = ["lo", p.ifname.as_str()];
                if let Err(e) = wait_links(&p.ns.path_str(), &keep, QUIET_TIMEOUT) {
                    eprintln!("cni-bench: warning: {e}");
                }
            }
        }
    }
}

/// `n` pods (namespace, container ID, eth0), created on a few threads.
fn make_pods(n: usize) -> Vec<Pod> {
    let threads = 4;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|_| Pod::new())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("creating pod namespaces"))
            .collect()
    })
}

/// The DEL of one pod on its side's thread: (DEL latency, time until the pod
/// namespace was seen empty).
fn del_and_settle(t: &NsThread, side: &Side, pod: &Pod) -> Result<(Duration, Duration), String> {
    let (plugin, pr) = (side.plugin.clone(), pod_ref(pod));
    t.call(move || {
        let t0 = std::time::Instant::now();
        let inv = plugin.call("DEL", &pr)?;
        let quiet = wait_quiet(&pr.netns, QUIET_TIMEOUT)?;
        Ok((inv.elapsed, quiet - t0))
    })
}

fn add(t: &NsThread, side: &Side, pod: &Pod) -> Result<Duration, String> {
    let (plugin, pr) = (side.plugin.clone(), pod_ref(pod));
    t.call(move || plugin.call("ADD", &pr).map(|inv| inv.elapsed))
}

/// /proc/loadavg's 1/5/15-minute figures: a busy machine makes noisy numbers.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Side order for step `i`: A B, B A, A B, ...
fn order(i: usize) -> [usize; 2] {
    [[0, 1], [1, 0]][i % 2]
}

fn run(o: &Opts) -> Result<(), String> {
    for bin in [
        o.flannel.clone(),
        PathBuf::from(&o.cni_path).join("bridge"),
        PathBuf::from(&o.cni_path).join("host-local"),
    ] {
        if !bin.is_file() {
            return Err(format!("{} does not exist (build with `cargo build --release -p cni-plugin`, install containernetworking-plugins)", bin.display()));
        }
    }
    let per_side = o.warmup + o.pods + o.bursts * BURST_PODS;
    println!(
        "cni-bench: flannel-rs {} vs reference {}/bridge + host-local{}",
        o.flannel.display(),
        o.cni_path,
        if o.dual_stack {
            ", dual-stack (IPv4 + IPv6 per pod)"
        } else {
            ""
        }
    );
    if o.ip_masq {
        println!("  ipMasq: both sides masquerade every pod (ours: nftables set element; reference: iptables)");
    }
    println!(
        "  {} CPUs, kernel {}; {} sequential pods, {} x {}-pod bursts {} at a time, {} warm-up calls per side",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        o.pods,
        o.bursts,
        BURST_PODS,
        BURST_WIDTH,
        o.warmup
    );
    println!("  load average before: {}", loadavg());
    println!(
        "  creating 2 node + {} pod namespaces (not measured)...",
        2 * per_side
    );
    let sides = [
        Side::flannel(&o.flannel, &o.cni_path, o.dual_stack, o.ip_masq),
        Side::reference(&o.cni_path, o.dual_stack, o.ip_masq),
    ];
    let levels = [10, 250];
    let world = World {
        sides,
        pods: [make_pods(per_side), make_pods(per_side)],
        // The highest level's residents and one probe.
        masq_pods: if o.ip_masq {
            make_pods(levels[1] + 1)
        } else {
            Vec::new()
        },
    };
    let threads = [
        NsThread::new(&world.sides[0].node),
        NsThread::new(&world.sides[1].node),
    ];
    // Per side: warm-up pods, sequential pods, burst pods.
    let split = |s: usize| {
        let (warm, rest) = world.pods[s].split_at(o.warmup);
        let (seq, bursts) = rest.split_at(o.pods);
        (warm, seq, bursts)
    };
    let ((w0, q0, b0), (w1, q1, b1)) = (split(0), split(1));
    let (warm, seq, bursts) = ([w0, w1], [q0, q1], [b0, b1]);

    // Warm-up: page cache, bridge creation, IPAM store directories.
    for (i, (a, b)) in warm[0].iter().zip(warm[1]).enumerate() {
        let pod = [a, b];
        for s in order(i) {
            add(&threads[s], &world.sides[s], pod[s])?;
        }
        for s in order(i) {
            del_and_settle(&threads[s], &world.sides[s], pod[s])?;
        }
    }

    println!("  sequential ADD x {} per side...", o.pods);
    let mut add_lat: [Vec<Duration>; 2] = Default::default();
    for (i, (a, b)) in seq[0].iter().zip(seq[1]).enumerate() {
        let pod = [a, b];
        for s in order(i) {
            add_lat[s].push(add(&threads[s], &world.sides[s], pod[s])?);
        }
    }
    println!("  sequential DEL x {} per side...", o.pods);
    let mut del_lat: [Vec<Duration>; 2] = Default::default();
    let mut settle_lat: [Vec<Duration>; 2] = Default::default();
    for (i, (a, b)) in seq[0].iter().zip(seq[1]).enumerate() {
        let pod = [a, b];
        for s in order(i) {
            let (d, q) = del_and_settle(&threads[s], &world.sides[s], pod[s])?;
            del_lat[s].push(d);
            settle_lat[s].push(q);
        }
    }

    println!(
        "  {} x burst of {} ADDs then DELs, {} in flight, per side...",
        o.bursts, BURST_PODS, BURST_WIDTH
    );
    let mut burst_add: [Vec<Duration>; 2] = Default::default();
    let mut burst_del: [Vec<Duration>; 2] = Default::default();
    for k in 0..o.bursts {
        let refs: Vec<Vec<_>> = (0..2)
            .map(|s| {
                bursts[s][k * BURST_PODS..(k + 1) * BURST_PODS]
                    .iter()
                    .map(pod_ref)
                    .collect()
            })
            .collect();
        for s in order(k) {
            burst_add[s].push(burst(&world.sides[s], "ADD", &refs[s], BURST_WIDTH)?);
        }
        let [a, b] = order(k);
        for s in [b, a] {
            burst_del[s].push(burst(&world.sides[s], "DEL", &refs[s], BURST_WIDTH)?);
            for p in &refs[s] {
                wait_quiet(&p.netns, QUIET_TIMEOUT)?;
            }
        }
    }
    let costs = if o.ip_masq {
        println!(
            "  masquerade cost: {} probe ADD+DEL per config at {:?} pods on the node (ours only)...",
            2 * masq_cost::PROBES,
            levels
        );
        let (probe, residents) = world.masq_pods.split_first().ok_or("no masq pods")?;
        masq_cost::measure(&threads[0], &world.sides[0], residents, probe, &levels)?
    } else {
        Vec::new()
    };
    drop(threads);

    let k = o.bursts;
    let rows = [
        Row::new(
            "ADD median",
            median(&add_lat[0]),
            median(&add_lat[1]),
            Some(0.25),
        ),
        Row::new(
            "ADD p99",
            percentile(&add_lat[0], 99.0),
            percentile(&add_lat[1], 99.0),
            None,
        ),
        Row::new(
            "DEL median",
            median(&del_lat[0]),
            median(&del_lat[1]),
            Some(0.1),
        ),
        Row::new(
            "DEL p99",
            percentile(&del_lat[0], 99.0),
            percentile(&del_lat[1], 99.0),
            None,
        ),
        Row::new(
            "DEL until pod netns empty, median",
            median(&settle_lat[0]),
            median(&settle_lat[1]),
            None,
        ),
        Row::new(
            &format!("burst 64 ADD, 16 in flight (wall, median of {k})"),
            median(&burst_add[0]),
            median(&burst_add[1]),
            Some(0.25),
        ),
        Row::new(
            &format!("burst 64 DEL, 16 in flight (wall, median of {k})"),
            median(&burst_del[0]),
            median(&burst_del[1]),
            None,
        ),
    ];
    println!();
    print!("{}", report::table(&rows));
    let fmt_all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "\nbursts (ms) — ADD flannel-rs [{}] reference [{}]; DEL flannel-rs [{}] reference [{}]",
        fmt_all(&burst_add[0]),
        fmt_all(&burst_add[1]),
        fmt_all(&burst_del[0]),
        fmt_all(&burst_del[1])
    );
    if !costs.is_empty() {
        println!();
        print!("{}", masq_cost::table(&costs));
    }
    println!("load average after: {}", loadavg());
    let targets: Vec<&Row> = rows.iter().filter(|r| r.target.is_some()).collect();
    let met = targets.iter().filter(|r| r.met() == Some(true)).count();
    println!(
        "targets met: {met} of {} (a benchmark: a missed target is reported, not failed)",
        targets.len()
    );
    drop(world);
    Ok(())
}
