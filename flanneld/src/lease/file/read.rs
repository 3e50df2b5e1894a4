//! Reading lease files at scale: the directory is opened once and each
//! lease is opened relative to it (`openat`: no path walk per file), read
//! into one reused buffer (no `statx` for a size hint) and closed, so a
//! listing of N leases costs one `getdents` pass and N × (open, read, read
//! to EOF, close). Entries the directory says are not regular files (nor
//! symlinks, nor of unknown type) are skipped without being opened.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
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

    /// Every well-formed lease in the directory, expired ones included.
    pub(crate) fn read_all(&mut self) -> Result<Vec<Lease>, LeaseError> {
        let listed = self.list()?;
        let mut leases = Vec::with_capacity(listed.len());
        for name in listed {
            if let Some(lease) = self.read(name)? {
                leases.push(lease);
            }
        }
        Ok(leases)
    }

    /// Reads one lease file. A missing file is `None`; so is a malformed
    /// one or one that is not a regular file, which is logged and otherwise
    /// treated as absent.
    pub(crate) fn read(&mut self, name: Name) -> Result<Option<Lease>, LeaseError> {
        let file_name = super::format::file_name(name);
        // O_NONBLOCK: a FIFO named like a lease must not block the open.
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match openat(&self.fd, file_name.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                let path = self.path.join(&file_name);
                return Err(io_err("read lease", &path)(e.into()));
            }
        };
        let mut file = File::from(fd);
        self.buf.clear();
        let read = (&mut file)
            .take(MAX_LEASE_BYTES as u64 + 1)
            .read_to_end(&mut self.buf);
        let path = || self.path.join(&file_name);
        match read {
            Ok(_) if self.buf.len() > MAX_LEASE_BYTES => {
                skip::skipped(&path().display().to_string(), "malformed lease: too large");
                return Ok(None);
            }
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EISDIR) || e.kind() == ErrorKind::WouldBlock =>
            {
                skip::skipped(&path().display().to_string(), "not a regular file");
                return Ok(None);
            }
            Err(e) => return Err(io_err("read lease", &path())(e)),
        }
        match decode(name, &self.buf) {
            Ok(lease) => Ok(Some(lease)),
            Err(reason) => {
                skip::skipped(
                    &path().display().to_string(),
                    &format!("malformed lease: {reason}"),
                );
                Ok(None)
            }
        }
    }
}
