//! Watching Node objects: kube's watcher (a paged list, then a watch from
//! the list's resourceVersion, with bookmarks; after a `410 Gone`, a
//! dropped connection or an API error it lists again) turned into
//! `LeaseEvent`s through the shared [`Mirror`].
//!
//! A listing (`Init` … `InitDone`) is collected as `NodeView`s and handed
//! to the mirror whole, so a relist reports only what changed while the
//! watch was down, and a relist of thousands of unchanged nodes writes
//! nothing to the kernel. Single changes (`Apply`, `Delete`) go through the
//! mirror one node at a time; a node whose podCIDR changed reports its old
//! subnet removed and its new one added (flannel ignores such changes).
//!
//! Errors are retried with back-off, logged once per kind of failure;
//! whether the API answered last is kept for `/readyz`. The task ends when
//! the receiver is dropped.
//!
//! Owns the watch task; it writes nothing to the API (annotations and
//! conditions are `kube`'s) and nothing to the kernel.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::Api;
use tokio::sync::mpsc;

use super::names::Names;
use super::node::{Networks, NodeView, SlimNode};
use super::KubeError;
use crate::lease::backoff::Backoff;
use crate::lease::mirror::Mirror;
use crate::lease::{skip, Lease, LeaseError, LeaseEvent, LeaseKey, LeaseWatch};

/// Room for events not yet taken by the consumer.
const CHANNEL_DEPTH: usize = 256;

type NodeStream = Pin<Box<dyn Stream<Item = watcher::Result<Event<SlimNode>>> + Send>>;

/// Lists the nodes (retrying while the API does not answer), returns the
/// leases of that listing, and follows the watch in a task.
pub(super) async fn start(
    api: Api<SlimNode>,
    names: Names,
    network: Networks,
    reachable: Arc<AtomicBool>,
) -> Result<LeaseWatch, LeaseError> {
    let config = watcher::Config::default();
    let stream: NodeStream = Box::pin(watcher::watcher(api, config));
    let mut w = Watcher {
        stream,
        names,
        network,
        reachable,
        backoff: Backoff::new("the Kubernetes API", "watch nodes"),
        mirror: Mirror::default(),
        subnet_of: HashMap::new(),
        owner: HashMap::new(),
        listing: None,
    };
    let first = loop {
        match w.next().await {
            Some(Step::Listed(views)) => break views,
            Some(Step::Changed(_)) => {} // before any listing: cannot happen
            None => return Err(KubeError::WatchEnded.into()),
        }
    };
    let leases = w.adopt(first);
    let (mirror, snapshot) = Mirror::new(leases);
    w.mirror = mirror;
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(w.run(tx));
    Ok(LeaseWatch {
        snapshot,
        events: rx,
    })
}

/// What one or more watcher events amount to.
enum Step {
    /// A complete listing.
    Listed(Vec<NodeView>),
    /// One node added or changed (`Ok`), or deleted (`Err`, its name).
    Changed(Result<NodeView, String>),
}

struct Watcher {
    stream: NodeStream,
    names: Names,
    network: Networks,
    reachable: Arc<AtomicBool>,
    backoff: Backoff,
    mirror: Mirror,
    /// The subnet each node's lease is reported under.
    subnet_of: HashMap<String, LeaseKey>,
    /// The other way round: the node each reported subnet belongs to.
    owner: HashMap<LeaseKey, String>,
    /// A listing being collected (between `Init` and `InitDone`).
    listing: Option<Vec<NodeView>>,
}

impl Watcher {
    async fn run(mut self, tx: mpsc::Sender<Result<LeaseEvent, LeaseError>>) {
        loop {
            let step = tokio::select! {
                _ = tx.closed() => break,
                step = self.next() => step,
            };
            let events = match step {
                Some(Step::Listed(views)) => {
                    let leases = self.adopt(views);
                    let events = self.mirror.replace_all(leases);
                    // The listing's bodies and nodes are freed by now.
                    crate::heap::trim("a relist of the nodes");
                    if !events.is_empty() {
                        tracing::info!(
                            "watch nodes: relisted, {} change(s) since the last listing",
                            events.len()
                        );
                    }
                    events
                }
                Some(Step::Changed(Ok(view))) => self.apply(view),
                Some(Step::Changed(Err(name))) => self.delete(&name),
                None => {
                    let _ = tx.send(Err(KubeError::WatchEnded.into())).await;
                    break;
                }
            };
            for event in events {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
        tracing::debug!("watch nodes: ended (receiver dropped)");
    }

    /// The next listing or change, retrying errors with back-off.
    async fn next(&mut self) -> Option<Step> {
        loop {
            let event = match self.stream.next().await? {
                Ok(event) => event,
                Err(e) => {
                    self.reachable.store(false, Ordering::Relaxed);
                    crate::lease::observe::watch_restarted("kube", "error");
                    let state = failure_kind(&e);
                    self.backoff
                        .failed(&state, &format!("{e}; will list again and diff"))
                        .await;
                    continue;
                }
            };
            self.reachable.store(true, Ordering::Relaxed);
            self.backoff.succeeded();
            let names = &self.names;
            match event {
                Event::Init => self.listing = Some(Vec::new()),
                Event::InitApply(node) => {
                    let view = NodeView::of(&node, names);
                    self.listing.get_or_insert_with(Vec::new).push(view);
                }
                Event::InitDone => {
                    return Some(Step::Listed(self.listing.take().unwrap_or_default()))
                }
                Event::Apply(node) => return Some(Step::Changed(Ok(NodeView::of(&node, names)))),
                Event::Delete(node) => {
                    let name = node.metadata.name.unwrap_or_default();
                    return Some(Step::Changed(Err(name)));
                }
            }
        }
    }

    /// Takes a complete listing as the new truth: the leases to report,
    /// one per subnet (a subnet two nodes claim goes to the first by name).
    fn adopt(&mut self, mut views: Vec<NodeView>) -> Vec<Lease> {
        views.sort_by(|a, b| a.name.cmp(&b.name));
        self.subnet_of.clear();
        self.owner.clear();
        let mut leases = Vec::new();
        for view in views {
            let Some(lease) = self.lease_of(&view) else {
                continue;
            };
            if let Some(first) = self.owner.get(&lease.id()) {
                skip::skipped(
                    &format!("node {}", view.name),
                    &format!("podCIDR {} is node {first}'s too", lease.subnet),
                );
                continue;
            }
            self.owner.insert(lease.id(), view.name.clone());
            self.subnet_of.insert(view.name, lease.id());
            leases.push(lease);
        }
        leases
    }

    /// One node added or changed.
    fn apply(&mut self, view: NodeView) -> Vec<LeaseEvent> {
        let lease = self.lease_of(&view);
        let old = self.subnet_of.get(&view.name).copied();
        let mut events = Vec::new();
        if let Some(lease) = &lease {
            let taken = self
                .owner
                .get(&lease.id())
                .filter(|name| **name != view.name);
            if let Some(other) = taken {
                let reason = format!("podCIDR {} is node {other}'s too", lease.subnet);
                skip::skipped(&format!("node {}", view.name), &reason.to_string());
                return events;
            }
        }
        if let Some(old) = old.filter(|o| Some(*o) != lease.as_ref().map(Lease::id)) {
            self.subnet_of.remove(&view.name);
            self.owner.remove(&old);
            events.extend(self.mirror.update(old, None));
        }
        if let Some(lease) = lease {
            self.owner.insert(lease.id(), view.name.clone());
            self.subnet_of.insert(view.name, lease.id());
            events.extend(self.mirror.update(lease.id(), Some(lease)));
        }
        events
    }

    /// One node deleted.
    fn delete(&mut self, name: &str) -> Vec<LeaseEvent> {
        match self.subnet_of.remove(name) {
            Some(subnet) => {
                self.owner.remove(&subnet);
                self.mirror.update(subnet, None).into_iter().collect()
            }
            None => Vec::new(),
        }
    }

    /// The node's lease, if it is one (what is not is logged once).
    fn lease_of(&self, view: &NodeView) -> Option<Lease> {
        match view.lease(self.network) {
            Ok(lease) => Some(lease),
            Err(reason) => {
                // A node flannel does not run on yet is normal, not news.
                if view.annotation("kube-subnet-manager").is_some() {
                    skip::skipped(&format!("node {}", view.name), &reason.to_string());
                } else {
                    tracing::debug!("node {}: {reason}", view.name);
                }
                None
            }
        }
    }
}

/// A failure's kind, for logging once per kind.
fn failure_kind(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(_) => "list failed".into(),
        watcher::Error::WatchStartFailed(_) => "watch start failed".into(),
        watcher::Error::WatchError(status) => format!("watch error {}", status.code),
        watcher::Error::WatchFailed(_) => "watch failed".into(),
        watcher::Error::NoResourceVersion => "no resourceVersion".into(),
    }
}
