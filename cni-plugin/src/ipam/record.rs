//! A record written once under no name and then linked under an
//! address's name: an address file appears whole or not at all.
//!
//! Owns the unnamed file (`O_TMPFILE`, or a temporary name where the file
//! system has none) until it is linked or dropped; which name, and the
//! lock around it, are the store's (`ipam.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Options to open a file for writing, mode 0600 if it gets created.
pub(super) fn writer() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    options
}

/// A written record that has no address's name yet (see
/// [`Store::pending_record`](super::Store::pending_record)); dropping it
/// removes what is left of it.
pub(super) struct PendingRecord {
    pub(super) file: File,
    /// The temporary name, where O_TMPFILE was not available.
    pub(super) temp: Option<PathBuf>,
}

impl PendingRecord {
    /// Gives the record the name `path`; `AlreadyExists` when it is taken.
    pub(super) fn link_as(&self, path: &Path) -> io::Result<()> {
        let from = match &self.temp {
            Some(temp) => temp.clone(),
            None => PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
        };
        let (from, to) = (cstring(&from)?, cstring(path)?);
        // SAFETY: two valid C strings; linkat only reads them. With
        // AT_SYMLINK_FOLLOW, /proc/self/fd/N names the open inode itself.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            let _ = fs::remove_file(temp);
        }
    }
}

fn cstring(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "path contains a NUL byte"))
}
