//! Files both programs keep on disk, written and locked one way: a reader
//! sees the old contents or the new, never a torn file; a lock holder is
//! not woken by a signal into thinking it holds the lock.
//!
//! Owns nothing but the mechanics (temporary name, mode, fsync, rename;
//! `flock` with its EINTR retry). What is written, and where, is the
//! caller's: [`write_atomic`] writes `subnet.env`, the lease file and the
//! plugin's installed binary and conflist; [`lock_exclusive`] guards the
//! lease file and the IPAM store. It creates no directory and decides no
//! path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A file operation that failed: `"<op> <path>: <cause>"`.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FileError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FileError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> FileError {
        FileError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How [`write_atomic`] writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOpts {
    /// The file's mode, exactly (not masked by the umask).
    pub mode: u32,
    /// fsync the data before the rename: the new contents survive a crash.
    /// Without it a crash may leave an empty file, never a torn one.
    pub sync: bool,
}

/// Writes `data` to `path` through a temporary file in the same directory
/// and a rename over `path`. The directory must exist. On failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, data: &[u8], opts: WriteOpts) -> Result<(), FileError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(opts.mode)
            .open(&tmp)
            .map_err(|e| FileError::new("create temporary file", &tmp, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(opts.mode))
            .map_err(|e| FileError::new("set the mode of", &tmp, e))?;
        f.write_all(data)
            .map_err(|e| FileError::new("write", &tmp, e))?;
        if opts.sync {
            f.sync_all().map_err(|e| FileError::new("sync", &tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| FileError::new("rename into place", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `.<name>.<pid>.<n>.tmp` next to `path`: unique among the threads and
/// processes writing the same file, and hidden from directory scans that
/// skip dot files.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Takes `flock(LOCK_EX)` on `file` (opened from `path`, which only names
/// it in the error), retrying when a signal interrupts the wait. The lock
/// is released when the guard drops.
pub fn lock_exclusive(file: File, path: &Path) -> Result<Flock<File>, FileError> {
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(guard) => return Ok(guard),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, errno)) => return Err(FileError::new("lock", path, errno.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flannel_cluster::tempdir::TempDir;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_contents_with_the_exact_mode_and_leaves_no_temp() {
        let tmp = TempDir::new("-files-replace");
        let dir = tmp.path();
        let path = dir.join("f");
        std::fs::write(&path, b"old").expect("seed");
        for (mode, sync) in [(0o600, false), (0o644, true)] {
            write_atomic(&path, b"new", WriteOpts { mode, sync }).expect("write");
            assert_eq!(std::fs::read(&path).expect("read"), b"new");
            let meta = std::fs::metadata(&path).expect("stat");
            assert_eq!(meta.mode() & 0o777, mode);
        }
        let left: Vec<_> = std::fs::read_dir(dir).expect("list").collect();
        assert_eq!(left.len(), 1, "only the file itself: {left:?}");
    }

    #[test]
    fn a_failed_write_names_the_step_and_the_path() {
        let tmp = TempDir::new("-files-fail");
        let dir = tmp.path();
        let path = dir.join("missing-dir").join("f");
        let err = write_atomic(
            &path,
            b"x",
            WriteOpts {
                mode: 0o644,
                sync: false,
            },
        )
        .expect_err("no such directory");
        assert_eq!(err.op, "create temporary file");
        let text = err.to_string();
        assert!(text.contains("missing-dir"), "{text}");
        assert!(!path.exists());
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let tmp = TempDir::new("-files-lock");
        let dir = tmp.path();
        let path = dir.join("lock");
        let open = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .expect("open lock")
        };
        let held = lock_exclusive(open(), &path).expect("first lock");
        let second = Flock::lock(open(), FlockArg::LockExclusiveNonblock);
        assert!(second.is_err(), "a second holder while the first holds");
        drop(held);
        lock_exclusive(open(), &path).expect("lock after release");
    }
}
