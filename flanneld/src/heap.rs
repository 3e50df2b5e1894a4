//! Giving the allocator's free memory back to the system after the big,
//! short-lived allocations of a listing (thousands of decoded leases, the
//! response bodies, the kernel dumps of a first programming).
//!
//! glibc's malloc keeps freed memory in its arenas: after the first
//! listing of 5,000 Nodes the daemon kept several MiB resident that it
//! never used again. `malloc_trim(0)` releases the free pages of every
//! arena (and the top of each heap). It is called only after such one-off
//! passes, never per event: it walks the arenas (well under a millisecond
//! here). On a libc without it (musl), it does nothing.
//!
//! The daemon has two threads (its own, and the kube store's node watch):
//! with glibc's default, the second gets an arena of its own, where the
//! listing's bodies and the leases kept from them interleave, and after
//! the trim ~10 MiB more stayed resident. [`one_arena`] keeps every
//! allocation in one arena, as in a single-threaded process; the two
//! threads rarely allocate at the same time.
//!
//! Owns nothing; changes no state the daemon sees.

/// Makes every thread allocate from the one main arena; call it before
/// any thread is started. Does nothing on a libc without arenas (musl).
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers; called before any other thread
    // exists. A refusal (0) leaves glibc's default, which only costs memory.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns free heap memory to the system; says how much went, at debug.
pub fn trim(after: &str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let before = resident_kib();
        // SAFETY: malloc_trim takes no pointers and may be called at any
        // time from any thread; glibc locks each arena while trimming it.
        unsafe {
            libc::malloc_trim(0);
        }
        if let (Some(b), Some(a)) = (before, resident_kib()) {
            tracing::debug!("heap trimmed after {after}: resident {b} KiB -> {a} KiB");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = after;
}

/// This process's resident memory (`VmRSS`), in KiB.
pub fn resident_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory freed in small pieces is resident until trimmed; after the
    /// trim the process holds less (the freed pages went back).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn trim_returns_freed_small_allocations() {
        // Many small blocks (below the mmap threshold, so they live in the
        // heap), all touched, then freed but one at the end, which keeps
        // the heap's top from shrinking on its own.
        let mut blocks: Vec<Vec<u8>> = (0..40_000).map(|i| vec![i as u8; 1024]).collect();
        let pin = blocks.pop();
        drop(blocks);
        let before = resident_kib().expect("VmRSS");
        trim("the test's allocations");
        let after = resident_kib().expect("VmRSS");
        drop(pin);
        // ~40 MiB were freed; at least a quarter of it must have gone back.
        assert!(
            after + 10 * 1024 <= before,
            "resident {before} KiB before the trim, {after} KiB after"
        );
    }
}
