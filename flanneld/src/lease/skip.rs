//! What the stores and the datapath skip (a malformed lease, a directory
//! where a lease file should be, a lease that cannot be a peer) is logged
//! at `warn` once per object and reason, and at `debug` on every later
//! read: a resync every few seconds must not repeat the same line forever,
//! and one bad entry never stops the node.
//!
//! Owns the logging of skips only: it decides nothing about what is
//! skipped (the caller does) and writes nothing but log lines.

use std::collections::HashSet;
use std::sync::Mutex;

/// How many distinct (object, reason) pairs are remembered; past that the
/// memory is cleared, so a flood of bad entries costs bounded memory (and
/// repeats a warning now and then).
const REMEMBERED: usize = 4096;

static SEEN: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// Logs that `what` (a key, a path) is skipped because of `reason`.
pub fn skipped(what: &str, reason: &str) {
    if first_time(what, reason) {
        tracing::warn!("skipping {what}: {reason}");
    } else {
        tracing::debug!("skipping {what}: {reason}");
    }
}

fn first_time(what: &str, reason: &str) -> bool {
    let Ok(mut seen) = SEEN.lock() else {
        return true;
    };
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    seen.insert((what.to_owned(), reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_object_and_reason() {
        assert!(first_time("k1", "bad"));
        assert!(!first_time("k1", "bad"));
        assert!(first_time("k1", "worse"));
        assert!(first_time("k2", "bad"));
    }
}
