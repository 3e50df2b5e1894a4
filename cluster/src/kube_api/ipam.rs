//! The node IPAM controller, as kube-controller-manager runs it with
//! `--allocate-node-cidrs --cluster-cidr=C[,C6] --node-cidr-mask-size-ipv4=M
//! --node-cidr-mask-size-ipv6=M6` (the range allocator): every Node
//! without `spec.podCIDR` gets the next free /M of C (and /M6 of C6, for a
//! dual-stack or IPv6-only cluster) in `spec.podCIDRs`, in the order of the
//! cluster CIDRs, the first also in `spec.podCIDR` (one MODIFIED event),
//! after an optional delay; the search for a free one goes on from the
//! last one handed out, wrapping around; a deleted Node's ranges are free
//! again. While paused (kube-controller-manager down) nothing is handed
//! out; the Nodes that came due meanwhile get their ranges when it resumes.
//!
//! It only hands out and frees ranges in the stand-in's store; it does not
//! write the host's or a namespace's routes.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

use super::http::Shared;
use super::object::{self, Kind};
use super::store::ChangeType;

/// One cluster CIDR and the size of each node's range in it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Range {
    base: u128,
    /// 32 (IPv4) or 128 (IPv6).
    bits: u8,
    prefix: u8,
    node_mask: u8,
}

impl Range {
    fn parse(cidr: &str, mask4: u8, mask6: u8) -> Result<Range, String> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("cluster CIDR {cidr:?}: expected address/len"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|e| format!("cluster CIDR {cidr:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| format!("cluster CIDR {cidr:?}: {e}"))?;
        let (addr, bits, node_mask) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8, mask4),
            IpAddr::V6(a) => (u128::from(a), 128u8, mask6),
        };
        if prefix > bits || node_mask > bits || node_mask < prefix || node_mask - prefix > 24 {
            return Err(format!(
                "node mask /{node_mask} does not fit cluster CIDR {cidr} (at most 2^24 ranges)"
            ));
        }
        Ok(Range {
            base: addr & mask(bits, prefix),
            bits,
            prefix,
            node_mask,
        })
    }

    fn count(&self) -> u32 {
        1 << (self.node_mask - self.prefix)
    }

    fn cidr(&self, idx: u32) -> String {
        let step = 1u128 << (self.bits - self.node_mask);
        let ip = self.base + u128::from(idx) * step;
        let ip: IpAddr = if self.bits == 32 {
            Ipv4Addr::from(ip as u32).into()
        } else {
            Ipv6Addr::from(ip).into()
        };
        format!("{ip}/{}", self.node_mask)
    }

    /// The index of `cidr` if it is one of this range's.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, len) = cidr.split_once('/')?;
        let ip = match ip.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if self.bits == 32 => u128::from(u32::from(a)),
            IpAddr::V6(a) if self.bits == 128 => u128::from(a),
            _ => return None,
        };
        if len.parse::<u8>().ok()? != self.node_mask || ip < self.base {
            return None;
        }
        let idx = u32::try_from((ip - self.base) >> (self.bits - self.node_mask)).ok()?;
        (idx < self.count() && self.cidr(idx) == cidr).then_some(idx)
    }
}

fn mask(bits: u8, prefix: u8) -> u128 {
    let all = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    if prefix == 0 {
        0
    } else {
        (all << (bits - prefix)) & all
    }
}

/// The controller's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIpam {
    ranges: Vec<Range>,
    delay: Duration,
}

impl NodeIpam {
    /// `cluster_cidr` such as `10.244.0.0/16`, `node_mask` such as 24 (an
    /// IPv6 CIDR in the list gets /64 ranges).
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<NodeIpam, String> {
        NodeIpam::dual(cluster_cidr, node_mask, 64)
    }

    /// `cluster_cidrs` such as `10.244.0.0/16,fd00:10:244::/56` (one per
    /// family at most), each IPv4 node a /`mask4`, each IPv6 one a /`mask6`.
    pub fn dual(cluster_cidrs: &str, mask4: u8, mask6: u8) -> Result<NodeIpam, String> {
        let ranges = cluster_cidrs
            .split(',')
            .map(|c| Range::parse(c.trim(), mask4, mask6))
            .collect::<Result<Vec<_>, _>>()?;
        let fams: HashSet<u8> = ranges.iter().map(|r| r.bits).collect();
        if fams.len() != ranges.len() {
            return Err(format!(
                "cluster CIDRs {cluster_cidrs:?}: at most one per family"
            ));
        }
        Ok(NodeIpam {
            ranges,
            delay: Duration::ZERO,
        })
    }

    /// Waits `d` after a Node appears before giving it a range.
    pub fn delay(mut self, d: Duration) -> NodeIpam {
        self.delay = d;
        self
    }
}

fn pod_cidr(node: &Value) -> Option<&str> {
    node.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Every podCIDR of `node` (`spec.podCIDRs`, else `spec.podCIDR`).
fn pod_cidrs(node: &Value) -> Vec<&str> {
    match node.pointer("/spec/podCIDRs").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).collect(),
        _ => pod_cidr(node).into_iter().collect(),
    }
}

/// One range's allocation state.
struct RangeAlloc {
    range: Range,
    used: HashSet<u32>,
    next: u32,
}

impl RangeAlloc {
    fn allocate(&mut self) -> Option<u32> {
        let n = self.range.count();
        let idx = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|i| !self.used.contains(i))?;
        self.used.insert(idx);
        self.next = (idx + 1) % n;
        Some(idx)
    }
}

struct Alloc {
    ranges: Vec<RangeAlloc>,
}

impl Alloc {
    fn new(cfg: &NodeIpam) -> Alloc {
        Alloc {
            ranges: cfg
                .ranges
                .iter()
                .map(|r| RangeAlloc {
                    range: r.clone(),
                    used: HashSet::new(),
                    next: 0,
                })
                .collect(),
        }
    }

    fn clear(&mut self) {
        for r in &mut self.ranges {
            r.used.clear();
        }
    }

    fn occupy(&mut self, cidrs: &[&str]) {
        for c in cidrs {
            for r in &mut self.ranges {
                if let Some(i) = r.range.index_of(c) {
                    r.used.insert(i);
                }
            }
        }
    }

    fn release(&mut self, cidrs: &[&str]) {
        for c in cidrs {
            for r in &mut self.ranges {
                if let Some(i) = r.range.index_of(c) {
                    r.used.remove(&i);
                }
            }
        }
    }

    /// One free range of each cluster CIDR, in order; none (and nothing
    /// taken) when one of them is full.
    fn allocate(&mut self) -> Result<Vec<String>, String> {
        let mut got: Vec<(usize, u32)> = Vec::new();
        for k in 0..self.ranges.len() {
            match self.ranges[k].allocate() {
                Some(i) => got.push((k, i)),
                None => {
                    for (k, i) in got {
                        self.ranges[k].used.remove(&i);
                    }
                    let r = &self.ranges[k].range;
                    return Err(format!("no free /{} left in {}", r.node_mask, r.cidr(0)));
                }
            }
        }
        Ok(got
            .into_iter()
            .map(|(k, i)| self.ranges[k].range.cidr(i))
            .collect())
    }
}

/// Runs the controller until the server stops.
pub async fn run(shared: Arc<Shared>, cfg: NodeIpam) {
    let mut alloc = Alloc::new(&cfg);
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<String>();
    let mut pending: HashSet<String> = HashSet::new();
    // Came due while paused.
    let mut deferred: HashSet<String> = HashSet::new();
    let mut paused = shared.ipam_paused.subscribe();
    let schedule = |pending: &mut HashSet<String>, name: &str| {
        if pending.insert(name.to_owned()) {
            let (tx, name, delay) = (due_tx.clone(), name.to_owned(), cfg.delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(name);
            });
        }
    };
    'resync: loop {
        let (nodes, mut rx) = shared.store.subscribe(Kind::Node);
        alloc.clear();
        for n in &nodes {
            alloc.occupy(&pod_cidrs(n));
        }
        for n in nodes.iter().filter(|n| pod_cidr(n).is_none()) {
            schedule(&mut pending, object::name(n));
        }
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) if c.kind == Kind::Node => {
                        let prev = c.prev.as_deref().map(pod_cidrs).unwrap_or_default();
                        if c.ty == ChangeType::Deleted {
                            alloc.release(&prev);
                            continue;
                        }
                        let now = pod_cidrs(&c.obj);
                        if prev != now {
                            alloc.release(&prev);
                            alloc.occupy(&now);
                        }
                        if pod_cidr(&c.obj).is_none() {
                            schedule(&mut pending, object::name(&c.obj));
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(name) = due_rx.recv() => {
                    pending.remove(&name);
                    if *paused.borrow() {
                        deferred.insert(name);
                    } else {
                        assign(&shared, &mut alloc, &name);
                    }
                }
                r = paused.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if !*paused.borrow_and_update() {
                        let mut names: Vec<String> = deferred.drain().collect();
                        names.sort();
                        for name in names {
                            assign(&shared, &mut alloc, &name);
                        }
                    }
                }
            }
        }
    }
}

/// Gives Node `name` its ranges, unless it has them by now.
fn assign(shared: &Shared, alloc: &mut Alloc, name: &str) {
    match shared.store.get(Kind::Node, name) {
        Some(n) if pod_cidr(&n).is_none() => {}
        _ => return,
    }
    let cidrs = match alloc.allocate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube-api stand-in: node IPAM: {e} for node {name}");
            return;
        }
    };
    let res = shared.store.update(Kind::Node, name, |cur| {
        let mut new = cur.clone();
        if pod_cidr(cur).is_some() {
            return Ok(new);
        }
        if let Some(map) = new.as_object_mut() {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if !spec.is_object() {
                *spec = json!({});
            }
            if let Some(spec) = spec.as_object_mut() {
                spec.insert("podCIDR".into(), cidrs[0].clone().into());
                spec.insert("podCIDRs".into(), json!(cidrs));
            }
        }
        Ok(new)
    });
    match res {
        Ok(obj) if pod_cidr(&obj) == Some(cidrs[0].as_str()) => {}
        _ => {
            let taken: Vec<&str> = cidrs.iter().map(String::as_str).collect();
            alloc.release(&taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let cfg = NodeIpam::new("10.244.0.0/16", 24).expect("valid");
        let c = cfg.ranges[0].clone();
        assert_eq!(c.count(), 256);
        assert_eq!(c.cidr(0), "10.244.0.0/24");
        assert_eq!(c.cidr(255), "10.244.255.0/24");
        assert_eq!(c.index_of("10.244.7.0/24"), Some(7));
        assert_eq!(c.index_of("10.244.7.1/24"), None);
        assert_eq!(c.index_of("10.245.0.0/24"), None);
        assert_eq!(c.index_of("10.244.7.0/25"), None);
        assert!(NodeIpam::new("10.0.0.0/8", 33).is_err());
        assert!(NodeIpam::new("10.0.0.0/24", 16).is_err());
        let mut a = Alloc::new(&cfg);
        a.occupy(&["10.244.0.0/24"]);
        assert_eq!(a.allocate(), Ok(vec!["10.244.1.0/24".to_owned()]));
        a.release(&["10.244.0.0/24"]);
        assert_eq!(
            a.allocate(),
            Ok(vec!["10.244.2.0/24".to_owned()]),
            "the search goes on from the last one"
        );
    }

    #[test]
    fn dual_stack_ranges() {
        let cfg = NodeIpam::dual("10.244.0.0/16,fd00:10:244::/56", 24, 64).expect("valid");
        let six = cfg.ranges[1].clone();
        assert_eq!(six.count(), 256);
        assert_eq!(six.cidr(3), "fd00:10:244:3::/64");
        assert_eq!(six.index_of("fd00:10:244:3::/64"), Some(3));
        assert_eq!(six.index_of("10.244.3.0/24"), None);
        let mut a = Alloc::new(&cfg);
        a.occupy(&["10.244.0.0/24", "fd00:10:244::/64"]);
        assert_eq!(
            a.allocate(),
            Ok(vec![
                "10.244.1.0/24".to_owned(),
                "fd00:10:244:1::/64".to_owned()
            ])
        );
        let only6 = NodeIpam::dual("fd00:10:244::/56", 24, 64).expect("valid");
        assert_eq!(
            Alloc::new(&only6).allocate(),
            Ok(vec!["fd00:10:244::/64".to_owned()])
        );
        assert!(NodeIpam::dual("10.0.0.0/16,10.1.0.0/16", 24, 64).is_err());
        assert!(NodeIpam::dual("fd00::/56", 24, 129).is_err());
    }
}
