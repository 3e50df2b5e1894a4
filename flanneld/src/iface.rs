//! Choosing the external interface: `--iface` (names or addresses, first
//! match wins), else `--iface-regex`, else the default route's interface.
//! An interface counts when it has an address of the family the overlay
//! runs on: IPv4, or a global IPv6 when IPv6-only (as flannel).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
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
    /// The address peers reach us at (unless --public-ip or --public-ipv6
    /// says otherwise): IPv4, or IPv6 when the overlay is IPv6-only.
    pub addr: IpAddr,
    pub mtu: u32,
}

struct LinkRow {
    index: u32,
    name: String,
    mtu: u32,
}

/// Picks the external interface as flannel does, by an address of IPv4
/// (`ipv6_only` false) or a global IPv6; the error says what was looked
/// for.
pub async fn select(
    handle: &Handle,
    ifaces: &[String],
    regexes: &[String],
    ipv6_only: bool,
) -> Result<ExtIface, String> {
    let links = links(handle).await?;
    let addrs = addresses(handle, ipv6_only).await?;
    let (kind, no_kind) = if ipv6_only {
        ("a global IPv6 address", "global IPv6 address")
    } else {
        ("an IPv4 address", "IPv4 address")
    };
    let build = |link: &LinkRow, want: Option<IpAddr>| -> Option<ExtIface> {
        let networks: Vec<IpNetwork> = addrs
            .iter()
            .filter(|(i, _)| *i == link.index)
            .map(|(_, n)| *n)
            .collect();
        let addr = match want {
            Some(a) => networks.iter().find(|n| n.ip() == a)?.ip(),
            None => networks.first()?.ip(),
        };
        Some(ExtIface {
            index: link.index,
            name: link.name.clone(),
            addr,
            mtu: link.mtu,
        })
    };

    if !ifaces.is_empty() {
        for spec in ifaces {
            let found = match spec.parse::<IpAddr>() {
                Ok(ip) => addrs
                    .iter()
                    .find(|(_, n)| n.ip() == ip)
                    .and_then(|(i, _)| links.iter().find(|l| l.index == *i))
                    .and_then(|l| build(l, Some(ip))),
                Err(_) => links
                    .iter()
                    .find(|l| l.name == *spec)
                    .and_then(|l| build(l, None)),
            };
            if let Some(ext) = found {
                return Ok(ext);
            }
        }
        return Err(format!(
            "none of --iface {} exists with {kind}",
            ifaces.join(", ")
        ));
    }
    if !regexes.is_empty() {
        for pattern in regexes {
            let re = Regex::new(pattern).map_err(|e| {
                // regex's message spans several lines; keep its last, the reason.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim()
                    .trim_start_matches("error: ");
                format!("--iface-regex {pattern:?} is not a valid regex: {reason}")
            })?;
            for link in &links {
                if re.is_match(&link.name) {
                    if let Some(ext) = build(link, None) {
                        return Ok(ext);
                    }
                }
                for (_, net) in addrs.iter().filter(|(i, _)| *i == link.index) {
                    if re.is_match(&net.ip().to_string()) {
                        if let Some(ext) = build(link, Some(net.ip())) {
                            return Ok(ext);
                        }
                    }
                }
            }
        }
        return Err(format!(
            "no interface with {kind} matches --iface-regex {}",
            regexes.join(", ")
        ));
    }
    let index = default_route_oif(handle, ipv6_only)
        .await?
        .ok_or_else(|| {
            let family = if ipv6_only { "IPv6 " } else { "" };
            format!("no {family}default route: pass --iface or --iface-regex to choose the external interface")
        })?;
    let link = links
        .iter()
        .find(|l| l.index == index)
        .ok_or_else(|| format!("the default route's interface #{index} vanished"))?;
    build(link, None).ok_or_else(|| {
        format!(
            "the default route's interface {} has no {no_kind}",
            link.name
        )
    })
}

/// The first global unicast IPv6 address on interface `ext` (what flannel
/// takes as the public IPv6 unless `--public-ipv6` says otherwise); None
/// when it has none.
pub async fn global_ipv6(handle: &Handle, ext: &ExtIface) -> Result<Option<Ipv6Addr>, String> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(ext.index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| format!("list addresses of {}: {e}", ext.name))?
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
) -> Result<Ipv6Addr, String> {
    if let Some(ip) = flag {
        if !crate::lease::v6::is_global_unicast(ip) {
            return Err(format!(
                "--public-ipv6 {ip} is not a global unicast IPv6 address"
            ));
        }
        return Ok(ip);
    }
    global_ipv6(handle, ext).await?.ok_or_else(|| {
        format!(
            "IPv6 is enabled (EnableIPv6) but interface {} has no global IPv6 address: give it one, or pass --public-ipv6",
            ext.name
        )
    })
}

async fn links(handle: &Handle) -> Result<Vec<LinkRow>, String> {
    let mut stream = handle.link().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| format!("list links: {e}"))?
    {
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

/// Every usable address of one family: IPv4 but loopback and link-local,
/// or global unicast IPv6.
async fn addresses(handle: &Handle, ipv6: bool) -> Result<Vec<(u32, IpNetwork)>, String> {
    let mut stream = handle.address().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| format!("list addresses: {e}"))?
    {
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
        // peer's on point-to-point links).
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(a) if a.is_ipv6() == ipv6 => local = Some(*a),
                AddressAttribute::Address(a) if a.is_ipv6() == ipv6 => address = Some(*a),
                _ => {}
            }
        }
        let prefix = msg.header.prefix_len;
        let net = match local.or(address) {
            Some(IpAddr::V4(ip)) if !(ip.is_loopback() || ip.is_link_local()) => {
                Ipv4Network::new(ip, prefix).ok().map(IpNetwork::V4)
            }
            Some(IpAddr::V6(ip)) if crate::lease::v6::is_global_unicast(ip) => {
                Ipv6Network::new(ip, prefix).ok().map(IpNetwork::V6)
            }
            _ => None,
        };
        if let Some(net) = net {
            out.push((msg.header.index, net));
        }
    }
    Ok(out)
}

async fn default_route_oif(handle: &Handle, ipv6: bool) -> Result<Option<u32>, String> {
    let msg = if ipv6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    let mut stream = handle.route().get(msg).execute();
    while let Some(route) = stream
        .try_next()
        .await
        .map_err(|e| format!("list routes: {e}"))?
    {
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
