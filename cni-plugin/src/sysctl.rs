//! /proc/sys writes. /proc/sys/net resolves against the network namespace
//! of the thread that opens the file: its one caller, `bridge.rs`, sets the
//! node's values (forwarding, the bridge's `accept_ra`). Settings inside a
//! pod's namespace go through netlink instead (`arp_notify` in
//! `netlink/mod.rs`).
//!
//! Writes only when the value differs; which keys is the caller's.

use std::path::Path;

use crate::error::{CniError, Code};

/// Writes `value` to `/proc/sys/<key>` unless it already holds it.
pub fn ensure(key: &str, value: &str) -> Result<(), CniError> {
    let path = Path::new("/proc/sys").join(key);
    if std::fs::read_to_string(&path).is_ok_and(|cur| cur.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| {
        CniError::new(
            Code::Kernel,
            format!("set sysctl {} to {value}: {e}", key.replace('/', ".")),
        )
    })
}
