//! Names unique to this test process: `ft<pid>-<counter><tag>`.
//!
//! Every namespace, temp dir and container ID the harness makes carries the
//! prefix `ft<pid>-`, so a leftover can always be traced to the process that
//! made it (and [`crate::netns::sweep_stale`] can remove those of dead ones).
//!
//! It only makes names; it creates nothing.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The prefix of every name this process makes: `ft<pid>-`.
pub fn prefix() -> String {
    format!("ft{}-", std::process::id())
}

/// A fresh name, `ft<pid>-<n><tag>`. Keep `tag` to a few characters.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}{n}{tag}", prefix())
}

/// Parses `ft<pid>-<n>...` and returns the pid, for names this harness made.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("ft")?;
    let (pid, tail) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !tail.bytes().next()?.is_ascii_digit() {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_parse_back() {
        let a = unique("n");
        let b = unique("n");
        assert_ne!(a, b);
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert_eq!(owner_pid("ftx-1"), None);
        assert_eq!(owner_pid("ft12-abc"), None);
        assert_eq!(owner_pid("other"), None);
    }
}
