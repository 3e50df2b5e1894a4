//! Watching the lease directory with inotify: a snapshot, then a background
//! task that turns file changes and expiries into `LeaseEvent`s.
//!
//! Owns the watch task; it writes no lease file (only creates the
//! directory it watches) and nothing in the kernel.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use inotify::{Event, EventMask, Inotify, WatchMask};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::format::{ensure_dir, io_err, parse_name, read_all, read_lease};
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

/// The receiver was dropped: the task ends.
struct Closed;

type Events = mpsc::Sender<Result<LeaseEvent, LeaseError>>;

/// Adds the inotify watch first and reads the snapshot second, so a change
/// made in between is seen (at worst twice, which the diff absorbs).
pub(crate) fn start(dir: &Path) -> Result<LeaseWatch, LeaseError> {
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
    let stream = inotify
        .into_event_stream(vec![0u8; 64 * 1024])
        .map_err(io_err("register inotify watch on", dir))?;

    let now = SystemTime::now();
    let unexpired = read_all(dir)?.into_iter().filter(|l| !l.is_expired(now));
    let (mirror, snapshot) = Mirror::new(unexpired);

    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let watcher = Watcher {
        dir: dir.to_path_buf(),
        mirror,
        tx,
    };
    tokio::spawn(watcher.run(stream));
    Ok(LeaseWatch {
        snapshot,
        events: rx,
    })
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
        S: futures::Stream<Item = std::io::Result<Event<std::ffi::OsString>>> + Unpin,
    {
        loop {
            let deadline = self.next_deadline();
            let step = tokio::select! {
                _ = self.tx.closed() => Err(Closed),
                _ = tokio::time::sleep_until(deadline) => self.expire().await,
                event = stream.next() => match event {
                    Some(Ok(event)) => self.on_event(event.mask, event.name.as_deref()).await,
                    Some(Err(e)) => {
                        let e = io_err("read inotify events for", &self.dir)(e);
                        self.fail(e).await
                    }
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

    async fn on_event(&mut self, mask: EventMask, name: Option<&OsStr>) -> Result<(), Closed> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!(dir = %self.dir.display(), "inotify queue overflowed; re-reading every lease");
            crate::lease::observe::watch_restarted("file", "overflow");
            return self.rescan().await;
        }
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
            let e = FileError::DirGone {
                dir: self.dir.clone(),
            }
            .into();
            return self.fail(e).await;
        }
        let Some(name) = name.and_then(OsStr::to_str) else {
            return Ok(());
        };
        if name.starts_with('.') {
            return Ok(());
        }
        let Some((subnet, ipv6)) = parse_name(name) else {
            return Ok(());
        };
        let lease = match read_lease(&self.dir, (subnet, ipv6)) {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!("{e}; treating the lease as absent");
                None
            }
        };
        self.update((subnet, ipv6), lease).await
    }

    /// Brings one lease up to date with what is on disk now.
    async fn update(&mut self, key: LeaseKey, lease: Option<Lease>) -> Result<(), Closed> {
        let now = SystemTime::now();
        let event = self
            .mirror
            .update(key, lease.filter(|l| !l.is_expired(now)));
        self.send_all(event).await
    }

    /// Reports every lease whose time is up.
    async fn expire(&mut self) -> Result<(), Closed> {
        let events = self.mirror.expire(SystemTime::now());
        self.send_all(events).await
    }

    /// Re-reads the whole directory and reports the difference.
    async fn rescan(&mut self) -> Result<(), Closed> {
        let on_disk = match read_all(&self.dir) {
            Ok(leases) => leases,
            Err(e) => return self.fail(e).await,
        };
        let now = SystemTime::now();
        let unexpired = on_disk.into_iter().filter(|l| !l.is_expired(now));
        let events = self.mirror.replace_all(unexpired);
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
