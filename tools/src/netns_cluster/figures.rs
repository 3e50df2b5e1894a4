//! `status`'s second table: each node's key figures, from its flanneld's
//! `/metrics` (127.0.0.1:9109 in the node's netns).
//!
//! It reads the scrape; it never changes a node.

use flannel_cluster::cluster::Cluster;
use flannel_cluster::metrics::{self, Scrape};

const HEAD: [&str; 9] = [
    "NODE",
    "PEERS",
    "NEIGH/FDB/ROUTE",
    "REPAIRED",
    "STALE REMOVED",
    "RESYNCS",
    "STORE",
    "LEASE EXPIRES IN",
    "RSS",
];

/// The figures table; a node whose /metrics does not answer gets "-" and
/// a note below (the text says why).
pub fn render_figures(c: &Cluster) -> String {
    let mut notes = Vec::new();
    let rows: Vec<Vec<String>> = c
        .nodes()
        .iter()
        .map(|n| match metrics::scrape(&n.ns) {
            Ok(s) => row(&n.name, &s),
            Err(e) => {
                notes.push(format!("  {}: /metrics: {e}\n", n.name));
                let mut r = vec![n.name.clone()];
                r.resize(HEAD.len(), "-".into());
                r
            }
        })
        .collect();
    let mut widths: Vec<usize> = HEAD.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            s.push_str(&format!("{cell:<w$}  "));
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&HEAD.map(String::from));
    for r in &rows {
        out.push_str(&line(r));
    }
    for n in notes {
        out.push_str(&n);
    }
    out
}

fn row(node: &str, s: &Scrape) -> Vec<String> {
    let num = |name: &str, labels: &[(&str, &str)]| -> String {
        s.value(name, labels)
            .map(|v| format!("{v}"))
            .unwrap_or_else(|| "-".into())
    };
    let sum = |name: &str| -> String {
        let all = s.samples(name);
        if all.is_empty() {
            "-".into()
        } else {
            format!("{}", all.iter().map(|(_, v)| v).sum::<f64>())
        }
    };
    let kernel = ["neigh", "fdb", "route"]
        .map(|k| num("flanneld_kernel_entries", &[("kind", k)]))
        .join("/");
    let store = match s.value("flanneld_store_reachable", &[]) {
        Some(v) if v >= 1.0 => "reachable".to_string(),
        Some(_) => "UNREACHABLE".to_string(),
        None => "-".to_string(),
    };
    let expires = s
        .value("flanneld_lease_expiry_timestamp_seconds", &[])
        .map(|at| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            format!("{:.0}s", at - now)
        })
        .unwrap_or_else(|| "-".into());
    let rss = s
        .value("flanneld_process_resident_memory_bytes", &[])
        .map(|b| format!("{:.1} MiB", b / 1048576.0))
        .unwrap_or_else(|| "-".into());
    vec![
        node.to_owned(),
        num("flanneld_peers", &[]),
        kernel,
        sum("flanneld_entries_repaired_total"),
        sum("flanneld_entries_stale_removed_total"),
        num("flanneld_resyncs_total", &[]),
        store,
        expires,
        rss,
    ]
}
