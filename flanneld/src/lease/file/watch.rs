//! Watching the lease directory with inotify: a snapshot, then a background
//! task that turns file changes and expiries into `LeaseEvent`s.
//!
//! Owns the watch task; it writes no lease file (only creates the
//! directory it watches) and nothing in the kernel.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::format::{ensure_dir, io_err, parse_name};
use super::read::LeaseDir;
use super::FileError;
use crate::lease::mirror::Mirror;
use crate::lease::{Lease, LeaseError, LeaseEvent, LeaseKey, LeaseWatch};

/// Room for events not yet taken by the consumer. When it is full the task
/// waits; meanwhile the kernel queues inotify events, and should its queue
/// overflow the task re-reads the whole directory.
const CHANNEL_DEPTH: usize = 256;

/// The expiry timer never sleeps longer than this, so a jump of the wall
/// clock (expirations are wall-clock times) is noticed within a minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// At most this many inotify events are taken at once; each batch is
/// coalesced (one read per changed file, one rescan for any overflow).
const BATCH: usize = 4096;

/// The receiver was dropped: the task ends.
struct Closed;

type Events = mpsc::Sender<Result<LeaseEvent, LeaseError>>;

/// What a watch starts from: the inotify watch, added before `leases` were
/// read, so a change made after the read is in its queue. `acquire` makes
/// one while it holds the lock and has read every lease anyway, so that the
/// watch that follows need not read them all again.
#[derive(Debug)]
pub(crate) struct Primed {
    inotify: Inotify,
    /// Every well-formed lease at the time of the read, expired included.
    leases: Vec<Lease>,
}

impl Primed {
    /// Adds the inotify watch on `dir` (created if missing); the leases
    /// are given with [`Self::set_leases`] once read.
    pub(crate) fn watch(dir: &Path) -> Result<Self, LeaseError> {
        ensure_dir(dir)?;
        let inotify = Inotify::init().map_err(io_err("create inotify instance for", dir))?;
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        inotify
            .watches()
            .add(dir, mask)
            .map_err(io_err("add inotify watch on", dir))?;
        Ok(Self {
            inotify,
            leases: Vec::new(),
        })
    }

    /// The leases read after the watch was added.
    pub(crate) fn set_leases(&mut self, leases: Vec<Lease>) {
        self.leases = leases;
    }

    /// Applies what the caller wrote or removed since the read (under the
    /// same lock): `None` removes.
    pub(crate) fn wrote(&mut self, key: LeaseKey, lease: Option<Lease>) {
        self.leases.retain(|l| l.id() != key);
        self.leases.extend(lease);
    }
}

/// Starts a watch from `primed`, or adds the inotify watch first and reads
/// the snapshot second, so a change made in between is seen (at worst
/// twice, which the diff absorbs).
pub(crate) fn start(dir: &Path, primed: Option<Primed>) -> Result<LeaseWatch, LeaseError> {
    let primed = match primed {
        Some(p) => p,
        None => {
            let mut p = Primed::watch(dir)?;
            p.set_leases(LeaseDir::open(dir)?.read_all()?);
            p
        }
    };
    let stream = primed
        .inotify
        .into_event_stream(vec![0u8; 64 * 1024])
        .map_err(io_err("register inotify watch on", dir))?;

    let now = SystemTime::now();
    let unexpired = primed.leases.into_iter().filter(|l| !l.is_expired(now));
    let items = stream.map(|e| e.map(|e| (e.mask, e.name)));
    Ok(spawn(dir, unexpired, items.ready_chunks(BATCH)))
}

/// One inotify event: what happened, to which name in the directory.
pub(crate) type Item = std::io::Result<(EventMask, Option<OsString>)>;

/// Starts the task that turns batches of inotify events into lease events,
/// from the leases known now.
pub(crate) fn spawn<S>(dir: &Path, known: impl IntoIterator<Item = Lease>, batches: S) -> LeaseWatch
where
    S: futures::Stream<Item = Vec<Item>> + Unpin + Send + 'static,
{
    let (mirror, snapshot) = Mirror::new(known);
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let watcher = Watcher {
        dir: dir.to_path_buf(),
        mirror,
        tx,
    };
    tokio::spawn(watcher.run(batches));
    LeaseWatch::whole(snapshot, rx)
}

struct Watcher {
    dir: PathBuf,
    /// The unexpired leases as this watch last reported them.
    mirror: Mirror,
    tx: Events,
}

impl Watcher {
    async fn run<S>(mut self, mut stream: S)
    where
        S: futures::Stream<Item = Vec<Item>> + Unpin,
    {
        loop {
            let deadline = self.next_deadline();
            let step = tokio::select! {
                _ = self.tx.closed() => Err(Closed),
                _ = tokio::time::sleep_until(deadline) => self.expire().await,
                batch = stream.next() => match batch {
                    Some(batch) => self.on_batch(batch).await,
                    None => {
                        let e = FileError::WatchEnded { dir: self.dir.clone() }.into();
                        self.fail(e).await
                    }
                },
            };
            if step.is_err() {
                tracing::debug!(dir = %self.dir.display(), "lease watch ended");
                return;
            }
        }
    }

    /// One batch of inotify events: an overflow anywhere in it is one
    /// rescan; otherwise each lease named is read once, in the order first
    /// named.
    async fn on_batch(&mut self, batch: Vec<Item>) -> Result<(), Closed> {
        let started = std::time::Instant::now();
        let events = batch.len();
        let mut changed: Vec<LeaseKey> = Vec::new();
        let mut seen: HashSet<LeaseKey> = HashSet::new();
        let mut overflow = false;
        for event in batch {
            let (mask, name) = match event {
                Ok(event) => event,
                Err(e) => {
                    let e = io_err("read inotify events for", &self.dir)(e);
                    return self.fail(e).await;
                }
            };
            match classify(mask, name.as_deref()) {
                Kind::Overflow => overflow = true,
                Kind::DirGone => {
                    let e = FileError::DirGone {
                        dir: self.dir.clone(),
                    }
                    .into();
                    return self.fail(e).await;
                }
                Kind::Lease(key) => {
                    if seen.insert(key) {
                        changed.push(key);
                    }
                }
                Kind::Other => {}
            }
        }
        if overflow {
            tracing::warn!(dir = %self.dir.display(), "inotify queue overflowed; re-reading every lease");
            crate::lease::observe::watch_restarted("file", "overflow");
            return self.rescan().await;
        }
        // Opened per batch, not held: an open descriptor would keep the
        // directory's inode alive and delay IN_DELETE_SELF.
        let mut reader = LeaseDir::open(&self.dir)
            .inspect_err(|e| tracing::warn!("{e}; treating the changed leases as absent"))
            .ok();
        let now = SystemTime::now();
        let mut out = Vec::new();
        for key in &changed {
            let read = reader.as_mut().map(|r| r.read(*key));
            let lease = match read {
                Some(Ok(lease)) => lease,
                Some(Err(e)) => {
                    tracing::warn!("{e}; treating the lease as absent");
                    None
                }
                None => None,
            };
            out.extend(
                self.mirror
                    .update(*key, lease.filter(|l| !l.is_expired(now))),
            );
        }
        tracing::debug!(dir = %self.dir.display(), events, leases_read = changed.len(),
            reported = out.len(), took = ?started.elapsed(), "lease directory changes");
        self.send_all(out).await
    }

    /// When the earliest current lease expires (capped at `MAX_SLEEP`).
    fn next_deadline(&self) -> Instant {
        let wait = self.mirror.next_expiry().map_or(MAX_SLEEP, |at| {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            (left + Duration::from_millis(1)).min(MAX_SLEEP)
        });
        Instant::now() + wait
    }

    /// Reports every lease whose time is up.
    async fn expire(&mut self) -> Result<(), Closed> {
        let events = self.mirror.expire(SystemTime::now());
        self.send_all(events).await
    }

    /// Re-reads the whole directory and reports the difference.
    async fn rescan(&mut self) -> Result<(), Closed> {
        let started = std::time::Instant::now();
        let on_disk = match LeaseDir::open(&self.dir).and_then(|mut r| r.read_all()) {
            Ok(leases) => leases,
            Err(e) => return self.fail(e).await,
        };
        let now = SystemTime::now();
        let unexpired = on_disk.into_iter().filter(|l| !l.is_expired(now));
        let events = self.mirror.replace_all(unexpired);
        tracing::debug!(dir = %self.dir.display(), leases = self.mirror.len(),
            reported = events.len(), took = ?started.elapsed(), "lease directory re-read");
        self.send_all(events).await
    }

    async fn send_all(&self, events: impl IntoIterator<Item = LeaseEvent>) -> Result<(), Closed> {
        for event in events {
            self.send(event).await?;
        }
        Ok(())
    }

    async fn send(&self, event: LeaseEvent) -> Result<(), Closed> {
        self.tx.send(Ok(event)).await.map_err(|_| Closed)
    }

    /// Reports an error that ends the watch.
    async fn fail(&self, e: LeaseError) -> Result<(), Closed> {
        tracing::error!("lease watch: {e}");
        let _ = self.tx.send(Err(e)).await;
        Err(Closed)
    }
}

/// What one inotify event is about.
enum Kind {
    Overflow,
    /// The directory itself was removed or moved.
    DirGone,
    Lease(LeaseKey),
    /// A dot file, a name not like a lease.
    Other,
}

fn classify(mask: EventMask, name: Option<&OsStr>) -> Kind {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Kind::Overflow;
    }
    if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
        return Kind::DirGone;
    }
    match name.and_then(OsStr::to_str) {
        Some(name) if !name.starts_with('.') => parse_name(name).map_or(Kind::Other, Kind::Lease),
        _ => Kind::Other,
    }
}
