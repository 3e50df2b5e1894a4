//! IPv4 address store compatible with the CNI `host-local` IPAM plugin.
//!
//! On-disk layout (unchanged from host-local, so a node switched from flannel keeps its pod IPs):
//!
//! * `<data_dir>/<network>/` (mode 0755): the store directory.
//! * `lock`: `flock(LOCK_EX)` is held on it around every change to the store.
//! * `<ip>` (e.g. `10.244.1.5`): one file per allocated address, created with `O_EXCL`, mode 0600,
//!   content `<container_id>\r\n<ifname>` (files from old versions hold only the container ID).
//! * `last_reserved_ip.0`: the address handed out last; the next allocation starts after it and
//!   wraps around, so a freed address is not reused at once.
//!
//! Addresses handed out: network+2 ..= broadcast-1, minus the gateway wherever it lies.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

const LOCK_FILE: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip.0";
const LAST_RESERVED_TMP: &str = "last_reserved_ip.0.tmp";
const LINE_BREAK: &str = "\r\n";
/// Longest record read from an address file; anything longer cannot be one of ours.
const MAX_RECORD: u64 = 4096;

/// Errors of the IPAM store. Messages name the operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable address of the range is taken (or the range has none, e.g. /31, /32).
    #[error("no free IP address in {range}")]
    Exhausted { range: Ipv4Network },
    /// A file system operation failed, e.g. "create /var/lib/cni/networks/cbr0/10.244.1.5: File exists".
    #[error("{op} {}: {}", path.display(), io_detail(source))]
    Io {
        op: String,
        path: PathBuf,
        source: io::Error,
    },
    /// The network name cannot be used as a directory name.
    #[error("invalid network name {name:?}: {reason}")]
    InvalidNetwork { name: String, reason: &'static str },
}

/// `strerror` text without Rust's " (os error N)" suffix.
fn io_detail(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => Errno::from_raw(code).desc().to_owned(),
        None => e.to_string(),
    }
}

fn io_err(op: &str, path: &Path, source: io::Error) -> IpamError {
    IpamError::Io {
        op: op.to_owned(),
        path: path.to_owned(),
        source,
    }
}

/// One address file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    /// `None` for files written by old host-local versions (container ID only).
    pub ifname: Option<String>,
}

impl Allocation {
    /// Parses a record as host-local does: whitespace-trimmed, `<cid>\r\n<ifname>` or `<cid>`.
    fn parse(ip: Ipv4Addr, record: &[u8]) -> Allocation {
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
        let reason = if network.is_empty() {
            Some("empty")
        } else if network == "." || network == ".." {
            Some("not a directory name")
        } else if network.contains(['/', '\0']) {
            Some("contains '/' or NUL")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(IpamError::InvalidNetwork {
                name: network.to_owned(),
                reason,
            });
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
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Allocates the next free address of `subnet` after the one in `last_reserved_ip.0`
    /// (round robin, wrapping) to (`container_id`, `ifname`).
    ///
    /// Never hands out the network address, network+1, `gateway` or the broadcast address.
    /// Candidates are probed with `O_EXCL` creates under the store lock, stopping at the first
    /// success, so the cost does not grow with the number of allocations. A `last_reserved_ip.0`
    /// that is missing, unreadable or outside the range is ignored (the search starts at
    /// network+2). Does not check whether the pair already holds an address: see [`Store::find`].
    pub fn allocate(
        &self,
        subnet: Ipv4Network,
        gateway: Ipv4Addr,
        container_id: &str,
        ifname: &str,
    ) -> Result<Ipv4Addr, IpamError> {
        let exhausted = || IpamError::Exhausted {
            range: canonical(subnet),
        };
        let (start, end) = usable_range(subnet).ok_or_else(exhausted)?;
        let size = u64::from(end - start) + 1;
        let record = format!("{}{LINE_BREAK}{ifname}", container_id.trim());

        let _lock = self.lock()?;
        let first = match self.last_reserved() {
            Some(last) if (start..=end).contains(&last) => u64::from(last - start) + 1,
            _ => 0,
        };
        for i in 0..size {
            // (first + i) % size < size <= 2^32 - 3, so the sum fits in a u32.
            let ip = Ipv4Addr::from(start + ((first + i) % size) as u32);
            if ip == gateway {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match file {
                Ok(file) => {
                    let written = write_record(file, &path, &record)
                        .and_then(|()| self.write_last_reserved(ip));
                    if let Err(e) = written {
                        // Leave no half-made allocation behind; the error says what failed.
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

    /// The addresses held by (`container_id`, `ifname`): files whose trimmed content is
    /// `<cid>\r\n<ifname>`; if there are none, legacy files whose trimmed content is `<cid>`.
    /// Reads the directory once, without the lock. Sorted by address.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        Ok(self
            .held_by(container_id, ifname)?
            .into_iter()
            .map(|a| a.ip)
            .collect())
    }

    /// Frees what [`Store::find`] would return, under the lock, and returns the freed addresses.
    /// `Ok(empty)` when nothing is held or the store directory does not exist. Idempotent.
    /// On a failed removal the other files are still removed and the first error is returned.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let Some(_lock) = self.lock_existing()? else {
            return Ok(Vec::new());
        };
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

    /// Frees `ip` if `container_id` holds it: the undo of a failed ADD,
    /// which must not touch addresses an earlier ADD of the same
    /// container took. Returns whether a file was removed.
    pub fn release_ip(&self, ip: Ipv4Addr, container_id: &str) -> Result<bool, IpamError> {
        let _lock = self.lock()?;
        let path = self.dir.join(ip.to_string());
        match std::fs::read_to_string(&path) {
            Ok(text) if text.lines().next().map(str::trim) == Some(container_id) => self.remove(ip),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("read", &path, e)),
        }
    }

    /// Every allocation in the store, sorted by address. Names that are not IPv4 addresses
    /// (`lock`, `last_reserved_ip.*`, IPv6 addresses, ...) and directories are ignored.
    /// Reads without the lock: a file being created right now may show up with an empty ID.
    pub fn allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        self.scan()?
            .into_iter()
            .filter_map(Result::transpose)
            .collect()
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
        for entry in self.scan()? {
            let alloc = match entry {
                Ok(Some(alloc)) => alloc,
                Ok(None) => continue,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            let keep = match &alloc.ifname {
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
    pub fn free_count(&self, subnet: Ipv4Network, gateway: Ipv4Addr) -> Result<usize, IpamError> {
        let Some((start, end)) = usable_range(subnet) else {
            return Ok(0);
        };
        let in_range = |ip: Ipv4Addr| (start..=end).contains(&u32::from(ip));
        let usable = u64::from(end - start) + 1 - u64::from(in_range(gateway));
        let used = self.addresses()?;
        let used = used.into_iter().filter(|&ip| in_range(ip) && ip != gateway);
        let free = usable.saturating_sub(used.count() as u64);
        Ok(usize::try_from(free).unwrap_or(usize::MAX))
    }

    /// Opens `lock` (creating it) and takes `flock(LOCK_EX)` on it; released on drop.
    fn lock(&self) -> Result<Flock<File>, IpamError> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("open", &path, e))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(io_err("lock", &path, errno.into())),
            }
        }
    }

    /// Like [`Store::lock`], but `None` if the store directory does not exist.
    fn lock_existing(&self) -> Result<Option<Flock<File>>, IpamError> {
        match self.lock() {
            Err(IpamError::Io { source, .. })
                if source.kind() == ErrorKind::NotFound && !self.dir.exists() =>
            {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// The address in `last_reserved_ip.0`, if it is readable and valid.
    fn last_reserved(&self) -> Option<u32> {
        let text = fs::read_to_string(self.dir.join(LAST_RESERVED)).ok()?;
        text.trim().parse::<Ipv4Addr>().ok().map(u32::from)
    }

    /// Replaces `last_reserved_ip.0` atomically (temporary file + rename). Caller holds the lock.
    fn write_last_reserved(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let tmp = self.dir.join(LAST_RESERVED_TMP);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("create", &tmp, e))?;
        write_record(file, &tmp, &ip.to_string())?;
        let path = self.dir.join(LAST_RESERVED);
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(&format!("rename {} to", tmp.display()), &path, e)
        })
    }

    /// Names of the directory entries that are IPv4 addresses (directories skipped).
    fn addresses(&self) -> Result<Vec<Ipv4Addr>, IpamError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read directory", &self.dir, e)),
        };
        let mut ips = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("read directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
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

    /// Reads every address file once. `Ok(None)`: the file vanished meanwhile.
    fn scan(&self) -> Result<Vec<Result<Option<Allocation>, IpamError>>, IpamError> {
        Ok(self
            .addresses()?
            .into_iter()
            .map(|ip| self.read_allocation(ip))
            .collect())
    }

    fn read_allocation(&self, ip: Ipv4Addr) -> Result<Option<Allocation>, IpamError> {
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

    /// Removes the file of `ip`; `Ok(false)` if it was already gone.
    fn remove(&self, ip: Ipv4Addr) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &path, e)),
        }
    }
}

fn write_record(mut file: File, path: &Path, text: &str) -> Result<(), IpamError> {
    file.write_all(text.as_bytes())
        .map_err(|e| io_err("write", path, e))
}

/// `subnet` with the host bits cleared, e.g. 10.244.1.1/24 -> 10.244.1.0/24.
fn canonical(subnet: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(subnet.network(), subnet.prefix()).unwrap_or(subnet)
}

/// network+2 ..= broadcast-1 as integers, or `None` when empty (/31, /32).
fn usable_range(subnet: Ipv4Network) -> Option<(u32, u32)> {
    let start = u32::from(subnet.network()).checked_add(2)?;
    let end = u32::from(subnet.broadcast()).checked_sub(1)?;
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("flannel-ipam-test-{}-{n}", std::process::id());
            let path = std::env::temp_dir().join(name);
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn setup() -> (TempDir, Store) {
        let tmp = TempDir::new();
        let store = Store::open(&tmp.0, "cbr0").unwrap();
        (tmp, store)
    }

    /// Allocates in 10.244.1.0/24 with gateway .1.
    fn take(store: &Store, cid: &str, ifname: &str) -> Ipv4Addr {
        let gw = ip("10.244.1.1");
        store
            .allocate(net("10.244.1.0/24"), gw, cid, ifname)
            .unwrap()
    }

    fn put(store: &Store, name: &str, content: &str) {
        fs::write(store.dir().join(name), content).unwrap();
    }

    fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
        list.iter().map(|s| ip(s)).collect()
    }

    fn exhausted(r: Result<Ipv4Addr, IpamError>) -> Ipv4Network {
        match r {
            Err(IpamError::Exhausted { range }) => range,
            other => panic!("expected Exhausted, got {other:?}"),
        }
    }

    #[test]
    fn first_allocation_is_dot2_in_host_local_format() {
        let (tmp, s) = setup();
        assert_eq!(s.dir(), tmp.0.join("cbr0"));
        assert_eq!(take(&s, "cid1", "eth0"), ip("10.244.1.2"));
        let file = s.dir().join("10.244.1.2");
        assert_eq!(fs::read(&file).unwrap(), b"cid1\r\neth0");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        let last = fs::read_to_string(s.dir().join(LAST_RESERVED)).unwrap();
        assert_eq!(last, "10.244.1.2");
        assert!(s.dir().join(LOCK_FILE).is_file());
        assert!(!s.dir().join(LAST_RESERVED_TMP).exists());
        // 0755 minus the umask.
        assert_eq!(mode(s.dir()) & 0o722, 0o700);
        // Re-opening an existing store is fine.
        assert!(Store::open(&tmp.0, "cbr0").is_ok());
    }

    #[test]
    fn round_robin_does_not_reuse_a_freed_address_at_once() {
        let (_tmp, s) = setup();
        assert_eq!(take(&s, "a", "eth0"), ip("10.244.1.2"));
        assert_eq!(take(&s, "b", "eth0"), ip("10.244.1.3"));
        assert_eq!(s.release("a", "eth0").unwrap(), ips(&["10.244.1.2"]));
        assert_eq!(take(&s, "c", "eth0"), ip("10.244.1.4"));
    }

    #[test]
    fn wraps_around_the_range() {
        let (_tmp, s) = setup();
        let (subnet, gw) = (net("10.0.0.0/28"), ip("10.0.0.1"));
        put(&s, LAST_RESERVED, "10.0.0.14");
        assert_eq!(s.allocate(subnet, gw, "a", "eth0").unwrap(), ip("10.0.0.2"));
        for i in 3..=14 {
            let got = s.allocate(subnet, gw, &format!("c{i}"), "eth0").unwrap();
            assert_eq!(got, Ipv4Addr::new(10, 0, 0, i));
        }
        // Full; free .5 and the search wraps past the taken ones to it.
        assert_eq!(s.release("c5", "eth0").unwrap(), ips(&["10.0.0.5"]));
        assert_eq!(s.allocate(subnet, gw, "d", "eth0").unwrap(), ip("10.0.0.5"));
        assert_eq!(exhausted(s.allocate(subnet, gw, "e", "eth0")), subnet);
    }

    #[test]
    fn small_subnets_exhaust() {
        let tmp = TempDir::new();
        let case = |name: &str, subnet: &str, gw: &str, want: &[&str]| {
            let s = Store::open(&tmp.0, name).unwrap();
            for (i, w) in want.iter().enumerate() {
                let got = s.allocate(net(subnet), ip(gw), &format!("c{i}"), "eth0");
                assert_eq!(got.unwrap(), ip(w), "{subnet} gw {gw}");
            }
            let range = exhausted(s.allocate(net(subnet), ip(gw), "last", "eth0"));
            assert_eq!(range, net(subnet), "{subnet} gw {gw}");
            assert_eq!(s.free_count(net(subnet), ip(gw)).unwrap(), 0);
        };
        let n28: Vec<String> = (2..=14).map(|i| format!("10.0.0.{i}")).collect();
        let n28: Vec<&str> = n28.iter().map(String::as_str).collect();
        case("n28", "10.0.0.0/28", "10.0.0.1", &n28);
        case("n30", "10.0.0.0/30", "10.0.0.1", &["10.0.0.2"]);
        case("n30gw2", "10.0.0.0/30", "10.0.0.2", &[]);
        case("n31", "10.0.0.0/31", "10.0.0.1", &[]);
        case("n32", "10.0.0.7/32", "10.0.0.7", &[]);
        case(
            "n29gw5",
            "10.0.0.0/29",
            "10.0.0.5",
            &["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6"],
        );
        let s = Store::open(&tmp.0, "n28").unwrap();
        assert_eq!(s.allocations().unwrap().len(), 13);
        let err = s.allocate(net("10.0.0.1/31"), ip("10.0.0.1"), "x", "eth0");
        assert_eq!(
            err.unwrap_err().to_string(),
            "no free IP address in 10.0.0.0/31"
        );
    }

    #[test]
    fn stale_or_garbage_last_reserved_is_ignored() {
        let (_tmp, s) = setup();
        for content in ["192.168.0.7", "garbage", "", "10.244.1.255", "10.244.1.1"] {
            put(&s, LAST_RESERVED, content);
            assert_eq!(take(&s, "a", "eth0"), ip("10.244.1.2"), "{content:?}");
            s.release("a", "eth0").unwrap();
        }
        put(&s, LAST_RESERVED, "10.244.1.7\n");
        assert_eq!(take(&s, "a", "eth0"), ip("10.244.1.8"));
    }

    #[test]
    fn find_and_release_by_container_and_ifname() {
        let (_tmp, s) = setup();
        take(&s, "c1", "eth0");
        take(&s, "c1", "net1");
        take(&s, "c2", "eth0");
        assert_eq!(s.find("c1", "eth0").unwrap(), ips(&["10.244.1.2"]));
        assert_eq!(s.find("c1", "net1").unwrap(), ips(&["10.244.1.3"]));
        assert!(s.find("c3", "eth0").unwrap().is_empty());
        assert!(s.find("c1", "eth1").unwrap().is_empty());
        assert_eq!(s.release("c1", "eth0").unwrap(), ips(&["10.244.1.2"]));
        assert!(s.release("c1", "eth0").unwrap().is_empty(), "idempotent");
        let all = s.allocations().unwrap();
        let pair = |a: &Allocation| (a.ip, a.container_id.clone(), a.ifname.clone());
        let want = vec![
            (ip("10.244.1.3"), "c1".to_owned(), Some("net1".to_owned())),
            (ip("10.244.1.4"), "c2".to_owned(), Some("eth0".to_owned())),
        ];
        assert_eq!(all.iter().map(pair).collect::<Vec<_>>(), want);
    }

    #[test]
    fn legacy_container_id_only_files() {
        let (_tmp, s) = setup();
        put(&s, "10.244.1.9", "old\n");
        put(&s, "10.244.1.10", "old");
        put(&s, "10.244.1.11", "older");
        assert_eq!(
            s.find("old", "eth0").unwrap(),
            ips(&["10.244.1.9", "10.244.1.10"])
        );
        // An exact (cid, ifname) match wins over legacy files.
        assert_eq!(take(&s, "old", "eth0"), ip("10.244.1.2"));
        assert_eq!(s.find("old", "eth0").unwrap(), ips(&["10.244.1.2"]));
        assert_eq!(s.release("old", "eth0").unwrap(), ips(&["10.244.1.2"]));
        let legacy = ips(&["10.244.1.9", "10.244.1.10"]);
        assert_eq!(s.release("old", "eth0").unwrap(), legacy);
        assert!(s.release("old", "eth0").unwrap().is_empty());
        assert_eq!(s.allocations().unwrap()[0].ifname, None);
    }

    #[test]
    fn missing_store_directory_is_empty() {
        let (_tmp, s) = setup();
        fs::remove_dir_all(s.dir()).unwrap();
        assert!(s.release("a", "eth0").unwrap().is_empty());
        assert!(s.find("a", "eth0").unwrap().is_empty());
        assert!(s.allocations().unwrap().is_empty());
        assert!(s.gc(&HashSet::new()).unwrap().freed.is_empty());
        let free = s.free_count(net("10.244.1.0/24"), ip("10.244.1.1"));
        assert_eq!(free.unwrap(), 253);
        assert!(!s.dir().exists(), "nothing recreated it");
    }

    #[test]
    fn allocations_ignore_other_entries() {
        let (_tmp, s) = setup();
        take(&s, "x", "eth0");
        for name in [
            "last_reserved_ip.1",
            "fd00::5",
            "10.244.1.300",
            "010.244.1.3",
            "notes",
        ] {
            put(&s, name, "x\r\neth0");
        }
        fs::create_dir(s.dir().join("10.244.1.77")).unwrap();
        let want = Allocation {
            ip: ip("10.244.1.2"),
            container_id: "x".to_owned(),
            ifname: Some("eth0".to_owned()),
        };
        assert_eq!(s.allocations().unwrap(), vec![want]);
    }

    #[test]
    fn gc_frees_what_is_not_valid() {
        let (_tmp, s) = setup();
        take(&s, "a", "eth0"); // .2 kept
        take(&s, "b", "eth0"); // .3 freed: only (b, eth1) is valid
        take(&s, "a", "net1"); // .4 freed
        put(&s, "10.244.1.50", "a"); // legacy of a valid container: kept
        put(&s, "10.244.1.51", "zombie"); // legacy, unknown: freed
        put(&s, "10.244.1.52", ""); // crashed half-way: freed
        let valid: HashSet<(String, String)> = [("a", "eth0"), ("b", "eth1")]
            .iter()
            .map(|&(c, i)| (c.to_owned(), i.to_owned()))
            .collect();
        let report = s.gc(&valid).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let freed: Vec<Ipv4Addr> = report.freed.iter().map(|a| a.ip).collect();
        let want = ["10.244.1.3", "10.244.1.4", "10.244.1.51", "10.244.1.52"];
        assert_eq!(freed, ips(&want));
        assert_eq!(report.freed[0].container_id, "b");
        let left: Vec<Ipv4Addr> = s.allocations().unwrap().iter().map(|a| a.ip).collect();
        assert_eq!(left, ips(&["10.244.1.2", "10.244.1.50"]));
        assert!(s.gc(&valid).unwrap().freed.is_empty());
    }

    #[test]
    fn free_count_counts_the_usable_range() {
        let (_tmp, s) = setup();
        let (subnet, gw) = (net("10.244.1.0/24"), ip("10.244.1.1"));
        assert_eq!(s.free_count(subnet, gw).unwrap(), 253);
        for cid in ["a", "b", "c"] {
            take(&s, cid, "eth0");
        }
        // Files outside the range (old subnet, broadcast, gateway) do not count.
        for name in ["10.244.2.5", "10.244.1.255", "10.244.1.1"] {
            put(&s, name, "old");
        }
        assert_eq!(s.free_count(subnet, gw).unwrap(), 250);
        assert_eq!(s.free_count(subnet, ip("10.244.1.9")).unwrap(), 249);
        assert_eq!(
            s.free_count(net("172.16.0.0/12"), ip("172.16.0.1"))
                .unwrap(),
            (1 << 20) - 3
        );
        assert_eq!(s.free_count(net("10.9.0.0/30"), ip("10.9.0.1")).unwrap(), 1);
        assert_eq!(s.free_count(net("10.9.0.0/31"), ip("10.9.0.1")).unwrap(), 0);
    }

    #[test]
    fn concurrent_allocations_are_distinct() {
        let tmp = TempDir::new();
        let barrier = Arc::new(Barrier::new(64));
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let (dir, barrier) = (tmp.0.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let store = Store::open(&dir, "cbr0").unwrap();
                    barrier.wait();
                    (i, take(&store, &format!("cid{i}"), "eth0"))
                })
            })
            .collect();
        let got: Vec<(i32, Ipv4Addr)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let distinct: HashSet<Ipv4Addr> = got.iter().map(|&(_, a)| a).collect();
        let want: HashSet<Ipv4Addr> = (2..66).map(|i| Ipv4Addr::new(10, 244, 1, i)).collect();
        assert_eq!(distinct, want);
        let s = Store::open(&tmp.0, "cbr0").unwrap();
        for (i, addr) in got {
            assert_eq!(s.find(&format!("cid{i}"), "eth0").unwrap(), vec![addr]);
        }
    }

    #[test]
    fn the_lock_is_an_flock_on_the_lock_file() {
        let (_tmp, s) = setup();
        let mut open = OpenOptions::new();
        let file = open.write(true).create(true).truncate(false);
        let file = file.open(s.dir().join(LOCK_FILE)).unwrap();
        let held = Flock::lock(file, FlockArg::LockExclusive).unwrap();
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || take(&s2, "a", "eth0"));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "allocate must wait for the lock");
        drop(held);
        assert_eq!(waiter.join().unwrap(), ip("10.244.1.2"));
    }

    #[test]
    fn errors_name_the_operation_and_the_object() {
        let tmp = TempDir::new();
        fs::write(&tmp.0, "not a directory").unwrap();
        let err = Store::open(&tmp.0, "cbr0").unwrap_err().to_string();
        let want = format!("create directory {}/cbr0: Not a directory", tmp.0.display());
        assert_eq!(err, want);
        for bad in ["", ".", "..", "a/b", "../x"] {
            let err = Store::open(&tmp.0, bad).unwrap_err();
            assert!(matches!(err, IpamError::InvalidNetwork { .. }), "{bad:?}");
        }
        fs::remove_file(&tmp.0).unwrap();
    }
}
