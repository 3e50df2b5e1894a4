//! `status`, `matrix`, `exec` and `down` on a cluster `up` left running.
//!
//! It acts on what the saved state records, and `down` removes only that, by
//! PID and by name; it never builds a cluster.

use super::{attach, catching, check_name, cluster_dir, prefix, state_path};
use flannel_cluster::cluster::ClusterState;
use std::time::Duration;

/// The table with an ENTRIES column, then each node's figures from its
/// /metrics; `Ok((text, healthy))`.
pub fn status(name: &str) -> Result<(String, bool), String> {
    let (st, c, pods) = attach(name)?;
    catching(|| {
        let (table, ok) = super::render_table(&c, &pods, true);
        let head = format!(
            "cluster {:?}: {} nodes, {} pods, {} store, {}{} ({})\n",
            st.name,
            st.nodes.len(),
            st.pods.len(),
            st.store,
            st.ip_family().as_str(),
            [("etcd", &st.etcd), ("kube-api-standin", &st.kube)]
                .iter()
                .filter_map(|(what, p)| p.as_ref().map(|p| (what, p)))
                .map(|(what, p)| {
                    let state = if p.is_ours() { "running" } else { "DOWN" };
                    format!(", {what} pid {} {state}", p.pid)
                })
                .collect::<String>(),
            st.dir.display()
        );
        let devices = match st.ip_family() {
            flannel_cluster::cluster::IpFamily::V4 => "flannel.1",
            flannel_cluster::cluster::IpFamily::V6 => "flannel-v6.1",
            flannel_cluster::cluster::IpFamily::Dual => "flannel.1 and flannel-v6.1",
        };
        let verdict = if ok {
            format!("every node's {devices} entries match the leases\n")
        } else {
            "NOT healthy: see above\n".to_owned()
        };
        let figures = super::render_figures(&c);
        Ok((format!("{head}{table}{verdict}\n{figures}"), ok))
    })
}

/// The pod-to-pod reachability matrix by ping (and by TCP with `tcp`);
/// `Ok((text, all reachable))`.
pub fn matrix(name: &str, tcp: bool, timeout: Duration) -> Result<(String, bool), String> {
    let (_, c, pods) = attach(name)?;
    if pods.len() < 2 {
        return Err(format!(
            "cluster {name:?} has {} pod(s): nothing to match",
            pods.len()
        ));
    }
    catching(|| {
        let refs: Vec<_> = pods.iter().collect();
        // One matrix per family the cluster runs (ping -4, ping -6, ...).
        let mut ms = c.ping_matrices(&refs, timeout);
        if tcp {
            ms.extend(c.tcp_matrices(&refs, timeout));
        }
        let mut text = String::new();
        let mut ok = true;
        for m in &ms {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&m.render());
            for f in m.failures() {
                text.push_str(&format!("  unreachable: {f}\n"));
            }
            ok &= m.all_ok();
        }
        Ok((text, ok))
    })
}

/// The namespace `target` names in cluster `st`: `underlay`, a node
/// (`node0`), a pod (`node0-pod1`) or a full namespace name of the cluster.
pub fn resolve(st: &ClusterState, target: &str) -> Option<String> {
    let full = if target.starts_with(&st.prefix) {
        target.to_owned()
    } else {
        format!("{}{target}", st.prefix)
    };
    let mut known: Vec<&str> = vec![&st.underlay];
    known.extend(st.nodes.iter().map(|n| n.netns.as_str()));
    known.extend(st.pods.iter().map(|p| p.netns.as_str()));
    known.extend(st.extra_netns.iter().map(String::as_str));
    known.contains(&full.as_str()).then_some(full)
}

/// Replaces this process with `cmd` run inside `target`'s namespace
/// (returns only on failure).
pub fn exec(name: &str, target: &str, cmd: &[String]) -> Result<std::convert::Infallible, String> {
    use std::os::unix::process::CommandExt;
    let st = super::load(name)?;
    if cmd.is_empty() {
        return Err("exec: no command given (netns-cluster exec NODE|POD -- CMD...)".into());
    }
    let ns = resolve(&st, target).ok_or_else(|| {
        let mut names = vec!["underlay".to_string()];
        names.extend(st.nodes.iter().map(|n| n.name.clone()));
        names.extend(st.pods.iter().map(|p| p.name.clone()));
        format!(
            "no node or pod {target:?} in cluster {name:?}; one of: {}",
            names.join(", ")
        )
    })?;
    let err = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(cmd)
        .exec();
    Err(format!("ip netns exec {ns}: {err}"))
}

/// Removes cluster `name`: stops its recorded processes, deletes its
/// namespaces and directory. Harmless when it is already gone.
pub fn down(name: &str) -> Result<String, String> {
    check_name(name)?;
    let dir = cluster_dir(name);
    let path = state_path(&dir);
    if !path.exists() {
        // Nothing recorded: only namespaces carrying this cluster's prefix
        // (left by an interrupted `up`) can be ours.
        let left = flannel_cluster::netns::namespaces_with_prefix(&prefix(name));
        let mut errs = Vec::new();
        for ns in &left {
            if let Err(e) = flannel_cluster::netns::delete_by_name(ns) {
                errs.push(e);
            }
        }
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                errs.push(format!("remove {}: {e}", dir.display()));
            }
        }
        if !errs.is_empty() {
            return Err(errs.join("\n"));
        }
        return Ok(if left.is_empty() {
            format!("no cluster named {name:?}: nothing to do")
        } else {
            format!(
                "no state for {name:?}; deleted {} leftover namespace(s)",
                left.len()
            )
        });
    }
    let st = ClusterState::load(&path)?;
    let daemons = st.nodes.iter().filter(|n| n.flanneld.is_some()).count()
        + usize::from(st.etcd.is_some())
        + usize::from(st.kube.is_some());
    let namespaces = 1 + st.nodes.len() + st.pods.len() + st.extra_netns.len();
    let errs = st.destroy();
    if errs.is_empty() {
        Ok(format!(
            "cluster {name:?} down: {daemons} process(es) stopped, {namespaces} namespaces \
             deleted, {} removed",
            st.dir.display()
        ))
    } else {
        Err(format!(
            "cluster {name:?}: could not remove everything:\n{}",
            errs.join("\n")
        ))
    }
}
