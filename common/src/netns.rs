//! Entering a network namespace for the duration of a scope.
//!
//! `setns(2)` switches only the calling thread, so the guard restores the
//! thread's original namespace when dropped: an early return or a panic can
//! never leave the thread behind in a pod's namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::sched::{setns, CloneFlags};

/// statfs magic of nsfs (bind-mounted namespace files, /proc/*/ns/*).
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// statfs magic of procfs (older kernels report it for /proc/*/ns/net).
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Opens a network namespace file such as `/var/run/netns/pod1`, checking
/// that it really is a namespace (and not, say, a regular file).
pub fn open(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    let st = nix::sys::statfs::fstatfs(&file).map_err(io::Error::from)?;
    let kind = st.filesystem_type().0 as i64;
    if kind != NSFS_MAGIC && kind != PROC_SUPER_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a network namespace",
        ));
    }
    Ok(file)
}

/// While alive, the current thread is in another network namespace.
#[must_use = "the namespace is left when the guard is dropped"]
pub struct NetnsGuard {
    original: File,
}

impl NetnsGuard {
    /// Moves the current thread into the namespace `target`.
    pub fn enter(target: BorrowedFd<'_>) -> io::Result<Self> {
        let original = File::open("/proc/thread-self/ns/net")?;
        setns(target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(Self { original })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong namespace would configure the wrong
            // host; there is no safe way forward.
            eprintln!("fatal: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Runs `f` with the current thread inside `target`.
pub fn run_in<T>(target: BorrowedFd<'_>, f: impl FnOnce() -> T) -> io::Result<T> {
    let _guard = NetnsGuard::enter(target)?;
    Ok(f())
}
