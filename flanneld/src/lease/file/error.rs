//! The embedded store's own errors ([`FileError`]); I/O on a named path is
//! `LeaseError::Io`, shared by every store. Each names the operation and
//! the lease file or directory.
//!
//! Owns the error type only: no file access, no retry decision.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The blocking task doing `what` panicked or was cancelled.
    #[error("{what} in {}: task failed: {source}", dir.display())]
    Task {
        what: &'static str,
        dir: PathBuf,
        source: tokio::task::JoinError,
    },
    #[error("encode lease {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("inotify stream for {} ended", dir.display())]
    WatchEnded { dir: PathBuf },
    #[error("lease directory {} was removed or moved; the watch has ended", dir.display())]
    DirGone { dir: PathBuf },
}
