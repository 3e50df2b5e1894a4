//! `net-conf.json`, read as flannel reads it: keys case-insensitive,
//! defaults filled in, every rule checked with a message naming the field.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde_json::{Map, Value};

/// The validated network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub network: Ipv4Network,
    pub subnet_len: u8,
    /// First subnet that may be leased (its network address).
    pub subnet_min: Ipv4Addr,
    /// Last subnet that may be leased (its network address).
    pub subnet_max: Ipv4Addr,
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

    /// Parses and validates; the error names the field and the rule.
    /// Reads `net-conf.json` at `path` (`--net-config-path`); a missing file
    /// means the default configuration (Network 10.244.0.0/16), as flannel
    /// has it. The error names the file.
    pub fn read_file(path: &std::path::Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no network config file; using the default (Network {DEFAULT_NETWORK})");
                return Ok(Self::default_config());
            }
            Err(e) => return Err(format!("read network config {}: {e}", path.display())),
        };
        Self::parse(&text).map_err(|reason| format!("network config {}: {reason}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let top = lower_keys(value.as_object().ok_or("must be a JSON object")?);

        if let Some(false) = get_bool(&top, "enableipv4")? {
            return Err("EnableIPv4=false: IPv6-only networks are not supported yet".into());
        }
        if let Some(true) = get_bool(&top, "enableipv6")? {
            return Err("EnableIPv6=true: dual-stack is not supported yet".into());
        }
        let network: Ipv4Network = match top.get("network") {
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| format!("Network {s:?} is not an IPv4 CIDR"))?,
            Some(other) => return Err(format!("Network must be a string, got {other}")),
            None => return Err("Network is missing".into()),
        };
        if network.ip() != network.network() {
            return Err(format!(
                "Network {network} has host bits set (did you mean {}/{}?)",
                network.network(),
                network.prefix()
            ));
        }
        let prefix = network.prefix();
        if prefix > 28 {
            return Err(format!(
                "Network {network} is too small: the prefix must be /28 or shorter"
            ));
        }
        let subnet_len = match get_u64(&top, "subnetlen")? {
            None => {
                if prefix <= 22 {
                    24
                } else {
                    prefix + 2
                }
            }
            Some(n) => {
                let n =
                    u8::try_from(n).map_err(|_| format!("SubnetLen {n} is not a prefix length"))?;
                if n > 30 {
                    return Err(format!("SubnetLen {n} must be 30 or less"));
                }
                if n < prefix + 2 {
                    return Err(format!(
                        "SubnetLen {n} must be at least the Network prefix + 2 ({})",
                        prefix + 2
                    ));
                }
                n
            }
        };
        let size = 1u32 << (32 - subnet_len);
        let first = u32::from(network.network());
        let last = u32::from(network.broadcast()) - (size - 1);
        let subnet_min = match get_addr(&top, "subnetmin")? {
            None => Ipv4Addr::from(first + size),
            Some(a) => check_bound("SubnetMin", a, &network, subnet_len)?,
        };
        let subnet_max = match get_addr(&top, "subnetmax")? {
            None => Ipv4Addr::from(last),
            Some(a) => check_bound("SubnetMax", a, &network, subnet_len)?,
        };
        if u32::from(subnet_min) > u32::from(subnet_max) {
            return Err(format!(
                "SubnetMin {subnet_min} is above SubnetMax {subnet_max}"
            ));
        }
        let backend = match top.get("backend") {
            None | Some(Value::Null) => parse_backend(&Map::new())?,
            Some(Value::Object(b)) => parse_backend(&lower_keys(b))?,
            Some(other) => return Err(format!("Backend must be an object, got {other}")),
        };
        Ok(Self {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            enable_nftables: get_bool(&top, "enablenftables")?.unwrap_or(false),
            backend,
        })
    }

    /// Every subnet between SubnetMin and SubnetMax.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        let size = 1u32 << (32 - self.subnet_len);
        let (lo, hi) = (u32::from(self.subnet_min), u32::from(self.subnet_max));
        (0..=(hi - lo) / size).filter_map(move |i| {
            Ipv4Network::new(Ipv4Addr::from(lo + i * size), self.subnet_len).ok()
        })
    }

    /// Whether `subnet` is one this configuration may lease.
    pub fn is_leasable(&self, subnet: Ipv4Network) -> bool {
        let start = u32::from(subnet.network());
        subnet.prefix() == self.subnet_len
            && subnet.ip() == subnet.network()
            && (u32::from(self.subnet_min)..=u32::from(self.subnet_max)).contains(&start)
    }
}

fn parse_backend(b: &Map<String, Value>) -> Result<BackendConfig, String> {
    let kind = match b.get("type") {
        None | Some(Value::Null) => "vxlan".to_string(),
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(other) => return Err(format!("Backend.Type must be a string, got {other}")),
    };
    if kind != "vxlan" {
        return Err(format!(
            "Backend.Type {kind:?} is not supported (only \"vxlan\")"
        ));
    }
    let vni = match get_u64(b, "vni")? {
        None => 1,
        Some(v) if v < (1 << 24) => v as u32,
        Some(v) => return Err(format!("Backend.VNI {v} must be below 16777216")),
    };
    let port = match get_u64(b, "port")? {
        None | Some(0) => DEFAULT_VXLAN_PORT,
        Some(p) => u16::try_from(p).map_err(|_| format!("Backend.Port {p} is not a UDP port"))?,
    };
    let mtu = match get_u64(b, "mtu")? {
        None | Some(0) => None,
        Some(m) if (1280..=65535).contains(&m) => Some(m as u32),
        Some(m) => return Err(format!("Backend.MTU {m} must be in 1280..65535")),
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

fn check_bound(field: &str, a: Ipv4Addr, net: &Ipv4Network, len: u8) -> Result<Ipv4Addr, String> {
    if !net.contains(a) {
        return Err(format!("{field} {a} is outside Network {net}"));
    }
    let size = 1u32 << (32 - len);
    if u32::from(a) % size != 0 {
        return Err(format!("{field} {a} is not aligned to a /{len} subnet"));
    }
    Ok(a)
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
        "vni" => "Backend.VNI",
        "port" => "Backend.Port",
        "mtu" => "Backend.MTU",
        "gbp" => "Backend.GBP",
        "learning" => "Backend.Learning",
        "directrouting" => "Backend.DirectRouting",
        other => other,
    }
}

fn get_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "{} must be true or false, got {other}",
            display_name(key)
        )),
    }
}

fn get_u64(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            format!(
                "{} must be a non-negative integer, got {v}",
                display_name(key)
            )
        }),
    }
}

fn get_addr(m: &Map<String, Value>, key: &str) -> Result<Option<Ipv4Addr>, String> {
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
                l.bytes().all(|b| b.is_ascii_digit()) && l.parse::<u8>().is_ok_and(|n| n <= 32)
            });
            bare.parse()
                .ok()
                .filter(|_| len_ok)
                .map(Some)
                .ok_or_else(|| format!("{} {s:?} is not an IPv4 address", display_name(key)))
        }
        Some(other) => Err(format!(
            "{} must be a string, got {other}",
            display_name(key)
        )),
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_flannel_default() {
        let c = NetConfig::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#)
            .expect("valid");
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!(c.backend.vni, 1);
        assert_eq!(c.backend.port, 8472);
        assert_eq!(c.subnets().count(), 255);
        assert_eq!(c, NetConfig::default_config());
    }

    #[test]
    fn keys_are_case_insensitive_and_small_networks_get_prefix_plus_two() {
        let c = NetConfig::parse(r#"{"network":"10.1.0.0/24","backend":{"type":"VXLAN","vni":4}}"#)
            .expect("valid");
        assert_eq!(c.subnet_len, 26);
        assert_eq!(c.backend.vni, 4);
        assert_eq!(c.subnets().count(), 3);
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
            let e = NetConfig::parse(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn leasable() {
        let c = NetConfig::default_config();
        assert!(c.is_leasable("10.244.7.0/24".parse().expect("cidr")));
        assert!(!c.is_leasable("10.244.0.0/24".parse().expect("cidr")));
        assert!(!c.is_leasable("10.244.7.0/25".parse().expect("cidr")));
        assert!(!c.is_leasable("10.245.7.0/24".parse().expect("cidr")));
    }
}
