//! `up`: builds the cluster, attaches the pods, waits until every node's
//! kernel matches the leases, prints the table and leaves it all running.
//!
//! It refuses to build over a cluster of the same name or leftovers of one;
//! it never removes what it did not build.

use super::{catching, check_name, cluster_dir, prefix, state_path};
use flannel_cluster::cluster::{Cluster, IpFamily, StoreKind};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub store: StoreKind,
    /// The overlay's families (`--ip-family`).
    pub family: IpFamily,
    /// Keep what was made even when `up` fails (to look at it); `down` removes it.
    pub keep: bool,
    /// flanneld's `--lease-ttl`.
    pub lease_ttl: u64,
}

/// How long a node's flanneld may take to write its subnet.env, and the
/// cluster to converge.
const READY: Duration = Duration::from_secs(20);

/// Starts every node's flanneld and waits for each one's subnet.env; a
/// flanneld that exits first is reported with the last line of its log.
fn start_nodes(c: &mut Cluster) -> Result<(), String> {
    for i in 0..c.len() {
        let _ = std::fs::remove_file(c.node(i).subnet_file());
        c.start(i);
    }
    for i in 0..c.len() {
        let n = c.node(i);
        let deadline = Instant::now() + READY;
        loop {
            let ready = n
                .subnet_env()
                .is_some_and(|e| flannel_cluster::cluster::env_is_ready(&e));
            if ready {
                break;
            }
            if !n.is_running() {
                let log = n.log();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty() && !l.starts_with("-----"))
                    .unwrap_or("(no output)");
                return Err(format!(
                    "{}'s flanneld exited before writing its subnet.env: {}\n(full log: {})",
                    n.name,
                    last.trim(),
                    n.log_path().display()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}'s flanneld wrote no subnet.env within {READY:?}; see {}",
                    n.name,
                    n.log_path().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Brings cluster `o.name` up and returns the table to print.
pub fn up(o: &UpOptions) -> Result<String, String> {
    check_name(&o.name)?;
    if o.nodes == 0 || o.nodes > 200 {
        return Err(format!("--nodes {}: use 1 to 200", o.nodes));
    }
    if o.pods_per_node > 250 {
        return Err(format!("--pods-per-node {}: at most 250", o.pods_per_node));
    }
    let dir = cluster_dir(&o.name);
    let pre = prefix(&o.name);
    if dir.exists() {
        return Err(format!(
            "cluster {:?} already exists ({}); remove it with `netns-cluster down --name {}`",
            o.name,
            dir.display(),
            o.name
        ));
    }
    let leftovers = flannel_cluster::netns::namespaces_with_prefix(&pre);
    if !leftovers.is_empty() {
        return Err(format!(
            "namespaces of an earlier cluster {:?} are still there ({}); \
             remove them with `netns-cluster down --name {}`",
            o.name,
            leftovers.join(", "),
            o.name
        ));
    }
    let started = Instant::now();
    let mut built: Option<Cluster> = None;
    let result = catching(|| {
        let b = Cluster::builder()
            .nodes(o.nodes)
            .name_prefix(&pre)
            .dir(&dir)
            .detached(true)
            .store(o.store)
            .ip_family(o.family)
            .lease_ttl(o.lease_ttl)
            .start(false);
        let c = built.insert(b.build());
        start_nodes(c)?;
        let all: Vec<usize> = (0..c.len()).collect();
        c.wait_converged(&all, READY);
        let mut pods = Vec::new();
        for i in 0..c.len() {
            for _ in 0..o.pods_per_node {
                pods.push(
                    c.try_add_pod(i)
                        .map_err(|out| format!("CNI ADD on {} failed:\n{out}", c.node(i).name))?,
                );
            }
        }
        let (table, _) = super::render_table(c, &pods, false);
        Ok((table, pods))
    });
    match result {
        Ok((table, pods)) => {
            let c = built.take().expect("built");
            let st = c.persist(&o.name, pods);
            st.save(&state_path(&dir))?;
            Ok(format!(
                "cluster {:?} up in {:.1} s: {} nodes, {} pods, {} store, {} ({})\n{table}",
                o.name,
                started.elapsed().as_secs_f64(),
                o.nodes,
                o.nodes * o.pods_per_node,
                o.store.as_str(),
                o.family.as_str(),
                dir.display()
            ))
        }
        Err(e) if o.keep => {
            if let Some(c) = built.take() {
                let st = c.persist(&o.name, Vec::new());
                let _ = st.save(&state_path(&dir));
            }
            Err(format!(
                "{e}\n(kept for inspection; remove with `netns-cluster down --name {}`)",
                o.name
            ))
        }
        // Dropping the cluster stops its daemons and removes it.
        Err(e) => {
            drop(built);
            Err(e)
        }
    }
}
