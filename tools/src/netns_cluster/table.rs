//! The table `up` and `status` print: node, public IP(s), leased subnet(s),
//! VtepMAC(s), flanneld, (status: whether the kernel matches the leases),
//! pods with their addresses. IPv6 columns appear when the cluster runs IPv6.
//!
//! Rendering only: it reads the cluster, changes nothing.

use flannel_cluster::cluster::{Cluster, ClusterPod, IpFamily};

/// One node's row (plus one line per further pod).
struct Row {
    cells: Vec<String>,
    pods: Vec<String>,
}

/// Renders the table; with `check`, a column saying whether each node's
/// flannel.1 routes, neighbours and FDB entries are exactly its peers'
/// leases', and the differences below the table.
pub fn render_table(c: &Cluster, pods: &[ClusterPod], check: bool) -> (String, bool) {
    let leases = c.leases();
    let mut all_ok = true;
    let mut notes = Vec::new();
    let v6 = c.family().has_v6();
    let mut head = vec!["NODE", "PUBLIC IP", "SUBNET", "VTEP MAC"];
    if v6 {
        head.extend(["PUBLIC IPV6", "IPV6 SUBNET", "V6 VTEP MAC"]);
    }
    head.push("FLANNELD");
    if check {
        head.push("ENTRIES");
    }
    head.push("PODS");
    let rows: Vec<Row> = c
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ip = n.ip.to_string();
            let subnet = n
                .subnet_env()
                .and_then(|e| e.get("FLANNEL_SUBNET").cloned())
                .and_then(|s| flannel_cluster::cluster::network_of(&s))
                .unwrap_or_else(|| "-".into());
            let lease = leases
                .iter()
                .find(|l| l.is_of(n.ip, n.ip6) && !l.is_expired());
            let mac = lease
                .map(|l| l.vtep_mac.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "-".into());
            let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
            let v6_cells = [
                dash(n.ip6.map(|a| a.to_string())),
                dash(n.subnet6()),
                dash(lease.and_then(|l| l.vtep_mac6.clone())),
            ];
            let daemon = match (n.pid(), n.is_running()) {
                (Some(pid), true) => format!("pid {pid}"),
                (Some(pid), false) => {
                    all_ok = false;
                    format!("DOWN (was {pid})")
                }
                (None, _) => "-".into(),
            };
            let mut cells = vec![n.name.clone(), ip, subnet, mac];
            if v6 {
                cells.extend(v6_cells);
            }
            cells.push(daemon);
            if check {
                let peers = c
                    .expected_peers_of(i, IpFamily::V4)
                    .len()
                    .max(c.expected_peers_of(i, IpFamily::V6).len());
                match c.check_all_entries(i) {
                    Ok(()) => cells.push(format!("ok ({peers} peers)")),
                    Err(e) => {
                        all_ok = false;
                        notes.push(e);
                        cells.push("MISMATCH".into());
                    }
                }
            }
            let pods = pods
                .iter()
                .filter(|p| p.node == i)
                .map(|p| {
                    let ips: Vec<String> = p.ips.iter().map(|a| a.to_string()).collect();
                    format!("{} {}", pod_name(c, p), ips.join(" "))
                })
                .collect();
            Row { cells, pods }
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(&r.cells) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String], last: &str| {
        let mut s = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            s.push_str(&format!("{cell:<w$}  "));
        }
        s.push_str(last);
        s.trim_end().to_owned() + "\n"
    };
    let head_cells: Vec<String> = head[..head.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut out = line(&head_cells, "PODS");
    for r in &rows {
        let first = r.pods.first().map(String::as_str).unwrap_or("-");
        out.push_str(&line(&r.cells, first));
        let blank: Vec<String> = r.cells.iter().map(|_| String::new()).collect();
        for p in r.pods.iter().skip(1) {
            out.push_str(&line(&blank, p));
        }
    }
    for n in notes {
        out.push_str(&format!("  mismatch: {n}\n"));
    }
    (out, all_ok)
}

/// A pod's name within its cluster, e.g. "node0-pod1".
pub fn pod_name(c: &Cluster, p: &ClusterPod) -> String {
    let full = p.ns().name();
    c.name_prefix()
        .and_then(|pre| full.strip_prefix(pre))
        .unwrap_or(full)
        .to_owned()
}
