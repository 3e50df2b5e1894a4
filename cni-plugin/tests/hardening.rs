//! What a fuzzer, SIGKILL and a second runtime found (issue 15): each test
//! here failed before its fix.
//!
//! - VERSION, STATUS and GC read nothing but CNI_COMMAND (and stdin);
//! - a container ID of any length the environment can carry round-trips;
//! - an interface name is a name, never a kernel template (`e%d`);
//! - DEL removes only the veth ADD made, never the pod's `lo` or a device
//!   of its own;
//! - a namespace path that is a FIFO fails at once instead of hanging;
//! - a SIGKILL at any point of ADD or DEL leaves only what the runtime's
//!   DEL or GC clears: no address, no veth, no masquerade element.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use flannel_cluster::*;
use serde_json::{json, Value};

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

/// A node where the plugin masquerades (FLANNEL_IPMASQ=false).
fn masq_node() -> CniNode {
    CniNode::masquerading(bin())
}

fn masq_elements(node: &CniNode) -> Vec<String> {
    node.ns
        .nft_set_elements("ip", "flannel-cni", "pods-cbr0")
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.val)
        .collect()
}

/// Files in the IPAM directory other than addresses, the lock and
/// `last_reserved_ip.0`: a temporary file a crash left would show here.
fn ipam_debris(node: &CniNode) -> Vec<String> {
    std::fs::read_dir(node.ipam_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && n != "last_reserved_ip.0")
                .filter(|n| n.parse::<std::net::IpAddr>().is_err())
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn assert_clean(node: &CniNode) {
    assert!(
        node.ipam_allocations().is_empty(),
        "addresses held: {:?}",
        node.ipam_allocations()
    );
    assert!(
        ipam_debris(node).is_empty(),
        "debris: {:?}",
        ipam_debris(node)
    );
    // A deleted namespace's veth, and DEL's forked deleter, finish
    // asynchronously.
    flannel_cluster::eventually(Duration::from_secs(5), "no veth left", || {
        let veths = node.host_veths();
        if veths.is_empty() {
            Ok(())
        } else {
            Err(format!("veths: {veths:?}"))
        }
    });
    assert!(
        masq_elements(node).is_empty(),
        "masq: {:?}",
        masq_elements(node)
    );
}

/// Runtimes (CRI-O, Podman's libcni) probe every plugin with VERSION and
/// placeholder values; an error makes them drop the network.
#[test]
fn version_status_gc_ignore_placeholder_variables() {
    let node = CniNode::new(bin());
    let placeholders = |verb: &str| {
        node.call(verb)
            .env("CNI_NETNS", "dummy")
            .env("CNI_IFNAME", "dummy")
            .env("CNI_PATH", "dummy")
            .env("CNI_CONTAINERID", "dummy")
            .env("CNI_ARGS", "dummy")
    };
    let version = placeholders("VERSION")
        .config(&node.config("1.0.0"))
        .run()
        .success_json();
    assert_eq!(version["cniVersion"], "1.0.0", "{version}");
    placeholders("STATUS")
        .config(&node.config("1.1.0"))
        .run()
        .success_empty();
    let mut gc = node.config("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    placeholders("GC").config(&gc).run().success_empty();
}

/// The spec allows any length; the kernel caps an environment string at
/// 128 KiB. 5,000 and 100,000 characters both round-trip.
#[test]
fn long_container_ids_are_freed_by_del() {
    let node = masq_node();
    for len in [5_000, 100_000] {
        let pod = Pod::new();
        let cid: String = std::iter::repeat_n("a1", len / 2).collect();
        let conf = node.config("1.0.0");
        node.call("ADD")
            .pod(&pod)
            .container_id(&cid)
            .config(&conf)
            .run()
            .success_json();
        assert_eq!(node.ipam_allocations().len(), 1);
        node.call("DEL")
            .pod(&pod)
            .container_id(&cid)
            .config(&conf)
            .run()
            .success_empty();
        // And once more with the namespace gone: found by scanning.
        node.call("ADD")
            .pod(&pod)
            .container_id(&cid)
            .config(&conf)
            .run()
            .success_json();
        let gone = pod.ns.path_str();
        pod.ns.delete();
        node.call("DEL")
            .container_id(&cid)
            .netns(&gone)
            .ifname("eth0")
            .config(&conf)
            .run()
            .success_empty();
        assert_clean(&node);
    }
}

#[test]
fn ifname_templates_are_refused() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    for bad in ["e%d", "%d", "eth%", "à"] {
        for verb in ["ADD", "DEL", "CHECK"] {
            node.call(verb)
                .pod(&pod)
                .ifname(bad)
                .config(&conf)
                .run()
                .error_mentioning(4, "CNI_IFNAME");
        }
    }
    let links: Vec<String> = pod
        .ns
        .links()
        .iter()
        .map(|l| l["ifname"].to_string())
        .collect();
    assert_eq!(links, vec!["\"lo\"".to_owned()], "the pod got an interface");
    assert_clean(&node);
}

/// DEL of an interface ADD did not make leaves it alone (the reference
/// plugin does too), and still frees what the pair holds.
#[test]
fn del_touches_only_what_add_made() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    node.add_ok(&pod, &conf);
    // A device of the pod's own, and a veth pair whose peer is not on our
    // bridge (one in the node, not enslaved).
    pod.ns.ip_ok(&[
        "link", "add", "own0", "type", "veth", "peer", "name", "own1",
    ]);
    pod.ns.ip_ok(&["link", "set", "own0", "up"]);
    node.ns.ip_ok(&[
        "link", "add", "hostside", "type", "veth", "peer", "name", "stray0",
    ]);
    node.ns
        .ip_ok(&["link", "set", "stray0", "netns", &pod.ns.path_str()]);
    let before = pod.ns.links();
    for ifname in ["lo", "own0", "stray0"] {
        node.call("DEL")
            .pod(&pod)
            .ifname(ifname)
            .config(&conf)
            .run()
            .success_empty();
    }
    assert_eq!(pod.ns.links().len(), before.len(), "{:#?}", pod.ns.links());
    for ifname in ["lo", "own0", "own1", "stray0", "eth0"] {
        assert!(pod.ns.has_link(ifname), "{ifname} was removed or renamed");
    }
    let lo = pod.ns.link("lo").expect("lo");
    assert!(
        lo["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "lo was taken down: {lo}"
    );
    assert_eq!(node.ipam_allocations().len(), 1, "eth0's address was freed");
    node.ns.ip_ok(&["link", "del", "hostside"]);
    // The real one goes.
    node.del(&pod, &conf).success_empty();
    assert!(!pod.ns.has_link("eth0"));
    assert!(node.ipam_allocations().is_empty());
}

#[test]
fn a_fifo_as_netns_fails_at_once() {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let fifo = node.dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let conf = node.config("1.0.0");
    for verb in ["ADD", "DEL"] {
        let start = Instant::now();
        let out = node
            .call(verb)
            .pod(&pod)
            .netns(&fifo.to_string_lossy())
            .config(&conf)
            .timeout(Duration::from_secs(10))
            .run();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{verb} hung: {out}"
        );
        out.error_mentioning(4, "FIFO");
    }
    assert_clean(&node);
}

/// Starts the plugin from a thread inside the node's namespace (no `ip
/// netns exec` in between, so the delay counts from the plugin's own
/// start), kills it with SIGKILL after `after`, and says whether it was
/// killed before it finished.
fn kill_after(node: &CniNode, call: CniCall, after: Duration) -> bool {
    let mut command = call.to_command();
    let bin = node.bin.clone();
    // to_command() wraps the plugin in `ip netns exec`: run it directly.
    let mut direct = std::process::Command::new(&bin);
    direct.env_clear();
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            direct.env(k, v);
        }
    }
    if let Some(dir) = command.get_current_dir() {
        direct.current_dir(dir);
    }
    let stdin = call.stdin_bytes().to_vec();
    command = direct;
    node.ns.run(move || {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the plugin");
        let mut input = child.stdin.take().expect("stdin");
        let start = Instant::now();
        // The config fits the pipe: written at once, read when the plugin wants.
        std::io::Write::write_all(&mut input, &stdin).expect("write stdin");
        drop(input);
        while start.elapsed() < after {
            std::hint::spin_loop();
        }
        // By PID: the child is ours and not yet reaped.
        let _ = child.kill();
        let status = child.wait().expect("wait for the plugin");
        status.signal() == Some(libc::SIGKILL)
    })
}

/// Kills ADD at every point from its start to its end (15 µs apart), then
/// does what a runtime does after a failed ADD: DEL. After each round the
/// store, the links and the masquerade set hold nothing.
#[test]
fn sigkill_during_add_leaves_only_what_del_clears() {
    let node = masq_node();
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    let mut killed = 0;
    for step in 0..200 {
        let after = Duration::from_micros(15 * step);
        let add = node.call("ADD").pod(&pod).config(&conf);
        killed += usize::from(kill_after(&node, add, after));
        node.del(&pod, &conf).success_empty();
        assert_clean(&node);
        assert!(
            !pod.ns.has_link("eth0"),
            "eth0 left after DEL (kill at {after:?})"
        );
    }
    assert!(
        killed >= 10,
        "only {killed} of 60 ADDs were killed before they finished"
    );
}

/// Kills DEL at every point, then repeats DEL as a runtime does until it
/// succeeds: nothing is left.
#[test]
fn sigkill_during_del_is_finished_by_the_next_del() {
    let node = masq_node();
    let pod = Pod::new();
    let conf = node.config("1.0.0");
    for step in 0..40 {
        let after = Duration::from_micros(50 * step);
        node.add_ok(&pod, &conf);
        let del = node.call("DEL").pod(&pod).config(&conf);
        kill_after(&node, del, after);
        node.del(&pod, &conf).success_empty();
        assert_clean(&node);
        assert!(
            !pod.ns.has_link("eth0"),
            "eth0 left after DEL (kill at {after:?})"
        );
    }
}

/// Killed ADDs whose pods the runtime then forgets (namespace deleted, no
/// DEL): GC with the live attachments frees exactly the dead ones.
#[test]
fn sigkill_during_add_is_cleared_by_gc() {
    let node = masq_node();
    let conf = node.config("1.1.0");
    let live = Pod::new();
    let live_ip = result_ip(&node.add_ok(&live, &conf));
    for step in 0..30 {
        let pod = Pod::new();
        let add = node.call("ADD").pod(&pod).config(&conf);
        kill_after(&node, add, Duration::from_micros(100 * step));
        pod.ns.delete();
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": live.cid, "ifname": "eth0"}]);
    node.call("GC").config(&gc).run().success_empty();
    let held: Vec<String> = node.allocated_ips();
    assert_eq!(
        held,
        vec![live_ip.clone()],
        "GC kept or freed the wrong ones"
    );
    assert!(
        ipam_debris(&node).is_empty(),
        "debris: {:?}",
        ipam_debris(&node)
    );
    assert_eq!(masq_elements(&node), vec![live_ip]);
    // The killed pods' veths go with their namespaces, asynchronously.
    flannel_cluster::eventually(Duration::from_secs(5), "only the live veth", || {
        let veths = node.host_veths();
        if veths.len() == 1 {
            Ok(())
        } else {
            Err(format!("veths: {veths:?}"))
        }
    });
    node.del(&live, &conf).success_empty();
    assert_clean(&node);
}

/// An address file with no owner (an older version killed between create
/// and write) is freed by the next DEL that scans and by GC.
#[test]
fn ownerless_address_files_are_reclaimed() {
    let node = CniNode::new(bin());
    let conf: Value = node.config("1.1.0");
    std::fs::create_dir_all(node.ipam_dir()).expect("ipam dir");
    std::fs::write(node.ipam_dir().join("10.244.1.9"), b"").expect("write");
    std::fs::write(node.ipam_dir().join(".tmp-12345"), b"x\r\neth0").expect("write");
    node.call("DEL")
        .container_id("gone")
        .ifname("eth0")
        .config(&conf)
        .run()
        .success_empty();
    assert_clean(&node);
    std::fs::write(node.ipam_dir().join("10.244.1.9"), b"").expect("write");
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    node.call("GC").config(&gc).run().success_empty();
    assert_clean(&node);
}
