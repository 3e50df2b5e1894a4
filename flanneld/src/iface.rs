//! Choosing the external interface: `--iface` (names or addresses, first
//! match wins), else `--iface-regex`, else the default route's interface.
//! An interface counts when it has an address of the family the overlay
//! runs on: IPv4, or a global IPv6 when IPv6-only (as flannel).
//!
//! Owns the choice only: it reads links, addresses and routes (the dumps
//! are [`crate::vxlan::Links`]') and writes nothing to the kernel; what
//! the chosen interface is used for is the daemon's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use regex::Regex;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::vxlan::{AddrRow, LinkState, Links, VxlanError};

/// The interface the overlay's VXLAN packets leave by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtIface {
    pub index: u32,
    pub name: String,
    /// The address peers reach us at (unless --public-ip or --public-ipv6
    /// says otherwise): IPv4, or IPv6 when the overlay is IPv6-only.
    pub addr: IpAddr,
    pub mtu: u32,
}

/// Why no external interface (or no public IPv6) could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// Listing links or addresses failed (the error names which, and
    /// the link).
    #[error(transparent)]
    Dump(#[from] VxlanError),
    #[error("list routes")]
    ListRoutes(#[source] rtnetlink::Error),
    /// `kind`: "an IPv4 address" or "a global IPv6 address".
    #[error("none of --iface {} exists with {kind}", specs.join(", "))]
    NoIface {
        specs: Vec<String>,
        kind: &'static str,
    },
    /// `reason` is the last line of regex's (multi-line) message.
    #[error("--iface-regex {pattern:?} is not a valid regex: {reason}")]
    BadRegex { pattern: String, reason: String },
    #[error("no interface with {kind} matches --iface-regex {}", patterns.join(", "))]
    NoRegexMatch {
        patterns: Vec<String>,
        kind: &'static str,
    },
    /// `family`: "" or "IPv6 ".
    #[error(
        "no {family}default route: pass --iface or --iface-regex to choose the external interface"
    )]
    NoDefaultRoute { family: &'static str },
    #[error("the default route's interface #{index} vanished")]
    DefaultRouteGone { index: u32 },
    /// `what`: "IPv4 address" or "global IPv6 address".
    #[error("the default route's interface {iface} has no {what}")]
    DefaultRouteNoAddr { iface: String, what: &'static str },
    #[error("--public-ipv6 {ip} is not a global unicast IPv6 address")]
    PublicIpv6NotGlobal { ip: Ipv6Addr },
    #[error("IPv6 is enabled (EnableIPv6) but interface {iface} has no global IPv6 address: give it one, or pass --public-ipv6")]
    NoGlobalIpv6 { iface: String },
}

/// The host's links and their usable addresses of the overlay's family
/// (IPv4, or global IPv6 when IPv6-only), as read once for a choice.
struct Host {
    links: Vec<LinkState>,
    addrs: Vec<(u32, IpNetwork)>,
    /// For messages: "an IPv4 address" or "a global IPv6 address".
    kind: &'static str,
}

impl Host {
    /// `link` as the external interface, with address `want` (else its
    /// first); None when it has no (such) address.
    fn build(&self, link: &LinkState, want: Option<IpAddr>) -> Option<ExtIface> {
        let mut networks = self
            .addrs
            .iter()
            .filter(|(i, _)| *i == link.index)
            .map(|(_, n)| *n);
        let addr = match want {
            Some(a) => networks.find(|n| n.ip() == a)?.ip(),
            None => networks.next()?.ip(),
        };
        Some(ExtIface {
            index: link.index,
            name: link.name.clone(),
            addr,
            mtu: link.mtu,
        })
    }

    /// `--iface`: the first spec (a name or an address) that exists.
    fn by_iface(&self, ifaces: &[String]) -> Result<ExtIface, IfaceError> {
        ifaces
            .iter()
            .find_map(|spec| match spec.parse::<IpAddr>() {
                Ok(ip) => self
                    .addrs
                    .iter()
                    .find(|(_, n)| n.ip() == ip)
                    .and_then(|(i, _)| self.links.iter().find(|l| l.index == *i))
                    .and_then(|l| self.build(l, Some(ip))),
                Err(_) => self
                    .links
                    .iter()
                    .find(|l| l.name == *spec)
                    .and_then(|l| self.build(l, None)),
            })
            .ok_or_else(|| IfaceError::NoIface {
                specs: ifaces.to_vec(),
                kind: self.kind,
            })
    }

    /// `--iface-regex`: per pattern in order, the first link whose name or
    /// one of whose addresses matches.
    fn by_regex(&self, regexes: &[String]) -> Result<ExtIface, IfaceError> {
        for pattern in regexes {
            let re = compile(pattern)?;
            if let Some(ext) = self.links.iter().find_map(|l| self.matching(&re, l)) {
                return Ok(ext);
            }
        }
        Err(IfaceError::NoRegexMatch {
            patterns: regexes.to_vec(),
            kind: self.kind,
        })
    }

    /// `link` if its name matches `re` (with its first address), else with
    /// its first address that matches.
    fn matching(&self, re: &Regex, link: &LinkState) -> Option<ExtIface> {
        if re.is_match(&link.name) {
            if let Some(ext) = self.build(link, None) {
                return Some(ext);
            }
        }
        self.addrs
            .iter()
            .filter(|(i, net)| *i == link.index && re.is_match(&net.ip().to_string()))
            .find_map(|(_, net)| self.build(link, Some(net.ip())))
    }

    /// The default route's interface (`index`), with its first address.
    fn by_default_route(&self, index: u32) -> Result<ExtIface, IfaceError> {
        let link = self
            .links
            .iter()
            .find(|l| l.index == index)
            .ok_or(IfaceError::DefaultRouteGone { index })?;
        self.build(link, None)
            .ok_or_else(|| IfaceError::DefaultRouteNoAddr {
                iface: link.name.clone(),
                what: self.kind.trim_start_matches("an ").trim_start_matches("a "),
            })
    }
}

/// `pattern` compiled; regex's message spans several lines, the error
/// keeps its last, the reason.
fn compile(pattern: &str) -> Result<Regex, IfaceError> {
    Regex::new(pattern).map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .last()
            .unwrap_or("invalid")
            .trim()
            .trim_start_matches("error: ");
        IfaceError::BadRegex {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        }
    })
}

/// Picks the external interface as flannel does, by an address of IPv4
/// (`ipv6_only` false) or a global IPv6; the error says what was looked
/// for.
pub async fn select(
    handle: &Handle,
    ifaces: &[String],
    regexes: &[String],
    ipv6_only: bool,
) -> Result<ExtIface, IfaceError> {
    let host = Host {
        links: Links { handle }.all().await?,
        addrs: addresses(handle, ipv6_only).await?,
        kind: if ipv6_only {
            "a global IPv6 address"
        } else {
            "an IPv4 address"
        },
    };
    if !ifaces.is_empty() {
        return host.by_iface(ifaces);
    }
    if !regexes.is_empty() {
        return host.by_regex(regexes);
    }
    let index = default_route_oif(handle, ipv6_only)
        .await?
        .ok_or(IfaceError::NoDefaultRoute {
            family: if ipv6_only { "IPv6 " } else { "" },
        })?;
    host.by_default_route(index)
}

/// The first global unicast IPv6 address on interface `ext` (what flannel
/// takes as the public IPv6 unless `--public-ipv6` says otherwise); None
/// when it has none.
pub async fn global_ipv6(handle: &Handle, ext: &ExtIface) -> Result<Option<Ipv6Addr>, IfaceError> {
    let rows = Links { handle }
        .address_rows(Some((ext.index, &ext.name)))
        .await?;
    Ok(rows.into_iter().find_map(|r| match r.ip {
        IpAddr::V6(a) if crate::lease::v6::is_global_unicast(a) => Some(a),
        _ => None,
    }))
}

/// The public IPv6 when IPv6 is enabled: `--public-ipv6`, else the
/// interface's first global IPv6; a one-line error when there is none.
pub async fn public_ipv6(
    handle: &Handle,
    ext: &ExtIface,
    flag: Option<Ipv6Addr>,
) -> Result<Ipv6Addr, IfaceError> {
    if let Some(ip) = flag {
        if !crate::lease::v6::is_global_unicast(ip) {
            return Err(IfaceError::PublicIpv6NotGlobal { ip });
        }
        return Ok(ip);
    }
    global_ipv6(handle, ext)
        .await?
        .ok_or_else(|| IfaceError::NoGlobalIpv6 {
            iface: ext.name.clone(),
        })
}

/// Every usable address of one family: IPv4 but loopback and link-local,
/// or global unicast IPv6.
async fn addresses(handle: &Handle, ipv6: bool) -> Result<Vec<(u32, IpNetwork)>, IfaceError> {
    let rows = Links { handle }.address_rows(None).await?;
    Ok(rows.iter().filter_map(|r| usable(r, ipv6)).collect())
}

fn usable(row: &AddrRow, ipv6: bool) -> Option<(u32, IpNetwork)> {
    let net = match row.ip {
        IpAddr::V4(_) if ipv6 => return None,
        IpAddr::V4(ip) if !(ip.is_loopback() || ip.is_link_local()) => {
            IpNetwork::V4(Ipv4Network::new(ip, row.prefix).ok()?)
        }
        IpAddr::V6(ip) if ipv6 && crate::lease::v6::is_global_unicast(ip) => {
            IpNetwork::V6(Ipv6Network::new(ip, row.prefix).ok()?)
        }
        _ => return None,
    };
    Some((row.index, net))
}

async fn default_route_oif(handle: &Handle, ipv6: bool) -> Result<Option<u32>, IfaceError> {
    let msg = if ipv6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    let mut stream = handle.route().get(msg).execute();
    while let Some(route) = stream.try_next().await.map_err(IfaceError::ListRoutes)? {
        if route.header.destination_prefix_length != 0 || route.header.table != 254 {
            continue;
        }
        let is_default = !route.attributes.iter().any(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => !d.is_unspecified(),
            RouteAttribute::Destination(RouteAddress::Inet6(d)) => !d.is_unspecified(),
            _ => false,
        });
        if !is_default {
            continue;
        }
        for attr in &route.attributes {
            if let RouteAttribute::Oif(i) = attr {
                return Ok(Some(*i));
            }
        }
    }
    Ok(None)
}
