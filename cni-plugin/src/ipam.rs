//! IPv4 and IPv6 address store compatible with the CNI `host-local` IPAM plugin.
//!
//! On-disk layout (unchanged from host-local, so a node switched from flannel keeps its pod IPs):
//!
//! * `<data_dir>/<network>/` (mode 0755): the store directory.
//! * `lock`: `flock(LOCK_EX)` is held on it around every change to the store.
//! * `<ip>` (e.g. `10.244.1.5`, `fd00:10:244:1::5`: the address's canonical text, as Go's
//!   `net.IP.String()` writes it in host-local): one file per allocated address, mode 0600,
//!   content `<container_id>\r\n<ifname>` (files from old versions hold only the container ID).
//!   It appears whole or not at all: written unnamed and then linked under the address's name,
//!   which fails, as `O_EXCL` would, when the address is taken (`record.rs`).
//! * `last_reserved_ip.<n>`: per range set `n` (its index in host-local's `ranges`: 0 for the
//!   first family, 1 for the second of a dual-stack node), the address handed out last; the next
//!   allocation starts after it and wraps around, so a freed address is not reused at once.
//!   Rewritten in place under the lock, as host-local does (a torn one only restarts the search).
//!
//! Addresses handed out: see `range.rs` (network+2 ..= last, minus the gateway wherever it lies).
//!
//! Owns the files in the store directory and nothing else: it never touches the kernel, and
//! which subnet and gateway to use comes from the caller (`subnet.env`, read in `cmd`).

mod range;
mod record;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::files::lock_exclusive;
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use nix::fcntl::Flock;

use record::{writer, PendingRecord};

const LOCK_FILE: &str = "lock";
/// host-local's `last_reserved_ip.` + the range set's index.
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
#[cfg(test)]
const LAST_RESERVED: &str = "last_reserved_ip.0";
const LINE_BREAK: &str = "\r\n";
/// Longest record read from an address file. A container ID comes from an
/// environment variable, and the kernel caps one at 128 KiB
/// (MAX_ARG_STRLEN), so every record this store writes fits, whatever the
/// ID's length; a longer one is refused when written.
const MAX_RECORD: u64 = 256 * 1024;
/// Prefix of the temporary file an allocation is written under where
/// O_TMPFILE is not supported; never a valid address, so never read as one.
const TMP_PREFIX: &str = ".tmp-";

/// Errors of the IPAM store. Messages name the operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable address of the range is taken (or the range has none, e.g. /31, /32).
    #[error("no free IP address in {range}")]
    Exhausted { range: IpNetwork },
    /// A file system operation failed, e.g. "create /var/lib/cni/networks/cbr0/10.244.1.5: File exists".
    #[error("{op} {}: {}", path.display(), io_detail(source))]
    Io {
        op: String,
        path: PathBuf,
        source: io::Error,
    },
    /// The record would be longer than the store reads back.
    #[error("container ID and ifname are {len} bytes together, longer than the {max} an address file holds")]
    RecordTooLong { len: usize, max: u64 },
    /// The network name is not a single path component.
    #[error("invalid network name {name:?}: not usable as a directory name")]
    InvalidNetwork { name: String },
}

/// `strerror` text without Rust's " (os error N)" suffix.
fn io_detail(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => Errno::from_raw(code).desc().to_owned(),
        None => e.to_string(),
    }
}

fn io_err(op: &str, path: &Path, source: io::Error) -> IpamError {
    let (op, path) = (op.to_owned(), path.to_owned());
    IpamError::Io { op, path, source }
}

/// One address file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub container_id: String,
    /// `None` for files written by old host-local versions (container ID only).
    pub ifname: Option<String>,
}

impl Allocation {
    /// Parses a record as host-local does: whitespace-trimmed, `<cid>\r\n<ifname>` or `<cid>`.
    fn parse(ip: IpAddr, record: &[u8]) -> Allocation {
        let text = String::from_utf8_lossy(record);
        let text = text.trim();
        let (container_id, ifname) = match text.split_once(LINE_BREAK) {
            Some((cid, ifname)) => (cid, Some(ifname.to_owned())),
            None => (text, None),
        };
        Allocation {
            ip,
            container_id: container_id.to_owned(),
            ifname,
        }
    }
}

/// Result of [`Store::gc`]: what was freed, and the files that could not be read or removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub freed: Vec<Allocation>,
    pub errors: Vec<IpamError>,
}

/// A host-local store directory, `<data_dir>/<network>`.
///
/// Cheap to create; holds no file descriptor. Every locking operation opens `lock` anew, so one
/// `Store` may be shared between threads and still exclude them from each other.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates `<data_dir>/<network>` (mode 0755 minus umask, parents too) if missing.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, IpamError> {
        if matches!(network, "" | "." | "..") || network.contains(['/', '\0']) {
            let name = network.to_owned();
            return Err(IpamError::InvalidNetwork { name });
        }
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| io_err("create directory", &dir, e))?;
        Ok(Store { dir })
    }

    /// The store directory, `<data_dir>/<network>`.
    #[allow(dead_code)] // API for callers and tests; the plugin binary does not need it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Allocates the next free address of `subnet` after the one in
    /// `last_reserved_ip.<range_id>` (round robin, wrapping) to (`container_id`, `ifname`).
    ///
    /// Never hands out the network address, network+1, `gateway` or (IPv4) the broadcast
    /// address. Each candidate's record is written unnamed and linked into place, which
    /// fails if the address is taken (as an `O_EXCL` create would), under the store lock, stopping
    /// at the first success, so the cost does not grow with the number of allocations. A
    /// `last_reserved_ip.<range_id>` that is missing, unreadable or outside the range is ignored
    /// (the search starts at network+2). Does not check whether the pair already holds an
    /// address: see [`Store::find`].
    pub fn allocate(
        &self,
        subnet: impl Into<IpNetwork>,
        gateway: impl Into<IpAddr>,
        range_id: usize,
        container_id: &str,
        ifname: &str,
    ) -> Result<IpAddr, IpamError> {
        let (subnet, gateway) = (subnet.into(), gateway.into());
        let range = range::canonical(subnet);
        let exhausted = || IpamError::Exhausted { range };
        let (start, end) = range::usable(subnet).ok_or_else(exhausted)?;
        let size = end - start + 1;
        let record = format!("{}{LINE_BREAK}{ifname}", container_id.trim());

        if record.len() as u64 > MAX_RECORD {
            return Err(IpamError::RecordTooLong {
                len: record.len(),
                max: MAX_RECORD,
            });
        }

        let _lock = self.lock()?;
        let first = match self.last_reserved(range_id) {
            Some(last) if range::same_family(subnet, last) => {
                let last = range::to_int(last);
                if (start..=end).contains(&last) {
                    // At most size, so first + i below never overflows.
                    last - start + 1
                } else {
                    0
                }
            }
            _ => 0,
        };
        // The record is written once, to a file with no name yet, and then
        // linked under each candidate's name until one is free: an address
        // file appears with its owner in it or not at all, whenever the
        // process dies.
        let pending = self.pending_record(&record)?;
        for i in 0..size {
            // first <= size and i < size: first + i < 2 * size <= u128::MAX.
            let Some(ip) = range::from_int(subnet, start + (first + i) % size) else {
                break;
            };
            if ip == gateway {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match pending.link_as(&path) {
                Ok(()) => {
                    if let Err(e) = self.write_last_reserved(range_id, ip) {
                        // Leave no allocation the caller does not know of.
                        let _ = fs::remove_file(&path);
                        return Err(e);
                    }
                    return Ok(ip);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &path, e)),
            }
        }
        Err(exhausted())
    }

    /// `record` in a file of the store's directory that has no name yet:
    /// an O_TMPFILE inode, or (on a file system without O_TMPFILE) a
    /// temporary name that GC and DEL remove if a crash leaves it.
    fn pending_record(&self, record: &str) -> Result<PendingRecord, IpamError> {
        let anon = writer()
            .custom_flags(libc::O_TMPFILE)
            .open(&self.dir)
            .map(|file| (file, None));
        let (mut file, temp) = match anon {
            Ok(pair) => pair,
            // EOPNOTSUPP (the file system), EISDIR/EINVAL (older kernels).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let name = format!("{TMP_PREFIX}{}", std::process::id());
                let path = self.dir.join(name);
                // A leftover of a process that had our PID: we hold the lock.
                let _ = fs::remove_file(&path);
                let file = writer()
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io_err("create", &path, e))?;
                (file, Some(path))
            }
            Err(e) => return Err(io_err("create a temporary file in", &self.dir, e)),
        };
        file.write_all(record.as_bytes())
            .map_err(|e| io_err("write a temporary file in", &self.dir, e))?;
        Ok(PendingRecord { file, temp })
    }
    /// The addresses held by (`container_id`, `ifname`): files whose trimmed content is
    /// `<cid>\r\n<ifname>`; if there are none, legacy files whose trimmed content is `<cid>`.
    /// Reads the directory once, without the lock. Sorted by address.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let held = self.held_by(container_id, ifname)?;
        Ok(held.into_iter().map(|a| a.ip).collect())
    }

    /// Frees what [`Store::find`] would return, under the lock, and returns the freed addresses.
    /// `Ok(empty)` when nothing is held or the store directory does not exist. Idempotent.
    /// On a failed removal the other files are still removed and the first error is returned.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let Some(_lock) = self.lock_existing()? else {
            return Ok(Vec::new());
        };
        self.sweep_debris(true);
        let mut freed = Vec::new();
        let mut first_error = None;
        for alloc in self.held_by(container_id, ifname)? {
            match self.remove(alloc.ip) {
                Ok(true) => freed.push(alloc.ip),
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(freed), Err)
    }

    /// Frees `ip` if its file names `container_id` (any ifname, or a legacy file), under the lock:
    /// the undo of a failed ADD, which must not free what an earlier ADD of the same container
    /// took. Returns whether a file was removed.
    pub fn release_ip(&self, ip: impl Into<IpAddr>, container_id: &str) -> Result<bool, IpamError> {
        let ip = ip.into();
        let _lock = self.lock()?;
        match self.read(ip)? {
            Some(alloc) if alloc.container_id == container_id.trim() => self.remove(ip),
            _ => Ok(false),
        }
    }

    /// Whether the file of `ip` names (container_id, ifname), or is a
    /// legacy file of container_id. Reads one file: DEL's fast path when
    /// the pod's interface still tells which addresses it had.
    pub fn holds(&self, ip: IpAddr, container_id: &str, ifname: &str) -> Result<bool, IpamError> {
        Ok(self.read(ip)?.is_some_and(|a| {
            a.container_id == container_id.trim() && a.ifname.as_deref().is_none_or(|i| i == ifname)
        }))
    }

    /// Every allocation in the store, both families, sorted by address (IPv4 first). Names that
    /// are not addresses in canonical text (`lock`, `last_reserved_ip.*`, ...) and directories
    /// are ignored.
    /// Reads without the lock: a file being created right now may show up with an empty ID.
    pub fn allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        self.scan()?.into_iter().collect()
    }

    /// Frees every allocation whose (container_id, ifname) is not in `valid`, under the lock.
    /// A legacy file (no ifname) is kept if its container ID appears in `valid` with any ifname.
    /// Per-file failures are collected in [`GcReport::errors`] and do not stop the sweep; `Err` is
    /// returned only if the store cannot be locked or listed. A missing store is empty.
    pub fn gc(&self, valid: &HashSet<(String, String)>) -> Result<GcReport, IpamError> {
        let mut report = GcReport::default();
        let Some(_lock) = self.lock_existing()? else {
            return Ok(report);
        };
        let pairs: HashSet<(&str, &str)> = valid
            .iter()
            .map(|(cid, ifname)| (cid.trim(), ifname.as_str()))
            .collect();
        let cids: HashSet<&str> = pairs.iter().map(|&(cid, _)| cid).collect();
        // Ownerless address files are freed (and reported) by the sweep below.
        self.sweep_debris(false);
        for entry in self.scan()? {
            let alloc = match entry {
                Ok(alloc) => alloc,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            // An address file with no owner (an older version's crash
            // between create and write) is freed: nothing can claim it.
            let keep = !alloc.container_id.is_empty()
                && match &alloc.ifname {
                    Some(ifname) => pairs.contains(&(alloc.container_id.as_str(), ifname.as_str())),
                    None => cids.contains(alloc.container_id.as_str()),
                };
            if keep {
                continue;
            }
            match self.remove(alloc.ip) {
                Ok(true) => report.freed.push(alloc),
                Ok(false) => {}
                Err(e) => report.errors.push(e),
            }
        }
        Ok(report)
    }

    /// How many addresses of the range [`Store::allocate`] would use for `subnet` and `gateway`
    /// are free. Reads the directory once (names only), without the lock.
    pub fn free_count(
        &self,
        subnet: impl Into<IpNetwork>,
        gateway: impl Into<IpAddr>,
    ) -> Result<usize, IpamError> {
        let (subnet, gateway) = (subnet.into(), gateway.into());
        let Some((start, end)) = range::usable(subnet) else {
            return Ok(0);
        };
        let in_range = |ip: IpAddr| {
            range::same_family(subnet, ip) && (start..=end).contains(&range::to_int(ip))
        };
        let usable = end - start + 1 - u128::from(in_range(gateway));
        let used = self.addresses()?;
        let used = used.into_iter().filter(|&ip| in_range(ip) && ip != gateway);
        let free = usable.saturating_sub(used.count() as u128);
        Ok(usize::try_from(free).unwrap_or(usize::MAX))
    }

    /// Opens `lock` (creating it) and takes `flock(LOCK_EX)` on it; released on drop.
    fn lock(&self) -> Result<Flock<File>, IpamError> {
        let path = self.dir.join(LOCK_FILE);
        let open = writer().create(true).truncate(false).open(&path);
        let file = open.map_err(|e| io_err("open", &path, e))?;
        lock_exclusive(file, &path).map_err(|e| io_err(e.op, &e.path, e.source))
    }

    /// Like [`Store::lock`], but `None` if the store directory does not exist.
    fn lock_existing(&self) -> Result<Option<Flock<File>>, IpamError> {
        match self.lock() {
            Ok(lock) => Ok(Some(lock)),
            Err(_) if !self.dir.exists() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `last_reserved_ip.<range_id>`.
    fn last_reserved_path(&self, range_id: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}"))
    }

    /// The address in `last_reserved_ip.<range_id>`, if it is readable and valid.
    fn last_reserved(&self, range_id: usize) -> Option<IpAddr> {
        let text = fs::read_to_string(self.last_reserved_path(range_id)).ok()?;
        text.trim().parse::<IpAddr>().ok()
    }

    /// Rewrites `last_reserved_ip.<range_id>` in place, as host-local does. Every
    /// reader and writer holds the lock, so no one sees it half-written; a
    /// crash mid-write leaves text that does not parse, which only makes
    /// the next allocation start from the range's beginning. Overwriting
    /// and then trimming, rather than O_TRUNC or a temporary file and a
    /// rename, spares a journal commit on every ADD (~170 us on ext4).
    fn write_last_reserved(&self, range_id: usize, ip: IpAddr) -> Result<(), IpamError> {
        let path = self.last_reserved_path(range_id);
        let text = ip.to_string();
        let open = writer().create(true).truncate(false).open(&path);
        let file = open.map_err(|e| io_err("open", &path, e))?;
        (&file)
            .write_all(text.as_bytes())
            .and_then(|()| file.set_len(text.len() as u64))
            .map_err(|e| io_err("write", &path, e))
    }

    /// Names of the directory entries that are addresses (directories skipped).
    fn addresses(&self) -> Result<Vec<IpAddr>, IpamError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read directory", &self.dir, e)),
        };
        let mut ips = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("read directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(parse_name) else {
                continue;
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            ips.push(ip);
        }
        ips.sort_unstable();
        Ok(ips)
    }

    /// Reads every address file once; files that vanish meanwhile are skipped.
    fn scan(&self) -> Result<Vec<Result<Allocation, IpamError>>, IpamError> {
        let addresses = self.addresses()?.into_iter();
        Ok(addresses
            .filter_map(|ip| self.read(ip).transpose())
            .collect())
    }

    /// The file of `ip`, or `None` if there is none.
    fn read(&self, ip: IpAddr) -> Result<Option<Allocation>, IpamError> {
        let path = self.dir.join(ip.to_string());
        let mut record = Vec::new();
        let read = File::open(&path).and_then(|f| f.take(MAX_RECORD).read_to_end(&mut record));
        match read {
            Ok(_) => Ok(Some(Allocation::parse(ip, &record))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path, e)),
        }
    }

    /// Exact (cid, ifname) matches, or else legacy cid-only matches.
    fn held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<Allocation>, IpamError> {
        let cid = container_id.trim();
        let (exact, legacy): (Vec<_>, Vec<_>) = self
            .allocations()?
            .into_iter()
            .filter(|a| a.container_id == cid)
            .filter(|a| a.ifname.is_none() || a.ifname.as_deref() == Some(ifname))
            .partition(|a| a.ifname.is_some());
        Ok(if exact.is_empty() { legacy } else { exact })
    }

    /// Under the lock, removes what a crash can leave and no owner can
    /// claim: temporary files (see [`Store::pending_record`]; every writer
    /// holds the lock, so none is being written now) and address files
    /// with no owner in them (older versions created the file before
    /// writing its owner), when `ownerless`. Best effort: DEL and GC go on
    /// whatever happens.
    fn sweep_debris(&self, ownerless: bool) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = if name.starts_with(TMP_PREFIX) {
                true
            } else if let (true, Some(ip)) = (ownerless, parse_name(name)) {
                matches!(self.read(ip), Ok(Some(a)) if a.container_id.is_empty())
            } else {
                false
            };
            if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
                tracing::info!(
                    "removing {}: left by a crash, no owner",
                    entry.path().display()
                );
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Removes the file of `ip`; `Ok(false)` if it was already gone.
    fn remove(&self, ip: IpAddr) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &path, e)),
        }
    }
}

/// The address a file name stands for: only its canonical text (what
/// `to_string` gives and host-local writes), so that the name read back is
/// the name of the file, whatever the family.
fn parse_name(name: &str) -> Option<IpAddr> {
    let ip = name.parse::<IpAddr>().ok()?;
    (ip.to_string() == name).then_some(ip)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
