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

struct LinkRow {
    index: u32,
    name: String,
    mtu: u32,
}

/// Picks the external interface as flannel does; the error says what was
/// looked for.
pub async fn select(
    handle: &Handle,
    ifaces: &[String],
    regexes: &[String],
) -> Result<ExtIface, String> {
    let links = links(handle).await?;
    let addrs = addresses(handle).await?;
    let build = |link: &LinkRow, want: Option<Ipv4Addr>| -> Option<ExtIface> {
        let networks: Vec<Ipv4Network> = addrs
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
            let found = match spec.parse::<Ipv4Addr>() {
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
            "none of --iface {} exists with an IPv4 address",
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
            "no interface with an IPv4 address matches --iface-regex {}",
            regexes.join(", ")
        ));
    }
    let index = default_route_oif(handle).await?.ok_or_else(|| {
        "no default route: pass --iface or --iface-regex to choose the external interface"
            .to_string()
    })?;
    let link = links
        .iter()
        .find(|l| l.index == index)
        .ok_or_else(|| format!("the default route's interface #{index} vanished"))?;
    build(link, None).ok_or_else(|| {
        format!(
            "the default route's interface {} has no IPv4 address",
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

async fn addresses(handle: &Handle) -> Result<Vec<(u32, Ipv4Network)>, String> {
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

async fn default_route_oif(handle: &Handle) -> Result<Option<u32>, String> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut stream = handle.route().get(msg).execute();
    while let Some(route) = stream
        .try_next()
        .await
        .map_err(|e| format!("list routes: {e}"))?
    {
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
