//! Deleting a detached veth off DEL's critical path.
//!
//! The kernel's unregister of a veth waits for an RCU grace period (~20 ms)
//! inside the delete request itself. DEL has already renamed the link and
//! taken it down; a forked child deletes it. The child inherits the pod
//! namespace's descriptor, so the namespace lives until the link is gone
//! even if the runtime removes it right after DEL. The child opens its own
//! netlink socket and ends with `_exit`: it never returns into the parent's
//! state, and forking is safe because the plugin has one thread.
//!
//! Owns that child only: which link to delete is DEL's. The child drops the
//! runtime's stdout and stderr (it points them at `/dev/null`), so it can
//! neither hold up the runtime nor write into the CNI result.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::{fork, ForkResult};

use crate::netlink::Netlink;

/// Whether this process forked a deleter (which holds every descriptor
/// open at the time until it is done).
static FORKED: AtomicBool = AtomicBool::new(false);

pub fn forked_a_deleter() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// Forks a child that deletes link `index` inside `ns`; returns at once.
pub fn fork_deleter(ns: &File, index: u32) -> io::Result<()> {
    if thread_count()? != 1 {
        // Forking a multi-threaded process could copy a held lock.
        return Err(io::Error::other("the plugin is not single-threaded"));
    }
    // SAFETY: the process has a single thread (checked above), so no lock
    // can be held by a thread that does not exist in the child; the child
    // runs `delete_in_child` and ends with `_exit`, without unwinding or
    // running the parent's destructors.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { .. } => {
            FORKED.store(true, Ordering::Relaxed);
            Ok(())
        }
        ForkResult::Child => {
            let code = match delete_in_child(ns, index) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends the child without touching the parent's state.
            unsafe { libc::_exit(code) }
        }
    }
}

fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

fn delete_in_child(ns: &File, index: u32) -> io::Result<()> {
    // Detach from the runtime: own session, and no copy of its stdout or
    // stderr pipes (the runtime reads them until every writer closed them).
    nix::unistd::setsid().map_err(io::Error::from)?;
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        // SAFETY: plain dup2 onto the standard descriptors; both are open.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    // The ack means the kernel has unregistered the link.
    match Netlink::open().and_then(|nl| nl.delete_link(index, &format!("#{index}"))) {
        Err(e) if !e.is(libc::ENODEV) => Err(io::Error::other(e.to_string())),
        _ => Ok(()),
    }
}
