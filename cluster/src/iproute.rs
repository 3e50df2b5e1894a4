//! Looking at (and, for test fixtures, plumbing) a namespace with iproute2.
//! The product never runs `ip`; tests use it to see what the product did.

use crate::netns::NetNs;
use serde_json::Value;

impl NetNs {
    /// `ip -d -j link show` entries.
    pub fn links(&self) -> Vec<Value> {
        as_vec(self.ip_json(&["-d", "link", "show"]))
    }

    /// `ip -d -j link show dev <name>`'s entry, or `None` when it does not exist.
    pub fn link(&self, name: &str) -> Option<Value> {
        let out = crate::cmd::run(std::process::Command::new("ip").args([
            "-j",
            "-d",
            "-n",
            self.name(),
            "link",
            "show",
            "dev",
            name,
        ]));
        if !out.success() {
            return None;
        }
        serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.get(0).cloned())
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.link(name).is_some()
    }

    /// Names of the links whose kind is `kind` (e.g. "veth", "bridge").
    pub fn links_of_kind(&self, kind: &str) -> Vec<String> {
        self.links()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == kind)
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect()
    }

    /// IPv4 addresses on `dev` as "a.b.c.d/len".
    pub fn ipv4_addrs(&self, dev: &str) -> Vec<String> {
        as_vec(self.ip_json(&["-4", "addr", "show", "dev", dev]))
            .iter()
            .flat_map(|l| as_vec(l["addr_info"].clone()))
            .filter_map(|a| {
                Some(format!(
                    "{}/{}",
                    a["local"].as_str()?,
                    a["prefixlen"].as_u64()?
                ))
            })
            .collect()
    }

    /// Global IPv6 addresses on `dev` as "addr/len" (link-local left out),
    /// with `tentative` or `dadfailed` appended when the kernel says so.
    pub fn ipv6_addrs(&self, dev: &str) -> Vec<String> {
        as_vec(self.ip_json(&["-6", "addr", "show", "dev", dev, "scope", "global"]))
            .iter()
            .flat_map(|l| as_vec(l["addr_info"].clone()))
            .filter_map(|a| {
                let mut s = format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?);
                for flag in ["tentative", "dadfailed"] {
                    if a[flag] == true {
                        s += &format!(" {flag}");
                    }
                }
                Some(s)
            })
            .collect()
    }

    /// `ip -j -6 route show` (main table).
    pub fn routes_v6(&self) -> Vec<Value> {
        as_vec(self.ip_json(&["-6", "route", "show"]))
    }

    /// The IPv6 route whose dst is `dst` ("default" for ::/0), if any.
    pub fn route_v6(&self, dst: &str) -> Option<Value> {
        let dst = if dst == "::/0" { "default" } else { dst };
        self.routes_v6().into_iter().find(|r| r["dst"] == dst)
    }

    /// `ip -j -4 route show` (main table).
    pub fn routes_v4(&self) -> Vec<Value> {
        as_vec(self.ip_json(&["-4", "route", "show"]))
    }

    /// The IPv4 route whose dst is `dst` ("default" for 0.0.0.0/0), if any.
    pub fn route_v4(&self, dst: &str) -> Option<Value> {
        let dst = if dst == "0.0.0.0/0" { "default" } else { dst };
        self.routes_v4().into_iter().find(|r| r["dst"] == dst)
    }

    /// Reads `/proc/sys/<key>` inside the namespace (key with '/' or '.').
    /// Use '/' when a component (an interface name) may itself contain '.'.
    pub fn sysctl(&self, key: &str) -> String {
        let rel = if key.contains('/') {
            key.to_owned()
        } else {
            key.replace('.', "/")
        };
        let path = format!("/proc/sys/{rel}");
        self.exec("cat", &[&path]).ok().trim().to_owned()
    }

    /// A veth pair `a` — `b`, both ends in this namespace and up.
    pub fn add_veth_pair(&self, a: &str, b: &str) {
        self.ip_ok(&["link", "add", a, "type", "veth", "peer", "name", b]);
        self.ip_ok(&["link", "set", a, "up"]);
        self.ip_ok(&["link", "set", b, "up"]);
    }

    /// A veth from this namespace (`name`) to `peer_ns` (`peer_name`), both up.
    pub fn add_veth_to(&self, name: &str, peer_ns: &NetNs, peer_name: &str) {
        self.ip_ok(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "netns",
            peer_ns.name(),
        ]);
        self.ip_ok(&["link", "set", name, "up"]);
        peer_ns.ip_ok(&["link", "set", peer_name, "up"]);
    }

    /// A bridge `name`, up.
    /// A bridge with a MAC of its own, set at creation. A bridge created
    /// without one takes the lowest MAC of its ports, so each node joining
    /// the underlay could change the gateway's MAC under the other nodes'
    /// ARP caches, black-holing their traffic to the servers behind it (the
    /// kube API, etcd) until the entry is probed again, tens of seconds.
    pub fn add_bridge(&self, name: &str) {
        let mac = locally_administered_mac(&format!("{}/{name}", self.name()));
        self.ip_ok(&["link", "add", name, "address", &mac, "type", "bridge"]);
        self.ip_ok(&["link", "set", name, "up"]);
    }

    pub fn set_master(&self, dev: &str, master: &str) {
        self.ip_ok(&["link", "set", dev, "master", master]);
    }

    pub fn add_addr(&self, dev: &str, cidr: &str) {
        self.ip_ok(&["addr", "add", cidr, "dev", dev]);
    }

    /// Pod-side state worth comparing between two pods: `ip -j addr` with MACs,
    /// ifindexes, netns ids, txqlen (meaningless on a noqueue veth; the reference
    /// plugin leaves it 0) and MAC-derived IPv6 link-local addresses dropped.
    pub fn normalized_addrs(&self) -> Value {
        let mut links = as_vec(self.ip_json(&["addr", "show"]));
        for l in &mut links {
            if let Some(o) = l.as_object_mut() {
                for k in [
                    "ifindex",
                    "link_index",
                    "address",
                    "link_netnsid",
                    "link",
                    "altnames",
                    "txqlen",
                ] {
                    o.remove(k);
                }
                if let Some(Value::Array(ai)) = o.get_mut("addr_info") {
                    ai.retain(|a| !(a["family"] == "inet6" && a["scope"] == "link"));
                }
            }
        }
        links.sort_by_key(|l| l["ifname"].as_str().unwrap_or("").to_owned());
        Value::Array(links)
    }

    /// `ip -j route show table all` for IPv4 and IPv6 (link-local fe80::/64 and
    /// multicast dropped), sorted.
    pub fn normalized_routes(&self) -> Value {
        let mut all = as_vec(self.ip_json(&["-4", "route", "show", "table", "all"]));
        all.extend(
            as_vec(self.ip_json(&["-6", "route", "show", "table", "all"]))
                .into_iter()
                .filter(|r| {
                    let dst = r["dst"].as_str().unwrap_or("");
                    !(dst.starts_with("fe80::")
                        || dst.starts_with("ff00::")
                        || dst.starts_with("ff"))
                }),
        );
        let mut all: Vec<Value> = all
            .into_iter()
            .filter(|r| {
                // fe80 local routes in table local for link-local addresses
                !(r["type"] == "local"
                    && r["dst"].as_str().is_some_and(|d| d.starts_with("fe80::")))
            })
            .collect();
        all.sort_by_key(|r| r.to_string());
        Value::Array(all)
    }
}

pub(crate) fn as_vec(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => vec![],
        other => vec![other],
    }
}

/// A unicast, locally administered MAC derived from `seed` (stable for a
/// name, distinct between names in practice).
fn locally_administered_mac(seed: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    let b = h.finish().to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}
