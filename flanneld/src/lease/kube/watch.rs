//! Watching Node objects: kube's watcher (a paged list, then a watch from
//! the list's resourceVersion, with bookmarks; after a `410 Gone`, a
//! dropped connection or an API error it lists again) turned into
//! `LeaseEvent`s through the shared [`Mirror`].
//!
//! The first listing goes to the consumer a page at a time, as the API
//! server answers (a page is what arrived before the stream had to wait),
//! so the kernel is programmed while the next page is on its way; a
//! listing that breaks off is sent again from the start after a `Restart`.
//! A later listing (`Init` … `InitDone`) is collected as `NodeView`s and
//! handed to the mirror whole, so a relist reports only what changed while the
//! watch was down, and a relist of thousands of unchanged nodes writes
//! nothing to the kernel. Single changes (`Apply`, `Delete`) go through the
//! mirror one node at a time; a node whose podCIDR changed reports its old
//! subnet removed and its new one added (flannel ignores such changes).
//!
//! The watch runs on a thread of its own, with a client of its own (the
//! same settings as the store's): reading and decoding thousands of Nodes
//! (TLS, JSON) then takes nothing from the daemon's thread, which writes
//! the kernel meanwhile. Only leases cross over, on channels.
//!
//! Errors are retried with back-off, logged once per kind of failure;
//! whether the API answered last is kept for `/readyz`. The task ends when
//! the receiver is dropped (so does its thread).
//!
//! Owns the watch task; it writes nothing to the API (annotations and
//! conditions are `kube`'s) and nothing to the kernel.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config};
use tokio::sync::{mpsc, oneshot};

use super::names::Names;
use super::node::{Networks, NodeView, SlimNode};
use super::KubeError;
use crate::lease::backoff::Backoff;
use crate::lease::mirror::Mirror;
use crate::lease::{skip, Lease, LeaseError, LeaseEvent, LeaseKey, LeaseWatch, ListingPart};

/// Room for events not yet taken by the consumer.
const CHANNEL_DEPTH: usize = 256;

/// Pages of the first listing not yet taken: reading goes on while the
/// consumer programs one.
const LISTING_DEPTH: usize = 4;

type NodeStream = Pin<Box<dyn Stream<Item = watcher::Result<Event<SlimNode>>> + Send>>;

/// Follows the nodes on a thread of its own, with its own client (see
/// the module docs): the first listing goes out a page at a time as the
/// API server answers (retrying while it does not), then every change.
pub(super) async fn start(
    config: Config,
    names: Names,
    network: Networks,
    reachable: Arc<AtomicBool>,
) -> Result<LeaseWatch, LeaseError> {
    let (list_tx, list_rx) = mpsc::channel(LISTING_DEPTH);
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let (made, client) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("kube-watch".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = made.send(Err(KubeError::WatchThread { source: e }));
                    return;
                }
            };
            rt.block_on(async move {
                let api: Api<SlimNode> = match Client::try_from(config) {
                    Ok(client) => Api::all(client),
                    Err(source) => {
                        let _ = made.send(Err(KubeError::Client { source }));
                        return;
                    }
                };
                let _ = made.send(Ok(()));
                let stream: NodeStream =
                    Box::pin(watcher::watcher(api, watcher::Config::default()));
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
                    paging: true,
                    paged: false,
                };
                if w.list_first(list_tx).await.is_some() {
                    w.run(tx).await;
                }
            });
        });
    if let Err(source) = thread {
        return Err(KubeError::WatchThread { source }.into());
    }
    match client.await {
        Ok(Ok(())) => Ok(LeaseWatch {
            listing: list_rx,
            events: rx,
        }),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(KubeError::WatchEnded.into()),
    }
}

/// What one or more watcher events amount to.
enum Step {
    /// A complete listing, or the last part of a paged one.
    Listed(Vec<NodeView>),
    /// The first listing's nodes received so far (more are on their way).
    Page(Vec<NodeView>),
    /// The first listing broke off after a page; it starts again.
    Restart,
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
    /// Whether the listing under way is the first, handed on in pages.
    paging: bool,
    /// Whether a page of the listing under way was handed on.
    paged: bool,
}

impl Watcher {
    /// The first listing, sent on a page at a time; `None` when the
    /// receiver went or the stream ended (the listing is then never
    /// complete, which its receiver sees).
    async fn list_first(&mut self, tx: mpsc::Sender<ListingPart>) -> Option<()> {
        let mut all: Vec<Lease> = Vec::new();
        loop {
            let step = tokio::select! {
                _ = tx.closed() => return None,
                step = self.next() => step,
            };
            let part = match step? {
                Step::Page(views) => {
                    tracing::debug!("watch nodes: a page of {} node(s) read", views.len());
                    let leases = self.adopt_page(views);
                    all.extend(leases.iter().cloned());
                    ListingPart::Page(leases)
                }
                Step::Restart => {
                    self.subnet_of.clear();
                    self.owner.clear();
                    all.clear();
                    ListingPart::Restart
                }
                Step::Listed(views) => {
                    let leases = self.adopt_page(views);
                    all.extend(leases.iter().cloned());
                    tracing::debug!(
                        "watch nodes: first listing complete, {} lease(s)",
                        all.len()
                    );
                    self.mirror = Mirror::of(all);
                    tx.send(ListingPart::Page(leases)).await.ok()?;
                    tx.send(ListingPart::Complete).await.ok()?;
                    // The pages' bodies and nodes are freed by now.
                    crate::heap::trim("the first listing of the nodes");
                    return Some(());
                }
                Step::Changed(_) => continue, // before any listing: cannot happen
            };
            tx.send(part).await.ok()?;
        }
    }

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
                // Only the first listing is paged.
                Some(Step::Page(_) | Step::Restart) => Vec::new(),
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

    /// The next listing or change, retrying errors with back-off. While
    /// the first listing is read, what has arrived goes out as a page as
    /// soon as the stream must wait (for the API server's next page).
    async fn next(&mut self) -> Option<Step> {
        loop {
            let pending = self.listing.as_ref().is_some_and(|l| !l.is_empty());
            let item = if self.paging && pending {
                match self.stream.next().now_or_never() {
                    Some(item) => item,
                    None => {
                        self.paged = true;
                        return Some(Step::Page(self.listing.replace(Vec::new())?));
                    }
                }
            } else {
                self.stream.next().await
            };
            let event = match item? {
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
                Event::Init => {
                    self.listing = Some(Vec::new());
                    if self.paging && std::mem::take(&mut self.paged) {
                        return Some(Step::Restart);
                    }
                }
                Event::InitApply(node) => {
                    let view = NodeView::of(&node, names);
                    self.listing.get_or_insert_with(Vec::new).push(view);
                }
                Event::InitDone => {
                    self.paging = false;
                    return Some(Step::Listed(self.listing.take().unwrap_or_default()));
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
        views
            .into_iter()
            .filter_map(|view| self.claim(view))
            .collect()
    }

    /// The node's lease, unless it is none or its subnet is another
    /// node's already (logged); recorded as that node's.
    fn claim(&mut self, view: NodeView) -> Option<Lease> {
        let lease = self.lease_of(&view)?;
        if let Some(first) = self.owner.get(&lease.id()) {
            skip::skipped(
                &format!("node {}", view.name),
                &format!("podCIDR {} is node {first}'s too", lease.subnet),
            );
            return None;
        }
        self.owner.insert(lease.id(), view.name.clone());
        self.subnet_of.insert(view.name, lease.id());
        Some(lease)
    }

    /// A page of the first listing: its leases to report, one per subnet
    /// (a subnet claimed by a node of an earlier page stays that node's:
    /// the API lists nodes by name, so the first by name keeps it, as in
    /// [`Self::adopt`]).
    fn adopt_page(&mut self, mut views: Vec<NodeView>) -> Vec<Lease> {
        views.sort_by(|a, b| a.name.cmp(&b.name));
        let mut leases = Vec::new();
        for view in views {
            if let Some(lease) = self.claim(view) {
                leases.push(lease);
            }
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
