//! Reading lease files at scale: the directory is opened once and each
//! lease is opened relative to it (`openat`: no path walk per file), with
//! `O_NOATIME` (reading a freshly written file would otherwise update its
//! access time under `relatime`: an inode write per lease), read into one
//! reused buffer (no `statx` for a size hint) and closed, so a listing of N
//! leases costs one `getdents` pass and N × (open, read, read to EOF,
//! close). Entries the directory says are not regular files (nor symlinks,
//! nor of unknown type) are skipped without being opened. From
//! [`PARALLEL_FROM`] leases on, with [`MIN_CPUS`] CPUs or more, the files
//! are read on up to [`MAX_THREADS`] threads, each taking one contiguous
//! share of the listing; the result is in listing order either way.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::format::{decode, io_err, parse_name, Name};
use crate::lease::{skip, Lease, LeaseError};

/// A lease file larger than this is not a lease (flannel's value is about
/// 200 bytes); it is reported as malformed rather than read whole.
const MAX_LEASE_BYTES: usize = 64 * 1024;

/// From this many listed leases on, `read_all` reads on several threads
/// (below it, starting threads costs more than it saves).
pub(crate) const PARALLEL_FROM: usize = 2048;
/// At most this many threads read (the caller's included).
pub(crate) const MAX_THREADS: usize = 4;
/// Threads are used only with this many CPUs: on the 2-core development
/// VM, 5,000 leases read on 2 threads made acquire slower (median 61–73 ms
/// against 52–58 ms on one), so there it reads on one. With more cores it
/// is expected to pay; that is not measured yet.
pub(crate) const MIN_CPUS: usize = 4;

/// An open lease directory and a buffer to read its files into.
pub(crate) struct LeaseDir {
    path: PathBuf,
    fd: File,
    buf: Vec<u8>,
}

impl LeaseDir {
    /// Opens `dir` (which must exist).
    pub(crate) fn open(dir: &Path) -> Result<Self, LeaseError> {
        let fd = File::open(dir).map_err(io_err("open lease directory", dir))?;
        Ok(Self {
            path: dir.to_path_buf(),
            fd,
            buf: Vec::with_capacity(1024),
        })
    }

    /// The names of the leases in the directory, without opening any.
    /// Dot files (the lock, temp files) and files not named like a subnet
    /// are left out; so are entries known not to be files.
    pub(crate) fn list(&self) -> Result<Vec<Name>, LeaseError> {
        let dir = &self.path;
        let entries = fs::read_dir(dir).map_err(io_err("list lease directory", dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list lease directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Some(parsed) = parse_name(name) else {
                tracing::debug!(dir = %dir.display(), "ignoring {name:?}: not named like a subnet");
                continue;
            };
            // d_type, from getdents: no stat.
            if let Ok(t) = entry.file_type() {
                if t.is_dir()
                    || t.is_fifo()
                    || t.is_socket()
                    || t.is_block_device()
                    || t.is_char_device()
                {
                    skip::skipped(&dir.join(name).display().to_string(), "not a regular file");
                    continue;
                }
            }
            names.push(parsed);
        }
        Ok(names)
    }

    /// Every well-formed lease in the directory, expired ones included, in
    /// listing order.
    pub(crate) fn read_all(&mut self) -> Result<Vec<Lease>, LeaseError> {
        let listed = self.list()?;
        let threads = threads_for(listed.len());
        if threads <= 1 {
            return read_names(&self.fd, &self.path, &mut self.buf, &listed);
        }
        self.read_threaded(&listed, threads)
    }

    /// Reads `names` on `threads` threads (this one included), one
    /// contiguous share each, and joins the shares in order. A share whose
    /// thread cannot be started is read here.
    pub(crate) fn read_threaded(
        &mut self,
        names: &[Name],
        threads: usize,
    ) -> Result<Vec<Lease>, LeaseError> {
        let share = names.len().div_ceil(threads.max(1)).max(1);
        let mut parts = names.chunks(share);
        let first = parts.next().unwrap_or(&[]);
        let (dir, path) = (&self.fd, self.path.as_path());
        let results = std::thread::scope(|scope| {
            let spawned: Vec<_> = parts
                .map(|part| {
                    let started = std::thread::Builder::new()
                        .name("lease-read".into())
                        .spawn_scoped(scope, move || {
                            read_names(dir, path, &mut Vec::with_capacity(1024), part)
                        });
                    (part, started)
                })
                .collect();
            let mut results = vec![read_names(dir, path, &mut self.buf, first)];
            for (part, started) in spawned {
                results.push(match started {
                    Ok(handle) => match handle.join() {
                        Ok(r) => r,
                        Err(panic) => std::panic::resume_unwind(panic),
                    },
                    Err(e) => {
                        tracing::debug!(
                            "start a lease-reading thread: {e}; reading its share here"
                        );
                        read_names(dir, path, &mut Vec::with_capacity(1024), part)
                    }
                });
            }
            results
        });
        let mut leases = Vec::with_capacity(names.len());
        for r in results {
            leases.extend(r?);
        }
        Ok(leases)
    }

    /// Reads one lease file. A missing file is `None`; so is a malformed
    /// one or one that is not a regular file, which is logged and otherwise
    /// treated as absent.
    pub(crate) fn read(&mut self, name: Name) -> Result<Option<Lease>, LeaseError> {
        read_one(&self.fd, &self.path, &mut self.buf, name)
    }
}

/// How many threads read `n` leases.
pub(crate) fn threads_for(n: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    threads_for_cpus(n, cpus)
}

/// How many threads read `n` leases with `cpus` CPUs.
pub(crate) fn threads_for_cpus(n: usize, cpus: usize) -> usize {
    if n < PARALLEL_FROM || cpus < MIN_CPUS {
        return 1;
    }
    cpus.min(MAX_THREADS)
}

/// The well-formed leases among `names`, in order.
fn read_names(
    dir: &File,
    path: &Path,
    buf: &mut Vec<u8>,
    names: &[Name],
) -> Result<Vec<Lease>, LeaseError> {
    let mut leases = Vec::with_capacity(names.len());
    for &name in names {
        if let Some(lease) = read_one(dir, path, buf, name)? {
            leases.push(lease);
        }
    }
    Ok(leases)
}

/// Opens `file_name` in `dir` for reading: `None` if it is missing.
/// `O_NOATIME` is only allowed to the file's owner (or with
/// `CAP_FOWNER`); refused, the file is opened without it.
fn open_lease(dir: &File, file_name: &str) -> Result<Option<OwnedFd>, Errno> {
    // O_NONBLOCK: a FIFO named like a lease must not block the open.
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let opened = match openat(dir, file_name, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(Errno::EPERM) => openat(dir, file_name, flags, Mode::empty()),
        other => other,
    };
    match opened {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_one(
    dir: &File,
    path: &Path,
    buf: &mut Vec<u8>,
    name: Name,
) -> Result<Option<Lease>, LeaseError> {
    let file_name = super::format::file_name(name);
    let fd = match open_lease(dir, &file_name) {
        Ok(Some(fd)) => fd,
        Ok(None) => return Ok(None),
        Err(e) => return Err(io_err("read lease", &path.join(&file_name))(e.into())),
    };
    let mut file = File::from(fd);
    buf.clear();
    let read = (&mut file)
        .take(MAX_LEASE_BYTES as u64 + 1)
        .read_to_end(buf);
    let shown = || path.join(&file_name).display().to_string();
    match read {
        Ok(_) if buf.len() > MAX_LEASE_BYTES => {
            skip::skipped(&shown(), "malformed lease: too large");
            return Ok(None);
        }
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) || e.kind() == ErrorKind::WouldBlock => {
            skip::skipped(&shown(), "not a regular file");
            return Ok(None);
        }
        Err(e) => return Err(io_err("read lease", &path.join(&file_name))(e)),
    }
    match decode(name, buf) {
        Ok(lease) => Ok(Some(lease)),
        Err(reason) => {
            skip::skipped(&shown(), &format!("malformed lease: {reason}"));
            Ok(None)
        }
    }
}
