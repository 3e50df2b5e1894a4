//! flanneld's metrics: one registry and one struct of handles, shared as an
//! `Arc<Metrics>` by the daemon's loop, the datapath and the HTTP server,
//! and by the lease stores through `lease::observe` (watch restarts).
//! Encoded in the Prometheus/OpenMetrics text format by `prometheus-client`.
//! Names: prefix `flanneld_`, base units (seconds, bytes), `_total` on
//! counters (the crate appends it).
//!
//! Owns the names, labels and values; it serves nothing (that is `http`'s)
//! and decides nothing: the other modules record what they did. Process
//! figures are read from `/proc/self` when scraped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::lease::observe::StoreObserver;
use crate::lease::LeaseError;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    pub subnet: String,
    pub public_ip: String,
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `fdb`, `neigh`, `route` (and `link` for a device set up again).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub store: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `lease` (a lease event programmed) or `repair` (an outside change undone).
    pub source: String,
}

/// Every metric handle; cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub lease_info: Family<LeaseLabels, Gauge>,
    pub lease_expiry: Gauge,
    pub lease_renewals: Counter,
    pub lease_renewal_failures: Counter,
    pub peers: Gauge,
    pub kernel_entries: Family<KindLabels, Gauge>,
    pub repaired: Family<KindLabels, Counter>,
    pub stale_removed: Family<KindLabels, Counter>,
    pub resyncs: Counter,
    pub resync_duration: Histogram,
    pub event_to_programmed: Family<SourceLabels, Histogram>,
    pub store_reachable: Gauge,
    pub store_requests: Family<RequestLabels, Counter>,
    pub watch_restarts: Family<RestartLabels, Counter>,
    pub masq_rewrites: Counter,
    pub ready: Gauge,
}

fn latency_buckets() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("flanneld");
        let m = Metrics {
            lease_info: Family::default(),
            lease_expiry: Gauge::default(),
            lease_renewals: Counter::default(),
            lease_renewal_failures: Counter::default(),
            peers: Gauge::default(),
            kernel_entries: Family::default(),
            repaired: Family::default(),
            stale_removed: Family::default(),
            resyncs: Counter::default(),
            resync_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            event_to_programmed: Family::new_with_constructor(latency_buckets),
            store_reachable: Gauge::default(),
            store_requests: Family::default(),
            watch_restarts: Family::default(),
            masq_rewrites: Counter::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "lease_info",
            "This node's lease (value 1): subnet, public IP, lease store",
            m.lease_info.clone(),
        );
        r.register(
            "lease_expiry_timestamp_seconds",
            "When this node's lease expires (unix seconds)",
            m.lease_expiry.clone(),
        );
        r.register(
            "lease_renewals",
            "Lease renewals that succeeded",
            m.lease_renewals.clone(),
        );
        r.register(
            "lease_renewal_failures",
            "Lease renewals that failed (retried with back-off)",
            m.lease_renewal_failures.clone(),
        );
        r.register("peers", "Peers programmed on this node", m.peers.clone());
        r.register(
            "kernel_entries",
            "Entries on the VXLAN device after the last resync, by kind",
            m.kernel_entries.clone(),
        );
        r.register(
            "entries_repaired",
            "Kernel entries restored after an outside change, by kind",
            m.repaired.clone(),
        );
        r.register(
            "entries_stale_removed",
            "Kernel entries removed because no lease explains them, by kind",
            m.stale_removed.clone(),
        );
        r.register(
            "resyncs",
            "Full passes of the kernel against the leases",
            m.resyncs.clone(),
        );
        r.register(
            "resync_duration_seconds",
            "Duration of a resync pass",
            m.resync_duration.clone(),
        );
        r.register(
            "event_to_programmed_seconds",
            "From a lease event (or an outside change to the kernel) to its entries written",
            m.event_to_programmed.clone(),
        );
        r.register(
            "store_reachable",
            "Whether the lease store answered its last request (1) or not (0)",
            m.store_reachable.clone(),
        );
        r.register(
            "store_requests",
            "Requests to the lease store, by operation and result",
            m.store_requests.clone(),
        );
        r.register(
            "store_watch_restarts",
            "Restarts (re-lists) of the lease watch, by store and reason",
            m.watch_restarts.clone(),
        );
        r.register(
            "masq_rewrites",
            "Rewrites of the masquerade/forward table after an outside change",
            m.masq_rewrites.clone(),
        );
        r.register(
            "ready",
            "Whether /readyz answers 200 (1) or 503 (0)",
            m.ready.clone(),
        );
        r.register_collector(Box::new(ProcessCollector));
        // Series at 0 from the start: a dashboard shows 0, not "no data".
        for kind in ["neigh", "fdb", "route"] {
            let _ = m.repaired.get_or_create(&Self::kind(kind));
            let _ = m.stale_removed.get_or_create(&Self::kind(kind));
            let _ = m.kernel_entries.get_or_create(&Self::kind(kind));
        }
        Metrics { registry: r, ..m }
    }

    /// Creates the watch-restart series `store` can report, at 0.
    pub fn for_store(&self, store: &'static str) {
        let reasons: &[&str] = match store {
            "etcd" => &["compacted", "unreachable", "refused"],
            "kube" => &["error"],
            _ => &["overflow"],
        };
        for reason in reasons {
            let _ = self.watch_restarts.get_or_create(&RestartLabels {
                store: store.to_string(),
                reason: reason.to_string(),
            });
        }
    }

    /// The text a scrape returns.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// This node's lease, as acquired or renewed.
    pub fn set_lease(
        &self,
        subnet: impl std::fmt::Display,
        public_ip: impl std::fmt::Display,
        store: &str,
        expiry: SystemTime,
    ) {
        self.lease_info
            .get_or_create(&LeaseLabels {
                subnet: subnet.to_string(),
                public_ip: public_ip.to_string(),
                store: store.to_string(),
            })
            .set(1);
        let secs = expiry
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        self.lease_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// One request to the lease store.
    pub fn store_request<T>(&self, operation: &str, result: &Result<T, LeaseError>) {
        self.store_outcome(operation, result.as_ref().err());
    }

    /// One request to the lease store, by its error if it failed.
    pub fn store_outcome(&self, operation: &str, error: Option<&LeaseError>) {
        let result = match error {
            None => "ok",
            Some(LeaseError::Lost { .. }) => "lost",
            Some(LeaseError::NoFreeSubnet { .. }) => "no_free_subnet",
            Some(_) => "error",
        };
        self.store_requests
            .get_or_create(&RequestLabels {
                operation: operation.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn observe_latency(&self, source: &str, elapsed: Duration) {
        self.event_to_programmed
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn kind(kind: &str) -> KindLabels {
        KindLabels {
            kind: kind.to_string(),
        }
    }
}

impl StoreObserver for Metrics {
    fn watch_restarted(&self, store: &'static str, reason: &'static str) {
        self.watch_restarts
            .get_or_create(&RestartLabels {
                store: store.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// RSS, CPU time and open descriptors, read from /proc/self at scrape time.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = ProcessStats::read();
        if let Some(cpu) = p.cpu_seconds {
            let c: ConstCounter<f64> = ConstCounter::new(cpu);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent",
                None,
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size",
                p.rss_bytes,
            ),
            ("process_open_fds", "Open file descriptors", p.open_fds),
        ] {
            if let Some(v) = value {
                let g: ConstGauge<i64> = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
                let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
                g.encode(m)?;
            }
        }
        Ok(())
    }
}

/// What /proc/self says; a field it could not read is left out.
#[derive(Debug, Default)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let statm = std::fs::read_to_string("/proc/self/statm").ok();
        // SAFETY: sysconf has no preconditions.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        ProcessStats {
            cpu_seconds: stat.as_deref().and_then(|s| cpu_seconds(s, tick)),
            rss_bytes: statm.as_deref().and_then(|s| {
                let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
                Some(pages * u64::try_from(page).ok()?)
            }),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
        }
    }
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds. The command
/// name (field 2) may hold spaces and parentheses: fields are counted
/// after its last `)`.
fn cpu_seconds(stat: &str, ticks_per_second: libc::c_long) -> Option<f64> {
    if ticks_per_second <= 0 {
        return None;
    }
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_seconds(line, 100), Some(3.0));
        assert_eq!(cpu_seconds("garbage", 100), None);
    }

    #[test]
    fn a_scrape_names_every_family() {
        let m = Metrics::new();
        m.set_lease(
            "10.244.1.0/24",
            "192.168.64.2",
            "file",
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        m.repaired.get_or_create(&Metrics::kind("route")).inc();
        m.observe_latency("repair", Duration::from_millis(3));
        m.watch_restarted("etcd", "compacted");
        let text = m.encode().expect("encode");
        for needle in [
            "flanneld_lease_info{subnet=\"10.244.1.0/24\",public_ip=\"192.168.64.2\",store=\"file\"} 1",
            "flanneld_lease_expiry_timestamp_seconds 1700000000",
            "flanneld_entries_repaired_total{kind=\"route\"} 1",
            "flanneld_event_to_programmed_seconds_count{source=\"repair\"} 1",
            "flanneld_store_watch_restarts_total{store=\"etcd\",reason=\"compacted\"} 1",
            "flanneld_process_open_fds ",
            "flanneld_process_cpu_seconds_total ",
            "flanneld_process_resident_memory_bytes ",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
