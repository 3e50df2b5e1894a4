//! The embedded lease store: a directory shared by every flanneld on the
//! host (`--lease-dir`, default `/var/lib/flannel/leases`).
//!
//! # Layout
//!
//! ```text
//! <dir>/.lock            flock(LOCK_EX) around every acquire, renew, release
//! <dir>/10.244.1.0-24    one lease, named like its etcd key
//! <dir>/.10.244.1.0-24.<pid>.<rand>.tmp   a write in progress (ignored)
//! ```
//!
//! A lease file is one line of JSON: flannel's lease value, byte for byte
//! as in etcd, with the expiry appended as `Expiration` (RFC 3339, UTC,
//! millisecond precision; any precision is read back):
//!
//! ```text
//! {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"Expiration":"2026-11-26T12:00:00.000Z"}
//! ```
//!
//! Files are written atomically (a dot-named temp file in the same
//! directory, fsync, rename) with mode 0644. Names starting with a dot and
//! names that are not `<ip>-<len>` are never leases. A file whose content
//! does not parse is logged and treated as absent: acquire may overwrite it.
//!
//! # Semantics
//!
//! - An expired lease file is free: acquire overwrites it, watches report
//!   it as removed when its time is up, even though no file changes.
//! - acquire: the in-range lease naming our `PublicIP` (expired or not: a
//!   file still naming us has not been taken) with fresh attributes and
//!   expiry; else `previous` if leasable and free; else a random free subnet
//!   between SubnetMin and SubnetMax; else `NoFreeSubnet`. Should several
//!   in-range files name our IP (written by hand, or by a crashed store),
//!   `previous` is kept if it is one of them, else the one expiring last,
//!   and the others are deleted, so a node holds exactly one lease. Files
//!   outside the configured range are neither reused nor touched.
//! - renew: rewrites our file with the new attributes and expiry. If the
//!   file vanished (or holds an expired or malformed lease) the subnet is
//!   free, so it is recreated (logged): the node keeps its subnet, its
//!   routes and its pods' addresses, which is what flannel's re-acquire
//!   would achieve the long way round. If an unexpired lease of another
//!   `PublicIP` is there, `Lost`.
//! - release: deletes the file only if it still names our `PublicIP`.
//! - watch: inotify on the directory (`IN_CLOSE_WRITE`, `IN_MOVED_TO`,
//!   `IN_DELETE`, `IN_MOVED_FROM`), added before the snapshot is read; a
//!   task keeps the current map, re-reads a changed file, sends `Added` for
//!   a new lease or new attributes (not for a renewal that only moves the
//!   expiry) and `Removed` for a deleted, unparsable or expired one, with a
//!   timer set to the earliest expiry. Events are taken in batches: a
//!   lease named several times in a batch is read once, and an inotify
//!   queue overflow anywhere in it is one re-read of the whole directory,
//!   diffed. The task ends when the receiver drops.
//! - The first acquire adds the watch's inotify watch before it reads the
//!   directory, and the watch started next begins from that read: at
//!   start every lease file is read once, not twice (files are read
//!   relative to the open directory, without touching their access time,
//!   and from 2,048 leases on, with 4 CPUs or more, by up to 4 threads;
//!   see `read`).
//!
//! Owns the store's semantics; the bytes on disk are `format`'s, reading
//! the directory is `read`'s and the inotify task is `watch`'s. It never
//! touches the kernel.

mod error;
mod format;
mod read;
mod watch;

#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod scale_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ipnetwork::Ipv4Network;

pub use self::error::FileError;
use self::format::{expiry_after, lock_dir, read_lease, remove_lease, write_lease};
use self::read::LeaseDir;
use self::watch::Primed;
use super::{
    choose, Choice, Held, Lease, LeaseAttrs, LeaseError, LeaseStore, LeaseTiming, LeaseWatch,
    Previous,
};
use crate::netconf::NetConfig;

/// The embedded lease store. Cheap to clone; every clone (and every other
/// process using the same directory) sees the same leases.
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    net_config_path: PathBuf,
    timing: LeaseTiming,
    /// The inotify watch and leases the first acquire read, for the watch
    /// started next (the daemon acquires, then watches): every lease is
    /// read once at start, not twice.
    primed: Mutex<Option<Primed>>,
    /// A watch was started: later acquires prime nothing.
    watched: AtomicBool,
}

impl FileStore {
    /// A store on `dir`, reading the network configuration from
    /// `net_config_path`. Touches nothing yet: `dir` (with its parents) is
    /// created by the first acquire, renew, release or watch that finds it
    /// missing, and an error there names it.
    pub fn new(dir: PathBuf, net_config_path: PathBuf, timing: LeaseTiming) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir,
                net_config_path,
                timing,
                primed: Mutex::new(None),
                watched: AtomicBool::new(false),
            }),
        }
    }

    /// The lease directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs blocking file work (flock waits, fsync) off the async threads.
    async fn blocking<T, F>(&self, what: &'static str, f: F) -> Result<T, LeaseError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, LeaseError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|source| {
                let dir = self.inner.dir.clone();
                FileError::Task { what, dir, source }
            })?
    }
}

#[async_trait::async_trait]
impl LeaseStore for FileStore {
    async fn network_config(&self) -> Result<NetConfig, LeaseError> {
        self.blocking("read network config", |inner| {
            Ok(NetConfig::read_file(&inner.net_config_path)?)
        })
        .await
    }

    async fn acquire_with(
        &self,
        config: &NetConfig,
        attrs: &LeaseAttrs,
        previous: Previous,
    ) -> Result<Lease, LeaseError> {
        let (config, attrs) = (config.clone(), attrs.clone());
        self.blocking("acquire", move |inner| {
            inner.acquire(&config, &attrs, previous)
        })
        .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let lease = lease.clone();
        self.blocking("renew", move |inner| inner.renew(&lease))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let lease = lease.clone();
        self.blocking("release", move |inner| inner.release(&lease))
            .await
    }

    async fn watch(&self) -> Result<LeaseWatch, LeaseError> {
        self.inner.watched.store(true, Ordering::SeqCst);
        let primed = self
            .inner
            .primed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        watch::start(&self.inner.dir, primed)
    }
}

impl Inner {
    fn acquire(
        &self,
        config: &NetConfig,
        attrs: &LeaseAttrs,
        previous: Previous,
    ) -> Result<Lease, LeaseError> {
        let _lock = lock_dir(&self.dir)?;
        let started = std::time::Instant::now();
        // Until a watch is started, the inotify watch goes in before the
        // read, which the watch then starts from.
        // Best effort: without it (inotify instances exhausted, say) the
        // watch reads the directory itself.
        let mut primed = if self.watched.load(Ordering::SeqCst) {
            None
        } else {
            Primed::watch(&self.dir)
                .inspect_err(|e| tracing::debug!("{e}; the watch will read every lease again"))
                .ok()
        };
        let now = SystemTime::now();
        let leases = LeaseDir::open(&self.dir)?.read_all()?;
        let read_took = started.elapsed();
        // A set: `choose` asks about every candidate subnet (65,535 of a
        // /8 in /24s), and scanning thousands of leases for each cost
        // hundreds of milliseconds.
        let live: std::collections::HashSet<Ipv4Network> = leases
            .iter()
            .filter(|l| !l.is_expired(now))
            .map(|l| l.subnet)
            .collect();
        let taken = |subnet: Ipv4Network| live.contains(&subnet);
        let held = leases
            .iter()
            .map(|l| Held {
                item: l,
                subnet: l.subnet,
                ipv6: l.ipv6_subnet,
                node_ip: Some(l.attrs.node_ip()),
                recency: l
                    .expiration
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            })
            .collect();
        let mut removed = Vec::new();
        let (subnet, ipv6_subnet) = match choose(config, attrs.node_ip(), previous, held, taken)? {
            Choice::Keep { keep, extras } => {
                for extra in extras {
                    tracing::warn!(lease = %extra.key(), kept = %keep.key(), node_ip = %attrs.node_ip(),
                        "removing another lease held by the same public IP");
                    remove_lease(&self.dir, (extra.subnet, extra.ipv6_subnet))?;
                    removed.push(extra.id());
                }
                (keep.subnet, keep.ipv6_subnet)
            }
            Choice::Take {
                subnet,
                ipv6,
                stale,
            } => {
                for old in stale {
                    tracing::info!(lease = %old.key(), node_ip = %attrs.node_ip(),
                        "removing this public IP's lease that no longer fits the network configuration");
                    remove_lease(&self.dir, (old.subnet, old.ipv6_subnet))?;
                    removed.push(old.id());
                }
                (subnet, ipv6)
            }
        };
        let lease = Lease {
            subnet,
            ipv6_subnet,
            attrs: attrs.clone(),
            expiration: expiry_after(self.timing.ttl),
        };
        write_lease(&self.dir, &lease)?;
        tracing::debug!(dir = %self.dir.display(), leases = leases.len(), read = ?read_took,
            took = ?started.elapsed(), "lease chosen and written");
        if let Some(p) = primed.as_mut() {
            p.set_leases(leases);
            for key in removed {
                p.wrote(key, None);
            }
            p.wrote(lease.id(), Some(lease.clone()));
        }
        if let Some(p) = primed {
            *self
                .primed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(p);
        }
        Ok(lease)
    }

    fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let _lock = lock_dir(&self.dir)?;
        let ours = lease.attrs.node_ip();
        match read_lease(&self.dir, lease.id())? {
            Some(cur) if cur.attrs.node_ip() == ours => {}
            Some(cur) if !cur.is_expired(SystemTime::now()) => {
                return Err(LeaseError::Lost {
                    subnet: lease.key(),
                    holder: cur.attrs.node_ip().to_string(),
                });
            }
            Some(cur) => tracing::warn!(lease = %lease.key(), holder = %cur.attrs.node_ip(),
                "our lease was taken by another node whose lease has expired since; taking it back"),
            None => tracing::warn!(lease = %lease.key(), dir = %self.dir.display(),
                "our lease file vanished; the subnet is free, recreating it"),
        }
        let renewed = Lease {
            subnet: lease.subnet,
            ipv6_subnet: lease.ipv6_subnet,
            attrs: lease.attrs.clone(),
            expiration: expiry_after(self.timing.ttl),
        };
        write_lease(&self.dir, &renewed)?;
        Ok(renewed)
    }

    fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let _lock = lock_dir(&self.dir)?;
        match read_lease(&self.dir, (lease.subnet, lease.ipv6_subnet))? {
            Some(cur) if cur.attrs.node_ip() == lease.attrs.node_ip() => {
                remove_lease(&self.dir, lease.id())
            }
            Some(cur) => {
                tracing::info!(lease = %lease.key(), holder = %cur.attrs.node_ip(),
                    "not releasing a lease another node holds now");
                Ok(())
            }
            None => Ok(()),
        }
    }
}
