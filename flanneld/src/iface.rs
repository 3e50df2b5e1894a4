//! Choosing the external interface: `--iface` (names or addresses, first
//! match wins), else `--iface-regex`, else the default route's interface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use regex::Regex;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The interface the overlay's VXLAN packets leave by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtIface {
    pub index: u32,
    pub name: String,
    /// The address peers reach us at (unless --public-ip says otherwise).
    pub addr: Ipv4Addr,
    pub mtu: u32,
}

/// Why no external interface (or no public IPv6) could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// Listing `what` ("links", "addresses", "routes") over netlink failed.
    #[error("list {what}")]
    List {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("list addresses of {iface}")]
    ListAddressesOf {
        iface: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("none of --iface {} exists with an IPv4 address", specs.join(", "))]
    NoIface { specs: Vec<String> },
    /// `reason` is the last line of regex's (multi-line) message.
    #[error("--iface-regex {pattern:?} is not a valid regex: {reason}")]
    BadRegex { pattern: String, reason: String },
    #[error("no interface with an IPv4 address matches --iface-regex {}", patterns.join(", "))]
    NoRegexMatch { patterns: Vec<String> },
    #[error("no default route: pass --iface or --iface-regex to choose the external interface")]
    NoDefaultRoute,
    #[error("the default route's interface #{index} vanished")]
    DefaultRouteGone { index: u32 },
    #[error("the default route's interface {iface} has no IPv4 address")]
    DefaultRouteNoIpv4 { iface: String },
    #[error("--public-ipv6 {ip} is not a global unicast IPv6 address")]
    PublicIpv6NotGlobal { ip: Ipv6Addr },
    #[error("IPv6 is enabled (EnableIPv6) but interface {iface} has no global IPv6 address: give it one, or pass --public-ipv6")]
    NoGlobalIpv6 { iface: String },
}

struct LinkRow {
    index: u32,
    name: String,
    mtu: u32,
}

/// The host's links and their IPv4 networks, as read once for a choice.
struct Host {
    links: Vec<LinkRow>,
    addrs: Vec<(u32, Ipv4Network)>,
}

impl Host {
    /// `link` as the external interface, with address `want` (else its
    /// first); None when it has no (such) IPv4 address.
    fn build(&self, link: &LinkRow, want: Option<Ipv4Addr>) -> Option<ExtIface> {
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

    /// `--iface`: the first spec (a name or an IPv4 address) that exists.
    fn by_iface(&self, ifaces: &[String]) -> Result<ExtIface, IfaceError> {
        ifaces
            .iter()
            .find_map(|spec| match spec.parse::<Ipv4Addr>() {
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
            })
    }

    /// `--iface-regex`: per pattern in order, the first link whose name or
    /// one of whose IPv4 addresses matches.
    fn by_regex(&self, regexes: &[String]) -> Result<ExtIface, IfaceError> {
        for pattern in regexes {
            let re = compile(pattern)?;
            if let Some(ext) = self.links.iter().find_map(|l| self.matching(&re, l)) {
                return Ok(ext);
            }
        }
        Err(IfaceError::NoRegexMatch {
            patterns: regexes.to_vec(),
        })
    }

    /// `link` if its name matches `re` (with its first address), else with
    /// its first address that matches.
    fn matching(&self, re: &Regex, link: &LinkRow) -> Option<ExtIface> {
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
            .ok_or_else(|| IfaceError::DefaultRouteNoIpv4 {
                iface: link.name.clone(),
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

/// Picks the external interface as flannel does; the error says what was
/// looked for.
pub async fn select(
    handle: &Handle,
    ifaces: &[String],
    regexes: &[String],
) -> Result<ExtIface, IfaceError> {
    let host = Host {
        links: links(handle).await?,
        addrs: addresses(handle).await?,
    };
    if !ifaces.is_empty() {
        return host.by_iface(ifaces);
    }
    if !regexes.is_empty() {
        return host.by_regex(regexes);
    }
    let index = default_route_oif(handle)
        .await?
        .ok_or(IfaceError::NoDefaultRoute)?;
    host.by_default_route(index)
}

/// The first global unicast IPv6 address on interface `ext` (what flannel
/// takes as the public IPv6 unless `--public-ipv6` says otherwise); None
/// when it has none.
pub async fn global_ipv6(handle: &Handle, ext: &ExtIface) -> Result<Option<Ipv6Addr>, IfaceError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(ext.index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|source| IfaceError::ListAddressesOf {
            iface: ext.name.clone(),
            source,
        })?
    {
        if msg.header.index != ext.index {
            continue;
        }
        for attr in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V6(a)) = attr {
                if crate::lease::v6::is_global_unicast(*a) {
                    return Ok(Some(*a));
                }
            }
        }
    }
    Ok(None)
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

async fn links(handle: &Handle) -> Result<Vec<LinkRow>, IfaceError> {
    let mut stream = handle.link().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(|source| IfaceError::List {
        what: "links",
        source,
    })? {
        let mut row = LinkRow {
            index: msg.header.index,
            name: String::new(),
            mtu: 1500,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => row.name = n,
                LinkAttribute::Mtu(m) => row.mtu = m,
                _ => {}
            }
        }
        out.push(row);
    }
    Ok(out)
}

async fn addresses(handle: &Handle) -> Result<Vec<(u32, Ipv4Network)>, IfaceError> {
    let mut stream = handle.address().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(|source| IfaceError::List {
        what: "addresses",
        source,
    })? {
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
        // peer's on point-to-point links).
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
                _ => {}
            }
        }
        if let Some(ip) = local.or(address) {
            if ip.is_loopback() || ip.is_link_local() {
                continue;
            }
            if let Ok(net) = Ipv4Network::new(ip, msg.header.prefix_len) {
                out.push((msg.header.index, net));
            }
        }
    }
    Ok(out)
}

async fn default_route_oif(handle: &Handle) -> Result<Option<u32>, IfaceError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut stream = handle.route().get(msg).execute();
    while let Some(route) = stream.try_next().await.map_err(|source| IfaceError::List {
        what: "routes",
        source,
    })? {
        if route.header.destination_prefix_length != 0 || route.header.table != 254 {
            continue;
        }
        let is_default = !route
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(d)) if !d.is_unspecified()));
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
