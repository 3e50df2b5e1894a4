//! `scale-bench`: one flanneld (release build) starting in a fresh node
//! namespace against N fake peers (leases only, never reached), per store:
//! the file store, etcd (in the underlay namespace) and the Kubernetes API
//! stand-in. The anchor, measured in the same run just before flanneld
//! starts: the same 3·N entries written by `ip -batch` / `bridge -batch`
//! into a fresh `flannel.1` in a fresh namespace, timed as flanneld is
//! (to the last change the same netlink monitor sees: the kernel tells a
//! listener of every change at the writer's cost), and once more with no
//! listener, for the record. Prints per store and N:
//!
//! - start → subnet.env, start → every entry on flannel.1, and its ratio
//!   to the `ip -batch` anchor under the monitor;
//! - RSS once settled; the CPU of one resync pass (flanneld's CPU over two
//!   resync intervals, idle included, divided by the passes made);
//! - 500 leases removed and 500 added → the kernel matches: the last
//!   kernel change seen, after the last store write;
//! - start → programmed once more with nothing listening to the kernel,
//!   beside the unobserved anchor: after everything else, flanneld is
//!   stopped, `flannel.1` deleted and flanneld started again on the same
//!   store, timed to its "start-up: N peers; programmed …" log line
//!   (written once the first listing is programmed and nothing stale is
//!   left; at `SCALE_BENCH_RUST_LOG=debug` the per-entry lines come first
//!   and count in it), then the device is checked with one dump;
//! - etcd: a relist after a compaction. flanneld is stopped (SIGSTOP),
//!   etcd restarted on its data dir (so flanneld's watch stream is broken:
//!   left alone, etcd would replay the events buffered for the stopped
//!   watcher rather than cancel its watch), the same churn made, the
//!   history compacted, flanneld continued: it cannot resume its watch
//!   from its revision, so it re-lists and diffs. SIGCONT → kernel matches,
//!   and the CPU it took; that it re-listed is read from flanneld's log.
//!
//! Every figure is taken after checking that flannel.1 holds exactly the
//! expected entries. Figures, not assertions. Needs root; builds its own
//! namespaces and removes them.
//! `scale-bench [--nodes 1000,5000,10000] [--stores file,etcd,kube] [--churn 500]`

use std::time::{Duration, Instant};

use flannel_cluster::cluster::entry_monitor::EntryMonitor;
use flannel_cluster::cluster::{store::StoreKind, Cluster};
use flannel_cluster::kube_api::NodeFixture;
use flannel_cluster::proc::ChildGuard;
use flannel_tools::bench::scale_flanneld::{cpu, flanneld_command, rss_mib};
use flannel_tools::bench::scale_kernel::{ip_batch, load_average, Anchor, Entries, FakePeer};
use flannel_tools::bench::scale_store::Feed;
use serde_json::json;

const RESYNC_INTERVAL: u64 = 5;

fn usage() -> ! {
    eprintln!(
        "usage: scale-bench [--nodes 1000,5000,10000] [--stores file,etcd,kube] [--churn 500]"
    );
    std::process::exit(2)
}

struct Opts {
    nodes: Vec<u32>,
    stores: Vec<StoreKind>,
    churn: u32,
}

fn parse() -> Opts {
    let mut o = Opts {
        nodes: vec![1000, 5000, 10000],
        stores: vec![StoreKind::File, StoreKind::Etcd, StoreKind::Kube],
        churn: 500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--nodes" => {
                o.nodes = v
                    .split(',')
                    .map(|n| n.parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--stores" => {
                o.stores = v
                    .split(',')
                    .map(|s| StoreKind::parse(s).unwrap_or_else(|| usage()))
                    .collect()
            }
            "--churn" => o.churn = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    o
}

fn main() {
    let o = parse();
    flannel_cluster::netns::require_root();
    let mut rows = Vec::new();
    for &n in &o.nodes {
        for &store in &o.stores {
            let load = load_average();
            eprintln!("== {} store, {n} peers (load {load})", store.as_str());
            let f = run(store, n, o.churn);
            rows.push((store, n, load, f));
        }
    }
    println!();
    println!(
        "scale: one flanneld (release), fake peers, Network 10.0.0.0/8, SubnetLen 24; {} churn",
        o.churn
    );
    println!("| store | peers | load | start → subnet.env | start → programmed | ip -batch | ratio | unobserved: programmed | ip -batch | ratio | RSS settled | resync pass CPU | churn → kernel matches | relist after compaction | log lines at start |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (store, n, load, f) in &rows {
        println!(
            "| {} | {n} | {load} | {} | {} | {} | {:.2} | {} | {} | {:.2} | {:.1} MiB | {} | {} | {} | {} |",
            store.as_str(),
            ms(f.subnet_env),
            ms(f.programmed),
            ms(f.anchor.observed),
            f.programmed.as_secs_f64() / f.anchor.observed.as_secs_f64(),
            ms(f.unobserved),
            ms(f.anchor.unobserved),
            f.unobserved.as_secs_f64() / f.anchor.unobserved.as_secs_f64(),
            f.rss,
            ms(f.resync_cpu),
            signed_ms(f.churn),
            f.relist.as_deref().unwrap_or("–"),
            f.start_log_lines,
        );
    }
    println!("targets: ratio ≤ 1.2, subnet.env ≤ 100 ms, RSS ≤ 30 MiB, resync ≤ 30 ms CPU, churn ≤ 150 ms");
}

struct Figures {
    subnet_env: Duration,
    programmed: Duration,
    /// Start → programmed with no netlink listener (see the module docs).
    unobserved: Duration,
    anchor: Anchor,
    rss: f64,
    resync_cpu: Duration,
    churn: f64,
    relist: Option<String>,
    start_log_lines: usize,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn signed_ms(s: f64) -> String {
    format!("{:.0} ms", s * 1e3)
}

fn run(store: StoreKind, n: u32, churn: u32) -> Figures {
    let net_conf = json!({"Network": "10.0.0.0/8", "SubnetLen": 24, "Backend": {"Type": "vxlan"}});
    let cluster_store = if store == StoreKind::Etcd {
        StoreKind::Etcd
    } else {
        StoreKind::File
    };
    let mut c = Cluster::builder()
        .nodes(1)
        .start(false)
        .net_conf(net_conf)
        .store(cluster_store)
        .resync_interval(RESYNC_INTERVAL)
        .build();
    let peers: Vec<FakePeer> = (0..n).map(FakePeer::new).collect();
    let me = c.node(0).name.clone();
    let scratch = c.dir().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let mut kube_config = None;
    let feed = match store {
        StoreKind::File => Feed::File {
            dir: c.lease_dir(),
            scratch: scratch.clone(),
        },
        StoreKind::Etcd => Feed::Etcd {
            endpoint: flannel_cluster::cluster::store::etcd_endpoint(),
            underlay: flannel_cluster::NetNs::existing(c.underlay().name()),
        },
        StoreKind::Kube => {
            let (api, kubeconfig) = c.kube_api_in_process();
            let mine = NodeFixture::new(&me, 1 << 22)
                .pod_cidr("10.255.0.0/24")
                .build();
            api.create_node(mine).expect("our node");
            kube_config = Some(kubeconfig);
            Feed::Kube(api)
        }
    };
    let t = Instant::now();
    feed.add(&peers);
    eprintln!("{n} leases written ({:?})", t.elapsed());

    let anchor = ip_batch(&peers, &scratch);
    eprintln!(
        "ip -batch anchor: {} under the monitor, {} without",
        ms(anchor.observed),
        ms(anchor.unobserved)
    );

    let log_path = c.dir().join("flanneld.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let node = c.node(0);
    let mut cmd = flanneld_command(&c, &me, kube_config.as_deref(), log);
    let subnet_file = node.subnet_file();
    let ns_name = node.ns.name().to_owned();
    let want = Entries::wanted(&peers);

    let start = Instant::now();
    eprintln!("flanneld started at {}", wall());
    let mut flanneld = ChildGuard::spawn(&mut cmd);
    let pid = flanneld.pid();
    let (mut subnet_env, mut dev_seen) = (None, false);
    let deadline = start + Duration::from_secs(60);
    while subnet_env.is_none() || !dev_seen {
        assert!(
            Instant::now() < deadline,
            "flanneld did not start: {}",
            tail(&log_path)
        );
        if subnet_env.is_none() && subnet_file.exists() {
            subnet_env = Some(start.elapsed());
        }
        dev_seen = dev_seen || node.ns.run(has_flannel1);
        std::thread::sleep(Duration::from_micros(500));
    }
    let monitor = EntryMonitor::start(&node.ns, "flannel.1");
    let programmed_at = wait_match(&ns_name, &want, &monitor, start, want.count(), &log_path);
    let programmed = programmed_at - start;
    let subnet_env = subnet_env.unwrap_or_default();
    eprintln!(
        "programmed: {} (subnet.env {})",
        ms(programmed),
        ms(subnet_env)
    );
    let start_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    // With their timestamps: where the start-up time went.
    for line in start_log.lines() {
        eprintln!("flanneld: {line}");
    }
    let start_log_lines = start_log.lines().count();

    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_mib(pid);
    let resync_cpu = resync_cpu(&node.ns, pid);

    // Churn: the first `churn` peers go, `churn` new ones come.
    let gone: Vec<FakePeer> = peers[..churn as usize].to_vec();
    let new: Vec<FakePeer> = (n..n + churn).map(FakePeer::new).collect();
    let now_peers: Vec<FakePeer> = peers[churn as usize..]
        .iter()
        .chain(&new)
        .cloned()
        .collect();
    let want = Entries::wanted(&now_peers);
    let writes = 6 * churn as usize;
    let since = Instant::now();
    eprintln!("churn starts at {}", wall());
    feed.remove(&gone);
    feed.add(&new);
    let last_write = Instant::now();
    eprintln!("churn's last write at {}", wall());
    let matched = wait_match(&ns_name, &want, &monitor, since, writes, &log_path);
    let churn_s = matched.duration_since(since).as_secs_f64()
        - last_write.duration_since(since).as_secs_f64();
    eprintln!(
        "churn: writes done in {}, kernel matched {} after the last",
        ms(last_write - since),
        signed_ms(churn_s)
    );

    let (relist, now_peers) = if store == StoreKind::Etcd {
        let (how, after) = relist_after_compaction(
            &mut c, &feed, pid, &ns_name, &monitor, &now_peers, churn, n, &log_path,
        );
        (Some(how), after)
    } else {
        (None, now_peers)
    };

    flanneld.stop(Duration::from_secs(5));
    keep_log(&log_path, &format!("{}-{n}", store.as_str()));
    drop(monitor);
    let unobserved = unobserved_start(&c, &me, kube_config.as_deref(), &now_peers);
    keep_log(
        &c.dir().join(UNOBSERVED_LOG),
        &format!("{}-{n}-unobserved", store.as_str()),
    );
    eprintln!("programmed with nothing listening: {}", ms(unobserved));
    Figures {
        subnet_env,
        programmed,
        unobserved,
        anchor,
        rss,
        resync_cpu,
        churn: churn_s,
        relist,
        start_log_lines,
    }
}

/// etcd: flanneld stopped, etcd restarted on its data dir (the watch
/// stream breaks), churn, the history compacted, flanneld continued; checks
/// in flanneld's log that it re-listed.
#[allow(clippy::too_many_arguments)]
fn relist_after_compaction(
    c: &mut Cluster,
    feed: &Feed,
    pid: u32,
    ns: &str,
    monitor: &EntryMonitor,
    peers: &[FakePeer],
    churn: u32,
    n: u32,
    log: &std::path::Path,
) -> (String, Vec<FakePeer>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let gone: Vec<FakePeer> = peers[..churn as usize].to_vec();
    let new: Vec<FakePeer> = (n + churn..n + 2 * churn).map(FakePeer::new).collect();
    let after: Vec<FakePeer> = peers[churn as usize..]
        .iter()
        .chain(&new)
        .cloned()
        .collect();
    let want = Entries::wanted(&after);
    let relisted_before = count_in(log, RELISTED);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
    c.stop_etcd();
    c.restart_etcd();
    feed.remove(&gone);
    feed.add(&new);
    feed.compact();
    let cpu0 = cpu(pid);
    let since = Instant::now();
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
    let matched = wait_match(ns, &want, monitor, since, 6 * churn as usize, log);
    std::thread::sleep(Duration::from_millis(500));
    let relist_cpu = cpu(pid) - cpu0;
    let took = matched.duration_since(since);
    // What flanneld's watch said about it, for the record.
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text.lines().filter(|l| l.contains("watch /")) {
        eprintln!("flanneld: {line}");
    }
    let how = if count_in(log, RELISTED) > relisted_before {
        "relisted"
    } else {
        "NOT relisted (see flanneld.log)"
    };
    let how = format!(
        "{how}: SIGCONT → matches {}, {} CPU",
        ms(took),
        ms(relist_cpu)
    );
    (how, after)
}

/// flanneld started again, on the same store and lease, onto a fresh
/// `flannel.1`, with nothing listening to the kernel: start → the
/// "start-up: N peers; programmed …" line of its log (written once the
/// first listing is programmed and nothing stale is left; the log is read
/// every millisecond). The device is then checked against `peers` with
/// one dump.
fn unobserved_start(
    c: &Cluster,
    me: &str,
    kubeconfig: Option<&std::path::Path>,
    peers: &[FakePeer],
) -> Duration {
    let node = c.node(0);
    let deleted = node
        .ns
        .command("ip")
        .args(["link", "del", "flannel.1"])
        .status();
    assert!(
        deleted.as_ref().is_ok_and(|s| s.success()),
        "delete flannel.1 in {}: {deleted:?}",
        node.ns.name()
    );
    let log_path = c.dir().join(UNOBSERVED_LOG);
    let log = std::fs::File::create(&log_path).expect("log");
    let mut cmd = flanneld_command(c, me, kubeconfig, log);
    let start = Instant::now();
    let mut flanneld = ChildGuard::spawn(&mut cmd);
    let deadline = start + Duration::from_secs(60);
    let took = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains(START_UP) {
            break start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "flanneld (unobserved) never logged {START_UP:?}: {}",
            tail(&log_path)
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let want = Entries::wanted(peers);
    let held = Entries::read(node.ns.name());
    flanneld.stop(Duration::from_secs(5));
    assert!(
        held == want,
        "flanneld (unobserved) logged {START_UP:?} but flannel.1 does not hold exactly the {} expected entries: {}",
        want.count(),
        tail(&log_path)
    );
    took
}

/// The restarted flanneld's log, in the cluster's directory.
const UNOBSERVED_LOG: &str = "flanneld-unobserved.log";

/// What flanneld's line once its first listing is programmed says ("start-up:
/// 5000 peers; programmed 5000 fdb, … in 480 ms").
const START_UP: &str = " peers; programmed ";

/// What flanneld's etcd watch logs once a re-list has caught up with
/// changes it missed (after a compaction, a broken stream or an outage).
const RELISTED: &str = "caught up with";

/// Now, as seconds of the day (UTC) with microseconds, as flanneld's log
/// writes its time.
fn wall() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = t.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.subsec_micros()
    )
}

/// With `$SCALE_BENCH_KEEP_LOG` (a directory): flanneld's log is copied
/// there as `<store>-<peers>.log` (the restart with nothing listening as
/// `<store>-<peers>-unobserved.log`) before the cluster's directory goes.
fn keep_log(log: &std::path::Path, name: &str) {
    let Ok(dir) = std::env::var("SCALE_BENCH_KEEP_LOG") else {
        return;
    };
    let to = std::path::Path::new(&dir).join(format!("{name}.log"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::copy(log, &to)) {
        eprintln!("keep flanneld's log as {}: {e}", to.display());
    }
}

fn count_in(log: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

fn has_flannel1() -> bool {
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(c"flannel.1".as_ptr()) != 0 }
}

/// Waits until flannel.1 holds exactly `want`; returns the time of the last
/// kernel change seen since `since`. Reads the device only once the monitor
/// has seen `changes` changes, or every 2 s (the monitor may drop events).
fn wait_match(
    ns: &str,
    want: &Entries,
    monitor: &EntryMonitor,
    since: Instant,
    changes: usize,
    log: &std::path::Path,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_read = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "flannel.1 never matched: {}",
            tail(log)
        );
        let seen: Vec<Instant> = monitor
            .events()
            .into_iter()
            .map(|e| e.at)
            .filter(|at| *at >= since)
            .collect();
        if seen.len() >= changes || last_read.elapsed() > Duration::from_secs(2) {
            last_read = Instant::now();
            if Entries::read(ns) == *want {
                // Latest change, re-read after the check.
                let last = monitor
                    .events()
                    .into_iter()
                    .map(|e| e.at)
                    .filter(|at| *at >= since)
                    .max();
                return last.unwrap_or(since);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// flanneld's CPU over two resync intervals, divided by the passes made.
fn resync_cpu(ns: &flannel_cluster::NetNs, pid: u32) -> Duration {
    let passes = || {
        flannel_cluster::metrics::scrape(ns)
            .ok()
            .and_then(|s| s.value("flanneld_resyncs_total", &[]))
            .unwrap_or(0.0)
    };
    let (p0, c0) = (passes(), cpu(pid));
    std::thread::sleep(Duration::from_secs(2 * RESYNC_INTERVAL) + Duration::from_millis(500));
    let (c1, p1) = (cpu(pid), passes());
    let made = (p1 - p0).max(1.0);
    (c1 - c0).div_f64(made)
}

fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
