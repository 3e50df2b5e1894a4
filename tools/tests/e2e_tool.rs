//! End to end, the `netns-cluster` tool as a user runs it: separate `up`,
//! `status`, `matrix`, `exec` and `down` processes; two clusters side by
//! side without colliding; `down` removes exactly what `up` recorded and a
//! second `down` is harmless; failures are one clear message.

use flannel_cluster::cluster::ClusterState;
use flannel_cluster::cmd::{run_with, Output};
use flannel_cluster::proc::RecordedProcess;
use flannel_cluster::TempDir;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_netns-cluster");

/// One tool-made cluster, in a run dir of its own; `down` on drop.
struct Tool {
    name: String,
    run_dir: TempDir,
}

impl Tool {
    fn new(tag: &str) -> Tool {
        flannel_cluster::require_root();
        Tool {
            name: format!("e{}{tag}", std::process::id()),
            run_dir: TempDir::new("run"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.args(["--name", &self.name])
            .args(args)
            .env("NETNS_CLUSTER_RUN_DIR", self.run_dir.path());
        run_with(&mut c, None, Duration::from_secs(120))
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success(), "netns-cluster {}: {out}", args.join(" "));
        out.stdout
    }

    fn dir(&self) -> PathBuf {
        self.run_dir.join(&self.name)
    }

    fn state(&self) -> ClusterState {
        ClusterState::load(&self.dir().join("state.json")).expect("state.json")
    }

    fn namespaces(&self) -> Vec<String> {
        flannel_cluster::netns::namespaces_with_prefix(&format!("nc-{}-", self.name))
    }

    /// `down`, then nothing of the cluster is left: no recorded process,
    /// no namespace with its prefix, no directory.
    #[track_caller]
    fn down_and_check_gone(&self, st: Option<&ClusterState>) {
        let out = self.ok(&["down"]);
        assert!(out.contains("down") || out.contains("nothing"), "{out}");
        if let Some(st) = st {
            let procs: Vec<&RecordedProcess> = st
                .nodes
                .iter()
                .filter_map(|n| n.flanneld.as_ref())
                .chain(st.etcd.as_ref())
                .chain(st.kube.as_ref())
                .collect();
            for p in procs {
                assert!(!p.is_ours(), "pid {} still running after down", p.pid);
            }
        }
        assert_eq!(self.namespaces(), Vec::<String>::new(), "namespaces left");
        assert!(!self.dir().exists(), "{} left", self.dir().display());
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

#[test]
fn two_clusters_side_by_side_up_status_matrix_exec_down() {
    let a = Tool::new("a");
    let b = Tool::new("b");
    let (up_a, up_b) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.ok(&["up", "--nodes", "2", "--pods-per-node", "2"]));
        let hb = s.spawn(|| b.ok(&["up", "--nodes", "2", "--pods-per-node", "1"]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let st = a.state();
    assert_eq!((st.nodes.len(), st.pods.len()), (2, 4));
    assert_eq!(b.state().pods.len(), 2);
    // The table names every node, its address, lease and pods.
    for n in &st.nodes {
        assert!(
            up_a.contains(&n.name) && up_a.contains(&n.ip.to_string()),
            "{up_a}"
        );
        assert!(
            n.flanneld.as_ref().is_some_and(RecordedProcess::is_ours),
            "{n:?}"
        );
    }
    for p in &st.pods {
        assert!(
            up_a.contains(&format!("{} {}", p.name, p.ip)),
            "{p:?} not in\n{up_a}"
        );
    }
    assert!(up_b.contains("node1-pod0"), "{up_b}");
    // Every name carries the cluster's prefix; the two never share one.
    let names = a.namespaces();
    assert_eq!(names.len(), 1 + 2 + 4, "{names:?}");
    assert!(b.namespaces().iter().all(|n| !names.contains(n)));

    let status = a.ok(&["status"]);
    assert_eq!(status.matches("ok (1 peers)").count(), 2, "{status}");
    assert!(status.contains("match the leases"), "{status}");
    // Each node's figures, from its /metrics: 1 peer, 1 of each entry.
    assert!(status.contains("NEIGH/FDB/ROUTE"), "{status}");
    assert_eq!(status.matches("1/1/1").count(), 2, "{status}");
    assert_eq!(status.matches("reachable").count(), 2, "{status}");
    let m = a.ok(&["matrix", "--tcp"]);
    assert!(m.contains("12/12 pairs reachable by ping"), "{m}");
    assert!(m.contains("12/12 pairs reachable by tcp"), "{m}");

    let pod = &st.pods[0];
    let addr = a.ok(&[
        "exec", &pod.name, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0",
    ]);
    assert!(addr.contains(&format!("{}/24", pod.ip)), "{addr}");
    let out = a.run(&["exec", "node9", "--", "true"]);
    assert!(!out.success() && out.stderr.contains("node0-pod0"), "{out}");

    let again = a.run(&["up", "--nodes", "1", "--pods-per-node", "0"]);
    assert!(
        !again.success() && again.stderr.contains("already exists"),
        "{again}"
    );

    a.down_and_check_gone(Some(&st));
    let second = a.ok(&["down"]);
    assert!(second.contains("nothing to do"), "{second}");
    // The other cluster did not notice.
    let sb = b.ok(&["status"]);
    assert!(sb.contains("match the leases"), "{sb}");
    assert!(b.ok(&["matrix"]).contains("2/2 pairs reachable by ping"));
    let st_b = b.state();
    b.down_and_check_gone(Some(&st_b));
}

#[test]
fn errors_are_one_clear_line() {
    let t = Tool::new("x");
    for (args, want) in [
        (vec!["status"], "no cluster named"),
        (vec!["matrix"], "no cluster named"),
        (vec!["exec", "node0", "--", "true"], "no cluster named"),
    ] {
        let out = t.run(&args);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr.starts_with("netns-cluster: ") && out.stderr.contains(want),
            "{out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
    let mut c = Command::new(BIN);
    c.args(["status", "--name", "Bad_Name"]);
    let out = run_with(&mut c, None, Duration::from_secs(10));
    assert!(
        out.code == Some(1) && out.stderr.contains("bad cluster name"),
        "{out}"
    );
}

/// With `--store etcd`: etcd runs in the underlay namespace, recorded and
/// stopped by `down` like the flanneld's.
#[test]
fn etcd_store_cluster_up_status_matrix_down() {
    let t = Tool::new("e");
    t.ok(&[
        "up",
        "--store",
        "etcd",
        "--nodes",
        "2",
        "--pods-per-node",
        "1",
    ]);
    let st = t.state();
    assert_eq!(st.store, "etcd");
    assert!(
        st.etcd.as_ref().is_some_and(RecordedProcess::is_ours),
        "{st:?}"
    );
    let status = t.ok(&["status"]);
    assert!(
        status.contains("etcd pid") && status.contains("match the leases"),
        "{status}"
    );
    assert!(t.ok(&["matrix"]).contains("2/2 pairs reachable by ping"));
    t.down_and_check_gone(Some(&st));
}

/// With `--store kube`: the Kubernetes API stand-in runs in the underlay
/// namespace, recorded and stopped by `down`; each node is a Node with
/// the podCIDR its stand-in handed out, annotated by its flanneld.
#[test]
fn kube_store_cluster_up_status_matrix_down() {
    let t = Tool::new("k");
    let up = t.ok(&[
        "up",
        "--store",
        "kube",
        "--nodes",
        "2",
        "--pods-per-node",
        "1",
    ]);
    assert!(up.contains("kube store"), "{up}");
    let st = t.state();
    assert_eq!(st.store, "kube");
    let kube = st.kube.as_ref().expect("the stand-in is recorded");
    assert!(kube.is_ours(), "{st:?}");
    let kubeconfig = std::fs::read_to_string(t.dir().join("kubeconfig")).expect("kubeconfig");
    assert!(
        kubeconfig.contains("https://192.168.64.1:6443"),
        "{kubeconfig}"
    );
    let status = t.ok(&["status"]);
    assert!(
        status.contains("kube-api-standin pid") && status.contains("match the leases"),
        "{status}"
    );
    // The subnets in the table are the podCIDRs the controller handed out.
    assert!(
        status.contains("10.244.0.0/24") && status.contains("10.244.1.0/24"),
        "{status}"
    );
    assert!(t.ok(&["matrix"]).contains("2/2 pairs reachable by ping"));
    t.down_and_check_gone(Some(&st));
}

/// With `--ip-family dual`: the underlay and the overlay run both
/// families; the table shows each node's public IPv6, IPv6 subnet and
/// flannel-v6.1 VtepMAC, and each pod's two addresses; `matrix` pings and
/// connects over each family; the state records the family.
#[test]
fn dual_stack_cluster_up_status_matrix_down() {
    let t = Tool::new("d");
    let up = t.ok(&[
        "up",
        "--ip-family",
        "dual",
        "--nodes",
        "2",
        "--pods-per-node",
        "1",
    ]);
    assert!(up.contains("file store, dual"), "{up}");
    assert!(
        up.contains("PUBLIC IPV6") && up.contains("IPV6 SUBNET"),
        "{up}"
    );
    let st = t.state();
    assert_eq!(st.family.as_deref(), Some("dual"));
    for n in &st.nodes {
        let ip6 = n.ip6.expect("an underlay IPv6 address");
        assert!(up.contains(&ip6.to_string()), "{ip6} not in\n{up}");
    }
    for p in &st.pods {
        assert_eq!(p.ips.len(), 2, "{p:?}");
        assert!(p.ips[0].is_ipv4() && p.ips[1].is_ipv6(), "{p:?}");
        let row = format!("{} {} {}", p.name, p.ips[0], p.ips[1]);
        assert!(up.contains(&row), "{row} not in\n{up}");
    }
    let status = t.ok(&["status"]);
    assert_eq!(status.matches("ok (1 peers)").count(), 2, "{status}");
    assert!(status.contains("match the leases"), "{status}");
    let m = t.ok(&["matrix", "--tcp"]);
    for how in ["ping -4", "ping -6", "tcp4", "tcp6"] {
        assert!(m.contains(&format!("2/2 pairs reachable by {how}")), "{m}");
    }
    t.down_and_check_gone(Some(&st));
}
