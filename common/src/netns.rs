//! Entering a network namespace for the duration of a scope.
//!
//! `setns(2)` switches only the calling thread, so the guard restores the
//! thread's original namespace when dropped: an early return or a panic can
//! never leave the thread behind in a pod's namespace. If the way back
//! fails, the process aborts rather than configure the wrong namespace.
//!
//! Owns the opening and checking of namespace files and the thread's
//! namespace switch; it creates, mounts and deletes no namespace, and
//! opens no socket (callers open theirs inside the guard).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

/// statfs magic of nsfs (bind-mounted namespace files, /proc/*/ns/*).
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// statfs magic of procfs (older kernels report it for /proc/*/ns/net).
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// `ioctl(NS_GET_NSTYPE)`, `_IO(0xb7, 0x3)`: which kind of namespace an
/// nsfs file is (Linux >= 4.11).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Opens a network namespace file such as `/var/run/netns/pod1`, checking
/// that it really is a network namespace (and not, say, a regular file or
/// another kind of namespace). Never blocks: the path is opened with
/// `O_NONBLOCK`, so a FIFO or a device put there answers at once instead
/// of hanging the caller, and is then refused.
pub fn open(path: &Path) -> io::Result<File> {
    let not_netns = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a network namespace ({what})"),
        )
    };
    // Refuse what is plainly not a namespace file before opening it:
    // opening a device can have effects of its own.
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() {
        return Err(not_netns(file_kind(&kind)));
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    // The path may have changed between the two looks: check the file
    // actually opened.
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_netns(file_kind(&kind)));
    }
    let st = nix::sys::statfs::fstatfs(&file).map_err(io::Error::from)?;
    let fs = st.filesystem_type().0 as i64;
    if fs != NSFS_MAGIC && fs != PROC_SUPER_MAGIC {
        return Err(not_netns("not on nsfs"));
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let ns_type = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if ns_type >= 0 && ns_type != libc::CLONE_NEWNET {
        return Err(not_netns("another kind of namespace"));
    }
    // ns_type < 0: a kernel older than 4.11 cannot tell; setns(2) will.
    Ok(file)
}

/// An open network namespace and the path it was opened from, which
/// names it in messages ("interface eth0 already exists in
/// /var/run/netns/pod1").
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: std::path::PathBuf,
}

impl Netns {
    /// [`open`]s `path`, keeping the path for messages.
    pub fn open(path: &Path) -> io::Result<Netns> {
        Ok(Netns {
            file: open(path)?,
            path: path.to_path_buf(),
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ft{}-netns-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn own_netns_opens() {
        open(Path::new("/proc/self/ns/net")).expect("our own network namespace");
    }

    #[test]
    fn fifo_is_refused_at_once() {
        let dir = scratch("fifo");
        let fifo = dir.join("ns");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let start = Instant::now();
        let err = open(&fifo).expect_err("a FIFO is no namespace");
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(err.to_string().contains("FIFO"), "{err}");
        std::fs::remove_dir_all(&dir).expect("remove scratch dir");
    }

    #[test]
    fn others_are_refused() {
        let dir = scratch("others");
        let plain = dir.join("plain");
        std::fs::write(&plain, b"").expect("write");
        let cases = [
            (plain.as_path(), "nsfs"),
            (Path::new("/dev/null"), "device"),
            (dir.as_path(), "directory"),
            (Path::new("/proc/self/ns/mnt"), "another kind"),
        ];
        for (path, want) in cases {
            let err = open(path).expect_err("not a network namespace");
            assert!(err.to_string().contains(want), "{}: {err}", path.display());
        }
        std::fs::remove_dir_all(&dir).expect("remove scratch dir");
    }
}
