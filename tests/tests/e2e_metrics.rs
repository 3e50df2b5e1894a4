//! flanneld's /metrics in a netns cluster: a repair after someone deletes a
//! route is counted exactly once and its latency observed; every metric the
//! Grafana dashboard queries is in a real scrape, and the scrape parses.

use std::collections::BTreeSet;
use std::time::Duration;

use flannel_cluster::cluster::{Cluster, VXLAN_DEV};
use flannel_cluster::eventually;
use flannel_cluster::metrics::{self, Scrape};

const CONVERGE: Duration = Duration::from_secs(20);

fn scrape(c: &Cluster, i: usize) -> Scrape {
    eventually(CONVERGE, "a /metrics scrape", || {
        metrics::scrape(&c.node(i).ns)
    })
}

fn or_zero(v: Option<f64>) -> f64 {
    v.unwrap_or(0.0)
}

/// Breaks node 0's route to node 1 and waits for the repair and its count.
fn repair_a_route(c: &Cluster) -> (Scrape, Scrape) {
    let before = scrape(c, 0);
    let peer = c.lease_of_ok(1);
    let out = c
        .node(0)
        .ns
        .exec("ip", &["route", "del", &peer.subnet, "dev", VXLAN_DEV]);
    assert!(out.success(), "{out}");
    eventually(c.resync_interval() + CONVERGE, "the route repaired", || {
        c.kernel(0).check_exactly(&c.expected_peers(0))
    });
    let repaired =
        |s: &Scrape| or_zero(s.value("flanneld_entries_repaired_total", &[("kind", "route")]));
    let was = repaired(&before);
    let after = eventually(CONVERGE, "the repair counted", || {
        let s = metrics::scrape(&c.node(0).ns)?;
        if repaired(&s) > was {
            Ok(s)
        } else {
            Err(format!("entries_repaired_total{{kind=route}} still {was}"))
        }
    });
    (before, after)
}

#[test]
fn a_repaired_route_is_counted_once_and_its_latency_observed() {
    let c = Cluster::new(2);
    c.wait_all_converged(CONVERGE);
    let (before, after) = repair_a_route(&c);

    let route = [("kind", "route")];
    assert_eq!(
        or_zero(after.value("flanneld_entries_repaired_total", &route)),
        or_zero(before.value("flanneld_entries_repaired_total", &route)) + 1.0,
        "one deleted route, one repair"
    );
    for kind in ["neigh", "fdb"] {
        assert_eq!(
            or_zero(after.value("flanneld_entries_repaired_total", &[("kind", kind)])),
            or_zero(before.value("flanneld_entries_repaired_total", &[("kind", kind)])),
            "no {kind} was touched"
        );
    }
    let repair = [("source", "repair")];
    let count =
        |s: &Scrape| or_zero(s.value("flanneld_event_to_programmed_seconds_count", &repair));
    assert!(
        count(&after) > count(&before),
        "the repair latency histogram grew: {} -> {}",
        count(&before),
        count(&after)
    );

    // The node's key figures.
    let subnet = c.node(0).subnet();
    assert_eq!(
        after.value(
            "flanneld_lease_info",
            &[("subnet", &subnet), ("store", "file")]
        ),
        Some(1.0),
        "lease info for {subnet} in\n{}",
        after.text
    );
    assert_eq!(after.value("flanneld_peers", &[]), Some(1.0));
    assert_eq!(after.value("flanneld_store_reachable", &[]), Some(1.0));
    assert_eq!(after.value("flanneld_kernel_entries", &route), Some(1.0));
    assert!(or_zero(after.value("flanneld_lease_expiry_timestamp_seconds", &[])) > 1.6e9);
    assert!(or_zero(after.value("flanneld_process_resident_memory_bytes", &[])) > 0.0);
    assert!(or_zero(after.value("flanneld_process_open_fds", &[])) > 0.0);
    assert!(after
        .value("flanneld_process_cpu_seconds_total", &[])
        .is_some());
    assert!(or_zero(after.value("flanneld_resync_duration_seconds_count", &[])) >= 1.0);
    assert_eq!(
        after.value(
            "flanneld_store_requests_total",
            &[("operation", "acquire"), ("result", "ok")]
        ),
        Some(1.0)
    );
}

/// The metric names a PromQL expression uses (`flanneld_…`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("flanneld_") {
        let tail = &rest[at..];
        let end = tail
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn a_stray_route_removed_is_counted_once() {
    let c = Cluster::new(2);
    c.wait_all_converged(CONVERGE);
    let stale =
        |s: &Scrape| or_zero(s.value("flanneld_entries_stale_removed_total", &[("kind", "route")]));
    let was = stale(&scrape(&c, 0));
    // A route no lease explains, inside Network, out of flannel.1.
    let out = c.node(0).ns.exec(
        "ip",
        &[
            "route",
            "add",
            "10.244.250.0/24",
            "via",
            "10.244.250.0",
            "dev",
            VXLAN_DEV,
            "onlink",
        ],
    );
    assert!(out.success(), "{out}");
    eventually(
        c.resync_interval() + CONVERGE,
        "the stray route removed",
        || c.kernel(0).check_exactly(&c.expected_peers(0)),
    );
    let after = eventually(CONVERGE, "the removal counted", || {
        let s = metrics::scrape(&c.node(0).ns)?;
        if stale(&s) > was {
            Ok(s)
        } else {
            Err(format!(
                "entries_stale_removed_total{{kind=route}} still {was}"
            ))
        }
    });
    assert_eq!(stale(&after), was + 1.0, "one stray route, one removal");
    assert_eq!(
        after.value("flanneld_kernel_entries", &[("kind", "route")]),
        Some(1.0)
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_scraped() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"));
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    let wanted: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    assert!(wanted.len() >= 5, "the dashboard queries {wanted:?}");

    let c = Cluster::new(2);
    c.wait_all_converged(CONVERGE);
    // A repair, so the labelled families (repairs, repair latency) have series.
    let (_, s) = repair_a_route(&c);
    // The scrape parsed (Scrape::parse) as Prometheus text; its families:
    assert!(
        !s.parsed.samples.is_empty(),
        "prometheus-parse found no samples"
    );
    let have = s.names();
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which no scrape has; scraped:\n{}",
        s.text
    );
}
