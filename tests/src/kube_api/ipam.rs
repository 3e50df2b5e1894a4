//! The node IPAM controller, as kube-controller-manager runs it with
//! `--allocate-node-cidrs --cluster-cidr=C --node-cidr-mask-size=M` (the
//! range allocator): every Node without `spec.podCIDR` gets the next free
//! /M of C in `spec.podCIDR` and `spec.podCIDRs` (one MODIFIED event), after
//! an optional delay; the search for a free one goes on from the last one
//! handed out, wrapping around; a deleted Node's range is free again.
//! While paused (kube-controller-manager down) nothing is handed out; the
//! Nodes that came due meanwhile get their ranges when it resumes.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

use super::http::Shared;
use super::object::{self, Kind};
use super::store::ChangeType;

/// The controller's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIpam {
    base: u32,
    prefix: u8,
    node_mask: u8,
    delay: Duration,
}

impl NodeIpam {
    /// `cluster_cidr` such as `10.244.0.0/16`, `node_mask` such as 24.
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<NodeIpam, String> {
        let (ip, prefix) = cluster_cidr
            .split_once('/')
            .ok_or_else(|| format!("cluster CIDR {cluster_cidr:?}: expected a.b.c.d/len"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| format!("cluster CIDR {cluster_cidr:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| format!("cluster CIDR {cluster_cidr:?}: {e}"))?;
        if prefix > 32 || node_mask > 32 || node_mask < prefix || node_mask - prefix > 24 {
            return Err(format!(
                "node mask /{node_mask} does not fit cluster CIDR {cluster_cidr} (at most 2^24 ranges)"
            ));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(NodeIpam {
            base: u32::from(ip) & mask,
            prefix,
            node_mask,
            delay: Duration::ZERO,
        })
    }

    /// Waits `d` after a Node appears before giving it a range.
    pub fn delay(mut self, d: Duration) -> NodeIpam {
        self.delay = d;
        self
    }

    fn count(&self) -> u32 {
        1 << (self.node_mask - self.prefix)
    }

    fn cidr(&self, idx: u32) -> String {
        let step = 1u64 << (32 - u32::from(self.node_mask));
        let ip = Ipv4Addr::from((u64::from(self.base) + u64::from(idx) * step) as u32);
        format!("{ip}/{}", self.node_mask)
    }

    /// The index of `cidr` if it is one of this controller's ranges.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, len) = cidr.split_once('/')?;
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        if len.parse::<u8>().ok()? != self.node_mask || ip < self.base {
            return None;
        }
        let idx = (ip - self.base) >> (32 - u32::from(self.node_mask));
        (idx < self.count() && self.cidr(idx) == cidr).then_some(idx)
    }
}

fn pod_cidr(node: &Value) -> Option<&str> {
    node.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

struct Alloc {
    cfg: NodeIpam,
    used: HashSet<u32>,
    next: u32,
}

impl Alloc {
    fn occupy(&mut self, cidr: Option<&str>) {
        if let Some(i) = cidr.and_then(|c| self.cfg.index_of(c)) {
            self.used.insert(i);
        }
    }

    fn release(&mut self, cidr: Option<&str>) {
        if let Some(i) = cidr.and_then(|c| self.cfg.index_of(c)) {
            self.used.remove(&i);
        }
    }

    fn allocate(&mut self) -> Option<u32> {
        let n = self.cfg.count();
        let idx = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|i| !self.used.contains(i))?;
        self.used.insert(idx);
        self.next = (idx + 1) % n;
        Some(idx)
    }
}

/// Runs the controller until the server stops.
pub async fn run(shared: Arc<Shared>, cfg: NodeIpam) {
    let mut alloc = Alloc {
        cfg: cfg.clone(),
        used: HashSet::new(),
        next: 0,
    };
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
        alloc.used.clear();
        for n in &nodes {
            alloc.occupy(pod_cidr(n));
        }
        for n in nodes.iter().filter(|n| pod_cidr(n).is_none()) {
            schedule(&mut pending, object::name(n));
        }
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) if c.kind == Kind::Node => {
                        let prev = c.prev.as_deref().and_then(pod_cidr);
                        if c.ty == ChangeType::Deleted {
                            alloc.release(prev);
                            continue;
                        }
                        let now = pod_cidr(&c.obj);
                        if prev != now {
                            alloc.release(prev);
                            alloc.occupy(now);
                        }
                        if now.is_none() {
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

/// Gives Node `name` a range, unless it has one by now.
fn assign(shared: &Shared, alloc: &mut Alloc, name: &str) {
    match shared.store.get(Kind::Node, name) {
        Some(n) if pod_cidr(&n).is_none() => {}
        _ => return,
    }
    let Some(idx) = alloc.allocate() else {
        eprintln!(
            "kube-api stand-in: node IPAM: no free /{} left for node {name}",
            alloc.cfg.node_mask
        );
        return;
    };
    let cidr = alloc.cfg.cidr(idx);
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
                spec.insert("podCIDR".into(), cidr.clone().into());
                spec.insert("podCIDRs".into(), json!([cidr]));
            }
        }
        Ok(new)
    });
    match res {
        Ok(obj) if pod_cidr(&obj) == Some(cidr.as_str()) => {}
        _ => {
            alloc.used.remove(&idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let c = NodeIpam::new("10.244.0.0/16", 24).expect("valid");
        assert_eq!(c.count(), 256);
        assert_eq!(c.cidr(0), "10.244.0.0/24");
        assert_eq!(c.cidr(255), "10.244.255.0/24");
        assert_eq!(c.index_of("10.244.7.0/24"), Some(7));
        assert_eq!(c.index_of("10.244.7.1/24"), None);
        assert_eq!(c.index_of("10.245.0.0/24"), None);
        assert_eq!(c.index_of("10.244.7.0/25"), None);
        assert!(NodeIpam::new("10.0.0.0/8", 33).is_err());
        assert!(NodeIpam::new("10.0.0.0/24", 16).is_err());
        let mut a = Alloc {
            cfg: c,
            used: HashSet::new(),
            next: 0,
        };
        a.occupy(Some("10.244.0.0/24"));
        assert_eq!(a.allocate(), Some(1));
        a.release(Some("10.244.0.0/24"));
        assert_eq!(
            a.allocate(),
            Some(2),
            "the search goes on from the last one"
        );
    }
}
