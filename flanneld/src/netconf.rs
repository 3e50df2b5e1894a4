//! `net-conf.json`, read as flannel reads it: keys case-insensitive,
//! defaults filled in, every rule checked with a message naming the field.
//! Each address family's part (`Network`…, `IPv6Network`…) is one
//! [`FamilyConfig`], checked by the same code for both families.
//!
//! Owns the parsing and the rules. Where the text comes from (the file at
//! `--net-config-path`, etcd's `<prefix>/config`) is the lease store's;
//! this module reads that one file when asked and writes nothing.

mod error;
mod family;

pub use error::NetConfError;
pub use family::{Family, FamilyConfig};

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde_json::{Map, Value};

use family::RawFamily;

/// The validated network configuration. At least one family is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// `EnableIPv4` (default true): `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax`.
    pub ipv4: Option<FamilyConfig<Ipv4Network>>,
    /// `EnableIPv6`: `IPv6Network`, `IPv6SubnetLen`, `IPv6SubnetMin`, `IPv6SubnetMax`.
    pub ipv6: Option<FamilyConfig<Ipv6Network>>,
    pub enable_nftables: bool,
    pub backend: BackendConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub kind: String,
    pub vni: u32,
    pub port: u16,
    pub mtu: Option<u32>,
    pub gbp: bool,
    pub learning: bool,
    pub direct_routing: bool,
}

pub const DEFAULT_NETWORK: &str = "10.244.0.0/16";
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

impl NetConfig {
    /// The configuration flanneld uses when no file exists.
    pub fn default_config() -> Self {
        // The literal is valid, so parsing cannot fail.
        Self::parse(&format!(r#"{{"Network":"{DEFAULT_NETWORK}"}}"#))
            .unwrap_or_else(|e| panic!("built-in default configuration: {e}"))
    }

    /// Reads `net-conf.json` at `path` (`--net-config-path`); a missing file
    /// means the default configuration (Network 10.244.0.0/16), as flannel
    /// has it. The error names the file.
    pub fn read_file(path: &std::path::Path) -> Result<Self, NetConfError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no network config file; using the default (Network {DEFAULT_NETWORK})");
                return Ok(Self::default_config());
            }
            Err(source) => {
                return Err(NetConfError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|reason| NetConfError::Invalid {
            path: path.to_path_buf(),
            source: Box::new(reason),
        })
    }

    /// Parses and validates; the error names the field and the rule.
    pub fn parse(text: &str) -> Result<Self, NetConfError> {
        let value: Value = serde_json::from_str(text).map_err(NetConfError::Json)?;
        let top = lower_keys(value.as_object().ok_or(NetConfError::NotObject)?);

        let enable_ipv4 = get_bool(&top, "enableipv4")?.unwrap_or(true);
        let enable_ipv6 = get_bool(&top, "enableipv6")?.unwrap_or(false);
        if !enable_ipv4 && !enable_ipv6 {
            return Err(NetConfError::NoFamily);
        }
        // Every key present is read (a wrong type is an error, as in
        // flannel's JSON decoding); a family's rules apply when it is on.
        let raw4 = (
            get_net::<Ipv4Network>(&top, "network")?,
            get_u64(&top, "subnetlen")?,
            get_addr::<Ipv4Addr>(&top, "subnetmin")?,
            get_addr::<Ipv4Addr>(&top, "subnetmax")?,
        );
        let raw6 = (
            get_net::<Ipv6Network>(&top, "ipv6network")?,
            get_u64(&top, "ipv6subnetlen")?,
            get_addr::<Ipv6Addr>(&top, "ipv6subnetmin")?,
            get_addr::<Ipv6Addr>(&top, "ipv6subnetmax")?,
        );
        let ipv4 = checked_family(enable_ipv4, raw4, NetConfError::NetworkMissing)?;
        let ipv6 = checked_family(enable_ipv6, raw6, NetConfError::Ipv6NetworkMissing)?;
        let backend = match top.get("backend") {
            None | Some(Value::Null) => parse_backend(&Map::new())?,
            Some(Value::Object(b)) => parse_backend(&lower_keys(b))?,
            Some(other) => return Err(NetConfError::BackendNotObject { got: other.clone() }),
        };
        Ok(Self {
            ipv4,
            ipv6,
            enable_nftables: get_bool(&top, "enablenftables")?.unwrap_or(false),
            backend,
        })
    }

    /// The IPv4 part; the error says IPv4 is disabled (`EnableIPv4=false`).
    pub fn v4(&self) -> Result<&FamilyConfig<Ipv4Network>, NetConfError> {
        self.ipv4.as_ref().ok_or(NetConfError::Ipv4Disabled)
    }
}

fn parse_backend(b: &Map<String, Value>) -> Result<BackendConfig, NetConfError> {
    let kind = match b.get("type") {
        None | Some(Value::Null) => "vxlan".to_string(),
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(other) => return Err(NetConfError::BackendTypeNotString { got: other.clone() }),
    };
    if kind != "vxlan" {
        return Err(NetConfError::UnsupportedBackend { kind });
    }
    let vni = match get_u64(b, "vni")? {
        None => 1,
        Some(v) if v < (1 << 24) => v as u32,
        Some(vni) => return Err(NetConfError::Vni { vni }),
    };
    let port = match get_u64(b, "port")? {
        None | Some(0) => DEFAULT_VXLAN_PORT,
        Some(port) => u16::try_from(port).map_err(|_| NetConfError::Port { port })?,
    };
    let mtu = match get_u64(b, "mtu")? {
        None | Some(0) => None,
        Some(m) if (1280..=65535).contains(&m) => Some(m as u32),
        Some(mtu) => return Err(NetConfError::Mtu { mtu }),
    };
    Ok(BackendConfig {
        kind,
        vni,
        port,
        mtu,
        gbp: get_bool(b, "gbp")?.unwrap_or(false),
        learning: get_bool(b, "learning")?.unwrap_or(false),
        direct_routing: get_bool(b, "directrouting")?.unwrap_or(false),
    })
}

fn lower_keys(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// Names a field in messages the way the user wrote the docs: `SubnetLen`.
fn display_name(key: &str) -> &str {
    match key {
        "subnetlen" => "SubnetLen",
        "subnetmin" => "SubnetMin",
        "subnetmax" => "SubnetMax",
        "enableipv4" => "EnableIPv4",
        "enableipv6" => "EnableIPv6",
        "enablenftables" => "EnableNFTables",
        "network" => "Network",
        "ipv6network" => "IPv6Network",
        "ipv6subnetlen" => "IPv6SubnetLen",
        "ipv6subnetmin" => "IPv6SubnetMin",
        "ipv6subnetmax" => "IPv6SubnetMax",
        "vni" => "Backend.VNI",
        "port" => "Backend.Port",
        "mtu" => "Backend.MTU",
        "gbp" => "Backend.GBP",
        "learning" => "Backend.Learning",
        "directrouting" => "Backend.DirectRouting",
        other => other,
    }
}

/// `key` held `got`, which is not `expected` ("a string", …).
fn wrong_type(key: &str, expected: &'static str, got: &Value) -> NetConfError {
    NetConfError::WrongType {
        key: display_name(key).to_string(),
        expected,
        got: got.clone(),
    }
}

fn get_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, NetConfError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "true or false", other)),
    }
}

fn get_u64(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, NetConfError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(key, "a non-negative integer", v)),
    }
}

fn get_net<N: Family + std::str::FromStr>(
    m: &Map<String, Value>,
    key: &str,
) -> Result<Option<N>, NetConfError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| NetConfError::NotCidr {
            key: display_name(key).to_string(),
            text: s.clone(),
            family: N::NAME,
        }),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn get_addr<A: std::str::FromStr>(
    m: &Map<String, Value>,
    key: &str,
) -> Result<Option<A>, NetConfError> {
    let family = if key.starts_with("ipv6") {
        "IPv6"
    } else {
        "IPv4"
    };
    let max_len = if key.starts_with("ipv6") { 128 } else { 32 };
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            // flannel writes bounds either bare or as a CIDR; the prefix
            // length is not used, but must be one (not "/banana", "//24").
            let (bare, len) = match s.split_once('/') {
                Some((bare, len)) => (bare, Some(len)),
                None => (s.as_str(), None),
            };
            let len_ok = len.is_none_or(|l| {
                l.bytes().all(|b| b.is_ascii_digit()) && l.parse::<u8>().is_ok_and(|n| n <= max_len)
            });
            bare.parse()
                .ok()
                .filter(|_| len_ok)
                .map(Some)
                .ok_or_else(|| NetConfError::NotAddress {
                    key: display_name(key).to_string(),
                    text: s.clone(),
                    family,
                })
        }
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

/// A family's network, subnet length, min and max, as read.
type RawKeys<N> = (
    Option<N>,
    Option<u64>,
    Option<<N as Family>::Addr>,
    Option<<N as Family>::Addr>,
);

/// One family's keys as read, checked by flannel's rules when the family
/// is on (`None` when it is off).
fn checked_family<N: Family>(
    on: bool,
    (network, subnet_len, subnet_min, subnet_max): RawKeys<N>,
    missing: NetConfError,
) -> Result<Option<FamilyConfig<N>>, NetConfError> {
    if !on {
        return Ok(None);
    }
    FamilyConfig::check(RawFamily {
        network: network.ok_or(missing)?,
        subnet_len,
        subnet_min,
        subnet_max,
    })
    .map(Some)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests_v6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_flannel_default() {
        let c = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#)
            .expect("valid");
        let v4 = c.v4().expect("ipv4");
        assert_eq!(v4.subnet_len, 24);
        assert_eq!(v4.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(v4.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!(c.ipv6, None);
        assert_eq!(c.backend.vni, 1);
        assert_eq!(c.backend.port, 8472);
        assert_eq!(v4.subnets().count(), 255);
        assert_eq!(c, NetConfig::default_config());
    }

    #[test]
    fn keys_are_case_insensitive_and_small_networks_get_prefix_plus_two() {
        let c = NetConfig::parse(r#"{"network":"10.1.0.0/24","backend":{"type":"VXLAN","vni":4}}"#)
            .expect("valid");
        let v4 = c.v4().expect("ipv4");
        assert_eq!(v4.subnet_len, 26);
        assert_eq!(c.backend.vni, 4);
        assert_eq!(v4.subnets().count(), 3);
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (r#"{}"#, "Network is missing"),
            (r#"{"Network":"banana"}"#, "Network"),
            (r#"{"Network":"10.244.1.0/16"}"#, "host bits"),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":31}"#,
                "SubnetLen 31 must be 30 or less",
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":17}"#,
                "SubnetLen 17 must be at least",
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":"10.9.0.0"}"#,
                "SubnetMin 10.9.0.0 is outside",
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.5"}"#,
                "SubnetMax 10.244.3.5 is not aligned",
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}"#,
                "above",
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}"#,
                "Backend.Type",
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"VNI":"one"}}"#,
                "Backend.VNI",
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Port":70000}}"#,
                "Backend.Port",
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":"24"}"#,
                "SubnetLen must be",
            ),
            (r#"[1]"#, "object"),
            (r#"{"Network""#, "JSON"),
        ];
        for (text, needle) in cases {
            let e = NetConfig::parse(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn leasable() {
        let c = NetConfig::default_config();
        let c = c.v4().expect("ipv4");
        assert!(c.is_leasable("10.244.7.0/24".parse().expect("cidr")));
        assert!(!c.is_leasable("10.244.0.0/24".parse().expect("cidr")));
        assert!(!c.is_leasable("10.244.7.0/25".parse().expect("cidr")));
        assert!(!c.is_leasable("10.245.7.0/24".parse().expect("cidr")));
    }
}
