//! [`NetConfError`]: why a `net-conf.json` was refused, one variant per
//! rule, each naming the key (as the docs spell it) and the value; and the
//! file that could not be read.

use std::path::PathBuf;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum NetConfError {
    #[error("read network config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network config {}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<NetConfError>,
    },
    #[error("not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("must be a JSON object")]
    NotObject,
    #[error("EnableIPv4 and EnableIPv6 are both false: no address family left")]
    NoFamily,
    #[error("Network is missing")]
    NetworkMissing,
    #[error("EnableIPv6 is true but IPv6Network is missing")]
    Ipv6NetworkMissing,
    #[error("EnableIPv4 is false (IPv6-only): this needs an IPv4 network")]
    Ipv4Disabled,
    #[error("Backend must be an object, got {got}")]
    BackendNotObject { got: Value },
    #[error("Backend.Type must be a string, got {got}")]
    BackendTypeNotString { got: Value },
    #[error("Backend.Type {kind:?} is not supported (only \"vxlan\")")]
    UnsupportedBackend { kind: String },
    #[error("Backend.VNI {vni} must be below 16777216")]
    Vni { vni: u64 },
    #[error("Backend.Port {port} is not a UDP port")]
    Port { port: u64 },
    #[error("Backend.MTU {mtu} must be in 1280..65535")]
    Mtu { mtu: u64 },
    /// A key of the wrong JSON type; `expected` is "a string", …
    #[error("{key} must be {expected}, got {got}")]
    WrongType {
        key: String,
        expected: &'static str,
        got: Value,
    },
    #[error("{key} {text:?} is not an {family} CIDR")]
    NotCidr {
        key: String,
        text: String,
        family: &'static str,
    },
    #[error("{key} {text:?} is not an {family} address")]
    NotAddress {
        key: String,
        text: String,
        family: &'static str,
    },
    #[error("{key} {network} has host bits set (did you mean {base}/{prefix}?)")]
    HostBits {
        key: &'static str,
        network: String,
        base: String,
        prefix: u8,
    },
    #[error("{key} {network} is too small: the prefix must be /{smallest} or shorter")]
    NetworkTooSmall {
        key: &'static str,
        network: String,
        smallest: u8,
    },
    #[error("{key} {len} is not a prefix length")]
    NotPrefixLen { key: &'static str, len: u64 },
    #[error("{key} {len} must be {max} or less")]
    SubnetLenTooLong { key: &'static str, len: u8, max: u8 },
    #[error("{key} {len} must be at least the {network_key} prefix + 2 ({min})")]
    SubnetLenTooShort {
        key: &'static str,
        len: u8,
        network_key: &'static str,
        min: u8,
    },
    #[error("{key} {addr} is outside {network_key} {network}")]
    BoundOutside {
        key: &'static str,
        addr: String,
        network_key: &'static str,
        network: String,
    },
    #[error("{key} {addr} is not aligned to a /{subnet_len} subnet")]
    BoundUnaligned {
        key: &'static str,
        addr: String,
        subnet_len: u8,
    },
    #[error("{min_key} {min} is above {max_key} {max}")]
    MinAboveMax {
        min_key: &'static str,
        min: String,
        max_key: &'static str,
        max: String,
    },
}
