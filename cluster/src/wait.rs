//! Polling with a deadline, for state the kernel settles asynchronously.
//!
//! It only polls the caller's check; it reads and changes nothing itself.

use std::time::{Duration, Instant};

/// Calls `f` every 10 ms until it returns `Ok`, and returns that value.
/// Panics with `what` and the last error when `timeout` passes first.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
