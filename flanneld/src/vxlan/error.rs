//! The one error type of the VXLAN backend: every variant names the
//! operation and the object it was applied to.
//!
//! Owns the error type only; no kernel access.

/// A failed kernel operation of the VXLAN backend.
#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    /// A netlink request failed, e.g.
    /// "add fdb entry 0e:00:00:00:00:44 dst 192.168.64.3 on flannel.1: No such device".
    #[error("{op}: {reason}")]
    Netlink {
        op: String,
        /// The kernel's errno (positive), when the kernel answered with one.
        errno: Option<i32>,
        reason: String,
    },
    /// A /proc/sys write failed.
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    /// The device vanished (deleted by hand, or with its namespace): the
    /// caller should `ensure_device` again and replay every peer.
    #[error("{name} does not exist")]
    DeviceGone { name: String },
    /// The kernel did something we did not ask for, e.g. a device that
    /// cannot be read back after creating it.
    #[error("{op}: {reason}")]
    Unexpected { op: String, reason: String },
}

impl VxlanError {
    pub(crate) fn netlink(op: String, e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(m) => VxlanError::Netlink {
                op,
                errno: Some(-m.raw_code()),
                reason: m.to_io().to_string(),
            },
            other => VxlanError::Netlink {
                op,
                errno: None,
                reason: other.to_string(),
            },
        }
    }

    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            VxlanError::Netlink { errno, .. } => *errno,
            VxlanError::Io { source, .. } => source.raw_os_error(),
            VxlanError::DeviceGone { .. } | VxlanError::Unexpected { .. } => None,
        }
    }

    /// True when the kernel answered `errno`.
    pub fn is(&self, errno: i32) -> bool {
        self.errno() == Some(errno)
    }

    /// True when the failure means the VXLAN device no longer exists:
    /// recreate it with `ensure_device` and replay the peers.
    pub fn is_device_gone(&self) -> bool {
        matches!(self, VxlanError::DeviceGone { .. }) || self.is(libc::ENODEV)
    }
}

/// Treats "already there" as success (for adds without replace semantics).
pub(crate) fn ok_if_exists(r: Result<(), VxlanError>) -> Result<(), VxlanError> {
    match r {
        Err(e) if e.is(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Treats "already gone" as success (for deletes): neighbour and FDB
/// deletes answer ENOENT, route deletes ESRCH, address deletes
/// EADDRNOTAVAIL.
pub(crate) fn ok_if_missing(r: Result<(), VxlanError>) -> Result<(), VxlanError> {
    match r {
        Err(e) if e.is(libc::ENOENT) || e.is(libc::ESRCH) || e.is(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}
