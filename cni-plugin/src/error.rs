//! The CNI error: a code from the spec (or ours, 100+) and a message that
//! names the operation and the object, and its JSON shape for stdout.
//!
//! Owns the mapping of lower layers' errors to codes (`From<NlError>` lives
//! here, above `netlink`, which knows nothing of the CNI). Prints nothing:
//! `main.rs` writes the JSON.

use serde::Serialize;

/// CNI error codes (spec 1.1 §"Error"), plus this plugin's own (100+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    /// A netlink or sysctl operation failed.
    Kernel = 100,
    /// No free address left in the node's subnet.
    RangeExhausted = 101,
    /// `CNI_IFNAME` already exists in the container's namespace.
    InterfaceExists = 102,
    /// CHECK found the container's network different from `prevResult`.
    CheckMismatch = 103,
    /// Installing or removing the masquerade rule failed.
    Masquerade = 104,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Out {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

/// Shorthand for an error with a code and a formatted message.
#[macro_export]
macro_rules! cni_err {
    ($code:ident, $($arg:tt)*) => {
        $crate::error::CniError::new($crate::error::Code::$code, format!($($arg)*))
    };
}

/// A kernel operation that failed (netlink's error names the operation
/// and the object) is the plugin's own code 100, "kernel".
impl From<crate::netlink::NlError> for CniError {
    fn from(e: crate::netlink::NlError) -> Self {
        CniError::new(Code::Kernel, e.to_string())
    }
}
