//! `subnet.env`: the file flanneld writes and the CNI plugin reads.
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.1.1/24
//! FLANNEL_IPV6_NETWORK=fd00:10:244::/56
//! FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=true
//! ```
//! `FLANNEL_SUBNET` carries the node's first host address (the bridge
//! gateway) with the subnet's prefix length, exactly as upstream flannel
//! writes it; `FLANNEL_IPV6_SUBNET` likewise. Upstream writes the IPv4 pair
//! only when IPv4 is enabled and the IPv6 pair only when IPv6 is, so an
//! IPv6-only node has no `FLANNEL_NETWORK`/`FLANNEL_SUBNET`; at least one
//! family must be there.
//!
//! Owns the file's format: parsing, rendering, and its one atomic write
//! (through `files.rs`). Where the file lives and when it is written is the
//! caller's (flanneld's daemon writes it, the plugin only reads it).

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::files::{write_atomic, WriteOpts};

/// The parsed contents of a `subnet.env` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the whole overlay, e.g. 10.244.0.0/16 (absent on IPv6-only nodes).
    pub network: Option<Ipv4Network>,
    /// `FLANNEL_SUBNET`: this node's gateway address and prefix, e.g. 10.244.1.1/24.
    pub subnet: Option<Ipv4Network>,
    /// `FLANNEL_MTU`: the MTU pods get.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`: true when flanneld masquerades itself.
    pub ipmasq: bool,
    /// `FLANNEL_IPV6_NETWORK`, when the overlay has IPv6.
    pub ipv6_network: Option<Ipv6Network>,
    /// `FLANNEL_IPV6_SUBNET`, when the overlay has IPv6: gateway and prefix.
    pub ipv6_subnet: Option<Ipv6Network>,
}

/// One address family's part of `subnet.env`, whatever the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyEnv {
    /// The whole overlay (`FLANNEL_NETWORK` / `FLANNEL_IPV6_NETWORK`).
    pub network: IpNetwork,
    /// The gateway address with the node subnet's prefix
    /// (`FLANNEL_SUBNET` / `FLANNEL_IPV6_SUBNET`).
    pub subnet: IpNetwork,
}

impl FamilyEnv {
    /// The bridge gateway address.
    pub fn gateway(&self) -> IpAddr {
        self.subnet.ip()
    }

    /// This node's pod subnet with the host bits cleared.
    pub fn pod_subnet(&self) -> IpNetwork {
        IpNetwork::new(self.subnet.network(), self.subnet.prefix()).unwrap_or(self.subnet)
    }

    /// Checks what upstream's writer guarantees: room for pods, a host
    /// address as the gateway, the subnet inside the network. `keys` names
    /// the subnet and network keys for the message.
    fn validate(&self, keys: (&str, &str)) -> Result<(), String> {
        let (subnet, network) = (self.subnet, self.network);
        let (skey, nkey) = keys;
        let bits = if subnet.is_ipv4() { 32 } else { 128 };
        if subnet.prefix() > bits - 2 {
            return Err(format!(
                "{skey}={subnet} leaves no room for pods (prefix > /{})",
                bits - 2
            ));
        }
        let last = match subnet {
            IpNetwork::V4(n) => Some(IpAddr::V4(n.broadcast())),
            // IPv6 has no broadcast address: its last one is a host.
            IpNetwork::V6(_) => None,
        };
        if subnet.ip() == subnet.network() || Some(subnet.ip()) == last {
            return Err(format!(
                "{skey}={subnet} must name a host address (the gateway)"
            ));
        }
        if subnet.prefix() < network.prefix() || !network.contains(subnet.network()) {
            return Err(format!("{skey}={subnet} is not inside {nkey}={network}"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvError {
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl SubnetEnv {
    /// The IPv4 bridge gateway address (`FLANNEL_SUBNET`'s address part).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.subnet.map(|s| s.ip())
    }

    /// This node's IPv4 pod subnet with the host bits cleared, e.g. 10.244.1.0/24.
    pub fn pod_subnet(&self) -> Option<Ipv4Network> {
        self.subnet
            .map(|s| Ipv4Network::new(s.network(), s.prefix()).unwrap_or(s))
    }

    /// The IPv4 part, if any.
    pub fn ipv4(&self) -> Option<FamilyEnv> {
        Some(FamilyEnv {
            network: IpNetwork::V4(self.network?),
            subnet: IpNetwork::V4(self.subnet?),
        })
    }

    /// The IPv6 part, if any.
    pub fn ipv6(&self) -> Option<FamilyEnv> {
        Some(FamilyEnv {
            network: IpNetwork::V6(self.ipv6_network?),
            subnet: IpNetwork::V6(self.ipv6_subnet?),
        })
    }

    /// The families present, IPv4 first (host-local's range order in
    /// upstream's delegate: `[[v4], [v6]]`). Never empty once parsed.
    pub fn families(&self) -> Vec<FamilyEnv> {
        self.ipv4().into_iter().chain(self.ipv6()).collect()
    }

    /// Reads and validates `path`. Text that is not UTF-8 is `Invalid`
    /// like any other bad contents, not an I/O error.
    pub fn read(path: &Path) -> Result<Self, SubnetEnvError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                SubnetEnvError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                SubnetEnvError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()));
        text.and_then(|text| Self::parse(&text))
            .map_err(|reason| SubnetEnvError::Invalid {
                path: path.to_path_buf(),
                reason,
            })
    }

    /// Parses the text of a `subnet.env`. Unknown keys, blank lines and
    /// `#` comments are ignored; the error names the offending key or line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut network = None;
        let mut subnet = None;
        let mut mtu = None;
        let mut ipmasq = None;
        let mut ipv6_network = None;
        let mut ipv6_subnet = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected KEY=VALUE, got {line:?}", n + 1))?;
            let value = value.trim().trim_matches('"');
            let bad = |what: &str| format!("{key}={value:?} is not {what}");
            let v4 = || {
                value
                    .parse::<Ipv4Network>()
                    .map_err(|_| bad("an IPv4 CIDR"))
            };
            let v6 = || {
                value
                    .parse::<Ipv6Network>()
                    .map_err(|_| bad("an IPv6 CIDR"))
            };
            match key.trim() {
                "FLANNEL_NETWORK" => network = Some(v4()?),
                "FLANNEL_SUBNET" => subnet = Some(v4()?),
                "FLANNEL_MTU" => mtu = Some(value.parse::<u32>().map_err(|_| bad("a number"))?),
                "FLANNEL_IPMASQ" => {
                    ipmasq = Some(value.parse::<bool>().map_err(|_| bad("true or false"))?)
                }
                "FLANNEL_IPV6_NETWORK" => ipv6_network = Some(v6()?),
                "FLANNEL_IPV6_SUBNET" => ipv6_subnet = Some(v6()?),
                _ => {}
            }
        }
        let pair = |net: bool, sub: bool, keys: (&str, &str)| match (net, sub) {
            (true, false) => Err(format!("{} is missing ({} is set)", keys.0, keys.1)),
            (false, true) => Err(format!("{} is missing ({} is set)", keys.1, keys.0)),
            _ => Ok(()),
        };
        pair(
            network.is_some(),
            subnet.is_some(),
            ("FLANNEL_SUBNET", "FLANNEL_NETWORK"),
        )?;
        pair(
            ipv6_network.is_some(),
            ipv6_subnet.is_some(),
            ("FLANNEL_IPV6_SUBNET", "FLANNEL_IPV6_NETWORK"),
        )?;
        if network.is_none() && ipv6_network.is_none() {
            return Err(
                "FLANNEL_NETWORK and FLANNEL_SUBNET are missing, and so are \
                        FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET: no address family"
                    .to_string(),
            );
        }
        let mtu = mtu.ok_or("FLANNEL_MTU is missing")?;
        if !(576..=65535).contains(&mtu) {
            return Err(format!("FLANNEL_MTU={mtu} is outside 576..65535"));
        }
        let env = Self {
            network,
            subnet,
            mtu,
            ipmasq: ipmasq.unwrap_or(false),
            ipv6_network,
            ipv6_subnet,
        };
        if let Some(f) = env.ipv4() {
            f.validate(("FLANNEL_SUBNET", "FLANNEL_NETWORK"))?;
        }
        if let Some(f) = env.ipv6() {
            f.validate(("FLANNEL_IPV6_SUBNET", "FLANNEL_IPV6_NETWORK"))?;
        }
        Ok(env)
    }

    /// The file's text, in upstream flannel's key order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let (Some(n), Some(s)) = (self.network, self.subnet) {
            let _ = writeln!(out, "FLANNEL_NETWORK={n}");
            let _ = writeln!(out, "FLANNEL_SUBNET={s}");
        }
        if let Some(n) = self.ipv6_network {
            let _ = writeln!(out, "FLANNEL_IPV6_NETWORK={n}");
        }
        if let Some(s) = self.ipv6_subnet {
            let _ = writeln!(out, "FLANNEL_IPV6_SUBNET={s}");
        }
        let _ = writeln!(out, "FLANNEL_MTU={}", self.mtu);
        let _ = writeln!(out, "FLANNEL_IPMASQ={}", self.ipmasq);
        out
    }

    /// Writes the file atomically (temp file in the same directory, fsync,
    /// rename), mode 0644, creating the directory if needed.
    pub fn write_atomic(&self, path: &Path) -> Result<(), SubnetEnvError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(|source| SubnetEnvError::Io {
            op: "create directory for",
            path: path.to_path_buf(),
            source,
        })?;
        let opts = WriteOpts {
            mode: 0o644,
            sync: true,
        };
        write_atomic(path, self.render().as_bytes(), opts).map_err(|e| SubnetEnvError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        })
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn parses_upstream_format() {
        let env = SubnetEnv::parse(SAMPLE).expect("valid");
        assert_eq!(
            env.network.map(|n| n.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
        assert_eq!(env.gateway(), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(
            env.pod_subnet().map(|n| n.to_string()).as_deref(),
            Some("10.244.1.0/24")
        );
        assert_eq!(env.families().len(), 1);
        assert_eq!(env.mtu, 1450);
        assert!(env.ipmasq);
        assert_eq!(env.render(), SAMPLE);
    }

    #[test]
    fn names_the_bad_key() {
        let e =
            SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=banana\n").unwrap_err();
        assert!(e.contains("FLANNEL_SUBNET"), "{e}");
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n")
            .unwrap_err();
        assert_eq!(e, "FLANNEL_MTU is missing");
        let e = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.9.1.1/24\nFLANNEL_MTU=1450",
        )
        .unwrap_err();
        assert!(e.contains("not inside"), "{e}");
        let e = SubnetEnv::parse("garbage").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.0/24\nFLANNEL_MTU=1450",
        )
        .unwrap_err();
        assert!(e.contains("host address"), "{e}");
    }

    #[test]
    fn dual_stack_and_ipv6_only() {
        let dual = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
        let env = SubnetEnv::parse(dual).expect("valid");
        let fams = env.families();
        assert_eq!(fams.len(), 2);
        assert_eq!(fams[1].gateway().to_string(), "fd00:10:244:1::1");
        assert_eq!(fams[1].pod_subnet().to_string(), "fd00:10:244:1::/64");
        assert_eq!(env.render(), dual);
        // What upstream writes with EnableIPv4=false: no IPv4 keys at all.
        let v6 = "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
        let env = SubnetEnv::parse(v6).expect("valid");
        assert_eq!(env.families().len(), 1);
        assert!(env.ipv4().is_none() && env.pod_subnet().is_none());
        assert_eq!(env.render(), v6);
        let e = SubnetEnv::parse("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap_err();
        assert!(
            e.contains("FLANNEL_IPV6_SUBNET") && e.contains("FLANNEL_SUBNET"),
            "{e}"
        );
        let e = SubnetEnv::parse("FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_MTU=1450\n").unwrap_err();
        assert!(e.contains("FLANNEL_IPV6_SUBNET is missing"), "{e}");
        let e = SubnetEnv::parse(
            "FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:1::1/64\nFLANNEL_MTU=1450\n",
        )
        .unwrap_err();
        assert!(e.contains("not inside"), "{e}");
        let e = SubnetEnv::parse(
            "FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00::/64\nFLANNEL_MTU=1450\n",
        )
        .unwrap_err();
        assert!(e.contains("host address"), "{e}");
    }

    #[test]
    fn atomic_write_round_trips() {
        let dir = std::env::temp_dir().join(format!("subnet-env-test-{}", std::process::id()));
        let path = dir.join("sub/subnet.env");
        let env = SubnetEnv::parse(SAMPLE).expect("valid");
        env.write_atomic(&path).expect("write");
        assert_eq!(SubnetEnv::read(&path).expect("read"), env);
        assert!(matches!(
            SubnetEnv::read(&dir.join("nope")),
            Err(SubnetEnvError::Missing { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
