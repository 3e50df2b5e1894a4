//! Watching `<prefix>/subnets/`: a snapshot, then a task that follows
//! etcd's watch stream and turns it into `LeaseEvent`s.
//!
//! The task keeps the leases it has reported and the revision it has seen.
//! It watches from that revision + 1. When the stream breaks (etcd down,
//! restarted, a network cut noticed by HTTP/2 keep-alive) or etcd cancels
//! it because the revision was compacted, the task re-lists the prefix
//! (retrying with back-off while etcd is unreachable, logging once per state
//! change), reports the difference between what it had reported and what
//! etcd holds now, and watches again from the list's revision + 1. So a
//! change made during an outage arrives once, and a change seen before the
//! outage is not reported again. Events are diffed too: a put that only
//! moves a lease to a new etcd lease (a renewal) sends nothing.
//!
//! No request is made per key: a lease's `expiration` is derived from the
//! listing (see `EtcdStore::expiry_of`), since expiry itself is etcd
//! deleting the key, which the watch reports as `Removed`.
//!
//! The event channel stays open across outages; the task ends only when
//! the receiver is dropped.
//!
//! Owns the watch task; it writes nothing to etcd and nothing to the
//! kernel (the daemon decides what the events do).

use std::collections::HashMap;

use etcd_client::{EventType, WatchOptions};
use ipnetwork::Ipv6Network;
use tokio::sync::mpsc;

use super::conn::{classify, Failure, OP_TIMEOUT};
use super::keys::decode;
use super::{Entry, EtcdStore};
use crate::lease::backoff::Backoff;
use crate::lease::mirror::Mirror;
use crate::lease::{skip, Lease, LeaseAttrs, LeaseError, LeaseEvent, LeaseKey, LeaseWatch};

/// Room for events not yet taken by the consumer; when full the task waits
/// (etcd buffers the stream meanwhile).
const CHANNEL_DEPTH: usize = 256;

/// The receiver was dropped: the task ends.
struct Closed;

/// Why following the stream stopped.
enum Stop {
    Closed,
    /// The start revision was compacted away.
    Compacted(i64),
    /// The stream could not be opened or broke.
    Broken(Failure),
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}

pub(super) async fn start(store: EtcdStore) -> Result<LeaseWatch, LeaseError> {
    let mut backoff = Backoff::new("etcd", format!("watch {}", store.keys().subnets()));
    let (entries, revision) = loop {
        match store.list().await {
            Ok(listed) => {
                backoff.succeeded();
                break listed;
            }
            Err(f @ Failure::Refused(_)) => return Err(f.into()),
            Err(f) => backoff.failed("unreachable", f.message()).await,
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let leases = valid(entries)
        .into_iter()
        .map(|((subnet, ipv6_subnet), (attrs, lease_id))| Lease {
            subnet,
            ipv6_subnet,
            attrs,
            expiration: store.expiry_of(lease_id),
        });
    let (mirror, snapshot) = Mirror::new(leases);
    let watcher = Watcher {
        store,
        mirror,
        revision,
        tx,
        watching_since: None,
    };
    tokio::spawn(watcher.run(backoff));
    Ok(LeaseWatch::whole(snapshot, rx))
}

/// A watch that claims to have reported `reported` as of `revision`: the
/// task follows from `revision + 1` (tests use it to watch from a
/// compacted revision).
#[cfg(test)]
pub(super) fn start_from(
    store: EtcdStore,
    reported: Vec<Lease>,
    revision: i64,
) -> mpsc::Receiver<Result<LeaseEvent, LeaseError>> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let backoff = Backoff::new("etcd", format!("watch {}", store.keys().subnets()));
    let watcher = Watcher {
        store,
        mirror: Mirror::new(reported).0,
        revision,
        tx,
        watching_since: None,
    };
    tokio::spawn(watcher.run(backoff));
    rx
}

/// The well-formed leases of a listing, with their etcd lease IDs.
/// The readable leases by key: (value, etcd lease).
type Valid = HashMap<LeaseKey, (LeaseAttrs, i64)>;

fn valid(entries: Vec<Entry>) -> Valid {
    entries
        .into_iter()
        .filter_map(|e| Some(((e.subnet, e.ipv6), (e.attrs.ok()?, e.lease_id))))
        .collect()
}

struct Watcher {
    store: EtcdStore,
    /// The leases as this watch last reported them.
    mirror: Mirror,
    /// The revision `current` reflects.
    revision: i64,
    tx: mpsc::Sender<Result<LeaseEvent, LeaseError>>,
    /// Since when the current watch stream is established.
    watching_since: Option<std::time::Instant>,
}

/// How long a watch stream must have run for its break to be re-listed
/// at once rather than after the back-off.
const STEADY: std::time::Duration = std::time::Duration::from_secs(1);

impl Watcher {
    async fn run(mut self, mut backoff: Backoff) {
        let what = self.store.keys().subnets();
        loop {
            let tx = self.tx.clone();
            let stop = tokio::select! {
                _ = tx.closed() => Stop::Closed,
                stop = self.follow(&mut backoff) => stop,
            };
            match stop {
                Stop::Closed => break,
                Stop::Compacted(at) => {
                    crate::lease::observe::watch_restarted("etcd", "compacted");
                    tracing::warn!(
                        "watch {what}: revision {} was compacted (now {at}); re-listing and diffing",
                        self.revision + 1
                    )
                }
                Stop::Broken(f) => {
                    crate::lease::observe::watch_restarted(
                        "etcd",
                        match &f {
                            Failure::Unreachable(_) => "unreachable",
                            Failure::Refused(_) => "refused",
                        },
                    );
                    let state = match &f {
                        Failure::Unreachable(_) => "unreachable".to_string(),
                        Failure::Refused(m) => m.clone(),
                    };
                    let msg = format!("{}; will re-list and diff", f.message());
                    // A watch that had run steadily broke (etcd restarted, a
                    // connection lost): the re-list goes at once, and waits
                    // with back-off itself while etcd does not answer. One
                    // that breaks as soon as it is made waits here.
                    let steady = self.watching_since.take().map(|t| t.elapsed());
                    if steady.is_some_and(|d| d >= STEADY) {
                        backoff.note(&state, &msg);
                    } else {
                        backoff.failed(&state, &msg).await;
                    }
                }
            }
            let relisted = tokio::select! {
                _ = tx.closed() => Err(Closed),
                r = self.relist(&mut backoff) => r,
            };
            if relisted.is_err() {
                break;
            }
        }
        tracing::debug!("watch {what}: ended (receiver dropped)");
    }

    /// Follows the stream from `revision + 1` until it stops.
    async fn follow(&mut self, backoff: &mut Backoff) -> Stop {
        let prefix = self.store.keys().subnets();
        let mut client = match self.store.client().await {
            Ok(c) => c,
            Err(f) => return Stop::Broken(f),
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1);
        let op = format!("watch {prefix}");
        let mut stream =
            match tokio::time::timeout(OP_TIMEOUT, client.watch(prefix.as_str(), Some(opts))).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Stop::Broken(classify(&op, &e)),
                Err(_) => return Stop::Broken(super::conn::timed_out(&op)),
            };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Stop::Broken(Failure::Unreachable(format!("etcd {op}: stream ended")))
                }
                Err(e) => return Stop::Broken(classify(&op, &e)),
            };
            if resp.created() {
                backoff.succeeded();
                self.watching_since = Some(std::time::Instant::now());
            }
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Stop::Compacted(resp.compact_revision());
                }
                return Stop::Broken(Failure::Unreachable(format!(
                    "etcd {op}: canceled by etcd ({})",
                    resp.cancel_reason()
                )));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Some((subnet, ipv6)) = self.store.keys().subnet_of(kv.key()) else {
                    continue;
                };
                self.revision = self.revision.max(kv.mod_revision());
                let new = match ev.event_type() {
                    EventType::Put => match decode(kv.value()) {
                        Ok(attrs) => Some((ipv6, attrs, kv.lease())),
                        Err(reason) => {
                            let key = self.store.keys().lease(subnet, ipv6);
                            skip::skipped(&key, &format!("malformed lease: {reason}"));
                            None
                        }
                    },
                    EventType::Delete => None,
                };
                if let Err(Closed) = self.update((subnet, ipv6), new).await {
                    return Stop::Closed;
                }
            }
        }
    }

    /// Re-reads the prefix (waiting for etcd) and reports the difference.
    async fn relist(&mut self, backoff: &mut Backoff) -> Result<(), Closed> {
        let (entries, revision) = loop {
            match self.store.list().await {
                Ok(listed) => break listed,
                Err(f) => {
                    let state = match &f {
                        Failure::Unreachable(_) => "unreachable".to_string(),
                        Failure::Refused(m) => m.clone(),
                    };
                    backoff.failed(&state, f.message()).await;
                }
            }
        };
        let mut fresh = Vec::new();
        for ((subnet, ipv6_subnet), (attrs, lease_id)) in valid(entries) {
            match self.mirror.get(&(subnet, ipv6_subnet)) {
                // Unchanged: kept as reported.
                Some(old) if old.attrs == attrs => fresh.push(old.clone()),
                _ => fresh.push(Lease {
                    subnet,
                    ipv6_subnet,
                    attrs,
                    expiration: self.store.expiry_of(lease_id),
                }),
            }
        }
        let events = self.mirror.replace_all(fresh);
        let changes = events.len();
        for event in events {
            self.send(event).await?;
        }
        self.revision = revision;
        if changes > 0 {
            tracing::info!(
                "watch {}: caught up with {changes} change(s) made while the watch was down",
                self.store.keys().subnets()
            );
        }
        Ok(())
    }

    /// Brings one lease up to date, reporting a change.
    async fn update(
        &mut self,
        key: LeaseKey,
        new: Option<(Option<Ipv6Network>, LeaseAttrs, i64)>,
    ) -> Result<(), Closed> {
        let (subnet, _) = key;
        let lease = match new {
            // A renewal: only the etcd lease moved.
            Some((_, attrs, _)) if self.mirror.unchanged(&key, &attrs) => return Ok(()),
            Some((ipv6_subnet, attrs, lease_id)) => Some(Lease {
                subnet,
                ipv6_subnet,
                attrs,
                expiration: self.store.expiry_of(lease_id),
            }),
            None => None,
        };
        match self.mirror.update(key, lease) {
            Some(event) => self.send(event).await,
            None => Ok(()),
        }
    }

    async fn send(&self, event: LeaseEvent) -> Result<(), Closed> {
        self.tx.send(Ok(event)).await.map_err(|_| Closed)
    }
}
