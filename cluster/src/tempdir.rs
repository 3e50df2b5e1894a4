//! A temp dir unique to the test, removed (recursively) on drop.
//!
//! It removes only the directory it made.

use std::path::{Path, PathBuf};

pub struct TempDir {
    path: PathBuf,
    remove: bool,
}

impl TempDir {
    /// Creates `$TMPDIR/ft<pid>-<n><tag>` (mode 0700).
    pub fn new(tag: &str) -> TempDir {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(crate::names::unique(tag));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path, remove: true }
    }

    /// Creates exactly `path` (mode 0700, parents as needed; it must not
    /// exist yet), removed on drop unless [`disarm`](Self::disarm)ed.
    pub fn create_at(path: &Path) -> Result<TempDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir {
            path: path.to_owned(),
            remove: true,
        })
    }

    /// A handle on a directory someone else made: never removed on drop.
    pub fn existing(path: &Path) -> TempDir {
        TempDir {
            path: path.to_owned(),
            remove: false,
        }
    }

    /// Leaves the directory in place when this handle drops.
    pub fn disarm(&mut self) {
        self.remove = false;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.remove {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
