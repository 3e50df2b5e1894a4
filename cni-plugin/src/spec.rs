//! CNI versions, the network configuration on stdin (`NetConf`, with its
//! `delegate`, `prevResult` and GC attachments), and the result in each
//! version's shape.
//!
//! Pure: parses and serialises values, touches no file and no kernel, and
//! never writes to stdout itself (`main.rs` prints what it builds).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni_err;
use crate::error::Result;

pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
pub const DEFAULT_BRIDGE: &str = "cni0";

/// A supported result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V030,
    V031,
    V040,
    V100,
    V110,
}

impl Version {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "0.3.0" => Self::V030,
            "0.3.1" => Self::V031,
            "0.4.0" => Self::V040,
            "1.0.0" => Self::V100,
            "1.1.0" => Self::V110,
            other => {
                return Err(
                    cni_err!(IncompatibleVersion, "cniVersion {other:?} is not supported")
                        .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))),
                )
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        SUPPORTED_VERSIONS[self as usize]
    }
}

/// The `delegate` object of flannel's config: what flannel would have
/// handed to the bridge plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegate {
    pub bridge: String,
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: Option<bool>,
    pub promisc_mode: bool,
}

/// The network configuration on stdin.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub delegate: Delegate,
    pub subnet_file: PathBuf,
    pub data_dir: PathBuf,
    pub prev_result: Option<Value>,
    /// GC: the attachments that must be kept, as (container ID, ifname).
    pub valid_attachments: Option<HashSet<(String, String)>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(default)]
    delegate: Option<Map<String, Value>>,
    subnet_file: Option<String>,
    data_dir: Option<String>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// Only `cniVersion`, for VERSION and for error replies.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        cni_version: Option<String>,
    }
    serde_json::from_slice::<Peek>(stdin).ok()?.cni_version
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self> {
        let raw: RawConf = serde_json::from_slice(stdin)
            .map_err(|e| cni_err!(Decode, "decode network configuration from stdin: {e}"))?;
        let version =
            Version::parse(raw.cni_version.as_deref().ok_or_else(|| {
                cni_err!(InvalidConfig, "network configuration has no cniVersion")
            })?)?;
        let name = raw
            .name
            .ok_or_else(|| cni_err!(InvalidConfig, "network configuration has no name"))?;
        validate_network_name(&name)?;
        let delegate = parse_delegate(raw.delegate.unwrap_or_default())?;
        let valid_attachments = raw.valid_attachments.or(raw.attachments).map(|list| {
            list.into_iter()
                .map(|a| (a.container_id, a.ifname))
                .collect::<HashSet<_>>()
        });
        Ok(Self {
            version,
            name,
            delegate,
            subnet_file: absolute_path("subnetFile", raw.subnet_file, DEFAULT_SUBNET_FILE)?,
            data_dir: absolute_path("dataDir", raw.data_dir, DEFAULT_DATA_DIR)?,
            prev_result: raw.prev_result,
            valid_attachments,
        })
    }
}

/// A path from the config. Empty or relative paths would depend on the
/// runtime's working directory, so they are refused.
fn absolute_path(key: &str, value: Option<String>, default: &str) -> Result<PathBuf> {
    match value {
        None => Ok(PathBuf::from(default)),
        Some(v) if v.starts_with('/') => Ok(PathBuf::from(v)),
        Some(v) => Err(cni_err!(
            InvalidConfig,
            "{key} {v:?} must be an absolute path"
        )),
    }
}

/// The name becomes a directory and an nftables set name.
fn validate_network_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 200;
    if ok {
        Ok(())
    } else {
        Err(cni_err!(
            InvalidConfig,
            "network name {name:?} is invalid: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
        ))
    }
}

fn parse_delegate(map: Map<String, Value>) -> Result<Delegate> {
    for key in ["name", "ipam"] {
        if map.contains_key(key) {
            return Err(cni_err!(
                UnsupportedField,
                "delegate.{key} is not supported: flannel-rs names the network after the \
                 configuration and allocates addresses from FLANNEL_SUBNET itself"
            ));
        }
    }
    let flag = |key: &str, default: bool| -> Result<bool> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(cni_err!(
                InvalidConfig,
                "delegate.{key} must be true or false, got {other}"
            )),
        }
    };
    let bridge = match map.get("bridge") {
        None | Some(Value::Null) => DEFAULT_BRIDGE.to_string(),
        Some(Value::String(s)) => {
            crate::env::validate_ifname(s).map_err(|_| {
                cni_err!(
                    InvalidConfig,
                    "delegate.bridge {s:?} is not a valid interface name"
                )
            })?;
            s.clone()
        }
        Some(other) => {
            return Err(cni_err!(
                InvalidConfig,
                "delegate.bridge must be a string, got {other}"
            ))
        }
    };
    let mtu = match map.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(m) if (576..=65535).contains(&m) => Some(m as u32),
            _ => {
                return Err(cni_err!(
                    InvalidConfig,
                    "delegate.mtu must be a number in 576..65535, got {v}"
                ))
            }
        },
    };
    let ip_masq = match map.get("ipMasq") {
        None | Some(Value::Null) => None,
        Some(_) => Some(flag("ipMasq", false)?),
    };
    Ok(Delegate {
        bridge,
        mtu,
        hairpin_mode: flag("hairpinMode", false)?,
        is_gateway: flag("isGateway", true)? || flag("isDefaultGateway", false)?,
        is_default_gateway: flag("isDefaultGateway", false)?,
        ip_masq,
        promisc_mode: flag("promiscMode", false)?,
    })
}

/// What ADD made, independent of the output version.
#[derive(Debug, Clone)]
pub struct AddResult {
    pub bridge: Interface,
    pub host: Interface,
    pub container: Interface,
    /// The container's addresses, IPv4 first, each with its gateway.
    pub ips: Vec<IpConfig>,
    pub routes: Vec<RouteConfig>,
}

/// One address of the container interface and the gateway of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNetwork,
    pub gateway: IpAddr,
}

/// A route of the container: destination via a gateway of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConfig {
    pub dst: IpNetwork,
    pub gw: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    pub sandbox: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutResult<'a> {
    cni_version: &'static str,
    interfaces: Vec<OutInterface<'a>>,
    ips: Vec<OutIp>,
    routes: Vec<OutRoute>,
    dns: Map<String, Value>,
}

#[derive(Serialize)]
struct OutInterface<'a> {
    name: &'a str,
    mac: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
}

#[derive(Serialize)]
struct OutIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    gateway: String,
    interface: usize,
}

#[derive(Serialize)]
struct OutRoute {
    dst: String,
    gw: String,
}

impl AddResult {
    /// The result JSON in `version`'s shape: 0.3.x/0.4.0 carry
    /// `ips[].version`; only 1.1.0 carries the interface MTU.
    pub fn to_json(&self, version: Version) -> Value {
        fn iface(i: &Interface, version: Version) -> OutInterface<'_> {
            OutInterface {
                name: &i.name,
                mac: &i.mac,
                mtu: if version >= Version::V110 {
                    i.mtu
                } else {
                    None
                },
                sandbox: i.sandbox.as_deref(),
            }
        }
        let out = OutResult {
            cni_version: version.as_str(),
            interfaces: vec![
                iface(&self.bridge, version),
                iface(&self.host, version),
                iface(&self.container, version),
            ],
            ips: self
                .ips
                .iter()
                .map(|ip| OutIp {
                    version: (version < Version::V100).then_some(if ip.address.is_ipv4() {
                        "4"
                    } else {
                        "6"
                    }),
                    address: ip.address.to_string(),
                    gateway: ip.gateway.to_string(),
                    interface: 2,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| OutRoute {
                    dst: r.dst.to_string(),
                    gw: r.gw.to_string(),
                })
                .collect(),
            dns: Map::new(),
        };
        serde_json::to_value(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn parse(s: &str) -> Result<NetConf> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn accepts_kube_flannel_config() {
        let c = parse(
            r#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel",
                "delegate":{"hairpinMode":true,"isDefaultGateway":true},
                "runtimeConfig":{"portMappings":[]},"capabilities":{"portMappings":true}}"#,
        )
        .expect("valid");
        assert_eq!(c.version, Version::V031);
        assert_eq!(c.delegate.bridge, "cni0");
        assert!(c.delegate.hairpin_mode && c.delegate.is_gateway && c.delegate.is_default_gateway);
        assert_eq!(c.delegate.ip_masq, None);
        assert_eq!(c.subnet_file, PathBuf::from(DEFAULT_SUBNET_FILE));
    }

    #[test]
    fn rejects_bad_configs_with_the_right_code() {
        assert_eq!(parse("{").unwrap_err().code, Code::Decode);
        assert_eq!(
            parse(r#"{"cniVersion":"0.2.0","name":"x"}"#)
                .unwrap_err()
                .code,
            Code::IncompatibleVersion
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0"}"#).unwrap_err().code,
            Code::InvalidConfig
        );
        let e = parse(r#"{"cniVersion":"1.0.0","name":"x","delegate":{"ipam":{}}}"#).unwrap_err();
        assert_eq!(e.code, Code::UnsupportedField);
        assert!(e.msg.contains("delegate.ipam"));
        let e = parse(r#"{"cniVersion":"1.0.0","name":"x","delegate":{"mtu":"big"}}"#).unwrap_err();
        assert!(e.msg.contains("delegate.mtu"));
        let e = parse(r#"{"cniVersion":"1.0.0","name":"x/y"}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        let e = parse(r#"{"cniVersion":"1.0.0","name":"x","dataDir":"rel/dir"}"#).unwrap_err();
        assert!(e.msg.contains("dataDir"));
        let e = parse(r#"{"cniVersion":"1.0.0","name":"x","dataDir":""}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
    }

    #[test]
    fn gc_attachments_either_spelling() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let c = parse(&format!(
                r#"{{"cniVersion":"1.1.0","name":"x","{key}":[{{"containerID":"a","ifname":"eth0"}}]}}"#
            ))
            .expect("valid");
            let set = c.valid_attachments.expect("present");
            assert!(set.contains(&("a".to_string(), "eth0".to_string())));
        }
    }

    #[test]
    fn result_shapes() {
        let iface = |n: &str| Interface {
            name: n.into(),
            mac: "aa:bb:cc:dd:ee:ff".into(),
            mtu: Some(1450),
            sandbox: None,
        };
        let r = AddResult {
            bridge: iface("cni0"),
            host: iface("veth01234567"),
            container: Interface {
                sandbox: Some("/var/run/netns/p".into()),
                ..iface("eth0")
            },
            ips: vec![
                IpConfig {
                    address: "10.244.1.2/24".parse().expect("cidr"),
                    gateway: "10.244.1.1".parse().expect("ip"),
                },
                IpConfig {
                    address: "fd00:10:244:1::2/64".parse().expect("cidr"),
                    gateway: "fd00:10:244:1::1".parse().expect("ip"),
                },
            ],
            routes: vec![
                RouteConfig {
                    dst: "10.244.0.0/16".parse().expect("cidr"),
                    gw: "10.244.1.1".parse().expect("ip"),
                },
                RouteConfig {
                    dst: "::/0".parse().expect("cidr"),
                    gw: "fd00:10:244:1::1".parse().expect("ip"),
                },
            ],
        };
        let old = r.to_json(Version::V031);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(old["ips"][1]["address"], "fd00:10:244:1::2/64");
        assert_eq!(old["ips"][1]["interface"], 2);
        assert_eq!(old["routes"][1]["gw"], "fd00:10:244:1::1");
        assert!(old["interfaces"][2].get("mtu").is_none());
        let new = r.to_json(Version::V110);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][2]["mtu"], 1450);
        assert_eq!(new["interfaces"][2]["sandbox"], "/var/run/netns/p");
        assert_eq!(new["routes"][0]["gw"], "10.244.1.1");
    }
}
