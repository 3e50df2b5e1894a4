//! Releasing the netfilter socket off the caller's clock.
//!
//! When the last reference to a NETLINK_NETFILTER socket that made changes
//! goes, nf_tables flushes its deferred frees first, and freeing a deleted
//! set element waits for an RCU grace period: 1 to 12 ms on a busy VM,
//! paid by whoever closes the socket, even one that only added an element
//! while an earlier DEL's frees were pending (a DEL's or an ADD's exit,
//! otherwise: an ADD right after a DEL took 8 ms instead of 4). Here a
//! forked child inherits the socket and keeps it until this process has
//! exited (the end of a pipe it waits on), so its reference is the last
//! one and the wait lands on it. This module owns that child only; it
//! knows nothing of what the socket did.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::unistd::{fork, ForkResult};

/// Drops `held` (the caller's copy of the socket) after handing a copy to
/// a detached child that outlives this process. Falls back to a plain drop
/// (the wait in this process) when that cannot be done.
pub fn release<T>(held: T) {
    if let Err(e) = park() {
        tracing::debug!("netfilter socket released in the plugin itself: {e}");
    }
    drop(held);
}

/// Forks the child that holds every descriptor until this process exits.
fn park() -> io::Result<()> {
    if std::fs::read_dir("/proc/self/task")?.count() != 1 {
        // Forking a multi-threaded process could copy a held lock.
        return Err(io::Error::other("the plugin is not single-threaded"));
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded (checked above); the child only waits and
    // ends with `_exit`, never returning into the parent's state.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { .. } => {
            drop(read_end);
            // Closed when this process exits: that is the child's signal.
            std::mem::forget(write_end);
            Ok(())
        }
        ForkResult::Child => {
            drop(write_end);
            wait_in_child(read_end);
            // SAFETY: ends the child without touching the parent's state;
            // the socket's last reference goes with it.
            unsafe { libc::_exit(0) }
        }
    }
}

fn wait_in_child(read_end: OwnedFd) {
    // Detach from the runtime: own session, and no copy of its stdout or
    // stderr pipes (the runtime reads them until every writer closed them).
    let _ = nix::unistd::setsid();
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: plain dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let mut pipe = File::from(read_end);
    let mut byte = [0u8; 1];
    // Returns at EOF: every copy of the write end is closed.
    while let Ok(n) = pipe.read(&mut byte) {
        if n == 0 {
            break;
        }
    }
}
